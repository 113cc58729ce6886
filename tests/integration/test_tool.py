"""The mtls-audit tool: on the database the real server wrote, and on
generated data sets (written by build/mtls-gen through the core's own
write path) whose expected statuses are known."""
import csv
import datetime
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess

from harness import Registry, keep_going

test = Registry()

GEN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "build", "mtls-gen")


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
SINCE = iso(NOW - 20 * DAY)[:10]
GOOD = "TLS_AES_256_GCM_SHA384"


def private_dir(ctx, name):
    d = os.path.join(ctx.scratch, "tool", name)
    os.makedirs(d, exist_ok=True)
    os.chmod(os.path.join(ctx.scratch, "tool"), 0o700)
    return d


def gen(ctx, name, script):
    """A database from a mtls-gen script; returns its path."""
    db = os.path.join(private_dir(ctx, "data"), name + ".db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    r = subprocess.run([GEN, db], input=script, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return db


def base_script(extra="", certs=""):
    """A clean month: a good certificate, accepted TLS 1.3 handshakes with
    requests, a few failures, a start event."""
    lines = [
        "cert good ec sha256 %s %s good-client" % (iso(NOW - 400 * DAY),
                                                  iso(NOW + 400 * DAY)),
        certs,
        "event start %s" % iso(NOW - 15 * DAY),
    ]
    for i in range(5):
        t = NOW - (10 - i) * DAY
        lines.append("hs %s good accepted 1.3 %s 0 10.0.0.%d" % (iso(t), GOOD,
                                                                 i + 1))
        lines.append("req /api/v1/items/%d 200" % i)
        lines.append("hs %s - no_certificate 1.3 %s - 10.9.0.%d" % (
            iso(t + datetime.timedelta(minutes=5)), GOOD, i + 1))
    lines.append(extra)
    return "\n".join(lines) + "\n"


def report(ctx, db, standard="pci-dss", fmt="json", extra=()):
    args = [ctx.tool, "report", "--standard", standard, "--since", SINCE,
            "--format", fmt] + list(extra) + (db if isinstance(db, list) else [db])
    return subprocess.run(args, capture_output=True, text=True)


def checks(r):
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    doc = json.loads(r.stdout)
    return {c["id"]: c for c in doc["checks"]}, doc


def status(r, cid):
    c, _ = checks(r)
    return c[cid]["status"]


@test(once=True)
def report_clean_month_has_no_fail_and_exits_0(ctx):
    db = gen(ctx, "clean", base_script())
    r = report(ctx, db)
    c, doc = checks(r)
    assert r.returncode == 0, [(k, v["status"]) for k, v in c.items()
                               if v["status"] == "FAIL"]
    assert c["4.2.1.1"]["status"] == "PASS", c["4.2.1.1"]
    assert c["12.3.3"]["status"] == "PASS"
    assert c["8.2.1"]["status"] == "PASS"
    assert c["3.5.1"]["status"] == "PASS"
    assert c["10.6"]["status"] == "MANUAL"
    assert doc["report"]["records"]["handshakes"] == 10
    for k, v in c.items():
        for field in ("id", "title", "status", "metric", "rule", "evidence"):
            assert field in v, (k, field)
        assert v["status"] in ("PASS", "FAIL", "ATTENTION", "MANUAL", "N/A")


@test(once=True)
def tls10_acceptance_fails_4_2_1(ctx):
    db = gen(ctx, "tls10", base_script(
        "hs %s good accepted 1.0 ECDHE-RSA-AES256-SHA 0 10.0.0.9" %
        iso(NOW - 3 * DAY)))
    r = report(ctx, db)
    assert r.returncode == 1
    c, _ = checks(r)
    assert c["4.2.1"]["status"] == "FAIL", c["4.2.1"]
    assert c["12.3.3"]["status"] == "FAIL"
    assert any(e["tls_version"] == "TLSv1" and e["grade"] == "prohibited"
               for e in c["4.2.1"]["evidence"]), c["4.2.1"]["evidence"]


@test(once=True)
def expired_certificate_accepted_under_optional_no_ca_fails(ctx):
    db = gen(ctx, "expired", base_script(
        "hs %s old accepted 1.3 %s 10 10.0.0.7 optional_no_ca" %
        (iso(NOW - 2 * DAY), GOOD),
        certs="cert old ec sha256 %s %s expired-client" % (
            iso(NOW - 800 * DAY), iso(NOW - 100 * DAY))))
    r = report(ctx, db)
    assert r.returncode == 1
    c, _ = checks(r)
    assert c["4.2.1"]["status"] == "FAIL", c["4.2.1"]["metric"]
    assert c["4.2.1.1"]["status"] == "FAIL", c["4.2.1.1"]["metric"]
    assert "1 handshakes accepted outside validity" in c["4.2.1.1"]["metric"]
    h, _ = checks(report(ctx, db, "hipaa"))
    assert h["164.312(d)"]["status"] == "FAIL"


@test(once=True)
def certificate_expiring_in_10_days_is_attention(ctx):
    db = gen(ctx, "expiring", base_script(
        "hs %s soon accepted 1.3 %s 0 10.0.0.8\nreq /x 200" %
        (iso(NOW - 1 * DAY), GOOD),
        certs="cert soon ec sha256 %s %s soon-client" % (
            iso(NOW - 300 * DAY), iso(NOW + 10 * DAY))))
    r = report(ctx, db)
    c, _ = checks(r)
    assert c["4.2.1.1"]["status"] == "ATTENTION", c["4.2.1.1"]
    ev = [e for e in c["4.2.1.1"]["evidence"] if e["finding"] == "expiring"]
    assert len(ev) == 1 and ev[0]["subject_dn"] == "CN=soon-client,O=mtls-gen"
    assert int(ev[0]["days_left"]) in (9, 10)
    # certs --expiring lists it, and only it.
    r = subprocess.run([ctx.tool, "certs", "--expiring", "30", "--format",
                        "json", db], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["subject_dn"] for x in rows] == ["CN=soon-client,O=mtls-gen"]
    assert rows[0]["accepted"] == 1
    r = subprocess.run([ctx.tool, "certs", "--format", "json", db],
                       capture_output=True, text=True)
    assert len(json.loads(r.stdout)) == 2


@test(once=True)
def card_number_in_a_path_fails_3_5_1_and_is_masked(ctx):
    db = gen(ctx, "pan", base_script(
        "hs %s good accepted 1.3 %s 0 10.0.0.5\nreq /pay/4111-1111-1111-1111/"
        "ok 200\nreq /order/1234567890123456 200" % (iso(NOW - DAY), GOOD)))
    for fmt in ("json", "text", "html", "csv"):
        r = report(ctx, db, fmt=fmt)
        assert r.returncode == 1, (fmt, r.stderr)
        assert "4111-1111-1111-1111" not in r.stdout, fmt
    c, _ = checks(report(ctx, db))
    assert c["3.5.1"]["status"] == "FAIL"
    assert "1 of" in c["3.5.1"]["metric"], c["3.5.1"]["metric"]
    assert c["3.5.1"]["evidence"][0]["path_masked"] == \
        "/pay/****-****-****-1111/ok", c["3.5.1"]["evidence"]
    clean = gen(ctx, "nopan", base_script(
        "hs %s good accepted 1.3 %s 0 10.0.0.5\nreq /order/1234567890123456 "
        "200" % (iso(NOW - DAY), GOOD)))
    assert status(report(ctx, clean), "3.5.1") == "PASS"


@test(once=True)
def retention_10_5_1(ctx):
    young = gen(ctx, "young", base_script())
    assert status(report(ctx, young), "10.5.1") == "ATTENTION"
    lines = ["cert good ec sha256 %s %s c" % (iso(NOW - 900 * DAY),
                                             iso(NOW + 400 * DAY)),
             "event start %s" % iso(NOW - 400 * DAY)]
    for d in (400, 200, 5):
        lines.append("hs %s good accepted 1.3 %s 0 10.0.0.1\nreq /a 200" % (
            iso(NOW - d * DAY), GOOD))
    old = gen(ctx, "old", "\n".join(lines) + "\n")
    assert status(report(ctx, old), "10.5.1") == "PASS"
    pruned = gen(ctx, "pruned", base_script())
    con = sqlite3.connect(pruned)
    con.execute("DELETE FROM handshakes WHERE id <= 2")
    con.commit()
    con.close()
    r = report(ctx, pruned)
    assert status(r, "10.5.1") == "FAIL"


@test(once=True)
def tampered_row_fails_10_3_4_and_verify_exits_1(ctx):
    db = gen(ctx, "tamper", base_script())
    assert status(report(ctx, db), "10.3.4") == "ATTENTION"
    r = subprocess.run([ctx.tool, "verify", "--no-record", db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    con = sqlite3.connect(db)
    con.execute("UPDATE handshakes SET outcome = 1 WHERE id = 4")
    con.commit()
    con.close()
    r = subprocess.run([ctx.tool, "verify", "--no-record", db],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert "handshakes   BROKEN at id 4" in r.stdout, r.stdout
    r = report(ctx, db)
    assert r.returncode == 1
    c, doc = checks(r)
    assert c["10.3.4"]["status"] == "FAIL"
    assert c["10.7.2"]["status"] == "FAIL"
    assert doc["report"]["databases"][0]["chain_broken"] is True


@test(once=True)
def hostile_fields_are_escaped_in_every_format(ctx):
    hostile = '=HYPERLINK("http://evil")<script>alert(1)</script>;\'q\' Zoë'
    db = gen(ctx, "hostile", base_script(
        "hs %s evil accepted 1.3 %s 0 =1+1\nreq /<img src=x>/\"q\" 200" % (
            iso(NOW - DAY), GOOD),
        certs="cert evil ec sha256 %s %s %s" % (
            iso(NOW - 10 * DAY), iso(NOW + 20 * DAY), hostile)))
    r = report(ctx, db, fmt="html")
    assert r.returncode in (0, 1), r.stderr
    assert "<script>" not in r.stdout and "<img" not in r.stdout
    # RFC 2253 escapes < and > with a backslash; HTML escapes the rest.
    assert "\\&lt;script\\&gt;" in r.stdout and "Zoë" in r.stdout
    # JSON keeps the exact text.
    c, _ = checks(report(ctx, db))
    subjects = [e.get("subject_dn") for e in c["4.2.1.1"]["evidence"]]
    assert any(s and "\\<script\\>alert(1)\\</script\\>" in s and "Zoë" in s
               for s in subjects), subjects
    # CSV: a cell that would start a formula starts with a quote instead.
    r = subprocess.run([ctx.tool, "query", "--format", "csv", "--limit", "0",
                        db], capture_output=True, text=True)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    evil = [x for x in rows if "1+1" in x["client_addr"]]
    assert evil and evil[0]["client_addr"] == "'=1+1", evil
    assert any("<script" in (x["subject_dn"] or "") for x in rows)
    r = subprocess.run([ctx.tool, "query", "--format", "json", db],
                       capture_output=True, text=True)
    assert "<script" not in r.stdout          # \u003c in JSON
    assert any("<script" in (x["subject_dn"] or "")
               for x in json.loads(r.stdout))


@test(once=True)
def hostile_real_certificates_from_the_server(ctx):
    # The server's database holds the <script> subject and 122 SANs.
    for fmt in ("html", "json", "text", "csv"):
        r = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                            "--format", fmt, ctx.srv.db], capture_output=True,
                           text=True)
        assert r.returncode in (0, 1), (fmt, r.returncode, r.stderr)
        if fmt == "html":
            assert "<script>" not in r.stdout
    r = subprocess.run([ctx.tool, "certs", "--format", "json", ctx.srv.db],
                       capture_output=True, text=True)
    certs = json.loads(r.stdout)
    many = [c for c in certs if c["subject_dn"] == "CN=many-sans"]
    assert many and many[0]["san"].count("DNS:") == 120, many


@test(once=True)
def broken_inputs_exit_3_with_a_clear_error(ctx):
    d = private_dir(ctx, "broken")
    junk = os.path.join(d, "junk.db")
    with open(junk, "wb") as f:
        f.write(os.urandom(8192))
    other = os.path.join(d, "other.db")
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    good = gen(ctx, "fortrunc", base_script())
    trunc = os.path.join(d, "trunc.db")
    with open(good, "rb") as f:
        data = f.read()
    with open(trunc, "wb") as f:
        f.write(data[:len(data) // 3])
    empty = os.path.join(d, "empty.db")
    open(empty, "w").close()
    for path in (junk, other, trunc, empty, os.path.join(d, "missing.db")):
        for cmd in (["query"], ["certs"], ["verify"],
                    ["report", "--standard", "summary"]):
            r = subprocess.run([ctx.tool] + cmd + [path], capture_output=True,
                               text=True)
            assert r.returncode == 3, (cmd, path, r.returncode, r.stdout,
                                       r.stderr)
            assert r.stderr.startswith("mtls-audit: "), r.stderr
            assert "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(d, "missing.db"))


@test(once=True)
def exit_codes_and_usage_errors(ctx):
    db = gen(ctx, "codes", base_script())
    bad = gen(ctx, "codes-fail", base_script(
        "hs %s good accepted 1.0 RC4-SHA 0 10.0.0.9" % iso(NOW - DAY)))
    cases = [
        ([ctx.tool, "report", "--standard", "summary", db], 0),
        ([ctx.tool, "report", "--standard", "pci-dss", bad], 1),
        ([ctx.tool], 2),
        ([ctx.tool, "frobnicate"], 2),
        ([ctx.tool, "report", db], 2),
        ([ctx.tool, "report", "--standard", "sox", db], 2),
        ([ctx.tool, "report", "--standard", "hipaa", "--format", "pdf", db], 2),
        ([ctx.tool, "report", "--standard", "hipaa", "--since", "yesterday",
          db], 2),
        ([ctx.tool, "report", "--standard", "hipaa", "--since", "2026-02-30x",
          db], 2),
        ([ctx.tool, "report", "--standard", "hipaa", "--since", "2026-11-20",
          "--until", "2026-11-01", db], 2),
        ([ctx.tool, "query", "--limit", "-3", db], 2),
        ([ctx.tool, "query", "--client", "10.0.0.0/33", db], 2),
        ([ctx.tool, "query", "--outcome", "maybe", db], 2),
        ([ctx.tool, "query", "--bogus", db], 2),
        ([ctx.tool, "query"], 2),
        ([ctx.tool, "certs", "--expiring", "soon", db], 2),
        ([ctx.tool, "verify"], 2),
        ([ctx.tool, "query", "/nonexistent/x.db"], 3),
        ([ctx.tool, "report", "--standard", "pci-dss", "-o",
          "/nonexistent/dir/r.html", db], 3),
    ]
    for args, want in cases:
        r = subprocess.run(args, capture_output=True, text=True)
        assert r.returncode == want, (args[1:], r.returncode, want, r.stderr)
        if want in (2, 3):
            assert r.stderr.startswith("mtls-audit: ") or \
                r.stderr.startswith("usage:"), (args[1:], r.stderr)
    # A full disk: the report must not exit 0.
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            r = subprocess.run([ctx.tool, "report", "--standard", "summary",
                                db], stdout=full, stderr=subprocess.PIPE,
                               text=True)
        assert r.returncode == 3, r.returncode


@test(once=True)
def query_filters_combine(ctx):
    db = gen(ctx, "filters", base_script(
        "cert x ec sha256 %s %s other-client\n" % (iso(NOW - 9 * DAY),
                                                  iso(NOW + 99 * DAY)) +
        "hs %s x rejected 1.3 %s 20 192.168.7.9\n" % (iso(NOW - 2 * DAY), GOOD)
        + "hs %s x accepted 1.2 ECDHE-ECDSA-AES256-GCM-SHA384 0 2001:db8::5" %
        iso(NOW - DAY)))

    def q(*args):
        r = subprocess.run([ctx.tool, "query", "--format", "json", "--limit",
                            "0"] + list(args) + [db], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert len(q()) == 12
    assert len(q("--outcome", "no_certificate")) == 5
    assert len(q("--client", "10.0.0.0/24")) == 5
    assert len(q("--client", "10.0.0.0/8")) == 10
    assert len(q("--client", "192.168.7.9")) == 1
    assert len(q("--client", "2001:db8::/32")) == 1
    assert len(q("--subject", "other-client")) == 2
    assert len(q("--subject", "other-client", "--outcome", "accepted")) == 1
    prefix = q("--subject", "good-client")[0]["cert_sha256"][:10]
    assert len(q("--cert", prefix.upper())) == 5
    since = iso(NOW - 3 * DAY)
    assert len(q("--since", since)) == 2
    assert len(q("--since", since[:10], "--until", iso(NOW - DAY))) >= 1
    rows = q("--since", iso(NOW - 30 * DAY))
    assert rows == sorted(rows, key=lambda x: x["time_utc"], reverse=True)


@test(once=True)
def several_databases_read_as_one(ctx):
    a = gen(ctx, "multi-a", base_script())
    b = gen(ctx, "multi-b", base_script(
        "hs %s good rejected 1.3 %s 10 10.5.5.5" % (iso(NOW - DAY), GOOD)))
    r = subprocess.run([ctx.tool, "query", "--format", "json", "--limit", "0",
                        a, b], capture_output=True, text=True)
    rows = json.loads(r.stdout)
    assert len(rows) == 21 and {x["source"] for x in rows} == {a, b}
    c, doc = checks(report(ctx, [a, b]))
    assert doc["report"]["records"]["handshakes"] == 21
    assert {d["path"] for d in doc["report"]["databases"]} == {a, b}
    assert all(len(d["sha256"]) == 64 for d in doc["report"]["databases"])
    assert {s["source"] for s in doc["report"]["scope"]} == {a, b}


@test(once=True)
def reads_are_recorded_as_access_events(ctx):
    db = gen(ctx, "access", base_script())
    subprocess.run([ctx.tool, "query", db], capture_output=True)
    subprocess.run([ctx.tool, "report", "--standard", "summary", db],
                   capture_output=True)
    con = sqlite3.connect(db)
    ev = [r[0] for r in con.execute("SELECT detail FROM events WHERE kind = "
                                    "'access' ORDER BY id")]
    con.close()
    assert len(ev) == 2 and "query" in ev[0] and "report" in ev[1], ev
    assert status(report(ctx, db), "10.2.1.3") == "PASS"
    r = subprocess.run([ctx.tool, "verify", db], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout


@test(once=True)
def access_events_name_the_command_exactly(ctx):
    """The detail of each `access` event is the command as run, the
    program's name once, then who ran it."""
    import pwd
    db = gen(ctx, "access-detail", base_script())
    q = subprocess.run([ctx.tool, "query", "--limit", "3", db],
                       capture_output=True, text=True)
    assert q.returncode == 0, q.stderr
    r = report(ctx, db, standard="summary")
    c, _ = checks(r)
    v = subprocess.run([ctx.tool, "verify", db], capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout
    con = sqlite3.connect(db)
    ev = [x[0] for x in con.execute("SELECT detail FROM events WHERE kind "
                                    "= 'access' ORDER BY id")]
    con.close()
    who = "by %s (uid %d)" % (pwd.getpwuid(os.geteuid()).pw_name,
                              os.geteuid())
    assert ev == [
        "mtls-audit query --limit 3 %s %s" % (db, who),
        "mtls-audit report --standard summary (%d checks, exit %d) %s"
        % (len(c), r.returncode, who),
        "mtls-audit verify %s %s" % (db, who),
    ], ev


@test(once=True)
def report_formats_on_the_servers_database(ctx):
    db = ctx.srv.db
    for std in ("pci-dss", "hipaa", "summary"):
        for fmt in ("text", "json", "csv", "html"):
            r = subprocess.run([ctx.tool, "report", "--standard", std,
                                "--format", fmt, db], capture_output=True,
                               text=True)
            assert r.returncode in (0, 1), (std, fmt, r.returncode, r.stderr)
            if fmt == "json":
                doc = json.loads(r.stdout)
                n = ctx.srv.query("SELECT count(*) AS n FROM handshakes")[0]["n"]
                assert doc["report"]["records"]["handshakes"] <= n
                ids = [c["id"] for c in doc["checks"]]
                if std == "pci-dss":
                    for want in ("4.2.1", "4.2.1.1", "12.3.3", "8.2.1",
                                 "8.3.11", "8.2.6", "8.3.4", "10.2.1",
                                 "10.2.1.4", "10.2.1.5", "10.2.1.3",
                                 "10.2.1.6", "10.2.2", "10.3.1-10.3.2",
                                 "10.3.4", "10.5.1", "10.6", "10.7.2",
                                 "3.5.1"):
                        assert want in ids, want
                    c = {x["id"]: x for x in doc["checks"]}
                    assert c["10.2.1.6"]["status"] == "PASS"
                    assert c["10.3.1-10.3.2"]["status"] == "PASS", \
                        c["10.3.1-10.3.2"]
                if std == "hipaa":
                    assert "note" in doc["report"]
                    assert "164.312(b)" in ids and "164.316(b)(2)(i)" in ids
            if fmt == "csv":
                rows = list(csv.reader(io.StringIO(r.stdout)))
                assert rows[0] == ["id", "title", "status", "metric", "rule",
                                   "evidence_rows"]
            if fmt == "text":
                assert "period:" in r.stdout and "sha256" in r.stdout


@test(once=True)
def html_report_renders_in_chromium(ctx):
    browser = shutil.which("chromium")
    assert browser, "chromium is not installed (./apxs-build.sh deps)"
    d = private_dir(ctx, "html")
    os.chmod(d, 0o755)
    os.chmod(os.path.dirname(d), 0o755)
    db = gen(ctx, "html", base_script(
        "hs %s good rejected 1.2 ECDHE-ECDSA-AES128-SHA256 10 10.0.0.4" %
        iso(NOW - 4 * DAY)))
    html = os.path.join(d, "report.html")
    r = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                        "--format", "html", "--since", SINCE, "-o", html, db],
                       capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    text = open(html).read()
    assert not re.search(r"<script|<link|@import|url\(|https?://(?!evil)",
                         text.replace("http://www.w3.org/2000/svg", "")), \
        "the report loads something from outside"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             "--user-data-dir=" + os.path.join(d, "profile")]
    url = "file://" + html
    png = os.path.join(d, "report.png")
    pdf = os.path.join(d, "report.pdf")
    for extra in (["--screenshot=" + png, "--window-size=1200,2400"],
                  ["--print-to-pdf=" + pdf, "--no-pdf-header-footer"]):
        r = subprocess.run([browser] + flags + extra + [url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 20000
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"
    assert os.path.getsize(pdf) > 10000
    r = subprocess.run([browser] + flags + ["--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    for section in ("cover", "summary", "per-day", "failures",
                    "certificates", "protocols", "requirements"):
        assert 'id="%s"' % section in dom, section
    assert "<svg" in dom and "<rect" in dom
    # Every PCI check, 4.2.1's revocation check (schema 3) included.
    assert dom.count('class="check"') == 20, dom.count('class="check"')


@test(once=True)
def help_matches_the_man_page(ctx):
    top = os.path.dirname(os.path.dirname(ctx.tool))
    man = open(os.path.join(top, "tools", "mtls-audit.1")).read()
    man_text = man.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")\
        .replace("\\fI", "")
    r = subprocess.run([ctx.tool, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage:" in r.stdout
    for cmd in ("report", "query", "certs", "verify", "archive", "export",
                "policy"):
        r = subprocess.run([ctx.tool, cmd, "--help"], capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout.startswith("usage: mtls-audit "
                                                         + cmd), r.stdout
        for opt in set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-o)\b",
                                  r.stdout)):
            assert opt in man_text, (cmd, opt)
        assert cmd in man_text
        assert re.search(r"^Exit: 0 .*2 usage, 3 database", r.stdout, re.M), \
            r.stdout
    readme = open(os.path.join(top, "README.md")).read()
    for cmd in ("report", "query", "certs", "verify", "archive", "export",
                "policy"):
        assert "mtls-audit " + cmd in readme, cmd


@test(once=True)
def store_bench_baselines_write_the_stores_rows(ctx):
    # bench/store-bench.sh compares the store with raw SQLite writing "the
    # same rows": mtls-gen -b (the store), -b -r (one row a statement) and
    # -b -R (16) add the same handshakes and requests to copies of one
    # file, and every column but the hash comes out the same.
    base = gen(ctx, "bench-base", "bulk 2000 %s %s 50\n" % (
        iso(NOW - 3 * DAY), iso(NOW - 2 * DAY)))
    add = "bulk 1003 %s %s 50\n" % (iso(NOW - DAY), iso(NOW - DAY / 2))
    got = {}
    for flag in ("", "-r", "-R"):
        db = base[:-3] + "-copy%s.db" % flag
        shutil.copy(base, db)
        r = subprocess.run([GEN, "-b"] + ([flag] if flag else []) + [db],
                           input=add, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rows"] > 1003, r.stdout
        con = sqlite3.connect(db)
        rows = []
        for table in ("handshakes", "requests"):
            cols = [c[1] for c in con.execute("PRAGMA table_info(%s)"
                                              % table) if c[1] != "hash"]
            rows.append(con.execute(
                "SELECT %s FROM %s WHERE time_us >= ? ORDER BY id"
                % (",".join(cols), table),
                (int((NOW - DAY).timestamp()) * 1000000,)).fetchall())
        con.close()
        got[flag] = rows
    hs, rq = got[""]
    assert len(hs) == 1003 and len(rq) > 500, (len(hs), len(rq))
    # failures with their NULLs are among them, not only accepted rows
    assert any(None in row for row in hs)
    assert got["-r"] == got[""], "raw -r differs from the store"
    assert got["-R"] == got[""], "raw -R differs from the store"


@test(once=True)
def verify_reads_the_file_in_large_windows(ctx):
    # verify walks every page: through the read-ahead VFS (readahead.c)
    # one pread serves 64 of them; through the default VFS each page is a
    # pread of its own.
    db = gen(ctx, "readahead", "bulk 20000 %s %s 20\n" % (
        iso(NOW - 30 * DAY), iso(NOW - DAY)))
    con = sqlite3.connect(db)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    assert pages > 1000, pages
    trace = os.path.join(private_dir(ctx, "data"), "verify.strace")
    # LeakSanitizer cannot run under ptrace (the ASan pass); the other
    # verify tests look for leaks.
    env = dict(os.environ, ASAN_OPTIONS=(os.environ.get("ASAN_OPTIONS", "")
                                         + ":detect_leaks=0").lstrip(":"))
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=pread64", "-o",
                        trace, ctx.tool, "verify", "--no-record", db],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "handshakes   ok  20000 rows" in r.stdout, r.stdout
    reads = [line for line in open(trace) if "pread64(" in line]
    # The walk's own reads, and the header and schema reads of each of
    # its three connections.
    assert len(reads) < pages / 8, (len(reads), pages)


@test(once=True)
def verify_finds_tampering_at_the_split_between_its_two_threads(ctx):
    # verify walks each table in two halves by id (one per core); a change
    # at, before or after the split point must still be found.
    base = base_script("\n".join(
        "hs %s good accepted 1.3 %s 0 10.1.0.%d" % (
            iso(NOW - DAY + i * datetime.timedelta(seconds=1)), GOOD, i)
        for i in range(10)))
    con = sqlite3.connect(gen(ctx, "split-probe", base))
    n = con.execute("SELECT max(id) FROM handshakes").fetchone()[0]
    con.close()
    mid = n // 2
    cases = {
        "delete-mid": ("DELETE FROM handshakes WHERE id = %d" % mid, mid + 1),
        "delete-after-mid": ("DELETE FROM handshakes WHERE id = %d" % (mid + 1),
                             mid + 2),
        "change-mid": ("UPDATE handshakes SET client_addr = '1.2.3.4' WHERE "
                       "id = %d" % mid, mid),
        "change-after-mid": ("UPDATE handshakes SET client_addr = '1.2.3.4' "
                             "WHERE id = %d" % (mid + 1), mid + 1),
        "change-first": ("UPDATE handshakes SET outcome = 2 WHERE id = 1", 1),
        "change-last": ("UPDATE handshakes SET outcome = 2 WHERE id = %d" % n,
                        n),
    }
    for name, (sql, at) in cases.items():
        db = gen(ctx, "split-" + name, base)
        con = sqlite3.connect(db)
        con.execute(sql)
        con.commit()
        con.close()
        r = subprocess.run([ctx.tool, "verify", "--no-record", db],
                           capture_output=True, text=True)
        assert r.returncode == 1, (name, r.stdout)
        assert "handshakes   BROKEN at id %d" % at in r.stdout, (name, at,
                                                                 r.stdout)
    db = gen(ctx, "split-clean", base)
    r = subprocess.run([ctx.tool, "verify", "--no-record", db],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "handshakes   ok  %d rows" % n in r.stdout, \
        r.stdout


def pieces_script():
    """Rows whose figures depend on their order: a burst of failures, a
    certificate shared by five addresses within an hour, a child's clock
    going back, requests without a verified certificate, a card number."""
    lines = [base_script()]
    # Within one hour (and one half hour): windows start on the clock.
    t0 = (NOW - 3 * DAY).replace(minute=1, second=0)
    for i in range(14):
        lines.append("hs %s - rejected 1.3 %s 20 10.5.0.1" % (
            iso(t0 + i * datetime.timedelta(seconds=30)), GOOD))
        lines.append("hs %s good accepted 1.3 %s 0 10.6.0.%d" % (
            iso(t0 + i * datetime.timedelta(seconds=31)), GOOD, i % 5 + 1))
        lines.append("req /api/v1/items/%d 200" % i)
    lines.append("hs %s good accepted 1.3 %s 0 10.7.0.1" % (
        iso(t0 - datetime.timedelta(hours=2)), GOOD))
    lines.append("hs %s - no_certificate 1.3 %s - 10.7.0.2 optional" % (
        iso(t0 + datetime.timedelta(hours=1)), GOOD))
    lines.append("req /pay/4111111111111111 200")
    return "\n".join(lines) + "\n"


@test(once=True)
def report_read_in_pieces_matches_the_report_read_whole(ctx):
    # The report cuts each table into pieces by id (two workers read them);
    # cut into pieces of 3 rows, every check -- status, metric, evidence --
    # must come out as from one piece, the order-bound ones included.
    src = gen(ctx, "pieces", pieces_script())
    d = private_dir(ctx, "pieces")
    docs = {}
    for name, piece in (("whole", "100000000"), ("cut", "3")):
        db = os.path.join(d, name + ".db")
        shutil.copy(src, db)
        env = dict(os.environ, MTLS_AUDIT_SCAN_PIECE=piece)
        for std in ("pci-dss", "hipaa", "summary"):
            for extra in ([], ["--no-verify"]):
                r = subprocess.run([ctx.tool, "report", "--standard", std,
                                    "--since", SINCE, "--format", "json"]
                                   + extra + [db], capture_output=True,
                                   text=True, env=env)
                c, _ = checks(r)
                # The copies differ only in the reads recorded (their
                # times, today's, and so the files' hashes).
                today = iso(datetime.datetime.now(datetime.timezone.utc))
                docs[(name, std, len(extra))] = json.loads(re.sub(
                    r'"sha256": "[0-9a-f]{64}"', '"sha256": ""', re.sub(
                        r'"time_utc": "%s[^"]*"' % today[:10], '"time_utc": ""',
                        json.dumps(c).replace(db, "DB"))))
    for std in ("pci-dss", "hipaa", "summary"):
        for nv in (0, 1):
            whole, cut = docs[("whole", std, nv)], docs[("cut", std, nv)]
            assert sorted(whole) == sorted(cut)
            for cid in whole:
                for k in ("status", "metric", "evidence"):
                    assert whole[cid][k] == cut[cid][k], (std, nv, cid, k,
                                                         whole[cid][k],
                                                         cut[cid][k])
    text = json.dumps(docs[("cut", "pci-dss", 0)])
    assert "client 10.5.0.1" in text             # the burst
    assert "10.6.0.1,10.6.0.2,10.6.0.3,10.6.0.4" in text  # a shared cert
    assert "************1111" in text             # the card number, masked
    c = docs[("cut", "pci-dss", 0)]
    assert c["10.3.4"]["status"] == "ATTENTION", c["10.3.4"]
    assert any("previous" in row for row in c["10.6"]["evidence"]), \
        c["10.6"]                                  # the clock going back
    # A row changed in a middle piece breaks the chain there.
    con = sqlite3.connect(os.path.join(d, "cut.db"))
    con.execute("UPDATE handshakes SET client_addr = '1.2.3.4' WHERE id = 20")
    con.commit()
    con.close()
    r = subprocess.run([ctx.tool, "report", "--standard", "pci-dss", "--since",
                        SINCE, "--format", "json", os.path.join(d, "cut.db")],
                       capture_output=True, text=True,
                       env=dict(os.environ, MTLS_AUDIT_SCAN_PIECE="3"))
    c, doc = checks(r)
    assert r.returncode == 1 and c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    assert "handshakes broken at id 20" in doc["report"]["databases"][0][
        "integrity"], doc["report"]["databases"]


@test(once=True)
def report_evidence_lists_the_largest_groups_and_says_what_it_left_out(ctx):
    # 600 clients fail once, then one fails five times: the failures-by-
    # client table keeps 200 rows, and they must be the largest (the first
    # 200 found, then sorted, would miss it two times in three).
    t0 = (NOW - 2 * DAY).replace(minute=0, second=0)
    lines = [base_script()]
    for i in range(600):
        lines.append("hs %s - no_certificate 1.3 %s - 10.8.%d.%d" % (
            iso(t0 + i * datetime.timedelta(seconds=1)), GOOD, i // 200,
            i % 200 + 1))
    for i in range(5):
        lines.append("hs %s - no_certificate 1.3 %s - 10.9.9.9" % (
            iso(t0 + datetime.timedelta(hours=2, minutes=i * 10)), GOOD))
    db = gen(ctx, "top-groups", "\n".join(lines) + "\n")
    r = report(ctx, db)
    c, _ = checks(r)
    ev = c["10.2.1.4"]
    assert ev["evidence"][0]["client_addr"] == "10.9.9.9", ev["evidence"][:3]
    assert ev["evidence"][0]["attempts"] == "5", ev["evidence"][0]
    assert ev["evidence_total"] == 606, ev["evidence_total"]
    assert "warning" not in r.stderr, r.stderr
    # A table that cannot hold every group says so; the report still runs.
    r2 = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                         "--since", SINCE, "--format", "json", db],
                        capture_output=True, text=True,
                        env=dict(os.environ, MTLS_AUDIT_MAP_LIMIT="3"))
    assert r2.returncode == r.returncode, (r2.returncode, r2.stderr)
    assert re.search(r"warning: \d+ groups .* left out of the evidence",
                     r2.stderr), r2.stderr


@test(once=True)
def bursts_in_several_databases_keep_their_own_window(ctx):
    # Two servers' files read as one: the second file's burst lies before
    # the first file's rows, and must be reported in its own half hour.
    late = gen(ctx, "burst-late", base_script())
    t0 = (NOW - 12 * DAY).replace(minute=31, second=0)
    lines = []                  # in time order within the file
    for i in range(12):
        lines.append("hs %s - rejected 1.3 %s 20 10.5.5.5" % (
            iso(t0 + i * datetime.timedelta(seconds=20)), GOOD))
    early = gen(ctx, "burst-early", "\n".join(lines) + "\n" + base_script())
    c, _ = checks(report(ctx, [late, early]))
    rows = [e for e in c["8.3.4"]["evidence"] if "10.5.5.5" in e["who"]]
    assert rows, c["8.3.4"]
    assert rows[0]["window_start"] == iso(t0.replace(minute=30)), rows
    assert rows[0]["failures"] == "12", rows


def archive_script():
    """Two months of mixed traffic (4,000 handshakes, most with a request)
    over 20 certificates, with start and stop events."""
    return "\n".join([
        "event start %s" % iso(NOW - 61 * DAY),
        "bulk 4000 %s %s 20" % (iso(NOW - 60 * DAY), iso(NOW - DAY)),
        "event stop %s" % iso(NOW - DAY),
    ]) + "\n"


def tool_run(ctx, *args):
    return subprocess.run([ctx.tool] + list(args), capture_output=True,
                          text=True)


def row_ids(db, table):
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute("SELECT id FROM %s ORDER BY id" % table)]
    con.close()
    return ids


def all_rows(dbs, table):
    """Every row of table over dbs, by id (certificates: once per id)."""
    rows = {}
    for db in dbs:
        con = sqlite3.connect(db)
        for r in con.execute("SELECT * FROM %s" % table):
            assert table == "certificates" or r[0] not in rows, (table, r[0])
            rows[r[0]] = r
        con.close()
    return [rows[k] for k in sorted(rows)]


@test(once=True)
def archive_moves_old_rows_and_both_files_verify_as_one(ctx):
    orig = gen(ctx, "arc-orig", archive_script())
    live = gen(ctx, "arc-live", archive_script())
    shutil.copy(orig, live)
    out = os.path.join(private_dir(ctx, "data"), "arc-old.db")
    cut = iso(NOW - 30 * DAY)
    r = tool_run(ctx, "archive", "--before", cut, live, out)
    assert r.returncode == 0, r.stderr
    assert "check both: mtls-audit verify" in r.stdout, r.stdout
    assert oct(os.stat(out).st_mode & 0o777) == "0o640"
    # Nothing lost, nothing doubled: the union is the original, row for
    # row, hashes included; the cut fell where it should.
    for table in ("certificates", "handshakes", "requests"):
        assert all_rows([out, live], table) == all_rows([orig], table), table
    con = sqlite3.connect(out)
    newest = con.execute("SELECT max(time_us) FROM handshakes").fetchone()[0]
    con.close()
    con = sqlite3.connect(live)
    oldest = con.execute("SELECT min(time_us) FROM handshakes").fetchone()[0]
    orphans = con.execute("SELECT count(*) FROM requests r WHERE NOT EXISTS "
                          "(SELECT 1 FROM handshakes h WHERE h.id = "
                          "r.handshake_id)").fetchone()[0]
    kinds = [k for (k,) in con.execute("SELECT kind FROM events")]
    con.close()
    cut_us = int(datetime.datetime.strptime(cut, "%Y-%m-%dT%H:%M:%SZ")
                 .replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6)
    assert newest < cut_us <= oldest
    assert orphans == 0          # a request leaves with its handshake
    assert "archive" in kinds
    # Each file verifies on its own, and together they join.
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0, v.stdout
    assert "%s continues into %s: ok" % (out, live) in v.stdout, v.stdout
    assert "starts after row" in v.stdout
    # A report over both reads as the original did.
    since = iso(NOW - 70 * DAY)
    for std in ("pci-dss", "hipaa", "summary"):
        a = tool_run(ctx, "report", "--standard", std, "--since", since,
                     "--format", "json", orig)
        b = tool_run(ctx, "report", "--standard", std, "--since", since,
                     "--format", "json", out, live)
        ca, _ = checks(a)
        cb, _ = checks(b)
        def metric(c):
            # The files are counted, and reads recorded: nothing else may
            # differ.
            return re.sub(r"\d+ of \d+ databases|over \d+ files|\d+ recorded "
                          r"reads", "N", c["metric"])
        for cid in ca:
            assert (ca[cid]["status"], metric(ca[cid])) == \
                (cb[cid]["status"], metric(cb[cid])), (std, cid, ca[cid],
                                                       cb[cid])
    # Alone, the live file says where its older rows went.
    c, _ = checks(report(ctx, live, extra=("--since", since)))
    assert c["10.5.1"]["status"] == "ATTENTION"
    assert "archive not read here" in c["10.5.1"]["metric"]
    # A later cut appends to the same archive.
    r = tool_run(ctx, "archive", "--before", iso(NOW - 10 * DAY), live, out)
    assert r.returncode == 0, r.stderr
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0 and "continues into" in v.stdout, v.stdout
    for table in ("handshakes", "requests"):
        assert all_rows([out, live], table) == all_rows([orig], table), table


@test(once=True)
def archive_interrupted_is_finished_by_running_it_again(ctx):
    orig = gen(ctx, "arci-orig", archive_script())
    first = gen(ctx, "arci-first", archive_script())
    shutil.copy(orig, first)
    out = os.path.join(private_dir(ctx, "data"), "arci-old.db")
    cut = iso(NOW - 30 * DAY)
    assert tool_run(ctx, "archive", "--before", cut, first, out).returncode == 0
    # The state a kill between "committed to the archive" and "deleted from
    # the live file" leaves: the rows are in both.
    live = gen(ctx, "arci-live", archive_script())
    shutil.copy(orig, live)
    r = tool_run(ctx, "archive", "--before", cut, live, out)
    assert r.returncode == 0, r.stderr
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0 and "continues into" in v.stdout, v.stdout
    for table in ("handshakes", "requests"):
        assert all_rows([out, live], table) == all_rows([orig], table), table
    # Another database's archive is refused, and nothing moves.
    other = gen(ctx, "arci-other", archive_script())
    before = row_ids(other, "handshakes")
    r = tool_run(ctx, "archive", "--before", cut, other, out)
    assert r.returncode == 2 and "is not an archive of" in r.stderr, r.stderr
    assert row_ids(other, "handshakes") == before


@test(once=True)
def archive_refuses_a_broken_chain_and_finds_a_cut_archive(ctx):
    live = gen(ctx, "arcb-live", archive_script())
    con = sqlite3.connect(live)
    con.execute("UPDATE handshakes SET client_addr = '6.6.6.6' WHERE id = 7")
    con.commit()
    con.close()
    out = os.path.join(private_dir(ctx, "data"), "arcb-old.db")
    n = len(row_ids(live, "handshakes"))
    r = tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live, out)
    assert r.returncode == 1 and "breaks at id 7" in r.stderr, r.stderr
    assert len(row_ids(live, "handshakes")) == n
    # A good archive whose last rows are then removed: its own cut record
    # gives it away, even with no anchor.
    live = gen(ctx, "arcb-live2", archive_script())
    out = os.path.join(private_dir(ctx, "data"), "arcb-old2.db")
    assert tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live,
                    out).returncode == 0
    last = row_ids(out, "handshakes")[-1]
    con = sqlite3.connect(out)
    con.execute("DELETE FROM handshakes WHERE id = %d" % last)
    con.commit()
    con.close()
    v = tool_run(ctx, "verify", "--no-record", out)
    assert v.returncode == 1, v.stdout
    assert "should end at row %d" % last in v.stdout, v.stdout
    # A live file whose recorded cut is not where its archive ends.
    live = gen(ctx, "arcb-live3", archive_script())
    out = os.path.join(private_dir(ctx, "data"), "arcb-old3.db")
    assert tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live,
                    out).returncode == 0
    con = sqlite3.connect(live)
    con.execute("UPDATE chain_cut SET hash = zeroblob(32) WHERE tbl = "
                "'handshakes'")
    con.commit()
    con.close()
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 1, v.stdout
    assert re.search(r"handshakes: %s ends at row \d+ with another hash than "
                     r"%s starts from" % (re.escape(out), re.escape(live)),
                     v.stdout), v.stdout
    assert "continues into" not in v.stdout
    # Usage errors.
    r = tool_run(ctx, "archive", "--before", iso(NOW), live, live)
    assert r.returncode == 2 and "the same file" in r.stderr, r.stderr
    r = tool_run(ctx, "archive", live, out)
    assert r.returncode == 2 and "--before" in r.stderr
    r = tool_run(ctx, "archive", "--before", "yesterday", live, out)
    assert r.returncode == 2 and "not a date" in r.stderr


@test(once=True)
def writing_goes_on_after_an_archive_took_every_row(ctx):
    # The writer finds the chain's tail in chain_cut when a table is empty.
    live = gen(ctx, "arce-live", archive_script())
    out = os.path.join(private_dir(ctx, "data"), "arce-old.db")
    r = tool_run(ctx, "archive", "--before", iso(NOW + DAY), live, out)
    assert r.returncode == 0, r.stderr
    assert row_ids(live, "handshakes") == []
    more = "hs %s - no_certificate 1.3 %s - 10.9.9.9\nreq /x 200\n" % (
        iso(NOW), GOOD)
    g = subprocess.run([GEN, live], input=more, capture_output=True,
                       text=True)
    assert g.returncode == 0, g.stderr
    assert row_ids(live, "handshakes") == [4001]
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0 and "continues into" in v.stdout, v.stdout
    # A row put back from before the cut is named.
    con = sqlite3.connect(live)
    con.execute("ATTACH ? AS arc", (out,))
    con.execute("INSERT INTO handshakes SELECT * FROM arc.handshakes "
                "WHERE id = 4000")
    con.commit()
    con.close()
    v = tool_run(ctx, "verify", "--no-record", live)
    assert v.returncode == 1, v.stdout
    assert "BROKEN at id 4000: row 4000 should have been archived" in \
        v.stdout, v.stdout


SEALED_LINE = (r"sealed %s sha256=([0-9a-f]{64}) bytes=(\d+) \((already )?"
               r"recorded in %s, event (\d+)\)")


def sealed_events(live):
    con = sqlite3.connect(live)
    rows = [(i, k, json.loads(d)) for i, k, d in con.execute(
        "SELECT id, kind, detail FROM events WHERE kind IN ('sealed', "
        "'unsealed') ORDER BY id")]
    con.close()
    return rows


def fresh(path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return path


def block(stdout, db):
    """What verify printed under db's name."""
    return stdout.split(db + "\n", 1)[1].split("\n/", 1)[0]


@test(once=True)
def archive_output_is_sealed_and_checked_by_its_hash(ctx):
    import hashlib
    live = gen(ctx, "arcs-live", archive_script())
    out = fresh(os.path.join(private_dir(ctx, "data"), "arcs-old.db"))
    r = tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live, out)
    assert r.returncode == 0, r.stderr
    m = re.search(SEALED_LINE % (re.escape(out), re.escape(live)), r.stdout)
    assert m and not m.group(3), r.stdout
    # The bytes recorded are the file's, with nothing left in a WAL.
    data = open(out, "rb").read()
    assert m.group(1) == hashlib.sha256(data).hexdigest()
    assert int(m.group(2)) == len(data)
    assert not os.path.exists(out + "-wal") or \
        os.path.getsize(out + "-wal") == 0
    ev = sealed_events(live)
    assert ev == [(int(m.group(4)), "sealed", {
        "file": os.path.abspath(out), "sha256": m.group(1),
        "bytes": len(data), "seal": 0, "archive": True})], ev
    # verify checks it by that hash; --deep walks it.
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0, v.stdout
    assert re.match(r"  sealed +ok +its SHA-256 matches the one %s recorded "
                    r"when it was sealed \(event %s," % (
                        re.escape(live), m.group(4)), block(v.stdout, out)), \
        v.stdout
    assert "continues into" in v.stdout
    v = tool_run(ctx, "verify", "--no-record", "--deep", out, live)
    assert v.returncode == 0, v.stdout
    assert re.search(r"handshakes +ok +\d+ rows", block(v.stdout, out)) \
        and "sealed       ok" not in v.stdout, v.stdout
    since = iso(NOW - 70 * DAY)
    c, doc = checks(report(ctx, [out, live], extra=("--since", since)))
    dbs = doc["report"]["databases"]
    assert [x["established"] for x in dbs] == ["sha256", "walked"], dbs
    assert c["10.3.4"]["status"] != "FAIL", c["10.3.4"]
    # Run again with nothing to move: the seal holds, nothing is added.
    r = tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live, out)
    assert r.returncode == 0, r.stderr
    m2 = re.search(SEALED_LINE % (re.escape(out), re.escape(live)), r.stdout)
    assert m2 and m2.group(3) and m2.group(1) == m.group(1), r.stdout
    assert len(sealed_events(live)) == 1
    # Appending: the old seal is withdrawn first, the new hash recorded.
    r = tool_run(ctx, "archive", "--before", iso(NOW - 10 * DAY), live, out)
    assert r.returncode == 0, r.stderr
    m3 = re.search(SEALED_LINE % (re.escape(out), re.escape(live)), r.stdout)
    assert m3 and not m3.group(3) and m3.group(1) != m.group(1), r.stdout
    assert m3.group(1) == hashlib.sha256(open(out, "rb").read()).hexdigest()
    assert [k for _, k, _ in sealed_events(live)] == \
        ["sealed", "unsealed", "sealed"], sealed_events(live)
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0, v.stdout
    assert "(event %s," % m3.group(4) in block(v.stdout, out), v.stdout
    # Moved to cold storage: still the file before the live one, and its
    # record found by its name.
    cold = os.path.join(private_dir(ctx, "arcs-cold"), "arcs-old.db")
    shutil.move(out, fresh(cold))
    v = tool_run(ctx, "verify", "--no-record", cold, live)
    assert v.returncode == 0, v.stdout
    assert "sealed       ok" in block(v.stdout, cold), v.stdout
    good = open(cold, "rb").read()
    # One byte changed, or one row (written into the file), is found.
    with open(cold, "r+b") as f:
        f.seek(len(good) // 2)
        f.write(bytes([good[len(good) // 2] ^ 1]))
    v = tool_run(ctx, "verify", "--no-record", cold, live)
    assert v.returncode == 1, v.stdout
    assert re.match(r"  sealed +BROKEN +sealed file CHANGED",
                    block(v.stdout, cold)), v.stdout
    r = report(ctx, [cold, live], extra=("--since", since))
    assert r.returncode == 1, r.stderr
    c, doc = checks(r)
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    assert "sealed file CHANGED" in doc["report"]["databases"][0][
        "integrity"], doc["report"]["databases"]
    with open(cold, "wb") as f:
        f.write(good)
    con = sqlite3.connect(cold)
    con.execute("UPDATE handshakes SET client_addr = '6.6.6.6' WHERE id = "
                "(SELECT max(id) FROM handshakes)")
    con.commit()
    con.close()
    v = tool_run(ctx, "verify", "--no-record", cold, live)
    assert v.returncode == 1 and "sealed file CHANGED" in v.stdout, v.stdout


@test(once=True)
def archive_held_by_a_reader_is_sealed_by_the_next_run(ctx):
    # A reader holds the archive's WAL: the run moves its rows but cannot
    # seal it, says so, and the archive is walked meanwhile (its earlier
    # seal withdrawn, not reported as CHANGED); the next run seals it.
    live = gen(ctx, "arch-live", archive_script())
    out = fresh(os.path.join(private_dir(ctx, "data"), "arch-old.db"))
    assert tool_run(ctx, "archive", "--before", iso(NOW - 30 * DAY), live,
                    out).returncode == 0
    reader = sqlite3.connect(out, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM handshakes").fetchone()
        r = tool_run(ctx, "archive", "--before", iso(NOW - 10 * DAY), live,
                     out)
    finally:
        reader.close()
    assert r.returncode == 0, r.stderr
    assert "%s is not sealed: its write-ahead log could not be written " \
        "into it: readers hold it" % out in r.stderr, r.stderr
    assert "run the same command again" in r.stderr
    assert not re.search(r"^sealed ", r.stdout, re.M), r.stdout
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0, v.stdout
    assert re.search(r"handshakes +ok +\d+ rows", block(v.stdout, out)) \
        and "sealed" not in block(v.stdout, out), v.stdout
    r = tool_run(ctx, "archive", "--before", iso(NOW - 10 * DAY), live, out)
    assert r.returncode == 0, r.stderr
    assert re.search(SEALED_LINE % (re.escape(out), re.escape(live)),
                     r.stdout), r.stdout
    v = tool_run(ctx, "verify", "--no-record", out, live)
    assert v.returncode == 0 and "sealed       ok" in block(v.stdout, out), \
        v.stdout


@test(once=True)
def every_command_reads_while_other_connections_come_and_go(ctx):
    """Another connection closing takes the file's PENDING lock for a
    moment (SQLite tries to checkpoint and remove the WAL when it closes):
    a reader arriving then is told "database is locked" at once unless it
    waits.  Each command must wait out such moments (its busy timeout set
    before it attaches a file), never fail on them."""
    import threading
    db = gen(ctx, "churn", base_script())
    hold = sqlite3.connect(db)      # keeps the WAL, as a server's child does
    hold.execute("SELECT count(*) FROM events").fetchone()
    stop = [False]

    def churn():
        while not stop[0]:
            con = sqlite3.connect(db, timeout=10)
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            con.close()

    threads = [threading.Thread(target=churn) for _ in range(2)]
    commands = (["query", "--limit", "1"], ["certs"],
                ["report", "--standard", "summary", "--format", "json"],
                ["verify", "--no-record"])
    failed, runs = [], 0
    try:
        for t in threads:
            t.start()
        go = keep_going(8, 10)
        while go():
            for c in commands:
                r = subprocess.run([ctx.tool] + c + [db],
                                   capture_output=True, text=True)
                runs += 1
                if r.returncode != 0:
                    failed.append((c[0], r.returncode, r.stderr.strip()))
    finally:
        stop[0] = True
        for t in threads:
            t.join()
        hold.close()
    assert runs >= 40, runs
    assert not failed, (len(failed), runs, failed[:3])


# ---------------------------------------------------------------------------
# A database file is input from a less-trusted user (the web server's, who
# can write it); the tool is run by an operator or an auditor, often as
# root.  Its schema is compared with the migrations', and the tool reads
# through views of its own.

# mod_ssl logs most verification failures at level error.
VERIFY_ERRORS = (r"AH02039: Certificate Verification: Error", )


def server_copy(ctx, name):
    """A copy of the database the real server wrote, after this test made
    accepted and rejected handshakes on it; returns (path, the rejected
    handshakes' ids read from the table)."""
    import clients
    before = ctx.srv.max_id()
    for key in ("ec", "untrusted", "expired"):
        clients.curl(ctx.srv, ctx.pki[key])
    ctx.srv.wait_rows(before, 3)
    db = os.path.join(private_dir(ctx, "hostile-schema"), name + ".db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    src = sqlite3.connect("file:%s?mode=ro" % ctx.srv.db, uri=True,
                          timeout=10)
    dst = sqlite3.connect(db)
    src.backup(dst)
    src.close()
    rejected = [r[0] for r in dst.execute(
        "SELECT id FROM handshakes WHERE outcome = 2 ORDER BY id")]
    dst.close()
    assert rejected, "the server recorded no rejected handshake"
    r = tool_run(ctx, "verify", "--no-record", db)
    assert r.returncode == 0, r.stdout + r.stderr
    return db, rejected


def alter(db, *sql):
    con = sqlite3.connect(db)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


def schema_is_found_and_never_trusted(ctx, db, rejected, named):
    """verify exits 1 naming the object; the report's 10.3.4 FAILs naming
    it; query --outcome rejected lists every rejected row of the table."""
    r = tool_run(ctx, "verify", "--no-record", db)
    assert r.returncode == 1, r.stdout + r.stderr
    line = [l for l in r.stdout.splitlines() if l.split()[:2]
            == ["schema", "ALTERED"]]
    assert line and named in line[0], r.stdout
    r = report(ctx, db)
    assert r.returncode == 1, r.stderr
    c, _ = checks(r)
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    assert "altered schema" in c["10.3.4"]["metric"], c["10.3.4"]
    assert any(named in (e.get("integrity") or "")
               for e in c["10.3.4"]["evidence"]), c["10.3.4"]["evidence"]
    r = tool_run(ctx, "query", "--outcome", "rejected", "--limit", "0",
                 "--format", "json", db)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(x["id"] for x in rows) == rejected, (rows, rejected)
    assert all(x["outcome"] == "rejected" for x in rows)
    # Nothing is written into it: no access event, a note on stderr.
    assert "not recorded in it (its schema is not the one" in r.stderr, \
        r.stderr
    return r


@test(once=True, expect_errors=VERIFY_ERRORS)
def hostile_schema_replaced_view_is_found_and_never_read(ctx):
    db, rejected = server_copy(ctx, "view")
    con = sqlite3.connect(db)
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name = "
                         "'v_handshakes'").fetchone()
    con.close()
    # The old view, less the handshakes that were not accepted.
    alter(db, "DROP VIEW v_handshakes", sql + " WHERE h.outcome = 1")
    schema_is_found_and_never_trusted(ctx, db, rejected,
                                      "view v_handshakes altered")
    # export reads the views too: every rejected row is there.
    r = tool_run(ctx, "export", db)
    assert r.returncode == 0, r.stderr
    hs = [json.loads(l) for l in r.stdout.splitlines()]
    got = sorted(x["id"] for x in hs if x["type"] == "handshake"
                 and x["outcome"] == "rejected")
    assert got == rejected, (got, rejected)


@test(once=True, expect_errors=VERIFY_ERRORS)
def hostile_schema_trigger_on_events_is_found_and_never_fired(ctx):
    db, rejected = server_copy(ctx, "trigger")
    # Fired by the tool's own access event, as whoever runs the tool: it
    # would turn every rejected handshake into an accepted one.
    alter(db, "CREATE TRIGGER evil AFTER INSERT ON events BEGIN "
              "UPDATE handshakes SET outcome = 1 WHERE outcome = 2; END")
    con = sqlite3.connect(db)
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.close()
    schema_is_found_and_never_trusted(ctx, db, rejected,
                                      "trigger evil foreign (on events)")
    for cmd in (["query"], ["certs"], ["export"], ["verify"],
                ["report", "--standard", "summary"]):
        r = tool_run(ctx, *(cmd + [db]))
        assert r.returncode in (0, 1), (cmd, r.returncode, r.stderr)
        assert "not recorded in it (its schema" in r.stderr, (cmd, r.stderr)
    r = tool_run(ctx, "archive", "--before", "2000-01-01", db,
                 os.path.join(os.path.dirname(db), "trigger-archive.db"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "trigger evil foreign" in r.stderr, r.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == events
    still = [x[0] for x in con.execute(
        "SELECT id FROM handshakes WHERE outcome = 2 ORDER BY id")]
    con.close()
    assert still == rejected, (still, rejected)


@test(once=True, expect_errors=VERIFY_ERRORS)
def hostile_schema_extra_index_is_found(ctx):
    db, rejected = server_copy(ctx, "extra-index")
    alter(db, "CREATE INDEX handshakes_outcome ON handshakes(outcome)")
    schema_is_found_and_never_trusted(
        ctx, db, rejected, "index handshakes_outcome foreign (on handshakes)")


@test(once=True, expect_errors=VERIFY_ERRORS)
def hostile_schema_missing_index_is_found(ctx):
    db, rejected = server_copy(ctx, "missing-index")
    alter(db, "DROP INDEX handshakes_time")
    schema_is_found_and_never_trusted(ctx, db, rejected,
                                      "index handshakes_time missing")


@test(once=True, expect_errors=VERIFY_ERRORS)
def hostile_schema_altered_table_is_found(ctx):
    db, rejected = server_copy(ctx, "table")
    # Same columns, fewer constraints: the chains still hold.
    alter(db, "DROP TABLE chain_cut",
          "CREATE TABLE chain_cut (tbl TEXT, side TEXT, id INTEGER, "
          "hash BLOB, time_us INTEGER, other TEXT)")
    r = schema_is_found_and_never_trusted(ctx, db, rejected,
                                          "table chain_cut altered")
    v = tool_run(ctx, "verify", "--no-record", db)
    assert v.stdout.count(" ok ") == 4, v.stdout     # every chain holds
    # ANALYZE's statistics steer SQLite's planner: foreign too.
    db2, rejected2 = server_copy(ctx, "stat")
    alter(db2, "ANALYZE")
    schema_is_found_and_never_trusted(ctx, db2, rejected2,
                                      "table sqlite_stat1 foreign")


@test(once=True, expect_errors=VERIFY_ERRORS)
def forged_ids_below_1_or_far_apart_are_found_in_bounded_time(ctx):
    import time
    for name, new_id in (("id-negative", -5), ("id-far", 2 ** 62),
                         ("id-max", 2 ** 63 - 1)):
        db, rejected = server_copy(ctx, name)
        con = sqlite3.connect(db)
        (last,) = con.execute("SELECT max(id) FROM handshakes").fetchone()
        con.execute("UPDATE requests SET handshake_id = ? WHERE "
                    "handshake_id = ?", (new_id, last))
        con.execute("UPDATE handshakes SET id = ? WHERE id = ?",
                    (new_id, last))
        con.commit()
        con.close()
        r = tool_run(ctx, "verify", "--no-record", db)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "handshakes   BROKEN at id %d" % new_id in r.stdout, r.stdout
        t0 = time.time()
        r = report(ctx, db, standard="pci-dss")
        took = time.time() - t0
        assert r.returncode == 1, (name, r.returncode, r.stderr)
        c, _ = checks(r)
        assert c["10.3.4"]["status"] == "FAIL", (name, c["10.3.4"])
        assert took < 20, (name, took)
        r = tool_run(ctx, "query", "--limit", "0", "--format", "json", db)
        assert r.returncode == 0, r.stderr
        assert new_id in [x["id"] for x in json.loads(r.stdout)], name


@test(once=True)
def table_format_cuts_cells_between_characters(ctx):
    """The table format cuts a long cell at 64 characters, not bytes: a
    UTF-8 subject is never cut inside a character, and the columns after
    it line up with the header's."""
    import clients
    after = ctx.srv.max_id()
    clients.curl(ctx.srv, ctx.pki["hostile"])
    row = ctx.srv.wait_rows(after, 1)[0]
    subject = row["subject_dn"]
    assert len(subject.encode()) > 64, subject   # more bytes than a cell
    r = subprocess.run([ctx.tool, "query", "--cert", row["cert_sha256"][:16],
                        ctx.srv.db], capture_output=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode("utf-8").splitlines()   # raises if cut badly
    header = lines[0]
    cells = [l for l in lines[1:] if l.split(" ", 1)[0] == str(row["id"])]
    assert len(cells) == 1, lines
    start = header.index("subject_dn")
    nxt = start + re.search(r"  (?=\S)", header[start:]).end()
    want = "".join(" " if ord(c) < 0x20 else c for c in subject)[:64]
    assert cells[0][start:nxt].rstrip() == want.rstrip(), (
        cells[0][start:nxt], want)
    assert cells[0][nxt - 2:nxt] == "  " and cells[0][nxt] != " ", cells[0]
