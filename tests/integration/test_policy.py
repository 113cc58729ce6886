"""Policy events (issue 21): at every start and reload the module records,
for each audited virtual host, what the SSL_CTX mod_ssl built enforces.
Each test runs its own server with one audited vhost whose configuration
it changes between graceful reloads, and compares the recorded policy
with what `openssl` reads from the very files the server was given."""
import calendar
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time

import clients
import pki
import siem
import server as server_mod
from harness import Registry, wait_for

test = Registry()


# -- a second and a third CA, and a CRL of the second ------------------
def extra_cas(ctx):
    """Two more CAs (made once per run, under the PKI directory), and a
    CRL file holding the root's CRL and the second CA's."""
    if getattr(ctx, "policy_pki", None):
        return ctx.policy_pki
    base = os.path.join(os.path.dirname(ctx.pki["crl"]), "policy")
    os.makedirs(base, exist_ok=True)
    ca2 = pki.CA(base, "ca2", "/O=mtls-audit tests/CN=Test Second CA")
    ca3 = pki.CA(base, "ca3", "/O=mtls-audit tests/CN=Test Third CA")
    crl2 = os.path.join(base, "ca2.crl")
    ca2.crl(crl2)
    crls = os.path.join(base, "root+ca2.crl")
    with open(crls, "w") as f:
        f.write(open(ctx.pki["crl"]).read())
        f.write(open(crl2).read())
    ctx.policy_pki = {"ca2": ca2, "ca3": ca3, "crls": crls, "base": base}
    return ctx.policy_pki


def bundle(path, *certs):
    with open(path, "w") as f:
        for c in certs:
            f.write(open(c).read())
    return path


class PolicyServer(server_mod.Server):
    """One audited vhost, policy.test, on its own port; its directives in
    self.vhost (a dict rewritten between reloads)."""

    def __init__(self, root, p, mpm, vhost):
        self.vhost = vhost
        super().__init__(root, p, mpm=mpm)

    def write_conf(self):
        p = self.pki
        mods = self.load("mpm_%s" % self.mpm, "mpm_%s" % self.mpm)
        for name in ("authz_core", "mime", "dir", "ssl", "socache_shmcb"):
            mods += self.load(name, name)
        mods += ("LoadModule mtls_audit_module %s/mod_mtls_audit.so\n"
                 % server_mod.MODULE_DIR)
        v = self.vhost
        lines = [
            'ServerRoot "%s"' % self.root,
            'PidFile "%s/logs/httpd.pid"' % self.root,
            'DefaultRuntimeDir "%s/logs"' % self.root,
            "Mutex file:%s/logs default" % self.root,
            'ErrorLog "%s/logs/error.log"' % self.root,
            "LogLevel warn mtls_audit:info",
            "User %s" % self.user, "Group %s" % self.user,
            "ServerName localhost",
            "Listen 127.0.0.1:%d" % self.port,
            mods,
            "TypesConfig /etc/mime.types",
            'DocumentRoot "%s/htdocs"' % self.root,
            '<Directory "%s/htdocs">' % self.root,
            "    Require all granted",
            "</Directory>",
            "StartServers 1",
            "SSLSessionCache shmcb:%s/logs/ssl_scache(512000)" % self.root,
            "SSLRandomSeed startup builtin",
            "MTLSAuditDatabase %s" % self.db,
            "MTLSAuditFlushInterval 20",
        ] + list(v.get("global", ())) + [
            "<VirtualHost 127.0.0.1:%d>" % self.port,
            "    ServerName policy.test",
            "    SSLEngine on",
            "    SSLCertificateFile %s" % p["server"][0],
            "    SSLCertificateKeyFile %s" % p["server"][1],
            ("    SSLCACertificatePath %s" % v["ca_path"]) if v.get("ca_path")
            else ("    SSLCACertificateFile %s" % v["ca_file"]),
            "    SSLVerifyClient %s" % v.get("verify", "require"),
        ]
        for d in v.get("extra", ()):
            lines.append("    " + d)
        lines.append("    MTLSAuditEngine On")
        if v.get("location"):
            lines.append("    <Location /admin>")
            lines.append("        SSLVerifyClient %s" % v["location"])
            lines.append("    </Location>")
        lines.append("</VirtualHost>")
        text = "\n".join(lines) + "\n"
        numbered = text.split("\n")
        self.vhost_line = numbered.index("<VirtualHost 127.0.0.1:%d>"
                                         % self.port) + 1
        self.location_line = (numbered.index("    <Location /admin>") + 2
                              if v.get("location") else None)
        with open(self.conf, "w") as f:
            f.write(text)

    def reload(self, **vhost):
        """Rewrite the vhost's directives, graceful reload, and wait for
        the policy row that follows the reload event."""
        before = self.policy_count()
        self.vhost.update(vhost)
        self.write_conf()
        self.graceful()
        assert wait_for(lambda: self.policy_count() > before, 30), \
            self.read_error_log()[-3000:]

    def policy_count(self):
        try:
            con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True,
                                  timeout=10)
            try:
                return con.execute("SELECT count(*) FROM events WHERE kind "
                                   "= 'policy'").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    def policies(self):
        """The v_policy rows, oldest first, as dicts (policy parsed)."""
        rows = self.query("SELECT id, time_utc, vhost, digest, "
                          "unchanged_since, changed, policy FROM v_policy "
                          "ORDER BY id")
        out = []
        for d in rows:
            d["policy"] = json.loads(d["policy"])
            d["changed"] = json.loads(d["changed"]) if d["changed"] else None
            out.append(d)
        return out


