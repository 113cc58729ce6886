"""Capture scenarios: each drives a real client against the real httpd and
asserts the exact row(s) the module wrote."""
import os
import re
import shutil
import sqlite3
import subprocess
import time

import clients
import pki
from harness import Registry, expect, positive_us

test = Registry()

# OpenSSL's X509_V_ERR_* codes (stable numbers, see x509_vfy.h).
X509_OK = 0
X509_UNSPECIFIED = 1
X509_NOT_YET_VALID = 9
X509_EXPIRED = 10
X509_SELF_SIGNED = 18
X509_NO_LOCAL_ISSUER = 20
X509_REVOKED = 23
X509_INVALID_PURPOSE = 26

# TLS alerts (RFC 8446 section 6).
A_HANDSHAKE_FAILURE = 40
A_BAD_CERTIFICATE = 42
A_UNSUPPORTED_CERT = 43
A_CERT_REVOKED = 44
A_CERT_EXPIRED = 45
A_UNKNOWN_CA = 48
A_PROTOCOL_VERSION = 70
A_CERT_REQUIRED = 116

VERSIONS = {"1.3": "TLSv1.3", "1.2": "TLSv1.2"}


def one_row(ctx, run, n=1):
    """Run the client `run`, then return exactly n new rows."""
    after = ctx.srv.max_id()
    run()
    rows = ctx.srv.wait_rows(after, n)
    assert len(rows) == n, "want %d new row(s), got %d: %r" % (
        n, len(rows), [(r["id"], r["outcome"], r["sni"]) for r in rows])
    return rows if n > 1 else rows[0]


def last_vars(ctx):
    lines = ctx.srv.vars_lines()
    assert lines, "mod_ssl wrote no SSL variables"
    f = lines[-1].split("|")
    return dict(s_dn=f[0], i_dn=f[1], serial=f[2], protocol=f[3],
                cipher=f[4], resumed=f[5], verify=f[6], path=f[7])


def check_accepted(ctx, row, cert, tls, requests=1):
    v = last_vars(ctx)
    expect(row, outcome="accepted", kind="initial", verify_mode="require",
           verify_result=X509_OK, verify_error="ok", verify_depth=1,
           alert=None, alert_received=None, tls_version=VERSIONS[tls],
           cipher=v["cipher"], resumed=0, sni="localhost",
           server_name="localhost", client_addr="127.0.0.1",
           local_port=ctx.srv.port,
           client_port=lambda p: isinstance(p, int) and p > 0,
           cert_sha256=pki.fingerprint(cert[0]),
           subject_dn=v["s_dn"], issuer_dn=v["i_dn"], serial=v["serial"],
           # OpenSSL's client sends the chain it can build: leaf and root.
           chain_length=2,
           chain_sha256=pki.fingerprint(cert[0]) + " " +
           pki.fingerprint(ctx.pki["root"].cert),
           handshake_us=positive_us(),
           verify_us=positive_us(row["handshake_us"] + 1),
           requests=requests,
           time_utc=lambda t: bool(re.match(
               r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", t or "")))
    assert v["verify"] == "SUCCESS", v
    assert v["protocol"] == VERSIONS[tls], v


def accepted(tls, key):
    def t(ctx):
        cert = ctx.pki[key]
        row = one_row(ctx, lambda: clients.curl(ctx.srv, cert, tls=tls))
        check_accepted(ctx, row, cert, tls)
        expect(row, key_type="EC" if key == "ec" else "RSA",
               key_bits=256 if key == "ec" else 2048)
    t.__name__ = "accepted_tls%s_%s" % (tls.replace(".", ""), key)
    return t


for _tls in ("1.3", "1.2"):
    for _key in ("ec", "rsa"):
        test(accepted(_tls, _key))


@test
def no_certificate_tls13(ctx):
    row = one_row(ctx, lambda: clients.curl(ctx.srv, None, tls="1.3"))
    expect(row, outcome="no_certificate", tls_version="TLSv1.3",
           alert=A_CERT_REQUIRED, alert_name="certificate_required",
           verify_result=None, cert_sha256=None, chain_length=0,
           verify_mode="require", handshake_us=positive_us(),
           verify_us=None, requests=0,
           cipher=lambda c: bool(c and c.startswith("TLS_")))


@test
def no_certificate_tls12(ctx):
    row = one_row(ctx, lambda: clients.curl(ctx.srv, None, tls="1.2"))
    expect(row, outcome="no_certificate", tls_version="TLSv1.2",
           alert=A_HANDSHAKE_FAILURE, verify_result=None, cert_sha256=None,
           verify_mode="require", requests=0,
           cipher=lambda c: bool(c and "GCM" in c))


# mod_ssl logs most verification failures at level error.
VERIFY_ERRORS = (r"AH02039: Certificate Verification: Error", )


def rejected(name, key, code, alert, depth=0, tls="1.3", chain=2):
    def t(ctx):
        cert = ctx.pki[key]
        row = one_row(ctx, lambda: clients.curl(ctx.srv, cert, tls=tls))
        expect(row, outcome="rejected", verify_result=code,
               verify_depth=depth, alert=alert, tls_version=VERSIONS[tls],
               cert_sha256=pki.fingerprint(cert[0]), chain_length=chain,
               verify_mode="require", requests=0,
               verify_error=lambda e: bool(e) and e != "ok",
               handshake_us=positive_us(),
               verify_us=positive_us(row["handshake_us"] + 1))
    t.__name__ = name
    return t


test(rejected("rejected_untrusted_ca", "untrusted", X509_NO_LOCAL_ISSUER,
              A_UNKNOWN_CA, chain=1), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_expired", "expired", X509_EXPIRED, A_CERT_EXPIRED), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_expired_tls12", "expired", X509_EXPIRED,
              A_CERT_EXPIRED, tls="1.2"), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_not_yet_valid", "future", X509_NOT_YET_VALID,
              A_BAD_CERTIFICATE), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_revoked_crl", "revoked", X509_REVOKED,
              A_CERT_REVOKED), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_wrong_eku", "wrong_eku", X509_INVALID_PURPOSE,
              A_UNSUPPORTED_CERT), expect_errors=VERIFY_ERRORS)
