"""A small test runner: tests are functions taking a context; a failed
assertion or any exception fails the test; after each test the server's
error log must hold no error the test did not expect.  The last line is
`N passed, N failed`."""
import os
import sys
import time
import traceback


class Registry:
    def __init__(self):
        self.tests = []

    def __call__(self, fn=None, expect_errors=(), once=False, asan=True):
        """Register a test; once=True: run it under the first MPM only;
        asan=False: not again in the sanitizer pass (MTLS_ASAN), for a
        test whose time goes to waiting on something other than our code,
        whose code paths the other tests already take there."""
        def add(f):
            f.expect_errors = expect_errors
            f.once = once
            f.asan = asan
            self.tests.append(f)
            return f
        return add(fn) if fn else add


class Result:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def merge(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.failures += other.failures


def run(tests, ctx, label, only=None, first=True):
    res = Result()
    srv = ctx.srv
    srv.new_errors()            # start-up lines are checked by their own test
    for t in tests:
        if only and not any(o in t.__name__ for o in only):
            continue
        if t.once and not first:
            continue
        if not t.asan and os.environ.get("MTLS_ASAN"):
            continue
        name = "%s: %s" % (label, t.__name__)
        t0 = time.time()
        try:
            t(ctx)
            bad = srv.new_errors(t.expect_errors)
            bad += ["sanitizer: " + r for r in srv.sanitizer_reports()]
            if bad:
                raise AssertionError("unexpected errors in the error log:\n  "
                                     + "\n  ".join(bad))
            res.passed += 1
            print("PASS %s (%.2fs)" % (name, time.time() - t0), flush=True)
        except Exception as e:   # noqa: BLE001 - every failure is reported
            srv.new_errors()
            res.failed += 1
            res.failures.append(name)
            print("FAIL %s (%.2fs)" % (name, time.time() - t0), flush=True)
            if isinstance(e, AssertionError):
                # The assertion's own line, then its message.
                f = traceback.extract_tb(e.__traceback__)[-1]
                detail = "%s:%d: %s\n%s" % (
                    os.path.basename(f.filename), f.lineno, f.line,
                    "".join(traceback.format_exception_only(type(e), e)))
            else:
                detail = traceback.format_exc()
            sys.stdout.write("    " + detail.replace("\n", "\n    ") + "\n")
    return res


def expect(row, **want):
    """Assert row[k] == v for each k; v may be a callable predicate."""
    bad = []
    for k, v in want.items():
        got = row.get(k)
        ok = v(got) if callable(v) else got == v
        if not ok:
            bad.append("%s: got %r, want %s" % (
                k, got, getattr(v, "__doc__", None) or repr(v)
                if callable(v) else repr(v)))
    if bad:
        raise AssertionError("row %s:\n      %s" % (row.get("id"),
                                                   "\n      ".join(bad)))


def positive_us(limit=10_000_000):
    def check(v):
        return isinstance(v, int) and 0 < v < limit
    check.__doc__ = "a duration in (0, %d) us" % limit
    return check


def count(db, sql):
    """One number from the database at db, read-only."""
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def keep_going(seconds, runs, cap=90):
    """A loop condition, `while go():`, for a loop that must last at
    least `seconds` and make at least `runs` turns, but never longer than
    `cap` seconds.  A slow machine (a sanitizer build on a busy host)
    takes longer instead of testing less; the test still asserts its
    count afterwards, so reaching the cap fails it."""
    start = time.time()
    turns = [0]

    def go():
        now = time.time() - start
        if now >= cap:
            return False
        turns[0] += 1
        return now < seconds or turns[0] <= runs
    return go


def wait_for(fn, timeout=20):
    """fn() until it is true or timeout seconds pass; its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()