def start_server(ctx, name, **vhost):
    srv = PolicyServer(os.path.join(ctx.scratch, name), ctx.pki,
                       ctx.srv.mpm, vhost)
    srv.start()
    assert wait_for(lambda: srv.policy_count() >= 1, 30), \
        srv.read_error_log()[-3000:]
    return srv


# -- what openssl reads from the same files ----------------------------
def ossl(*args, data=None):
    r = subprocess.run(["openssl"] + list(args), input=data,
                       capture_output=True, check=True)
    return r.stdout


def epoch(text):
    """'Dec  5 04:00:00 2036 GMT' as seconds since the epoch."""
    return calendar.timegm(time.strptime(text.strip(), "%b %d %H:%M:%S %Y GMT"))


def field(out, name):
    return out.decode().strip().split("=", 1)[1] if out.decode().startswith(
        name + "=") else None


def cert_truth(path):
    text = ossl("x509", "-in", path, "-noout", "-text").decode()
    return {
        "subject": field(ossl("x509", "-in", path, "-noout", "-subject",
                              "-nameopt", "RFC2253"), "subject"),
        "issuer": field(ossl("x509", "-in", path, "-noout", "-issuer",
                             "-nameopt", "RFC2253"), "issuer"),
        "serial": field(ossl("x509", "-in", path, "-noout", "-serial"),
                        "serial").upper(),
        "sha256": pki.fingerprint(path),
        "key_type": "EC" if "id-ecPublicKey" in text else "RSA",
        "key_bits": int(re.search(r"Public-Key: \((\d+) bit\)", text)
                        .group(1)),
        "sig_alg": re.search(r"Signature Algorithm: (\S+)", text).group(1),
        "not_after": epoch(field(ossl("x509", "-in", path, "-noout",
                                      "-enddate"), "notAfter")),
    }


def crl_truths(path):
    """Each CRL of a PEM file, as openssl reads it."""
    text = open(path).read()
    out = []
    for pem in re.findall(r"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----\n?",
                          text, re.S):
        data = pem.encode()
        der = ossl("crl", "-outform", "DER", data=data)
        listing = ossl("crl", "-noout", "-text", data=data).decode()
        out.append({
            "issuer": field(ossl("crl", "-noout", "-issuer", "-nameopt",
                                 "RFC2253", data=data), "issuer"),
            "last_update": epoch(field(ossl("crl", "-noout", "-lastupdate",
                                            data=data), "lastUpdate")),
            "next_update": epoch(field(ossl("crl", "-noout", "-nextupdate",
                                            data=data), "nextUpdate")),
            "entries": listing.count("Serial Number:"),
            "sha256": hashlib.sha256(der).hexdigest(),
        })
    return sorted(out, key=lambda c: (c["issuer"], c["sha256"]))


def by_sha(items):
    return {c["sha256"]: c for c in items}


