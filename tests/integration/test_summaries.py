"""Summaries (schema 5): the counts by hour that a sealed file carries,
filled when it is sealed (here by `mtls-audit archive`), and the reports
that read them, and only the rows they point to, instead of every row.
The data sets are written by build/mtls-gen through the core's own write
path, then archived by the real tool."""
import calendar
import json
import os
import re
import sqlite3
import subprocess
from collections import Counter, defaultdict

from harness import Registry
from test_tool import GEN, private_dir

test = Registry()

GOOD = "TLS_AES_256_GCM_SHA384"
SINCE, UNTIL = "2026-11-01", "2026-11-03"
HOUR = 3600 * 10**6


def script():
    """Two days of varied traffic: random handshakes (failures, shared
    certificates), a burst of rejections from one client with one
    certificate, an accepted handshake without a certificate and its
    request (incomplete, unauthenticated), a card number in a path, TLS
    1.0, a gap; all in time order (no child's clock goes backwards)."""
    lines = [
        "cert good ec sha256 2025-01-01T00:00:00Z 2028-01-01T00:00:00Z good",
        "cert weak rsa1024 sha1 2025-01-01T00:00:00Z 2028-01-01T00:00:00Z weak",
        "event start 2026-10-31T23:00:00Z",
        "bulk 3000 2026-11-01T00:00:00Z 2026-11-01T12:00:00Z 40",
    ]
    for i in range(12):
        lines.append("hs 2026-11-01T13:%02d:%02dZ good rejected 1.3 %s 20 "
                     "10.7.7.7" % (i * 2, i, GOOD))
    lines += [
        "hs 2026-11-01T14:00:00Z - accepted 1.3 %s - 10.0.0.50 none" % GOOD,
        "req /open 200",
        "hs 2026-11-01T14:10:00Z good accepted 1.3 %s 0 10.0.0.51" % GOOD,
        "req /pay/4111111111111111 200",
        "hs 2026-11-01T14:20:00Z weak accepted 1.0 ECDHE-RSA-AES256-SHA 0 "
        "10.0.0.52",
        "req /legacy 200",
        "event gap 2026-11-01T15:00:00Z 7",
        "bulk 3000 2026-11-01T18:00:00Z 2026-11-02T23:00:00Z 40",
        "hs 2026-11-03T01:00:00Z good accepted 1.3 %s 0 10.0.0.60" % GOOD,
        "req /after 200",
    ]
    return "\n".join(lines) + "\n"


