"""Which virtual hosts are audited, and with which verify_mode: decided
from what mod_ssl configured (its init_server hook), the configuration
tree read only where it must be (configtest; optional against
optional_no_ca), right for <IfDefine>, <IfModule>, <IfVersion>, <If>,
Include, Define and mod_macro's Use; MTLSAuditEngine On in the server
config audits every TLS host of a stock Debian layout and skips the
plain ones."""
import os
import re
import subprocess
import time

import clients
import server as server_mod
from harness import Registry, count, expect, wait_for
from test_ops import run, system_layout

test = Registry()

TOP = server_mod.TOP
# The test server certificate names localhost and a few hosts of
# server.py, not these: the client does not check the server's name.
INSECURE = ("--insecure",)


def ssl_lines(pki, indent="    "):
    return "".join(indent + l + "\n" for l in (
        "SSLEngine on",
        "SSLCertificateFile %s" % pki["server"][0],
        "SSLCertificateKeyFile %s" % pki["server"][1],
        "SSLCACertificateFile %s" % pki["root"].cert))


def vhost(port, name, body):
    return ("<VirtualHost 127.0.0.1:%d>\n    ServerName %s\n%s"
            "</VirtualHost>\n" % (port, name, body))


def rows_after(srv, after):
    return srv.query("SELECT * FROM v_handshakes WHERE id > ? ORDER BY id",
                     (after,))


