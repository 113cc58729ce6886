"""Revocation checks: a real OCSP responder (`openssl ocsp`) behind a
virtual host with `SSLOCSPEnable leaf`, and the main vhost's CRL.  Each
scenario asserts the row's outcome, verify_result and what the module
recorded of the check (revocation_method, revocation_status): a revoked
certificate must be told apart from a check that itself failed."""
import http.server
import json
import os
import subprocess
import tempfile
import time
import threading

import clients
import pki
import server as server_mod
from harness import Registry, expect

test = Registry()

X509_OK = 0
X509_REVOKED = 23
X509_APPLICATION_VERIFICATION = 50

# What mod_ssl logs at level error for each case (the test declares them).
VERIFY_ERRORS = (r"AH02039: Certificate Verification: Error", )
OCSP_REVOKED = (r"AH03239: .*certificate status: revoked", )
OCSP_UNKNOWN = (r"AH03239: .*certificate status: unknown", )
OCSP_DOWN = (r"AH01974: could not connect to OCSP responder", )


class Responder:
    """An OCSP responder on 127.0.0.1: each request answered by `openssl
    ocsp` in responder mode (-index, -rsigner, -reqin, -respout), for the
    root CA, from an index file of our own: the revoked certificate marked
    R, the RSA client's certificate left out (answered 'unknown').
    (`openssl ocsp -port` would listen on every address.)"""

    def __init__(self, ctx, name):
        self.ctx = ctx
        root = ctx.pki["root"]
        self.dir = os.path.join(ctx.scratch, name)
        os.makedirs(self.dir, exist_ok=True)
        self.index = os.path.join(self.dir, "index.txt")
        left_out = serial(ctx.pki["rsa"][0])
        with open(os.path.join(root.dir, "index.txt")) as f, \
                open(self.index, "w") as out:
            for line in f:
                if line.split("\t")[3].upper() != left_out:
                    out.write(line)
        # As the CA's own: other tests issue a second CN=localhost.
        with open(self.index + ".attr", "w") as out:
            out.write("unique_subject = no\n")
        self.httpd = None
        self.thread = None
        self.port = None
        self.answered = 0
        # "ok", or how to misbehave: "hang" (answer after 6 s, beyond
        # SSLOCSPResponderTimeout), "http500", "garbage" (200, not DER)
        self.mode = "ok"

    def answer(self, req):
        root = self.ctx.pki["root"]
        fd, rq = tempfile.mkstemp(dir=self.dir, suffix=".req")
        os.write(fd, req)
        os.close(fd)
        rs = rq[:-4] + ".resp"
        try:
            pki.run("openssl", "ocsp", "-index", self.index, "-CA",
                    root.cert, "-rsigner", root.cert, "-rkey", root.key,
                    "-reqin", rq, "-respout", rs)
            self.answered += 1
            return open(rs, "rb").read()
        finally:
            for f in (rq, rs):
                if os.path.exists(f):
                    os.unlink(f)

    def start(self):
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = me.answer(self.rfile.read(n))
                if me.mode == "hang":
                    time.sleep(6)
                elif me.mode == "http500":
                    self.send_error(500)
                    return
                elif me.mode == "garbage":
                    body = b"this is not an OCSP response"
                try:
                    self.send_response(200)
                    self.send_header("Content-Type",
                                     "application/ocsp-response")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:         # "hang": mod_ssl gave up on us
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(10)
        self.httpd = None


def serial(cert):
    out = pki.run("openssl", "x509", "-in", cert, "-noout",
                  "-serial").decode()
    return out.strip().split("=", 1)[1].upper()


def ocsp_server(ctx, name, responder):
    """A server of our own with one more port: a vhost that checks the
    client's certificate by OCSP (leaf), asking only our responder."""
    p = ctx.pki
    port = server_mod.free_port()
    extra = """Listen 127.0.0.1:{port}
<VirtualHost 127.0.0.1:{port}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {srv_cert}
    SSLCertificateKeyFile {srv_key}
    SSLCACertificateFile {ca}
    SSLVerifyClient require
    SSLOCSPEnable leaf
    SSLOCSPDefaultResponder http://127.0.0.1:{rport}/
    SSLOCSPOverrideResponder on
    SSLOCSPResponderTimeout 3
    MTLSAuditEngine On
</VirtualHost>
""".format(port=port, srv_cert=p["server"][0], srv_key=p["server"][1],
           ca=p["root"].cert, rport=responder.port)
    srv = server_mod.Server(os.path.join(ctx.scratch, name), p,
                            mpm=ctx.srv.mpm, extra_global=extra)
    srv.ocsp_port = port
    srv.start()
    return srv


