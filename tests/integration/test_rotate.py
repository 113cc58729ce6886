"""Rotation (MTLSAuditRotate, a strftime pattern in MTLSAuditDatabase):
under load, across several boundaries and a graceful restart close to
one, every handshake the clients made is in exactly one file, the ids and
the chains go on from file to file (mtls-audit verify F1 F2 for each
pair), the anchors in the error log hold, and a sealed file is never
written after its seal (its SHA-256 is the one its successor's 'sealed'
event and the error log recorded).  A sealed file altered afterwards --
one byte, one row, its last row -- is found by mtls-audit verify.

The periods are 2 s long here: MTLS_AUDIT_TEST_ROTATE_SECONDS, read by
the module only when set, for tests."""
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time

import server as server_mod
from harness import Registry
from test_load import WANT, attempt, client_contexts, start_load

test = Registry()

PERIOD = 2                      # seconds, MTLS_AUDIT_TEST_ROTATE_SECONDS


def db_files(d):
    return sorted(p for p in glob.glob(os.path.join(d, "audit-*.db"))
                  if not p.endswith((".part", "-wal", "-shm", "-journal")))


def q(path, sql, args=()):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def chain_order(files):
    """The files in chain order: the first has no 'base' cut, each next
    one is the one its predecessor's seal names."""
    base = {f: q(f, "SELECT count(*) AS n FROM chain_cut WHERE side = "
                    "'base'")[0]["n"] for f in files}
    firsts = [f for f in files if not base[f]]
    assert len(firsts) == 1, ("one file begins the chain", base)
    order = [firsts[0]]
    while True:
        seal = q(order[-1], "SELECT detail FROM events WHERE kind = 'seal'")
        if not seal:
            break
        nxt = json.loads(seal[0]["detail"])["next"]
        assert nxt in files, (nxt, files)
        order.append(nxt)
    assert sorted(order) == sorted(files), (order, files)
    return order


def rotating_server(ctx, name, extra=""):
    base = os.path.join(ctx.scratch, name)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    srv = server_mod.Server(
        base, ctx.pki, mpm=ctx.srv.mpm,
        extra_global="MTLSAuditDatabase %s/auditdb/audit-%%Y-%%m.db\n"
                     "MTLSAuditRotate daily\n%s" % (base, extra))
    return srv


def start_with_period(srv, period=PERIOD):
    os.environ["MTLS_AUDIT_TEST_ROTATE_SECONDS"] = str(period)
    try:
        srv.start()
    finally:
        del os.environ["MTLS_AUDIT_TEST_ROTATE_SECONDS"]