# -- tests ---------------------------------------------------------------
@test
def test_policy_start_matches_openssl(ctx):
    """The policy row of a start holds the CAs, CRLs, CA names, server
    certificate, verification and revocation settings exactly as openssl
    reads them from the files the server was given."""
    x = extra_cas(ctx)
    base = os.path.join(ctx.scratch, "policy-start")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert,
                    x["ca2"].cert)
    srv = start_server(ctx, "policy-start", ca_file=cafile,
                       extra=("SSLCARevocationFile %s" % x["crls"],
                              "SSLCARevocationCheck chain",
                              "SSLVerifyDepth 3"))
    try:
        rows = srv.policies()
        assert len(rows) == 1, rows
        row = rows[0]
        p = row["policy"]
        ev = srv.query("SELECT kind FROM events WHERE id = ?",
                       (row["id"] - 1,))
        assert ev and ev[0]["kind"] == "start", ev
        assert row["vhost"] == "policy.test" == p["vhost"]
        assert p["addresses"] == ["127.0.0.1:%d" % srv.port], p
        assert p["config"] == "%s:%d" % (srv.conf, srv.vhost_line), p
        assert row["digest"] == p["digest"] and re.fullmatch(
            "[0-9a-f]{64}", row["digest"]), row
        assert row["unchanged_since"] is None and row["changed"] is None
        assert "changed" not in p and "previous" not in p
        # The digest is that of the object without itself.
        canon = dict(p)
        del canon["digest"]
        assert hashlib.sha256(json.dumps(
            canon, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest() == p["digest"], p
        assert p["verify"] == {"mode": "require", "depth": 3,
                               "locations": []}, p["verify"]
        want = [cert_truth(ctx.pki["root"].cert), cert_truth(x["ca2"].cert)]
        assert by_sha(p["cas"]) == by_sha(want), (p["cas"], want)
        assert sorted(p["ca_names"]) == sorted(c["subject"] for c in want)
        rev = p["revocation"]
        assert rev["crl_check"] == "chain", rev
        got_crls = sorted(rev["crls"], key=lambda c: (c["issuer"],
                                                      c["sha256"]))
        assert got_crls == crl_truths(x["crls"]), (got_crls,
                                                   crl_truths(x["crls"]))
        assert [c["entries"] for c in got_crls if "Test Root" in
                c["issuer"]] == [1], got_crls
        assert rev["ocsp"] == {"enabled": False, "responder": None,
                               "override": False}, rev
        srv_cert = cert_truth(ctx.pki["server"][0])
        assert [(c["subject"], c["sha256"], c["not_after"])
                for c in p["server_certs"]] == [
            (srv_cert["subject"], srv_cert["sha256"],
             srv_cert["not_after"])], p["server_certs"]
        assert p["resumption"] == {"tickets": True, "cache": "shmcb"}, \
            p["resumption"]
        assert "TLSv1.3" in p["protocols"]["enabled"], p["protocols"]
        assert p["protocols"]["max"] == "TLSv1.3", p["protocols"]
        assert "TLS_AES_256_GCM_SHA384" in p["ciphers"]["tls13"], \
            p["ciphers"]
        assert p["ciphers"]["tls12"] and not any(
            c.startswith("TLS_") for c in p["ciphers"]["tls12"]), \
            p["ciphers"]
        # The chain still verifies with the policy rows in it.
        r = subprocess.run([ctx.tool, "verify", srv.db], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        srv.stop()


@test
def test_policy_reload_ca_change_then_unchanged(ctx):
    """A graceful reload that adds one CA and removes another records
    exactly that (changed: cas and the CA names sent; the fingerprints);
    a reload that changes nothing writes the short form, naming the row
    that holds the policy."""
    x = extra_cas(ctx)
    base = os.path.join(ctx.scratch, "policy-reload")
    os.makedirs(base, exist_ok=True)
    cafile = os.path.join(base, "cas.pem")
    bundle(cafile, ctx.pki["root"].cert, x["ca2"].cert)
    srv = start_server(ctx, "policy-reload", ca_file=cafile)
    try:
        first = srv.policies()[-1]
        bundle(cafile, ctx.pki["root"].cert, x["ca3"].cert)
        srv.reload()
        rows = srv.policies()
        assert len(rows) == 2, rows
        second = rows[-1]
        assert srv.query("SELECT kind FROM events WHERE id = ?",
                         (second["id"] - 1,))[0]["kind"] == "reload"
        assert second["changed"] == ["cas", "ca_names"], second["changed"]
        assert second["policy"]["previous"] == first["id"], second
        old = set(by_sha(first["policy"]["cas"]))
        new = set(by_sha(second["policy"]["cas"]))
        assert new - old == {pki.fingerprint(x["ca3"].cert)}, (old, new)
        assert old - new == {pki.fingerprint(x["ca2"].cert)}, (old, new)
        assert second["digest"] != first["digest"]
        # Nothing changed: the short form, twice, both naming `second`.
        for n in (3, 4):
            srv.reload()
            rows = srv.policies()
            assert len(rows) == n, rows
            short = rows[-1]
            assert short["policy"] == {
                "vhost": "policy.test",
                "addresses": ["127.0.0.1:%d" % srv.port],
                "digest": second["digest"],
                "unchanged_since": second["id"]}, short["policy"]
            assert short["unchanged_since"] == second["id"]
        # A change after short rows compares with the full row they name.
        srv.reload(verify="optional")
        last = srv.policies()[-1]
        assert last["changed"] == ["verify"], last["changed"]
        assert last["policy"]["previous"] == second["id"], last["policy"]
        r = subprocess.run([ctx.tool, "verify", srv.db], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        srv.stop()


@test
def test_policy_verify_weakened_by_reload(ctx):
    """require -> optional by a reload: changed ["verify"], both modes as
    recorded; and what the server now does agrees (no certificate: 200)."""
    base = os.path.join(ctx.scratch, "policy-weaken")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    srv = start_server(ctx, "policy-weaken", ca_file=cafile)
    try:
        assert clients.curl(srv, None).stdout.strip() != "200"
        srv.reload(verify="optional")
        rows = srv.policies()
        assert len(rows) == 2, rows
        assert rows[0]["policy"]["verify"]["mode"] == "require"
        assert rows[1]["policy"]["verify"]["mode"] == "optional"
        assert rows[1]["changed"] == ["verify"], rows[1]["changed"]
        assert rows[1]["policy"]["previous"] == rows[0]["id"]
        assert wait_for(lambda: clients.curl(srv, None)
                        .stdout.strip() == "200", 10)
        srv.reload(verify="optional_no_ca")
        last = srv.policies()[-1]
        assert last["policy"]["verify"]["mode"] == "optional_no_ca", last
        assert last["changed"] == ["verify"], last["changed"]
    finally:
        srv.stop()


@test(expect_errors=(r"AH02039: Certificate Verification: Error",
                     r"SSL Library Error"))
def test_policy_tls1_enabled(ctx):
    """SSLProtocol that enables TLSv1 (with @SECLEVEL=0, which this
    OpenSSL needs for it) shows in protocols.enabled, and a TLSv1 client
    indeed gets through; without it, TLSv1 is not listed and refused."""
    base = os.path.join(ctx.scratch, "policy-tls1")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    srv = start_server(ctx, "policy-tls1", ca_file=cafile,
                       verify="optional")

    def tls1():
        return subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
             "-servername", "policy.test", "-tls1", "-cipher",
             "DEFAULT:@SECLEVEL=0"], input="", capture_output=True,
            text=True, timeout=20)
    def suite(version, name):
        flag = "-ciphersuites" if version == "-tls1_3" else "-cipher"
        r = subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
             "-servername", "localhost", version, flag, name], input="",
            capture_output=True, text=True, timeout=20)
        return r.returncode == 0 and ("Cipher is %s\n" % name) in r.stdout
    try:
        p = srv.policies()[-1]["policy"]
        assert "TLSv1" not in p["protocols"]["enabled"], p["protocols"]
        assert tls1().returncode != 0
        # Each suite listed is one a client gets; the server's certificate
        # is EC, so no RSA-authenticated suite is listed, nor gets through.
        c = p["ciphers"]
        assert c["tls12"] and c["tls13"], c
        for name in c["tls12"]:
            assert suite("-tls1_2", name), name
        for name in c["tls13"]:
            assert suite("-tls1_3", name), name
        assert not any("-RSA-" in n or "PSK" in n or "SRP" in n
                       for n in c["tls12"]), c
        assert not suite("-tls1_2", "ECDHE-RSA-AES128-GCM-SHA256")
        srv.reload(extra=("SSLProtocol all",
                          "SSLCipherSuite DEFAULT:@SECLEVEL=0"))
        last = srv.policies()[-1]
        pr = last["policy"]["protocols"]
        assert pr["enabled"] == ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"], pr
        assert pr["min"] == "TLSv1" and pr["max"] == "TLSv1.3", pr
        assert pr["security_level"] == 0, pr
        assert "protocols" in last["changed"], last["changed"]
        r = tls1()
        assert r.returncode == 0 and "Protocol  : TLSv1\n" in r.stdout, \
            r.stdout[-2000:] + r.stderr[-2000:]
    finally:
        srv.stop()