def handshake(srv, cert, tls="1.3"):
    """One curl handshake on the OCSP port; the one new row."""
    after = srv.max_id()
    clients.curl(srv, cert, port=srv.ocsp_port, tls=tls)
    rows = srv.wait_rows(after, 1)
    assert len(rows) == 1, rows
    return rows[0]


def no_other_errors(srv, expected):
    bad = srv.new_errors(expected)
    bad += ["sanitizer: " + r for r in srv.sanitizer_reports()]
    assert not bad, "unexpected errors in the error log:\n  " + \
        "\n  ".join(bad)


def run_ocsp(ctx, name, body, expected):
    responder = Responder(ctx, name + "-ocsp")
    responder.start()
    srv = None
    try:
        srv = ocsp_server(ctx, name, responder)
        srv.new_errors()
        body(srv, responder)
        no_other_errors(srv, expected)
    finally:
        if srv:
            srv.stop()
        responder.stop()


@test
def ocsp_good_is_recorded(ctx):
    def body(srv, responder):
        for tls in ("1.3", "1.2"):
            row = handshake(srv, ctx.pki["ec"], tls=tls)
            expect(row, outcome="accepted", verify_result=X509_OK,
                   revocation_method="ocsp", revocation_status="good",
                   cert_sha256=pki.fingerprint(ctx.pki["ec"][0]))
        # mod_ssl asked the responder each time (no stapling, no cache).
        assert responder.answered == 2, responder.answered
    run_ocsp(ctx, "ocsp-good", body, ())


@test(expect_errors=VERIFY_ERRORS)
def ocsp_revoked_is_recorded(ctx):
    def body(srv, responder):
        row = handshake(srv, ctx.pki["revoked"])
        expect(row, outcome="rejected", verify_result=X509_REVOKED,
               revocation_method="ocsp", revocation_status="revoked",
               alert_name="certificate_revoked")
    run_ocsp(ctx, "ocsp-revoked", body, VERIFY_ERRORS + OCSP_REVOKED)


@test(expect_errors=VERIFY_ERRORS)
def ocsp_unknown_certificate_is_a_failed_check(ctx):
    def body(srv, responder):
        row = handshake(srv, ctx.pki["rsa"])
        expect(row, outcome="rejected",
               verify_result=X509_APPLICATION_VERIFICATION,
               revocation_method="ocsp", revocation_status="unknown")
    run_ocsp(ctx, "ocsp-unknown", body, VERIFY_ERRORS + OCSP_UNKNOWN)


@test(expect_errors=VERIFY_ERRORS)
def ocsp_responder_down_is_a_failed_check_not_a_revocation(ctx):
    def body(srv, responder):
        # The same certificate said good while the responder answered.
        row = handshake(srv, ctx.pki["ec"])
        expect(row, outcome="accepted", revocation_status="good")
        responder.stop()
        row = handshake(srv, ctx.pki["ec"])
        expect(row, outcome="rejected",
               verify_result=X509_APPLICATION_VERIFICATION,
               revocation_method="ocsp", revocation_status="unreachable")
        # The revoked certificate too: the check failed, nothing said
        # it is revoked.
        row = handshake(srv, ctx.pki["revoked"])
        expect(row, outcome="rejected",
               verify_result=X509_APPLICATION_VERIFICATION,
               revocation_method="ocsp", revocation_status="unreachable")
    run_ocsp(ctx, "ocsp-down", body, VERIFY_ERRORS + OCSP_DOWN)


@test(expect_errors=VERIFY_ERRORS)
def ocsp_responder_misbehaving_is_a_failed_check(ctx):
    """A responder that answers too late (SSLOCSPResponderTimeout 3), with
    an HTTP error, or with bytes that are no OCSP response."""
    def body(srv, responder):
        for mode, status in (("http500", "bad_response"),
                             ("garbage", "bad_response"),
                             ("hang", "unreachable")):
            responder.mode = mode
            row = handshake(srv, ctx.pki["ec"])
            expect(row, outcome="rejected",
                   verify_result=X509_APPLICATION_VERIFICATION,
                   revocation_method="ocsp", revocation_status=status)
    run_ocsp(ctx, "ocsp-misbehaving", body, VERIFY_ERRORS + (
        r"AH01980: bad response from OCSP server",
        r"AH01988: failed to decode OCSP response data",
        r"AH01977: failed reading line from OCSP server",
        r"SSL Library Error: .*(asn1|ASN1|header too long|nested asn1)"))