test(rejected("rejected_self_signed", "self", X509_SELF_SIGNED,
              A_UNKNOWN_CA, chain=1), expect_errors=VERIFY_ERRORS)


@test(expect_errors=VERIFY_ERRORS + (r"AH02040: Certificate Verification: "
                                     r"Certificate Chain too long", ))
def rejected_intermediate_beyond_verify_depth(ctx):
    # mod_ssl's default SSLVerifyDepth 1 refuses a chain through an
    # intermediate; OpenSSL reports that as X509_V_ERR_UNSPECIFIED (1).
    cert = ctx.pki["via_inter_chain"]
    row = one_row(ctx, lambda: clients.curl(ctx.srv, cert, host="depth.test"))
    expect(row, outcome="rejected", verify_result=X509_UNSPECIFIED,
           sni="depth.test", server_name="depth.test",
           cert_sha256=pki.fingerprint(ctx.pki["via_inter"][0]),
           chain_length=2,
           chain_sha256=" ".join([pki.fingerprint(ctx.pki["via_inter"][0]),
                                  pki.fingerprint(ctx.pki["inter"].cert)]))


@test(expect_errors=VERIFY_ERRORS)
def rejected_intermediate_without_its_crl(ctx):
    # With SSLCARevocationCheck leaf, a leaf whose issuer published no CRL
    # fails with X509_V_ERR_UNABLE_TO_GET_CRL (3), and we say so.
    cert = ctx.pki["via_inter_chain"]
    row = one_row(ctx, lambda: clients.curl(ctx.srv, cert))
    expect(row, outcome="rejected", verify_result=3, verify_depth=0,
           cert_sha256=pki.fingerprint(ctx.pki["via_inter"][0]),
           chain_length=2)


@test
def hostile_subject_as_mod_ssl_shows_it(ctx):
    cert = ctx.pki["hostile"]
    row = one_row(ctx, lambda: clients.curl(ctx.srv, cert))
    check_accepted(ctx, row, cert, "1.3")
    # RFC 2253 escapes <>;+,"= with a backslash and keeps UTF-8.
    for s in ("\\<script\\>", "\u00eb", "\u65e5\u672c", '\\"', "'",
              "\\;", "=", "\\+", "\\,"):
        assert s in row["subject_dn"], (s, row["subject_dn"])