@test
def test_policy_location_verify(ctx):
    """A per-Location SSLVerifyClient shows in verify.locations, with its
    file and line; removing it by a reload records the change."""
    base = os.path.join(ctx.scratch, "policy-location")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    srv = start_server(ctx, "policy-location", ca_file=cafile,
                       verify="none", location="require")
    try:
        p = srv.policies()[-1]["policy"]
        assert p["verify"]["mode"] == "none", p["verify"]
        assert p["verify"]["locations"] == [{
            "where": "/admin", "section": "Location", "mode": "require",
            "config": "%s:%d" % (srv.conf, srv.location_line)}], p["verify"]
        srv.reload(location=None)
        last = srv.policies()[-1]
        assert last["policy"]["verify"]["locations"] == [], last
        assert last["changed"] == ["verify"], last["changed"]
        # Session tickets switched off: resumption, and nothing else.
        assert last["policy"]["resumption"]["tickets"] is True
        srv.reload(extra=("SSLSessionTickets off",))
        last = srv.policies()[-1]
        assert last["policy"]["resumption"] == {"tickets": False,
                                                "cache": "shmcb"}, last
        assert last["changed"] == ["resumption"], last["changed"]
    finally:
        srv.stop()


@test(once=True)
def test_policy_in_mirror_and_export(ctx):
    """The mirror carries the policy rows as they are stored, the short
    form too, and `export` gives the same lines; in ECS (a configuration
    event: creation, change, info) and OCSF (a Base Event, activity
    "policy") they conform to the reference definitions."""
    base = os.path.join(ctx.scratch, "policy-mirror")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    mirror = os.path.join(ctx.scratch, "policy-mirror", "logs",
                          "mirror.jsonl")
    srv = start_server(ctx, "policy-mirror", ca_file=cafile,
                       **{"global": ("MTLSAuditMirror logs/mirror.jsonl",)})
    try:
        srv.reload()                        # unchanged: the short form
        srv.reload(verify="optional")       # changed
    finally:
        srv.stop()
    rows = srv.policies()
    assert [("changed" in r["policy"], "unchanged_since" in r["policy"])
            for r in rows] == [(False, False), (False, True), (True, False)]
    lines = [json.loads(l) for l in open(mirror)]
    pol = [l for l in lines if l["type"] == "event" and l["kind"] == "policy"]
    assert [(l["id"], l["detail"]) for l in pol] == [
        (r["id"], json.dumps(r["policy"], separators=(",", ":"),
                             ensure_ascii=False)) for r in rows], pol
    r = subprocess.run([ctx.tool, "export", "--format", "jsonl", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l for l in exported if l.get("kind") == "policy"] == pol
    for fmt, check in (("ecs", siem.check_ecs), ("ocsf", siem.check_ocsf)):
        r = subprocess.run([ctx.tool, "export", "--format", fmt, srv.db],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        docs = [json.loads(l) for l in r.stdout.splitlines()]
        for d in docs:
            bad = check(d)
            assert not bad, (fmt, bad, d)
        if fmt == "ecs":
            pd = [d for d in docs if d["event"]["action"] == "policy"]
            assert [(d["event"]["category"], d["event"]["type"])
                    for d in pd] == [(["configuration"], ["creation"]),
                                     (["configuration"], ["info"]),
                                     (["configuration"], ["change"])], pd
            assert [json.loads(d["message"]) for d in pd] == \
                [r["policy"] for r in rows]
        else:
            pd = [d for d in docs if d.get("activity_name") == "policy"]
            assert [(d["class_uid"], d["type_uid"]) for d in pd] == \
                [(0, 99)] * 3, pd
            assert [json.loads(d["message"]) for d in pd] == \
                [r["policy"] for r in rows]


@test
def test_policy_ca_path_and_ocsp(ctx):
    """The CAs of an SSLCACertificatePath directory (hashed by `openssl
    rehash`), which OpenSSL reads only when a chain needs them, are listed
    all the same; OCSP settings are recorded as configured."""
    x = extra_cas(ctx)
    base = os.path.join(ctx.scratch, "policy-capath")
    cadir = os.path.join(base, "cas")
    os.makedirs(cadir, exist_ok=True)
    for name, c in (("root.pem", ctx.pki["root"].cert),
                    ("ca2.pem", x["ca2"].cert)):
        bundle(os.path.join(cadir, name), c)
    ossl("rehash", cadir)
    srv = start_server(ctx, "policy-capath", ca_file=None, ca_path=cadir,
                       extra=("SSLOCSPEnable leaf",
                              "SSLOCSPDefaultResponder http://127.0.0.1:9/",
                              "SSLOCSPOverrideResponder on"))
    try:
        p = srv.policies()[-1]["policy"]
        assert by_sha(p["cas"]) == by_sha(
            [cert_truth(ctx.pki["root"].cert), cert_truth(x["ca2"].cert)]), \
            p["cas"]
        assert sorted(p["ca_names"]) == sorted(c["subject"] for c in p["cas"])
        assert p["revocation"]["ocsp"] == {
            "enabled": True, "responder": "http://127.0.0.1:9/",
            "override": True}, p["revocation"]
    finally:
        srv.stop()


@test(expect_errors=(r"SSL Library Error", ))
def test_policy_two_server_certs_and_tls1_as_served(ctx):
    """An RSA and an EC server certificate: both listed (as openssl reads
    them), both still served after the module walked them.  TLS 1.0 is
    listed as enabled exactly when a TLS 1.0 client gets through: not at
    the default security level, even by RSA key transport with the RSA
    certificate (nothing signed), and at @SECLEVEL=0."""
    x = extra_cas(ctx)
    if "server_rsa" not in x:
        x["server_rsa"] = ctx.pki["root"].issue(
            x["base"], "server-rsa", "/CN=localhost", kind="rsa",
            ext="server")
    base = os.path.join(ctx.scratch, "policy-rsa")
    os.makedirs(base, exist_ok=True)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    rsa = x["server_rsa"]
    srv = start_server(ctx, "policy-rsa", ca_file=cafile, verify="optional",
                       extra=("SSLCertificateFile %s" % rsa[0],
                              "SSLCertificateKeyFile %s" % rsa[1],
                              "SSLProtocol all"))

    def hello(*args):
        return subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
             "-servername", "localhost"] + list(args), input="",
            capture_output=True, text=True, timeout=20)
    try:
        p = srv.policies()[-1]["policy"]
        want = sorted((cert_truth(c)["sha256"], cert_truth(c)["not_after"])
                      for c in (ctx.pki["server"][0], rsa[0]))
        assert sorted((c["sha256"], c["not_after"])
                      for c in p["server_certs"]) == want, p["server_certs"]
        assert sorted(c["key_type"] for c in p["server_certs"]) == \
            ["EC", "RSA"], p["server_certs"]
        for sig, cert in (("ECDSA+SHA256", ctx.pki["server"][0]),
                          ("RSA-PSS+SHA256", rsa[0])):
            r = hello("-tls1_2", "-sigalgs", sig)
            assert r.returncode == 0, r.stderr[-1500:]
            assert "Server certificate" in r.stdout
            got = ossl("x509", "-noout", "-fingerprint", "-sha256",
                       data=r.stdout.encode()).decode()
            assert got.strip().split("=", 1)[1].replace(":", "").lower() == \
                pki.fingerprint(cert), (sig, got)
        pr = p["protocols"]
        assert pr["security_level"] >= 1, pr
        assert "TLSv1" in pr["configured"], pr
        r = hello("-tls1", "-cipher", "AES128-SHA:@SECLEVEL=0")
        assert ("TLSv1" in pr["enabled"]) == (r.returncode == 0), \
            (pr, r.stdout[-1500:], r.stderr[-1500:])
        assert "TLSv1" not in pr["enabled"], pr
        srv.reload(extra=("SSLCertificateFile %s" % rsa[0],
                          "SSLCertificateKeyFile %s" % rsa[1],
                          "SSLProtocol all",
                          "SSLCipherSuite DEFAULT:@SECLEVEL=0"))
        pr = srv.policies()[-1]["policy"]["protocols"]
        r = hello("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
        assert ("TLSv1" in pr["enabled"]) == (r.returncode == 0), \
            (pr, r.stdout[-1500:], r.stderr[-1500:])
        assert "TLSv1" in pr["enabled"] and pr["security_level"] == 0, pr
    finally:
        srv.stop()