@test(expect_errors=VERIFY_ERRORS)
def crl_results_are_recorded_with_method_crl(ctx):
    """The main vhost checks the leaf against the root's CRL."""
    for key, outcome, vr, status in (
            ("revoked", "rejected", X509_REVOKED, "revoked"),
            ("ec", "accepted", X509_OK, "good"),
            # The intermediate published no CRL: X509_V_ERR_UNABLE_TO_GET_CRL.
            ("via_inter_chain", "rejected", 3, "unknown")):
        after = ctx.srv.max_id()
        clients.curl(ctx.srv, ctx.pki[key])
        rows = ctx.srv.wait_rows(after, 1)
        assert len(rows) == 1, rows
        expect(rows[0], outcome=outcome, verify_result=vr,
               revocation_method="crl", revocation_status=status)
    # A vhost without revocation checking records none.
    after = ctx.srv.max_id()
    clients.curl(ctx.srv, ctx.pki["ec"], host="depth.test")
    rows = ctx.srv.wait_rows(after, 1)
    assert len(rows) == 1, rows
    expect(rows[0], outcome="accepted", sni="depth.test",
           revocation_method=None, revocation_status=None)


@test(expect_errors=VERIFY_ERRORS)
def report_counts_revocation_results(ctx):
    """PCI 4.2.1 and HIPAA 164.312(e): OCSP and CRL results counted, the
    failed checks on a line of their own; the chain of the rows holds."""
    def body(srv, responder):
        for key in ("ec", "ec", "revoked", "rsa"):
            handshake(srv, ctx.pki[key])
        responder.stop()
        handshake(srv, ctx.pki["ec"])
        for key in ("revoked", "ec"):           # the main vhost: CRL
            after = srv.max_id()
            clients.curl(srv, ctx.pki[key])
            assert len(srv.wait_rows(after, 1)) == 1
        for standard, cid in (("pci-dss", "4.2.1 revocation"),
                              ("hipaa", "164.312(e) revocation")):
            r = subprocess.run([ctx.tool, "report", "--standard", standard,
                                "--format", "json", srv.db],
                               capture_output=True, text=True)
            assert r.returncode in (0, 1), (r.returncode, r.stderr)
            checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
            c = checks[cid]
            assert c["status"] == "ATTENTION", c
            assert ("OCSP good 2, revoked 1, unknown 1, unreachable 1, "
                    "bad response 0, error 0; CRL good 1, revoked 1, "
                    "unknown 0, bad CRL 0; the revocation check itself "
                    "failed: 2 (0 accepted)") in c["metric"], c["metric"]
            rows = {(e["method"], e["status"]): e for e in c["evidence"]}
            assert rows[("ocsp", "good")]["handshakes"] == "2", rows
            assert rows[("ocsp", "revoked")]["handshakes"] == "1", rows
            assert rows[("ocsp", "unknown")]["handshakes"] == "1", rows
            assert rows[("ocsp", "unreachable")]["handshakes"] == "1", rows
            assert rows[("crl", "revoked")]["handshakes"] == "1", rows
            assert rows[("crl", "good")]["handshakes"] == "1", rows
            assert rows[("any", "check_failed")]["handshakes"] == "2", rows
            assert "revocation-check evidence: yes" in \
                checks["4.2.1" if standard == "pci-dss" else
                       "164.312(e)(1), (e)(2)(i), (e)(2)(ii)"]["metric"]
        r = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        # The query tool shows the columns.
        r = subprocess.run([ctx.tool, "query", "--format", "json", srv.db],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        got = sorted((x["revocation_method"], x["revocation_status"])
                     for x in json.loads(r.stdout))
        assert got == sorted([("ocsp", "good")] * 2 + [
            ("ocsp", "revoked"), ("ocsp", "unknown"),
            ("ocsp", "unreachable"), ("crl", "revoked"), ("crl", "good")]), \
            got
    run_ocsp(ctx, "ocsp-report", body, VERIFY_ERRORS + OCSP_REVOKED
             + OCSP_UNKNOWN + OCSP_DOWN)


def schema2_file(path, top):
    """A database as a schema-2 build left it: schema/001 and 002 applied,
    two handshake rows chained over their 24 columns (mtls_chain.h)."""
    import hashlib
    import sqlite3
    import struct
    con = sqlite3.connect(path)
    for f in ("001_initial.sql", "002_chain_cut.sql"):
        con.executescript(open(os.path.join(top, "schema", f)).read())

    def enc(v):
        if v is None:
            return b"\0"
        if isinstance(v, int):
            return b"\1" + struct.pack(">q", v)
        b = v.encode()
        return b"\3" + struct.pack(">I", len(b)) + b
    prev = bytes(32)
    now = int(time.time() * 1e6)
    for i in (1, 2):
        row = [i, now - 1000000 * (3 - i), "old.example"] + [None] * 7 + \
              [2, 0, 1, 23, "certificate revoked", 0] + [None] * 8
        h = hashlib.sha256(prev + b"handshakes\0" +
                           b"".join(enc(v) for v in row)).digest()
        con.execute("INSERT INTO handshakes VALUES (%s)" %
                    ",".join("?" * 25), row + [h])
        prev = h
    con.commit()
    con.close()


@test(expect_errors=VERIFY_ERRORS)
def older_files_read_beside_new_ones(ctx):
    """A schema-2 file (no revocation columns) and a schema-3 one read as
    one data set: the tool verifies the old file unchanged, and query and
    report give the old rows null revocation columns."""
    top = os.path.dirname(os.path.dirname(ctx.tool))
    old = os.path.join(ctx.scratch, "schema2.db")

    def fresh():
        # A read is recorded in the file (an access event), which brings
        # it to schema 3: each command gets the schema-2 file anew.
        for f in (old, old + "-wal", old + "-shm"):
            if os.path.exists(f):
                os.unlink(f)
        schema2_file(old, top)
    fresh()
    after = ctx.srv.max_id()
    clients.curl(ctx.srv, ctx.pki["revoked"])
    assert len(ctx.srv.wait_rows(after, 1)) == 1
    r = subprocess.run([ctx.tool, "verify", "--no-record", old],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    fresh()
    r = subprocess.run([ctx.tool, "query", "--format", "json", "--limit", "0",
                        old, ctx.srv.db], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    olds = [x for x in rows if x["source"] == old]
    assert len(olds) == 2 and all(x["revocation_method"] is None and
                                  x["revocation_status"] is None
                                  for x in olds), olds
    assert any(x["revocation_status"] == "revoked" for x in rows
               if x["source"] == ctx.srv.db), rows
    fresh()
    # (The table cuts a cell at 64 bytes, inside a UTF-8 character of the
    # capture tests' hostile subject: bytes, decoded leniently.)
    r = subprocess.run([ctx.tool, "query", old, ctx.srv.db],
                       capture_output=True, text=True, errors="replace")
    assert r.returncode == 0 and "crl revoked" in r.stdout, r.stdout + r.stderr
    for args in ([], ["--no-verify"]):
        fresh()
        r = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                            "--format", "json"] + args + [old, ctx.srv.db],
                           capture_output=True, text=True)
        assert r.returncode in (0, 1), (r.returncode, r.stderr)
        c = {x["id"]: x for x in json.loads(r.stdout)["checks"]}
        assert "CRL good" in c["4.2.1 revocation"]["metric"], c
        rows = {(e["method"], e["status"]): e
                for e in c["4.2.1 revocation"]["evidence"]}
        assert int(rows[("crl", "revoked")]["handshakes"]) >= 1, rows
    fresh()
    r = subprocess.run([ctx.tool, "export", old], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert sum(l["type"] == "handshake" for l in lines) == 2
    assert all("revocation_status" not in l for l in lines)


@test()
def reading_an_older_archive_leaves_its_bytes_alone(ctx):
    """A read is recorded in the live file, never in an archive (or a
    sealed file): not even opened for writing, which would bring an older
    archive's schema up to date and change the bytes its seal hashed."""
    import hashlib
    import sqlite3
    top = os.path.dirname(os.path.dirname(ctx.tool))
    old = os.path.join(ctx.scratch, "schema2-archive.db")
    for f in (old, old + "-wal", old + "-shm"):
        if os.path.exists(f):
            os.unlink(f)
    schema2_file(old, top)
    con = sqlite3.connect(old)
    head, h = con.execute("SELECT id, hash FROM handshakes ORDER BY id DESC "
                          "LIMIT 1").fetchone()
    for t, i, hh in (("handshakes", head, h), ("events", 1, bytes(32))):
        con.execute("INSERT INTO chain_cut VALUES (?, 'end', ?, ?, ?, ?)",
                    (t, i, hh, int(time.time() * 1e6), "live.db"))
    con.commit()
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    before = hashlib.sha256(open(old, "rb").read()).hexdigest()
    for cmd in (["report", "--standard", "pci-dss", "--no-verify"],
                ["query", "--limit", "1"]):
        r = subprocess.run([ctx.tool] + cmd + [old], capture_output=True,
                           text=True)
        assert r.returncode in (0, 1), (cmd, r.returncode, r.stderr)
        assert "(an archive)" in r.stderr, r.stderr
        assert hashlib.sha256(open(old, "rb").read()).hexdigest() == before, \
            cmd
    con = sqlite3.connect("file:%s?mode=ro" % old, uri=True)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    con.close()