@test(once=True)
def server_level_on_audits_each_tls_vhost_as_mod_ssl_configured_it(ctx):
    """MTLSAuditEngine On in the server config, inherited by virtual hosts
    that set none of the module's directives: each TLS vhost is audited
    with the verify_mode mod_ssl gave it, SSLVerifyClient coming through
    a false and a true <IfDefine>, <IfModule>, <IfVersion>, a per-directory
    <If>, Include, a Define'd variable and mod_macro's Use; the last
    SSLVerifyClient of a vhost wins, as in mod_ssl; a plain HTTP vhost is
    not audited and configtest passes."""
    p = ctx.pki
    port, plain = server_mod.free_port(), server_mod.free_port()
    root = os.path.join(ctx.scratch, "tree")
    os.makedirs(root, exist_ok=True)
    inc = os.path.join(root, "include-body.conf")
    with open(inc, "w") as f:
        f.write(ssl_lines(p) + "    SSLVerifyClient optional_no_ca\n")
    ssl = ssl_lines(p)
    extra = (
        "MTLSAuditEngine On\n"
        "LoadModule macro_module %s/mod_macro.so\n"
        "Define MTLS_MODE optional_no_ca\n"
        "Listen 127.0.0.1:%d\nListen 127.0.0.1:%d\n" % (
            server_mod.MODULES, port, plain)
        + vhost(port, "first.test", ssl + "    SSLVerifyClient optional\n")
        + vhost(port, "define.test", ssl + "    SSLVerifyClient ${MTLS_MODE}\n")
        + vhost(port, "ifdefine.test", ssl
                + "    <IfDefine MTLS_NEVER_DEFINED>\n"
                  "        SSLVerifyClient optional\n    </IfDefine>\n"
                  "    <IfDefine !MTLS_NEVER_DEFINED>\n"
                  "        SSLVerifyClient optional_no_ca\n    </IfDefine>\n")
        + "<IfModule ssl_module>\n"
        + vhost(port, "ifmodule.test", ssl
                + "    <IfModule !ssl_module>\n"
                  "        SSLVerifyClient optional\n    </IfModule>\n"
                  "    <IfModule mod_ssl.c>\n"
                  "        SSLVerifyClient optional_no_ca\n    </IfModule>\n")
        + "</IfModule>\n"
        + vhost(port, "ifversion.test", ssl
                + "    <IfVersion >= 2.4>\n"
                  "        SSLVerifyClient optional_no_ca\n    </IfVersion>\n"
                  "    <IfVersion < 2.4>\n"
                  "        SSLVerifyClient optional\n    </IfVersion>\n")
        + vhost(port, "if.test", ssl
                + "    SSLVerifyClient optional_no_ca\n"
                  "    <If \"%{REQUEST_URI} == '/never'\">\n"
                  "        SSLVerifyClient optional\n    </If>\n")
        + vhost(port, "include.test", "    Include %s\n" % inc)
        + vhost(port, "last.test", ssl + "    SSLVerifyClient optional\n"
                "    SSLVerifyClient optional_no_ca\n")
        + "<Macro TLSHost $name $mode>\n"
        + vhost(port, "$name", ssl + "    SSLVerifyClient $mode\n")
        + "</Macro>\n"
          "Use TLSHost macro.test optional_no_ca\n"
          "Use TLSHost macro-opt.test optional\n"
          "Use TLSHost macro-req.test require\n"
        + vhost(port, "none.test", ssl + "    SSLVerifyClient none\n")
        + vhost(plain, "plain.test", ""))
    srv = server_mod.Server(os.path.join(root, "srv"), p, mpm=ctx.srv.mpm,
                            extra_global=extra)
    r = srv.httpd("-t")
    assert r.returncode == 0 and "Syntax OK" in r.stdout + r.stderr, \
        r.stdout + r.stderr
    srv.start()
    try:
        want = [("first.test", "optional"), ("define.test", "optional_no_ca"),
                ("ifdefine.test", "optional_no_ca"),
                ("ifmodule.test", "optional_no_ca"),
                ("ifversion.test", "optional_no_ca"),
                ("if.test", "optional_no_ca"),
                ("include.test", "optional_no_ca"),
                ("last.test", "optional_no_ca"),
                ("macro.test", "optional_no_ca"),
                ("macro-opt.test", "optional"),
                ("macro-req.test", "require"), ("none.test", "none")]
        before = srv.max_id()
        for host, _ in want:
            got = clients.curl(srv, p["ec"], host=host, port=port,
                               extra=INSECURE)
            assert got.stdout.strip() == "200", (host, got.stdout, got.stderr)
        # A vhost that says Off under the server-level On: not recorded.
        got = clients.curl(srv, p["ec"], host="off.test")
        assert got.stdout.strip() == "200", got.stdout + got.stderr
        # Plain HTTP to the vhost without TLS: served, never recorded.
        got = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w",
                              "%{http_code}", "http://127.0.0.1:%d/" % plain],
                             capture_output=True, text=True, timeout=20)
        assert got.stdout == "200", got.stdout + got.stderr
        rows = srv.wait_rows(before, len(want))
        assert len(rows) == len(want) and "off.test" not in [
            r["server_name"] for r in rows], [(r["server_name"], r["local_port"])
                                        for r in rows]
        by_sni = dict((r["sni"], r) for r in rows)
        bad = []                # every case's mismatch, not just the first
        for host, mode in want:
            try:
                assert host in by_sni, "no row"
                expect(by_sni[host], server_name=host, local_port=port,
                       verify_mode=mode, outcome="accepted",
                       subject_dn="CN=client-ec,O=Example"
                       if mode != "none" else None)
            except AssertionError as e:
                bad.append("%s: %s" % (host, e))
        assert not bad, "\n".join(bad)
        log = srv.read_error_log()
        audited = [l for l in log.splitlines()
                   if "mtls_audit: auditing the TLS handshakes of:" in l]
        assert audited, log
        for host, _ in want:
            assert host + " (" in audited[-1], (host, audited[-1])
        assert "plain.test" not in audited[-1], audited[-1]
        # A graceful restart decides again, from the new generation.
        srv.graceful()
        assert wait_for(lambda: srv.read_error_log().count(
            "mtls_audit: auditing the TLS handshakes of:") == 2, 15)
        time.sleep(1)
        before = srv.max_id()
        got = clients.curl(srv, p["ec"], host="define.test", port=port,
                           extra=INSECURE)
        assert got.stdout.strip() == "200", got.stdout + got.stderr
        rows = srv.wait_rows(before, 1)
        assert len(rows) == 1, rows
        expect(rows[0], server_name="define.test",
               verify_mode="optional_no_ca", outcome="accepted")
    finally:
        srv.stop()