@test
def many_sans(ctx):
    cert = ctx.pki["many_sans"]
    row = one_row(ctx, lambda: clients.curl(ctx.srv, cert))
    check_accepted(ctx, row, cert, "1.3")
    san = row["san"].split(", ")
    assert len(san) == 122, len(san)
    assert san[0] == "DNS:host0.example.test" and "IP:10.1.2.3" in san \
        and "email:ops@example.test" in san, san[:3]


def resumption(tls):
    def t(ctx):
        cert = ctx.pki["ec"]
        sess = os.path.join(ctx.scratch, "sess-%s.pem" % tls)
        first = one_row(ctx, lambda: clients.s_client(
            ctx.srv, cert, tls=tls, extra=["-sess_out", sess]))
        assert os.path.exists(sess), "s_client saved no session"
        second = one_row(ctx, lambda: clients.s_client(
            ctx.srv, cert, tls=tls, extra=["-sess_in", sess]))
        expect(first, outcome="accepted", resumed=0)
        expect(second, outcome="accepted", resumed=1,
               tls_version=VERSIONS[tls], verify_us=None,
               cert_sha256=pki.fingerprint(cert[0]),
               subject_dn=first["subject_dn"], verify_result=X509_OK,
               requests=1)
        assert last_vars(ctx)["resumed"] == "Resumed"
    t.__name__ = "resumption_tls%s" % tls.replace(".", "")
    return t


test(resumption("1.3"))
test(resumption("1.2"))


@test
def plain_http_client(ctx):
    got = []
    row = one_row(ctx, lambda: got.append(clients.raw(
        ctx.srv.port, b"GET /plain?q=1 HTTP/1.0\r\nHost: localhost\r\n\r\n")))
    expect(row, outcome="failed", tls_version=None, cert_sha256=None,
           sni=None, server_name="localhost",
           handshake_us=lambda v: v is not None and v >= 0)
    # mod_ssl answers plain HTTP with a 400 of its own: that response is
    # a request on the connection, recorded against the failed handshake.
    assert b"400" in got[0].split(b"\r\n")[0], got
    reqs = ctx.srv.query("SELECT * FROM v_requests WHERE handshake_id = ?",
                         (row["id"],))
    assert [(r["status"], r["cert_sha256"]) for r in reqs] == [(400, None)], reqs


@test
def garbage_bytes(ctx):
    row = one_row(ctx, lambda: clients.raw(ctx.srv.port, b"\x16\x03\x01\x00"
                                           b"\x05\xff\xff\xff\xff\xff"))
    expect(row, outcome="failed", cert_sha256=None, requests=0)


@test
def client_hello_then_gone(ctx):
    hello = clients.client_hello("localhost")
    row = one_row(ctx, lambda: clients.raw(ctx.srv.port, hello, read=False))
    expect(row, outcome="aborted", sni="localhost", cert_sha256=None,
           requests=0)


@test
def client_hello_then_gone_after_server_flight(ctx):
    hello = clients.client_hello("localhost")
    row = one_row(ctx, lambda: clients.raw(ctx.srv.port, hello, read=True))
    expect(row, outcome="aborted", sni="localhost", tls_version="TLSv1.3",
           cert_sha256=None, requests=0)


@test
def tcp_connect_without_bytes_is_not_recorded(ctx):
    after = ctx.srv.max_id()
    clients.raw(ctx.srv.port, b"", read=False)
    row = one_row(ctx, lambda: clients.curl(ctx.srv, ctx.pki["ec"]))
    assert row["id"] == after + 1 and row["outcome"] == "accepted"


@test
def protocol_version_refused(ctx):
    row = one_row(ctx, lambda: clients.s_client(
        ctx.srv, ctx.pki["ec"], tls="1.2", port=ctx.srv.port13))
    expect(row, outcome="failed", alert=A_PROTOCOL_VERSION,
           local_port=ctx.srv.port13, cert_sha256=None)


@test
def sni_to_unaudited_vhost_leaves_no_row(ctx):
    after = ctx.srv.max_id()
    r = clients.curl(ctx.srv, ctx.pki["ec"], host="off.test")
    assert r.stdout.strip() == "200", r.stdout + r.stderr
    r = clients.curl(ctx.srv, None, host="off.test")
    row = one_row(ctx, lambda: clients.curl(ctx.srv, ctx.pki["ec"]))
    assert row["id"] == after + 1 and row["sni"] == "localhost", row


