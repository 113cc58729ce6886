#!/usr/bin/env python3
"""Run every test of mod_mtls_audit and end with one `N passed, N failed`
line over all of them; exit 1 on any failure.

  1. the CUnit unit tests of the core (build/unit-tests);
  2. the same unit tests built with AddressSanitizer and UBSan
     (build-asan/), failing on any sanitizer report;
  3. the libFuzzer targets (certificate parsing, the tool's argument and
     date parsing, a database's rows read by the tool), each for MTLS_FUZZ_SECONDS (default 30) from the seed
     corpus in tests/fuzz/corpus, after replaying tests/fuzz/regressions;
  4. the integration tests: the real apache2 with the built module, real
     OpenSSL clients, under the event and prefork MPMs, with the load test
     and a 60 s soak (MTLS_SOAK_SECONDS);
  5. the integration tests again (event MPM, no load) with the module and
     the tool built with AddressSanitizer and UBSan, the sanitizer runtime
     preloaded into apache2: any sanitizer report fails the test it
     happened in.  Skipped when options narrow the run (--only ...).

Options are passed to the integration tests (e.g. --only NAME, --mpm event).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cunit(binary, env=None):
    """Run a CUnit binary; returns (passed, failed)."""
    print("== %s" % os.path.relpath(binary, TOP), flush=True)
    r = subprocess.run([binary], capture_output=True, text=True, env=env)
    out = r.stdout + r.stderr
    sys.stdout.write(out)
    m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    if not m:
        return 0, 1
    total, passed = int(m.group(1)), int(m.group(3))
    failed = total - passed             # failed or never run
    if "runtime error:" in out or "ERROR: AddressSanitizer" in out \
            or "ERROR: LeakSanitizer" in out:
        failed += 1                     # a sanitizer report
    elif r.returncode != 0 and failed == 0:
        failed = 1                      # a crash after the tests
    return passed, failed


def integration(label, args, env=None):
    """Run tests/integration/run.py, streaming its output; returns
    (passed, failed)."""
    print("== %s" % label, flush=True)
    proc = subprocess.Popen([sys.executable, "-u",
                             os.path.join(TOP, "tests", "integration", "run.py")]
                            + args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    last = None
    for line in proc.stdout:
        m = re.match(r"^(\d+) passed, (\d+) failed$", line)
        if m:
            last = m        # the total below counts it; not printed twice
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    rc = proc.wait()
    if not last:
        return 0, 1
    print("%s: %s passed, %s failed" % ((label,) + last.groups()))
    p, f = int(last.group(1)), int(last.group(2))
    if rc != 0 and not f:
        f = 1
    return p, f


def main():
    passed = failed = 0
    p, f = cunit(os.path.join(TOP, "build", "unit-tests"))
    passed += p
    failed += f

    env = dict(os.environ, SANITIZE="1", BUILD_DIR=os.path.join(TOP, "build-asan"))
    print("== building with AddressSanitizer and UBSan", flush=True)
    b = subprocess.run([os.path.join(TOP, "apxs-build.sh"), "build"], env=env,
                       capture_output=True, text=True)
    if b.returncode != 0:
        sys.stdout.write(b.stdout + b.stderr)
        failed += 1
    else:
        senv = dict(os.environ,
                    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86",
                    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        p, f = cunit(os.path.join(TOP, "build-asan", "unit-tests"), senv)
        passed += p
        failed += f

    print("== fuzzing", flush=True)
    b = subprocess.run([os.path.join(TOP, "apxs-build.sh"), "fuzz"],
                       capture_output=True, text=True)
    if b.returncode != 0:
        sys.stdout.write(b.stdout + b.stderr)
        failed += 1
    else:
        seconds = os.environ.get("MTLS_FUZZ_SECONDS", "30")
        for target, corpus in (("fuzz_cert", "cert"), ("fuzz_args", "args"),
                               ("fuzz_db", "db")):
            exe = os.path.join(TOP, "build-fuzz", target)
            work = tempfile.mkdtemp(prefix="mtls-fuzz-")
            regress = sorted(glob.glob(os.path.join(
                TOP, "tests", "fuzz", "regressions", target + "-*")))
            ok = True
            if regress:
                r = subprocess.run([exe] + regress, capture_output=True,
                                   text=True)
                ok = r.returncode == 0
                if not ok:
                    sys.stdout.write(r.stderr[-4000:])
            if ok:
                r = subprocess.run([exe, "-max_total_time=" + seconds,
                                    "-print_final_stats=1",
                                    "-artifact_prefix=" + work + "/", work,
                                    os.path.join(TOP, "tests", "fuzz",
                                                 "corpus", corpus)],
                                   capture_output=True, text=True)
                ok = r.returncode == 0
                runs = re.search(r"stat::number_of_executed_units: (\d+)",
                                 r.stderr)
                if not ok:
                    sys.stdout.write(r.stderr[-4000:])
                    print("fuzz: crash inputs kept in %s" % work)
            print("%s %s (%s s, %s runs, %d regression inputs)" % (
                "PASS" if ok else "FAIL", target, seconds,
                runs.group(1) if ok and runs else "?", len(regress)),
                flush=True)
            if ok:
                shutil.rmtree(work, ignore_errors=True)
                passed += 1
            else:
                failed += 1

    p, f = integration("integration", sys.argv[1:])
    passed += p
    failed += f
    if not sys.argv[1:]:
        # The module and the tool built with ASan and UBSan, in the real
        # apache2 (sanitizer runtime preloaded): any report fails a test.
        p, f = integration("integration under ASan+UBSan",
                           ["--mpm", "event", "--no-load"],
                           dict(os.environ, MTLS_ASAN="1",
                                ASAN_OPTIONS="exitcode=86"))
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