@test(once=True)
def a_vhost_made_tls_by_listen_https_without_sslengine_is_audited(ctx):
    """mod_ssl gives TLS to a vhost without SSLEngine whose Listen says
    https and which has a certificate: MTLSAuditEngine On written in it
    passes configtest and records its handshakes."""
    p = ctx.pki
    port = server_mod.free_port()
    body = ("    SSLCertificateFile %s\n    SSLCertificateKeyFile %s\n"
            "    SSLCACertificateFile %s\n    SSLVerifyClient require\n"
            "    MTLSAuditEngine On\n" % (p["server"][0], p["server"][1],
                                          p["root"].cert))
    srv = server_mod.Server(
        os.path.join(ctx.scratch, "listen-https"), p, mpm=ctx.srv.mpm,
        extra_global="Listen 127.0.0.1:%d https\n" % port
        + vhost(port, "implicit.test", body))
    r = srv.httpd("-t")
    assert r.returncode == 0 and "Syntax OK" in r.stdout + r.stderr, \
        r.stdout + r.stderr
    srv.start()
    try:
        before = srv.max_id()
        got = clients.curl(srv, p["ec"], host="implicit.test", port=port,
                           extra=INSECURE)
        assert got.stdout.strip() == "200", got.stdout + got.stderr
        rows = srv.wait_rows(before, 1)
        assert len(rows) == 1, rows
        expect(rows[0], server_name="implicit.test", local_port=port,
               verify_mode="require", outcome="accepted")
    finally:
        srv.stop()


@test(once=True)
def on_written_in_vhosts_whose_sslengine_is_conditional_passes(ctx):
    """MTLSAuditEngine On written in vhosts whose SSLEngine on comes through
    a true <IfDefine !...>, <IfModule>, <IfVersion>, Include, a Define'd
    variable and mod_macro's Use: configtest passes and each vhost's
    handshake is recorded."""
    p = ctx.pki
    port = server_mod.free_port()
    root = os.path.join(ctx.scratch, "cond-engine")
    os.makedirs(root, exist_ok=True)
    inc = os.path.join(root, "engine.conf")
    with open(inc, "w") as f:
        f.write("SSLEngine on\n")
    rest = "".join(l for l in ssl_lines(p).splitlines(True)
                   if "SSLEngine" not in l) \
        + "    SSLVerifyClient require\n    MTLSAuditEngine On\n"
    cases = [
        ("ifdefine.test", "    <IfDefine !MTLS_NEVER_DEFINED>\n"
                          "        SSLEngine on\n    </IfDefine>\n"),
        ("ifmodule.test", "    <IfModule ssl_module>\n"
                          "        SSLEngine on\n    </IfModule>\n"),
        ("ifversion.test", "    <IfVersion >= 2.4>\n"
                           "        SSLEngine on\n    </IfVersion>\n"),
        ("include.test", "    Include %s\n" % inc),
        ("define.test", "    SSLEngine ${MTLS_TLS}\n"),
    ]
    extra = ("LoadModule macro_module %s/mod_macro.so\n"
             "Define MTLS_TLS on\nListen 127.0.0.1:%d\n"
             % (server_mod.MODULES, port)
             + "".join(vhost(port, n, b + rest) for n, b in cases)
             + "<Macro TLSOn $name $engine>\n"
             + vhost(port, "$name", "    SSLEngine $engine\n" + rest)
             + "</Macro>\nUse TLSOn macro.test on\n")
    srv = server_mod.Server(root + "/srv", p, mpm=ctx.srv.mpm,
                            extra_global=extra)
    r = srv.httpd("-t")
    assert r.returncode == 0 and "Syntax OK" in r.stdout + r.stderr, \
        r.stdout + r.stderr
    srv.start()
    try:
        names = [n for n, _ in cases] + ["macro.test"]
        before = srv.max_id()
        for host in names:
            got = clients.curl(srv, p["ec"], host=host, port=port,
                               extra=INSECURE)
            assert got.stdout.strip() == "200", (host, got.stdout,
                                                 got.stderr)
        rows = srv.wait_rows(before, len(names))
        assert sorted(r["server_name"] for r in rows) == sorted(names), rows
        for row in rows:
            expect(row, local_port=port, verify_mode="require",
                   outcome="accepted")
    finally:
        srv.stop()