@test
def keep_alive_requests(ctx):
    cert = ctx.pki["ec"]
    row = one_row(ctx, lambda: clients.curl(
        ctx.srv, cert, paths=("/?card=4111111111111111", "/missing?x=1#f",
                              "/index.html")))
    check_accepted(ctx, row, cert, "1.3", requests=3)
    reqs = ctx.srv.query("SELECT * FROM v_requests WHERE handshake_id = ? "
                         "ORDER BY id", (row["id"],))
    assert [(r["method"], r["path"], r["status"]) for r in reqs] == [
        ("GET", "/", 200), ("GET", "/missing", 404),
        ("GET", "/index.html", 200)], reqs
    for r in reqs:
        expect(r, cert_sha256=row["cert_sha256"], subject_dn=row["subject_dn"],
               duration_us=lambda v: v is not None and v >= 0,
               bytes_sent=lambda v: isinstance(v, int) and v >= 0)
    assert not any("4111" in (r["path"] or "") for r in reqs)


@test
def renegotiation_tls12(ctx):
    cert = ctx.pki["ec"]
    rows = one_row(ctx, lambda: clients.s_client(
        ctx.srv, cert, host="perdir.test", tls="1.2", path="/secure/"), n=2)
    expect(rows[0], kind="initial", outcome="accepted", verify_mode="none",
           cert_sha256=None, sni="perdir.test", server_name="perdir.test",
           requests=0)
    expect(rows[1], kind="renegotiation", outcome="accepted",
           verify_mode="require", verify_result=X509_OK,
           cert_sha256=pki.fingerprint(cert[0]), tls_version="TLSv1.2",
           verify_us=positive_us(), requests=1,
           client_port=rows[0]["client_port"])


@test
def post_handshake_auth_tls13(ctx):
    cert = ctx.pki["ec"]
    rows = one_row(ctx, lambda: clients.s_client(
        ctx.srv, cert, host="perdir.test", tls="1.3", path="/secure/",
        extra=["-enable_pha"]), n=2)
    expect(rows[0], kind="initial", outcome="accepted", verify_mode="none",
           cert_sha256=None, requests=0)
    expect(rows[1], kind="post_handshake", outcome="accepted",
           verify_mode="require", verify_result=X509_OK,
           cert_sha256=pki.fingerprint(cert[0]), tls_version="TLSv1.3",
           verify_us=positive_us(), requests=1,
           client_port=rows[0]["client_port"])


@test(expect_errors=VERIFY_ERRORS + (r"AH02262: Re-negotiation handshake "
                                     r"failed", ))
def post_handshake_auth_refused_certificate(ctx):
    cert = ctx.pki["untrusted"]
    rows = one_row(ctx, lambda: clients.s_client(
        ctx.srv, cert, host="perdir.test", tls="1.3", path="/secure/",
        extra=["-enable_pha"]), n=2)
    expect(rows[1], kind="post_handshake", outcome="rejected",
           verify_result=X509_NO_LOCAL_ISSUER,
           cert_sha256=pki.fingerprint(cert[0]))


@test
def optional_no_ca_lets_self_signed_through(ctx):
    cert = ctx.pki["self"]
    row = one_row(ctx, lambda: clients.curl(ctx.srv, cert,
                                            host="nocheck.test"))
    expect(row, outcome="accepted", verify_mode="optional_no_ca",
           verify_result=X509_SELF_SIGNED, sni="nocheck.test",
           cert_sha256=pki.fingerprint(cert[0]), requests=1)
    # mod_ssl serves it and tells the application the verification failed.
    v = last_vars(ctx)
    assert v["verify"].startswith("FAILED:"), v
    assert ctx.srv.query("SELECT status FROM v_requests WHERE handshake_id "
                         "= ?", (row["id"],)) == [{"status": 200}]


