#!/usr/bin/env python3
"""Run every test of mod_mtls_audit and end with one `N passed, N failed`
line over all of them; exit 1 on any failure.

  1. the CUnit unit tests of the core (build/unit-tests);
  2. the same unit tests built with AddressSanitizer and UBSan
     (build-asan/), failing on any sanitizer report;
  3. the integration tests: the real apache2 with the built module, real
     OpenSSL clients, under the event and prefork MPMs, with the load test.

Options are passed to the integration tests (e.g. --only NAME, --mpm event).
"""
import os
import re
import subprocess
import sys

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

    print("== integration tests", flush=True)
    proc = subprocess.Popen([sys.executable, "-u",
                             os.path.join(TOP, "tests", "integration", "run.py")]
                            + sys.argv[1:], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    last = None
    for line in proc.stdout:
        m = re.match(r"^(\d+) passed, (\d+) failed$", line)
        if m:
            last = m        # the total below counts it; not printed twice
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    rc = proc.wait()
    if last:
        print("integration: %s passed, %s failed" % last.groups())
        passed += int(last.group(1))
        failed += int(last.group(2))
    if not last or (rc != 0 and not int(last.group(2))):
        failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