@test(once=True)
def on_written_in_a_vhost_without_tls_is_refused_with_file_and_line(ctx):
    """MTLSAuditEngine On written in a vhost that mod_ssl gives no TLS:
    its SSLEngine only in a false <IfDefine>, or turned off by a later
    SSLEngine off, or a certificate on a port that is not https.
    `apache2 -t` and the start refuse it, naming the file and line of the
    directive and of the vhost."""
    p = ctx.pki
    cases = [
        ("ifdefine-off.test", "    <IfDefine MTLS_NEVER_DEFINED>\n"
                              "        SSLEngine on\n    </IfDefine>\n"),
        ("engine-off.test", "    SSLEngine on\n    SSLEngine off\n"),
        ("cert-on-http.test", "    SSLCertificateFile %s\n"
                              "    SSLCertificateKeyFile %s\n"
                              % (p["server"][0], p["server"][1])),
    ]
    for i, (name, body) in enumerate(cases):
        port = server_mod.free_port()
        srv = server_mod.Server(
            os.path.join(ctx.scratch, "notls%d" % i), p, mpm=ctx.srv.mpm,
            extra_global="Listen 127.0.0.1:%d\n" % port
            + vhost(port, name, body + "    MTLSAuditEngine On\n"))
        r = srv.httpd("-t")
        out = r.stdout + r.stderr
        assert r.returncode != 0, (name, out)
        lines = [l for l in out.splitlines() if "has no 'SSLEngine on'" in l]
        assert len(lines) == 1, (name, out)
        assert re.search(r"MTLSAuditEngine On \(%s:\d+\): the virtual host "
                         r"%s \(%s:\d+\) has no 'SSLEngine on'" % (
                             re.escape(srv.conf), re.escape(name),
                             re.escape(srv.conf)), lines[0]), lines[0]
        try:
            srv.start()
            srv.stop()
            raise AssertionError("httpd started: %s" % name)
        except RuntimeError as e:
            assert "has no 'SSLEngine on'" in str(e), (name, str(e))


def debian_layout(ctx, name):
    """A copy of the stock Debian layout with 000-default (plain HTTP) and
    default-ssl enabled, both moved to free test ports, default-ssl's
    vhost nested in <IfModule mod_ssl.c> (as older Debian releases ship
    it) and given SSLVerifyClient require with the test CA, the module
    enabled by a2enmod with MTLSAuditEngine On in mods-enabled/
    mtls_audit.conf.  Returns (conf, env, http_port, tls_port, root, db)."""
    # The plain build even under MTLS_ASAN: apache2ctl starts apache2
    # without the sanitizer runtime preloaded.
    conf, env, http_port, root = system_layout(
        ctx, name, os.path.join(TOP, "mod_mtls_audit"),
        so=os.path.join(server_mod.BUILD, "mod_mtls_audit.so"))
    tls_port = server_mod.free_port()
    db = os.path.join(root, "db", "audit.db")
    p = os.path.join(conf, "mods-available", "mtls_audit.conf")
    text = open(p).read()
    text = re.sub(r"(?m)^(\s*)MTLSAuditDatabase .*$",
                  r"\1MTLSAuditDatabase %s\n\1MTLSAuditFlushInterval 20" % db,
                  text)
    text, n = re.subn(r"(?m)^(\s*)#MTLSAuditEngine Off$",
                      r"\1MTLSAuditEngine On", text)
    assert n == 1, text
    with open(p, "w") as f:
        f.write(text)
    with open(os.path.join(conf, "ports.conf"), "w") as f:
        f.write("Listen 127.0.0.1:%d\nListen 127.0.0.1:%d\n"
                % (http_port, tls_port))
    p = os.path.join(conf, "sites-available", "000-default.conf")
    text, n = re.subn(r"<VirtualHost \*:80>", "<VirtualHost *:%d>"
                      % http_port, open(p).read())
    assert n == 1, text
    with open(p, "w") as f:
        f.write(text)
    p = os.path.join(conf, "sites-available", "default-ssl.conf")
    text, n = re.subn(r"<VirtualHost (\*|_default_):443>",
                      "<VirtualHost *:%d>" % tls_port, open(p).read())
    assert n == 1, text
    if not os.path.exists("/etc/ssl/certs/ssl-cert-snakeoil.pem"):
        text = text.replace("/etc/ssl/certs/ssl-cert-snakeoil.pem",
                            ctx.pki["server"][0])
        text = text.replace("/etc/ssl/private/ssl-cert-snakeoil.key",
                            ctx.pki["server"][1])
    text, n = re.subn(r"(?m)^(\s*)SSLEngine on$",
                      r"\g<0>\n\1SSLCACertificateFile %s\n"
                      r"\1SSLVerifyClient require" % ctx.pki["root"].cert,
                      text)
    assert n == 1, text
    if "<IfModule mod_ssl.c>" not in text:
        text = "<IfModule mod_ssl.c>\n%s\n</IfModule>\n" % text
    with open(p, "w") as f:
        f.write(text)
    for args in (["a2enmod", "-q", "mtls_audit"],
                 ["a2ensite", "-q", "000-default", "default-ssl"]):
        code, out = run(args, env)
        assert code == 0, out
    return conf, env, http_port, tls_port, root, db


