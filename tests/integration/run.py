#!/usr/bin/env python3
"""Integration tests: the real Debian apache2 with the built module, real
OpenSSL clients, a real SQLite file, a test PKI generated for the run.

    python3 tests/integration/run.py [--mpm event,prefork] [--only NAME...]
                                     [--no-load] [--soak SECONDS]

Prints one PASS/FAIL line per test and ends with `N passed, N failed`;
exits 1 on any failure."""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness          # noqa: E402
import pki              # noqa: E402
import server           # noqa: E402
import test_capture     # noqa: E402
import test_config      # noqa: E402
import test_load        # noqa: E402
import test_tool        # noqa: E402
import test_faults      # noqa: E402
import test_ops         # noqa: E402
import test_h2          # noqa: E402
import test_revocation  # noqa: E402
import test_siem        # noqa: E402
import test_metrics     # noqa: E402
import test_pipeline    # noqa: E402
import test_dummy       # noqa: E402
import test_summaries   # noqa: E402
import test_files       # noqa: E402
import test_rotate      # noqa: E402


class Context:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpm", default="event,prefork")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep the scratch directory")
    args = ap.parse_args()

    scratch = tempfile.mkdtemp(prefix="mtls-audit-it-")
    os.chmod(scratch, 0o755)
    total = harness.Result()
    try:
        print("generating the test PKI in %s" % scratch, flush=True)
        p = pki.make_pki(os.path.join(scratch, "pki"))
        for n, mpm in enumerate(args.mpm.split(",")):
            ctx = Context()
            ctx.pki = p
            ctx.scratch = os.path.join(scratch, mpm)
            os.makedirs(ctx.scratch)
            ctx.tool = os.path.join(server.MODULE_DIR, "mtls-audit")
            ctx.srv = server.Server(os.path.join(ctx.scratch, "srv"), p,
                                    mpm=mpm)
            ctx.srv.start()
            try:
                bad = ctx.srv.new_errors()
                total.passed += not bad
                total.failed += bool(bad)
                print("%s %s: start-up without errors%s" % (
                    "FAIL" if bad else "PASS", mpm,
                    "\n    " + "\n    ".join(bad) if bad else ""), flush=True)
                tests = (test_capture.test.tests + test_tool.test.tests
                         + test_faults.test.tests + test_ops.test.tests
                         + test_config.test.tests
                         + test_h2.test.tests
                         + test_revocation.test.tests
                         + test_siem.test.tests
                         + test_metrics.test.tests
                         + test_pipeline.test.tests
                         + test_dummy.test.tests
                         + test_summaries.test.tests
                         + test_files.test.tests
                         + test_rotate.test.tests)
                if not args.no_load:
                    tests = tests + test_load.test.tests
                total.merge(harness.run(tests, ctx, mpm, args.only,
                                        first=n == 0))
            finally:
                ctx.srv.stop()
    finally:
        if args.keep or total.failed:
            print("scratch directory kept: %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    for f in total.failures:
        print("failed: %s" % f)
    print("%d passed, %d failed" % (total.passed, total.failed))
    return 1 if total.failed else 0


if __name__ == "__main__":
    sys.exit(main())