def sealed(ctx, name, text=None):
    """Generate, then archive everything before 2026-11-03 into a new
    file: the sealed file's path (and the live file's)."""
    d = private_dir(ctx, "summaries-" + name)
    live, arc = os.path.join(d, "live.db"), os.path.join(d, "archive.db")
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    r = subprocess.run([GEN, live], input=text or script(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([ctx.tool, "archive", "--before", UNTIL, live, arc],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return arc, live


def run_report(ctx, db, standard, fmt, env=None, extra=("--no-verify",)):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([ctx.tool, "report", "--standard", standard,
                        "--since", SINCE, "--until", UNTIL, "--format", fmt]
                       + list(extra) + [db],
                       capture_output=True, text=True, env=e)
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    return r.stdout


def without_time(text):
    """A report's text without the moment it was made."""
    return re.sub(r"(enerated\W*(?:</td><td>)?)\d{4}-\d\d-\d\dT[\d:.]+Z",
                  r"\1TIME", text)


def without_sha(text):
    """... and without the file's SHA-256 (for a file changed since)."""
    return re.sub(r"[0-9a-f]{64}", "SHA256", without_time(text))


def checks(doc_text):
    return {c["id"]: c for c in json.loads(doc_text)["checks"]}


@test(once=True)
def archive_output_holds_summaries_that_count_its_rows(ctx):
    """Every kind of summary row, recomputed here from the archive's rows
    in Python, equals what mtls_summary_fill wrote."""
    arc, _ = sealed(ctx, "counts")
    db = sqlite3.connect(arc)
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 5
    certs = {r[0]: r[1:] for r in db.execute(
        "SELECT id, not_before, not_after FROM certificates")}
    hs = db.execute("SELECT id, time_us, server_name, sni, tls_version, "
                    "cipher, outcome, verify_result, verify_error, alert, "
                    "cert_id, client_addr, pid FROM handshakes ORDER BY id"
                    ).fetchall()
    assert len(hs) > 6000, len(hs)
    # handshakes by hour and their dimensions
    want = Counter()
    complete = Counter()
    for (i, t, srv, sni, ver, ciph, out, vr, verr, alert, cid, client,
         pid) in hs:
        key = (t // HOUR, srv, sni, ver, ciph, out, vr, verr, alert,
               int(cid in certs))
        want[key] += 1
        complete[key] += bool(client and srv and (out != 1 or cid in certs))
    got = {tuple(r[:10]): r[10:] for r in db.execute(
        "SELECT hour, server_name, sni, tls_version, cipher, outcome, "
        "verify_result, verify_error, alert, cert_id, n, complete FROM "
        "summaries WHERE kind = 'handshakes'")}
    assert set(got) == set(want), set(got) ^ set(want)
    for k, n in want.items():
        assert got[k] == (n, complete[k]), (k, got[k], n, complete[k])
    assert sum(n for n, c in got.values()) > sum(c for n, c in got.values())
    # failures by half hour, client, reason, certificate; first row
    want = {}
    for (i, t, srv, sni, ver, ciph, out, vr, verr, alert, cid, client,
         pid) in hs:
        if out == 1:
            continue
        key = (t // HOUR, t // (HOUR // 2) % 2, sni, out, verr, alert,
               cid if cid in certs else None, client)
        n, first = want.get(key, (0, i))
        want[key] = (n + 1, min(first, i))
    got = {tuple(r[:8]): tuple(r[8:]) for r in db.execute(
        "SELECT hour, slot, sni, outcome, verify_error, alert, cert_id, "
        "client_addr, n, first_id FROM summaries WHERE kind = 'failure'")}
    assert got == want
    # certificates shared by more than 3 addresses in an hour
    addrs = defaultdict(list)
    for (i, t, srv, sni, ver, ciph, out, vr, verr, alert, cid, client,
         pid) in hs:
        if out == 1 and cid in certs and client:
            if client not in addrs[(t // HOUR, cid)]:
                addrs[(t // HOUR, cid)].append(client)
    want = {k: (len(v), ",".join(v[:4])) for k, v in addrs.items()
            if len(v) > 3}
    got = {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "SELECT hour, cert_id, n, client_addr FROM summaries WHERE kind = "
        "'shared'")}
    assert want and got == want
    # requests by hour and status; unauthenticated ones; card numbers
    verified = {i for (i, t, srv, sni, ver, ciph, out, vr, verr, alert, cid,
                       client, pid) in hs if cid in certs and vr == 0}
    want = defaultdict(lambda: [0, 0, 0])
    for t, status, h, path in db.execute(
            "SELECT time_us, status, handshake_id, path FROM requests"):
        w = want[(t // HOUR, status)]
        w[0] += 1
        w[1] += h not in verified
        w[2] += "4111111111111111" in path
    got = {(r[0], r[1]): list(r[2:]) for r in db.execute(
        "SELECT hour, status, n, unauth, pan FROM summaries WHERE kind = "
        "'requests'")}
    assert got == dict(want)
    assert sum(v[1] for v in got.values()) == 1
    assert sum(v[2] for v in got.values()) == 1
    assert not db.execute("SELECT count(*) FROM summaries WHERE kind = "
                          "'backwards'").fetchone()[0]
    db.close()


@test(once=True)
def report_over_a_sealed_file_equals_the_report_over_its_rows(ctx):
    """The three standards in the four formats over a sealed file (its
    summaries read) equal, byte for byte but the time they were made, the
    same reports reading every row (MTLS_AUDIT_NO_SUMMARIES=1); and, check
    by check, the report over the same file unsealed (its archive cut
    removed: a file that is not sealed is read row by row)."""
    arc, _ = sealed(ctx, "equal")
    outs = {}
    for std in ("pci-dss", "hipaa", "summary"):
        for fmt in ("json", "text", "csv", "html"):
            a = run_report(ctx, arc, std, fmt)
            b = run_report(ctx, arc, std, fmt,
                           env={"MTLS_AUDIT_NO_SUMMARIES": "1"})
            assert without_time(a) == without_time(b), (std, fmt)
            outs[std] = a if fmt == "json" else outs.get(std)
    # The data set has something to show in the checks read from the
    # summaries and from the rows they point to.
    c = checks(outs["pci-dss"])
    text = json.dumps(c)
    for needle in ("10.7.7.7", "/pay/", "/open", "TLSv1"):
        assert needle in text, needle
    db = sqlite3.connect(arc)
    db.execute("DELETE FROM chain_cut WHERE side = 'end'")
    db.commit()
    db.close()
    for std in ("pci-dss", "hipaa", "summary"):
        a = checks(without_sha(outs[std]))
        b = checks(without_sha(run_report(ctx, arc, std, "json")))
        assert set(a) == set(b), std
        for cid in a:
            if cid == "10.2.1.3":
                # reads are now recorded in the unsealed file (its events
                # have no end): compare all but that count
                a[cid].pop("metric", None)
                b[cid].pop("metric", None)
                a[cid].pop("evidence", None)
                b[cid].pop("evidence", None)
            assert a[cid] == b[cid], (std, cid, a[cid], b[cid])


@test(once=True)
def report_over_a_sealed_file_reads_its_summaries(ctx):
    """The sealed file's summaries are what the report counts: one
    accepted handshake of an hour moved, in the summaries only, to
    rejected changes the figures (the rows say otherwise), while the same
    report reading the rows does not change; a period that starts within
    that day reads the day from its rows."""
    arc, _ = sealed(ctx, "used")
    before = json.loads(run_report(ctx, arc, "summary", "json"))
    db = sqlite3.connect(arc)
    row = db.execute("SELECT rowid, hour, server_name, sni, tls_version, "
                     "cipher FROM summaries WHERE kind = 'handshakes' AND "
                     "outcome = 1 AND n > 1 AND hour >= ? LIMIT 1",
                     (calendar.timegm((2026, 11, 1, 0, 0, 0)) // 3600,)
                     ).fetchone()
    assert row
    db.execute("UPDATE summaries SET n = n - 1, complete = complete - 1 "
               "WHERE rowid = ?", (row[0],))
    db.execute("INSERT INTO summaries (hour, kind, server_name, sni, "
               "tls_version, cipher, outcome, verify_result, verify_error, "
               "alert, cert_id, n, complete, outside, first_us, last_us) "
               "VALUES (?, 'handshakes', ?, ?, ?, ?, 2, 20, 'forged', 42, 1, "
               "1, 1, 0, ?, ?)", row[1:] + (row[1] * HOUR, row[1] * HOUR))
    db.commit()
    db.close()
    after = run_report(ctx, arc, "summary", "json")
    rows = run_report(ctx, arc, "summary", "json",
                      env={"MTLS_AUDIT_NO_SUMMARIES": "1"})
    assert "forged" in after
    assert "forged" not in rows
    assert without_sha(json.dumps(json.loads(rows)["checks"])) == \
        without_sha(json.dumps(before["checks"]))
    hours = run_report(ctx, arc, "summary", "json",
                       extra=("--no-verify", "--since",
                              "2026-11-01T00:30:00Z"))
    assert "forged" not in hours


@test(once=True)
def sealed_file_whose_clock_goes_backwards_is_read_row_by_row(ctx):
    """A child's clock going backwards: the summaries say so (kind
    backwards), and the report finds it, as it does reading the rows."""
    text = script().replace(
        "event gap 2026-11-01T15:00:00Z 7",
        "hs 2026-11-01T15:00:08Z good accepted 1.3 %s 0 10.0.0.70\n"
        "hs 2026-11-01T15:00:00Z good accepted 1.3 %s 0 10.0.0.71\n"
        "hs 2026-11-01T15:00:04Z good accepted 1.3 %s 0 10.0.0.72"
        % (GOOD, GOOD, GOOD))
    arc, _ = sealed(ctx, "backwards", text)
    db = sqlite3.connect(arc)
    n = db.execute("SELECT sum(n) FROM summaries WHERE kind = 'backwards'"
                   ).fetchone()[0]
    db.close()
    assert n and n >= 1, n
    a = run_report(ctx, arc, "pci-dss", "json")
    b = run_report(ctx, arc, "pci-dss", "json",
                   env={"MTLS_AUDIT_NO_SUMMARIES": "1"})
    assert without_time(a) == without_time(b)
    assert "goes back" in a or "backwards" in a



@test(once=True)
def report_over_rotated_files_reads_their_summaries_and_equals_the_rows(ctx):
    """Files sealed by the store's rotation every 1,500 handshakes (so an
    hour, a half hour's burst and a certificate's day fall across files):
    with the default integrity check the sealed files are established by
    their SHA-256 (no walk) and read from their summaries; every standard
    in every format equals the same report reading every row, and so do
    reports whose period starts and ends within a day (those days read
    from their rows, the others from the summaries).  (The live
    file is left out: each report records its read in it.)"""
    d = private_dir(ctx, "summaries-rotated")
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    r = subprocess.run([GEN, "-s", "1500", os.path.join(d, "audit.db")],
                       input=script(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    order = re.findall(r"mtls-gen: sealed (\S+) -> (\S+)", r.stderr)
    assert len(order) >= 3, r.stderr
    files = [a for a, b in order]
    for std, fmt, since, until in [
            (std, fmt, SINCE, UNTIL) for std in ("pci-dss", "hipaa", "summary")
            for fmt in ("json", "text", "csv", "html")] + [
            (std, "json", "2026-11-01T05:17:00Z", "2026-11-02T19:43:00Z")
            for std in ("pci-dss", "hipaa", "summary")] + [
            ("pci-dss", "json", "2026-11-01T13:10:00Z", "2026-11-03T00:00:00Z")]:
        if True:
            e = dict(os.environ)
            args = [ctx.tool, "report", "--standard", std, "--since", since,
                    "--until", until, "--format", fmt] + files
            a = subprocess.run(args, capture_output=True, text=True, env=e)
            e["MTLS_AUDIT_NO_SUMMARIES"] = "1"
            b = subprocess.run(args, capture_output=True, text=True, env=e)
            assert a.returncode in (0, 1), a.stderr
            assert (a.returncode, without_time(a.stdout)) == \
                (b.returncode, without_time(b.stdout)), (std, fmt)
            if fmt == "json":
                dbs = json.loads(a.stdout)["report"]["databases"]
                assert [x["established"] for x in dbs[:-1]] == \
                    ["sha256"] * (len(dbs) - 1), dbs
                if std == "pci-dss" and since == SINCE:
                    text = json.dumps(checks(a.stdout))
                    for needle in ("10.7.7.7", "/pay/", "/open", "TLSv1"):
                        assert needle in text, needle