@test(once=True)
def server_level_on_in_the_debian_layout_audits_default_ssl_only(ctx):
    """The stock Debian layout with 000-default and default-ssl enabled and
    MTLSAuditEngine On in mods-enabled/mtls_audit.conf: configtest passes,
    the start notice names default-ssl's vhost, its handshakes are
    recorded and the plain HTTP requests are not.  On written in
    000-default itself is refused, naming 000-default.conf's line."""
    conf, env, http_port, tls_port, root, db = debian_layout(ctx, "debian-on")
    code, out = run(["apache2ctl", "configtest"], env)
    assert code == 0 and "Syntax OK" in out, out
    pidfile = os.path.join(root, "run", "apache2.pid")
    code, out = run(["apache2ctl", "start"], env)
    assert code == 0, out
    pid = None
    try:
        assert wait_for(lambda: os.path.exists(pidfile), 10), out
        pid = int(open(pidfile).read())
        for _ in range(2):
            r = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                 "--cacert", ctx.pki["root"].cert, "--resolve",
                 "localhost:%d:127.0.0.1" % tls_port, "--cert",
                 ctx.pki["ec"][0], "--key", ctx.pki["ec"][1],
                 "https://localhost:%d/" % tls_port],
                capture_output=True, text=True, timeout=20)
            assert r.stdout in ("200", "403", "404"), r.stdout + r.stderr
            r = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                 "http://127.0.0.1:%d/" % http_port],
                capture_output=True, text=True, timeout=20)
            assert r.stdout in ("200", "403", "404"), r.stdout + r.stderr
        assert wait_for(lambda: os.path.exists(db) and count(
            db, "SELECT count(*) FROM handshakes") >= 2, 15)
        time.sleep(0.5)         # a row for the plain requests would be late
        assert count(db, "SELECT count(*) FROM v_handshakes WHERE "
                     "local_port = %d AND outcome = 'accepted' AND "
                     "verify_mode = 'require' AND subject_dn = "
                     "'CN=client-ec,O=Example'" % tls_port) == 2
        assert count(db, "SELECT count(*) FROM handshakes") == 2
        log = open(os.path.join(root, "log", "error.log")).read()
        audited = [l for l in log.splitlines()
                   if "mtls_audit: auditing the TLS handshakes of:" in l]
        assert len(audited) == 1, log
        assert "default-ssl.conf:" in audited[0] and \
            "000-default.conf" not in audited[0], audited[0]
        assert not re.search(r"\[[a-z_]*:(error|crit|alert|emerg)\]", log), \
            log
    finally:
        if pid:
            run(["apache2ctl", "stop"], env)
            wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10)
    # An On written in the plain vhost is the operator's mistake.
    p = os.path.join(conf, "sites-available", "000-default.conf")
    text = open(p).read()
    with open(p, "w") as f:
        f.write(text.replace("</VirtualHost>",
                             "\tMTLSAuditEngine On\n</VirtualHost>", 1))
    line = [i + 1 for i, l in enumerate(open(p).read().splitlines())
            if "MTLSAuditEngine On" in l][0]
    code, out = run(["apache2ctl", "configtest"], env)
    assert code != 0, out
    assert re.search(r"MTLSAuditEngine On \(\S*sites-enabled/000-default"
                     r"\.conf:%d\): the virtual host \S* \(\S*000-default"
                     r"\.conf:\d+\) has no 'SSLEngine on'" % line, out), out
    assert "default-ssl" not in out, out