def check_rotated(ctx, srv, files, attempted=None, want=None):
    """Everything a chain of rotated files must hold."""
    order = chain_order(files)
    hs_ids = []
    for i, f in enumerate(order):
        ids = [r["id"] for r in q(f, "SELECT id FROM handshakes ORDER BY id")]
        if i and ids and hs_ids:
            assert ids[0] == hs_ids[-1] + 1, (f, ids[0], hs_ids[-1])
        hs_ids += ids
        last = i == len(order) - 1
        ev = q(f, "SELECT id, kind, detail FROM events ORDER BY id")
        if i:
            assert ev[0]["kind"] == "rotate", (f, ev[0])
            assert json.loads(ev[0]["detail"])["previous"] == order[i - 1]
        if not last:
            assert ev[-1]["kind"] == "seal", (f, ev[-1])
            seal = json.loads(ev[-1]["detail"])
            assert seal["next"] == order[i + 1]
            assert seal["tables"]["handshakes"]["head"] == (ids[-1] if ids
                    else seal["tables"]["handshakes"]["head"])
        else:
            assert not [e for e in ev if e["kind"] == "seal"], f
    # Every handshake in exactly one file, ids without a gap.
    assert len(hs_ids) == len(set(hs_ids)), "a handshake in two files"
    assert hs_ids == list(range(hs_ids[0], hs_ids[0] + len(hs_ids))), \
        "handshake ids jump"
    if attempted is not None:
        assert len(hs_ids) == attempted, (len(hs_ids), attempted)
    if want is not None:
        names = {1: "accepted", 2: "rejected", 3: "no_certificate",
                 4: "failed", 5: "aborted"}
        got = {}
        for f in order:
            for r in q(f, "SELECT outcome, count(*) AS n FROM handshakes "
                          "GROUP BY outcome"):
                got[names[r["outcome"]]] = got.get(names[r["outcome"]], 0) \
                    + r["n"]
        assert got == want, (got, want)
    # Each pair verifies as an archive pair does.
    for a, b in zip(order, order[1:]):
        r = subprocess.run([ctx.tool, "verify", "--no-record", a, b],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "%s continues into %s: ok" % (a, b) in r.stdout, r.stdout
    # The anchors of the error log, over all the files.
    r = subprocess.run([ctx.tool, "verify", "--no-record", "--anchor",
                        srv.error_log] + order, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # Each sealed file: not written since its seal.
    log = srv.read_error_log()
    for a, b in zip(order, order[1:]):
        sealed = [json.loads(e["detail"]) for e in
                  q(b, "SELECT detail FROM events WHERE kind = 'sealed'")]
        sealed = [s for s in sealed if s["file"] == a]
        assert len(sealed) == 1, (a, b, sealed)
        data = open(a, "rb").read()
        assert hashlib.sha256(data).hexdigest() == sealed[0]["sha256"], a
        assert len(data) == sealed[0]["bytes"], a
        assert not os.path.exists(a + "-wal") \
            or os.path.getsize(a + "-wal") == 0, a
        assert re.search(r"sealed %s sha256=%s " % (re.escape(a),
                                                    sealed[0]["sha256"]),
                         log), ("no sealed line for %s in the error log" % a)
    return order


@test(expect_errors=(r"AH02039: Certificate Verification: Error",))
def rotate_under_load_with_a_graceful_restart_near_a_boundary(ctx):
    srv = rotating_server(ctx, "rotate-load", "MTLSAuditAnchorInterval 1\n")
    start_with_period(srv)
    contexts = client_contexts(ctx)
    seconds = 4 * PERIOD + 1
    deadline = time.time() + seconds
    try:
        ts, counts = start_load(srv, contexts, deadline, 8)
        # A graceful restart 50 ms before the second boundary from now.
        b = (int(time.time()) // PERIOD + 2) * PERIOD
        time.sleep(max(0, b - 0.05 - time.time()))
        srv.graceful()
        for t in ts:
            t.join()
        attempted = sum(counts.values())
        want = {}
        for k, n in counts.items():
            want[WANT[k]] = want.get(WANT[k], 0) + n
        d = os.path.join(srv.root, "auditdb")
        end = time.time() + 60
        while time.time() < end:
            n = sum(q(f, "SELECT count(*) AS n FROM handshakes")[0]["n"]
                    for f in db_files(d))
            if n >= attempted:
                break
            time.sleep(0.3)
    finally:
        srv.stop()
    files = db_files(d)
    assert len(files) >= 4, ("several boundaries crossed", files)
    order = check_rotated(ctx, srv, files, attempted, want)
    print("    %d handshakes in %d s over %d files: %s" % (
        attempted, seconds, len(order),
        ", ".join("%s %d" % (os.path.basename(f), q(f, "SELECT count(*) AS "
                  "n FROM handshakes")[0]["n"]) for f in order)))
    lost = sum(q(f, "SELECT coalesce(sum(lost), 0) AS n FROM events WHERE "
                    "kind = 'gap'")[0]["n"] for f in order)
    assert lost == 0, lost
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def rotate_at_start_after_the_server_was_down_across_a_boundary(ctx):
    # Periods of 10 s: each run of the server lies inside one (a slow
    # start under the sanitizers included), the downtime across a
    # boundary.
    period = 10
    srv = rotating_server(ctx, "rotate-start")
    while time.time() % period > 1:
        time.sleep(0.1)
    start_with_period(srv, period)
    try:
        attempt(srv, "ec", client_contexts(ctx))
    finally:
        srv.stop()
    d = os.path.join(srv.root, "auditdb")
    before = db_files(d)
    assert len(before) == 1, before
    time.sleep((int(time.time()) // period + 1) * period + 0.5 - time.time())
    start_with_period(srv, period)
    try:
        attempt(srv, "ec", client_contexts(ctx))
        time.sleep(0.5)
    finally:
        srv.stop()
    files = db_files(d)
    assert len(files) == 2, files
    assert "was due for rotation" in srv.read_error_log()
    order = check_rotated(ctx, srv, files, 2)
    assert order[0] == before[0]
    # The start event is in the new file (the old one is sealed).
    kinds = [e["kind"] for e in q(order[1], "SELECT kind FROM events ORDER "
                                            "BY id")]
    assert [k for k in kinds if k != "policy"][:3] == \
        ["rotate", "sealed", "start"], kinds
    assert kinds[1] == "policy", kinds      # the policy carried over
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


def gen_rotated(ctx, d):
    """Three files of 300 handshakes each, through mtls-gen -s (the store's
    own rotation)."""
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    gen = os.path.join(server_mod.MODULE_DIR, "mtls-gen")
    script = ("event start 2026-01-01T00:00:00Z\n"
              "bulk 900 2026-01-01T00:00:00Z 2026-01-10T00:00:00Z 20\n")
    r = subprocess.run([gen, "-s", "300", os.path.join(d, "audit.db")],
                       input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [os.path.join(d, n) for n in ("audit.db", "audit.1.db",
                                         "audit.2.db")]


def verify(ctx, *files):
    return subprocess.run([ctx.tool, "verify", "--no-record"] + list(files),
                          capture_output=True, text=True)


@test(once=True)
def rotated_sealed_file_altered_afterwards_is_found_by_verify(ctx):
    d = os.path.join(ctx.scratch, "rotate-altered")
    files = gen_rotated(ctx, d)
    for f in files:
        assert os.path.exists(f), f
    r = verify(ctx, *files)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("continues into") == 2, r.stdout
    sealed = json.loads(q(files[1], "SELECT detail FROM events WHERE kind = "
                                    "'sealed'")[0]["detail"])
    assert sealed["sha256"] == hashlib.sha256(
        open(files[0], "rb").read()).hexdigest()

    # One byte: a digit of a client address in a row of the first file.
    data = bytearray(open(files[0], "rb").read())
    i = data.find(b"10.")
    assert i > 0
    data[i + 1] = ord("1") if data[i + 1] != ord("1") else ord("2")
    open(files[0], "wb").write(data)
    r = verify(ctx, files[0], files[1])
    assert r.returncode == 1 and "BROKEN" in r.stdout, r.stdout
    assert hashlib.sha256(bytes(data)).hexdigest() != sealed["sha256"]

    # One row: a handshake of the middle file rewritten.
    files = gen_rotated(ctx, d)
    con = sqlite3.connect(files[1])
    con.execute("UPDATE handshakes SET client_addr = '192.0.2.1' WHERE id = "
                "(SELECT min(id) + 5 FROM handshakes)")
    con.commit()
    con.close()
    r = verify(ctx, *files)
    assert r.returncode == 1 and "BROKEN" in r.stdout, r.stdout

    # Its last row removed: the file ends before the next one begins.
    files = gen_rotated(ctx, d)
    con = sqlite3.connect(files[0])
    con.execute("DELETE FROM handshakes WHERE id = (SELECT max(id) FROM "
                "handshakes)")
    con.commit()
    con.close()
    r = verify(ctx, files[0], files[1])
    assert r.returncode == 1, r.stdout


@test(once=True)
def rotate_directive_errors_name_the_line(ctx):
    base = os.path.join(ctx.scratch, "rotate-conf")
    cases = [
        # a pattern that nothing would rotate
        ("MTLSAuditDatabase %s/db/audit-%%Y-%%m.db\n" % base,
         r"is a strftime pattern, but MTLSAuditRotate is off"),
        ("MTLSAuditDatabase %s/db/audit-%%Y-%%m.db\nMTLSAuditRotate off\n"
         % base, r"MTLSAuditRotate is off at .*httpd.conf:\d+"),
        ("MTLSAuditRotate hourly\n", r"MTLSAuditRotate: 'hourly' is not"),
        ("MTLSAuditRotate 10K\n", r"a size of at least 64K"),
        ("MTLSAuditDatabase %s/db-%%Y/audit.db\nMTLSAuditRotate monthly\n"
         % base, r"in the file's name only"),
    ]
    for extra, want in cases:
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        srv = server_mod.Server(base, ctx.pki, mpm=ctx.srv.mpm,
                                extra_global=extra)
        r = srv.httpd("-t")
        out = r.stdout + r.stderr
        assert r.returncode != 0, (extra, out)
        assert re.search(want, out), (extra, out)
    # and the good ones pass
    for extra in ("MTLSAuditRotate 500M\n", "MTLSAuditRotate 2G\n",
                  "MTLSAuditDatabase %s/db/audit-%%Y-%%m.db\n"
                  "MTLSAuditRotate monthly\n" % base):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        srv = server_mod.Server(base, ctx.pki, mpm=ctx.srv.mpm,
                                extra_global=extra)
        r = srv.httpd("-t")
        assert r.returncode == 0, (extra, r.stdout + r.stderr)


@test(once=True)
def rotation_carries_the_policy_in_force_into_each_file(ctx):
    """A file holds the TLS policy its period ran under, however long ago
    the server started: after its 'rotate' event, each vhost's full policy
    row of the last start, marked carried; the tool reads a later file
    alone with its policy, a rotation is no policy change, and a reload
    that changes nothing repeats the carried row of its own file."""
    srv = rotating_server(ctx, "rotate-policy")
    start_with_period(srv)
    d = os.path.join(srv.root, "auditdb")
    contexts = client_contexts(ctx)
    try:
        end = time.time() + 3 * PERIOD + 0.5
        while time.time() < end:
            attempt(srv, "ec", contexts)
            time.sleep(0.2)
        wait_end = time.time() + 30
        while len(db_files(d)) < 3 and time.time() < wait_end:
            time.sleep(0.2)
        srv.graceful()
        attempt(srv, "ec", contexts)
        time.sleep(1)
    finally:
        srv.stop()
    order = chain_order(db_files(d))
    assert len(order) >= 3, order
    started = q(order[0], "SELECT id, time_us, detail FROM events WHERE "
                          "kind = 'policy' ORDER BY id")
    assert started, "no policy rows at start"
    want = {(json.loads(r["detail"])["vhost"],
             tuple(json.loads(r["detail"])["addresses"])):
            (json.loads(r["detail"])["digest"], r["time_us"]) for r in started}
    for f in order[1:]:
        ev = q(f, "SELECT id, kind, detail FROM events ORDER BY id")
        assert ev[0]["kind"] == "rotate", ev[0]
        carried = []
        for e in ev[1:]:
            if e["kind"] != "policy":
                break
            carried.append(json.loads(e["detail"]))
        got = {(c["vhost"], tuple(c["addresses"])): (c["digest"],
                                                      c["since_us"])
               for c in carried}
        assert got == want, (f, got, want)
        for c in carried:
            assert "changed" not in c and "unchanged_since" not in c, c
            assert "cas" in c and "verify" in c, c
    # The last file alone: its policy is known.
    r = subprocess.run([ctx.tool, "policy", "--format", "json", order[-1]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no policy recorded" not in r.stdout, r.stdout
    for vhost, _ in want:
        assert json.dumps(vhost) in r.stdout, (vhost, r.stdout[:2000])
    # Over all the files, rotations are no change: each vhost's first row.
    r = subprocess.run([ctx.tool, "policy", "--history", "--format", "json"]
                       + order, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    hist = json.loads(r.stdout)
    rows = hist if isinstance(hist, list) else hist.get("changes", hist)
    assert len(rows) == len(want), json.dumps(hist)[:3000]
    # The reload, in the live file: unchanged since that file's own row.
    live = q(order[-1], "SELECT id, detail FROM events WHERE kind = "
                        "'policy' ORDER BY id")
    short = [json.loads(x["detail"]) for x in live
             if "unchanged_since" in json.loads(x["detail"])]
    ids = {x["id"] for x in live}
    assert short and all(x["unchanged_since"] in ids for x in short), live
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


def slow_sealer_server(ctx, name, period, delay):
    """A rotating server whose sealers sleep delay seconds before they fill
    a sealed file (MTLS_AUDIT_TEST_SEAL_DELAY_MS, read only when set), and
    the next boundary at least 2 s away."""
    srv = rotating_server(ctx, name)
    os.environ["MTLS_AUDIT_TEST_SEAL_DELAY_MS"] = str(int(delay * 1000))
    try:
        start_with_period(srv, period)
    finally:
        del os.environ["MTLS_AUDIT_TEST_SEAL_DELAY_MS"]
    return srv, (int(time.time() + 2) // period + 1) * period


@test(once=True)
def a_slow_summary_fill_does_not_stop_writing_into_the_next_file(ctx):
    # The sealer sleeps DELAY before it fills the sealed file's summaries
    # (MTLS_AUDIT_TEST_SEAL_DELAY_MS, read only when set): meanwhile the
    # writer writes on in the next file, nothing is lost, and then the
    # 'sealed' event and line come, and verify checks the file by its hash.
    # Periods of 10 s: the server stops (about 6 s past the boundary)
    # before the next one.
    period, delay = 10, 4.0
    srv, boundary = slow_sealer_server(ctx, "rotate-slow-seal", period, delay)
    d = os.path.join(srv.root, "auditdb")
    contexts = client_contexts(ctx)
    try:
        ts, counts = start_load(srv, contexts, boundary + 3, 4)
        # The rotation: the first record past the boundary seals the file.
        end = boundary + 5
        while time.time() < end and len(db_files(d)) < 2:
            time.sleep(0.1)
        files = db_files(d)
        assert len(files) == 2, files
        old, new = chain_order(files)
        seal = q(old, "SELECT time_us FROM events WHERE kind = 'seal'")
        assert seal, "the old file is sealed"
        sealed_at = seal[0]["time_us"] / 1e6
        # While the sealer sleeps: handshakes made now are in the next
        # file within about the flush interval (1 s).
        mark = time.time()
        for _ in range(3):
            assert attempt(srv, "ec", contexts)
        end = time.time() + 1.5
        while time.time() < end:
            n = q(new, "SELECT count(*) AS n FROM handshakes WHERE time_us "
                       ">= ?", (int(mark * 1e6),))[0]["n"]
            if n >= 3:
                break
            time.sleep(0.1)
        assert n >= 3, ("handshakes written while the sealer works", n)
        still = time.time()
        assert still < sealed_at + delay, (
            "checked before the sealer woke", still - sealed_at)
        assert not q(new, "SELECT id FROM events WHERE kind = 'sealed'")
        assert q(old, "SELECT count(*) AS n FROM summaries")[0]["n"] == 0
        for t in ts:
            t.join()
        attempted = sum(counts.values()) + 3
        # After the delay: the record of the seal, at the writer's next
        # pass.
        end = sealed_at + delay + 10
        while time.time() < end and not q(new, "SELECT id FROM events "
                                               "WHERE kind = 'sealed'"):
            time.sleep(0.2)
        assert q(new, "SELECT id FROM events WHERE kind = 'sealed'"), \
            "the sealed event"
        end = time.time() + 10
        while time.time() < end:
            n = sum(q(f, "SELECT count(*) AS n FROM handshakes")[0]["n"]
                    for f in db_files(d))
            if n >= attempted:
                break
            time.sleep(0.2)
    finally:
        for t in ts:
            t.join()
        srv.stop()
    files = db_files(d)
    assert len(files) == 2, files
    order = check_rotated(ctx, srv, files, attempted)
    assert order == [old, new]
    assert q(old, "SELECT count(*) AS n FROM summaries")[0]["n"] > 0
    n = sum(q(f, "SELECT count(*) AS n FROM handshakes")[0]["n"]
            for f in files)
    assert n == attempted, (n, attempted)
    gaps = sum(q(f, "SELECT count(*) AS n FROM events WHERE kind = "
                    "'gap'")[0]["n"] for f in files)
    assert gaps == 0, gaps
    v = subprocess.run([ctx.tool, "verify", "--no-record", d],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    assert re.search(r"sealed +ok +its SHA-256 matches the one %s recorded"
                     % re.escape(new), v.stdout), v.stdout
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def a_file_left_unfinished_at_a_graceful_restart_is_finished_by_the_next_children(ctx):
    # The child that sealed the file ends (graceful restart) while its
    # sealer still sleeps: it gives up after 2 s, and a child of the new
    # generation finishes the file (summaries, hash, 'sealed' record).
    period, delay = 15, 4.0
    srv, boundary = slow_sealer_server(ctx, "rotate-unfinished", period,
                                       delay)
    d = os.path.join(srv.root, "auditdb")
    contexts = client_contexts(ctx)
    attempted = 0
    try:
        while time.time() < boundary - 0.5:
            attempted += attempt(srv, "ec", contexts)
            time.sleep(0.2)
        while time.time() < boundary + 5 and len(db_files(d)) < 2:
            attempted += attempt(srv, "ec", contexts)
            time.sleep(0.1)
        files = db_files(d)
        assert len(files) == 2, files
        old, new = chain_order(files)
        srv.graceful()
        end = time.time() + delay + 10
        while time.time() < end and not q(new, "SELECT id FROM events "
                                               "WHERE kind = 'sealed'"):
            attempted += attempt(srv, "ec", contexts)
            time.sleep(0.3)
        assert time.time() < boundary + period, "stopped before the next"
    finally:
        srv.stop()
    log = srv.read_error_log()
    assert re.search(r"%s is sealed, but this process ends before its "
                     r"summaries" % re.escape(old), log), log[-3000:]
    assert re.search(r"%s is sealed, but its SHA-256 is not recorded in %s: "
                     r"finishing it" % (re.escape(old), re.escape(new)), log)
    files = db_files(d)
    assert len(files) == 2, files
    check_rotated(ctx, srv, files, attempted)
    assert q(old, "SELECT count(*) AS n FROM summaries")[0]["n"] > 0
    v = subprocess.run([ctx.tool, "verify", "--no-record", d],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    assert re.search(r"sealed +ok +its SHA-256 matches the one %s recorded"
                     % re.escape(new), v.stdout), v.stdout
    ctx.srv.err_offset = len(ctx.srv.read_error_log())