@test
def certificates_stored_once(ctx):
    fp = pki.fingerprint(ctx.pki["ec"][0])
    for _ in range(2):
        one_row(ctx, lambda: clients.curl(ctx.srv, ctx.pki["ec"]))
    n = ctx.srv.query("SELECT count(*) AS n FROM certificates WHERE "
                      "lower(hex(sha256)) = ?", (fp,))[0]["n"]
    assert n == 1, n
    row = ctx.srv.query("SELECT * FROM v_certificates WHERE cert_sha256 = ?",
                        (fp,))[0]
    assert row["accepted"] >= 2 and row["first_seen"] <= row["last_seen"]
    der = ctx.srv.query("SELECT der FROM certificates WHERE "
                        "lower(hex(sha256)) = ?", (fp,))[0]["der"]
    pem_der = subprocess.run(["openssl", "x509", "-in", ctx.pki["ec"][0],
                              "-outform", "DER"], capture_output=True).stdout
    assert der == pem_der


@test
def database_is_private(ctx):
    db = ctx.srv.db
    st = os.stat(db)
    assert st.st_mode & 0o077 & ~0o040 == 0 and not st.st_mode & 0o007, oct(st.st_mode)
    d = os.stat(os.path.dirname(db))
    assert not d.st_mode & 0o007, oct(d.st_mode)
    import pwd
    assert pwd.getpwuid(st.st_uid).pw_name == ctx.srv.user
    wal = db + "-wal"
    if os.path.exists(wal):
        assert not os.stat(wal).st_mode & 0o007


@test
def wal_mode_and_schema_version(ctx):
    con = sqlite3.connect(ctx.srv.db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        con.close()


@test
def lifecycle_start_event(ctx):
    ev = ctx.srv.query("SELECT * FROM v_events ORDER BY id")
    assert ev and ev[0]["kind"] == "start", ev
    expect(ev[0], module_version=lambda v: bool(v),
           openssl_version=lambda v: "OpenSSL" in (v or ""),
           server_version=lambda v: "Apache/2.4" in (v or ""))


@test
def chain_verifies_and_detects_tampering(ctx):
    tool = ctx.tool
    r = subprocess.run([tool, "verify", ctx.srv.db], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "handshakes   ok" in r.stdout, r.stdout
    copy = os.path.join(ctx.scratch, "tampered.db")
    con = sqlite3.connect(ctx.srv.db)
    con.execute("VACUUM INTO ?", (copy,))
    con.close()
    con = sqlite3.connect(copy)
    con.execute("UPDATE handshakes SET outcome = 1 WHERE id = "
                "(SELECT min(id) FROM handshakes WHERE outcome = 2)")
    con.commit()
    bad = con.execute("SELECT min(id) FROM handshakes WHERE id IN "
                      "(SELECT id FROM handshakes)").fetchone()
    con.close()
    r = subprocess.run([tool, "verify", copy], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "handshakes   BROKEN at id" in r.stdout, r.stdout
    assert bad


@test
def tool_query_reads_the_servers_database(ctx):
    r = subprocess.run([ctx.tool, "query", "--outcome", "rejected",
                        "--format", "json", "--limit", "0", ctx.srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json
    rows = json.loads(r.stdout)
    n = ctx.srv.query("SELECT count(*) AS n FROM handshakes WHERE outcome = 2")[0]["n"]
    assert len(rows) == n and n > 0, (len(rows), n)
    assert all(x["outcome"] == "rejected" and x["source"] == ctx.srv.db
               for x in rows)


@test
def stop_and_graceful_stop_drain_the_queue(ctx):
    # A writer that would wait a minute before writing: only the drain at
    # stop can store these rows.
    import server as server_mod
    srv = server_mod.Server(os.path.join(ctx.scratch, "drain"), ctx.pki,
                            mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditFlushInterval 60000")
    for stop, graceful in ((1, False), (2, True)):
        srv.start()
        for _ in range(10):
            r = clients.curl(srv, ctx.pki["ec"])
            assert r.stdout.strip() == "200", r.stdout + r.stderr
        srv.stop(graceful=graceful)
        n = srv.query("SELECT count(*) AS n FROM handshakes WHERE outcome = 1")
        assert n[0]["n"] == 10 * stop, (graceful, n)
    kinds = [e["kind"] for e in srv.query("SELECT kind FROM events ORDER BY id")]
    # each start is followed by the policy rows of the 5 audited vhosts
    assert kinds == (["start"] + ["policy"] * 5 + ["stop"]) * 2, kinds
    bad = srv.new_errors()
    assert not bad, bad
