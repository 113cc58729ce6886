"""Operating it: MTLSAuditMirror (JSON lines to a file and through a
pipe), `mtls-audit export`, and a backup of a live database."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import clients
import server as server_mod
from harness import Registry, count, wait_for

test = Registry()

TOP = server_mod.TOP
SCHEMA = os.path.join(TOP, "schema", "mirror.schema.json")




def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def validate(lines):
    """Every line against schema/mirror.schema.json, with Debian's
    python3-jsonschema (a real validator, draft 2020-12)."""
    code = ("import json, sys, jsonschema\n"
            "s = json.load(open(sys.argv[1]))\n"
            "v = jsonschema.Draft202012Validator(s)\n"
            "n = 0\n"
            "for line in sys.stdin:\n"
            "    errs = list(v.iter_errors(json.loads(line)))\n"
            "    assert not errs, (line[:300], [e.message for e in errs][:3])\n"
            "    n += 1\n"
            "print(n)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, SCHEMA],
                       input="".join(json.dumps(l) + "\n" for l in lines),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout) == len(lines)


def traffic(srv, pki):
    """Accepted (with a request), rejected and no-certificate handshakes."""
    assert clients.curl(srv, pki["ec"]).stdout.strip() == "200"
    assert clients.curl(srv, pki["rsa"], paths=("/?x=1",)).stdout.strip() == "200"
    clients.curl(srv, pki["untrusted"])
    clients.curl(srv, None)
    return 4


def rows(db):
    return {t: count(db, "SELECT count(*) FROM %s" % t)
            for t in ("handshakes", "requests", "events")}


@test(once=True)
def mirror_to_a_file_matches_the_database_and_the_schema(ctx):
    mirror = os.path.join(ctx.scratch, "mirror-file", "logs", "mirror.jsonl")
    srv = server_mod.Server(os.path.join(ctx.scratch, "mirror-file"),
                            ctx.pki, mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirror logs/mirror.jsonl")
    srv.start()
    try:
        n = traffic(srv, ctx.pki)
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == n)
        assert wait_for(lambda: len(read_lines(mirror)) >= n + 2)
    finally:
        srv.stop()
    lines = read_lines(mirror)
    validate(lines)
    by_type = {}
    for l in lines:
        by_type.setdefault(l["type"], []).append(l)
    got = rows(srv.db)
    assert len(by_type["handshake"]) == got["handshakes"] == n, got
    assert len(by_type["request"]) == got["requests"] == 2, got
    assert [e["kind"] for e in by_type["event"]] == (
        ["start"] + ["policy"] * 5 + ["stop"]), by_type["event"]
    assert {l["outcome"] for l in by_type["handshake"]} == {
        "accepted", "rejected", "no_certificate"}, by_type["handshake"]
    assert {l["source"] for l in lines} == {srv.db}, srv.db
    assert oct(os.stat(mirror).st_mode & 0o777) == "0o640"
    # export writes the same lines from the database (a handshake's
    # `requests` counts those stored by then: the mirror may say fewer).
    r = subprocess.run([ctx.tool, "export", "--format", "jsonl", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = [json.loads(l) for l in r.stdout.splitlines()]
    validate(exported)

    def key(l):
        return (l["type"], l["id"])

    ex = {key(l): l for l in exported}
    for l in lines:
        e = dict(ex[key(l)])
        if l["type"] == "handshake":
            assert l["requests"] <= e["requests"], (l, e)
            e["requests"] = l["requests"]
        assert e == l, (e, l)
    # --since keeps later rows only; usage errors exit 2.
    r = subprocess.run([ctx.tool, "export", "--since", "2099-01-01",
                        srv.db], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout
    r = subprocess.run([ctx.tool, "export", "--format", "csv", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "jsonl" in r.stderr
    # Output that cannot be written (a full disk) is exit 3, not 0.
    with open("/dev/full", "w") as full:
        r = subprocess.run([ctx.tool, "export", srv.db], stdout=full,
                           stderr=subprocess.PIPE, text=True)
    assert r.returncode == 3 and "cannot write" in r.stderr, r.stderr


@test(once=True, expect_errors=(r"piped log program .* failed unexpectedly",
                                r"mirror: cannot write"))
def mirror_through_a_pipe_survives_its_reader_being_killed(ctx):
    base = os.path.join(ctx.scratch, "mirror-pipe")
    os.makedirs(base, exist_ok=True)
    out = os.path.join(base, "received.jsonl")
    pidfile = os.path.join(base, "reader.pid")
    reader = os.path.join(base, "reader.sh")
    with open(reader, "w") as f:
        f.write("#!/bin/sh\necho $$ > %s\nexec cat >> %s\n" % (pidfile, out))
    os.chmod(reader, 0o755)
    srv = server_mod.Server(base, ctx.pki, mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirror \"|%s\"" % reader)
    srv.start()
    try:
        made = traffic(srv, ctx.pki)
        assert wait_for(lambda: sum(l["type"] == "handshake"
                                    for l in read_lines(out)) == made), \
            read_lines(out)
        first = int(open(pidfile).read())
        os.kill(first, signal.SIGKILL)
        # httpd starts the reader again (reliable piped logs); what is
        # written meanwhile waits in the pipe.
        for _ in range(3):
            made += traffic(srv, ctx.pki)
            time.sleep(0.3)
        assert wait_for(lambda: os.path.exists(pidfile)
                        and int(open(pidfile).read()) != first, 15), \
            "httpd did not start the mirror program again"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == made)
        made += traffic(srv, ctx.pki)
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == made)
        got = read_lines(out)
        ids = {l["id"] for l in got if l["type"] == "handshake"}
        # Nothing is missing from SQLite; the mirror goes on after the
        # restart (the last handshakes are there).
        last = count(srv.db, "SELECT max(id) FROM handshakes")
        assert wait_for(lambda: last in {l["id"] for l in read_lines(out)
                                         if l["type"] == "handshake"}), ids
        validate(read_lines(out))
        assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                     "'gap'") == 0
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def live_database_backup_while_the_server_writes(ctx):
    """sqlite3 .backup and VACUUM INTO, as the README says, while clients
    handshake: each copy is a consistent database whose chains verify."""
    srv = server_mod.Server(os.path.join(ctx.scratch, "backup"), ctx.pki,
                            mpm=ctx.srv.mpm)
    srv.start()
    done = [False]
    made = [0]

    def load():
        while not done[0]:
            if clients.curl(srv, ctx.pki["ec"]).stdout.strip() == "200":
                made[0] += 1

    ts = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in ts:
            t.start()
        time.sleep(2)
        copies = []
        for i, how in enumerate((".backup", "VACUUM INTO")):
            dst = os.path.join(ctx.scratch, "backup", "copy%d.db" % i)
            cmd = ".backup '%s'" % dst if how == ".backup" else \
                "VACUUM INTO '%s'" % dst
            r = subprocess.run(["sqlite3", srv.db, cmd], capture_output=True,
                               text=True)
            assert r.returncode == 0, (how, r.stderr)
            copies.append(dst)
            time.sleep(1)
    finally:
        done[0] = True
        for t in ts:
            t.join()
        srv.stop()
    assert made[0] > 20, made
    for dst in copies:
        v = subprocess.run([ctx.tool, "verify", "--no-record", dst],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        assert count(dst, "SELECT count(*) FROM handshakes") > 0
    assert count(srv.db, "SELECT count(*) FROM handshakes") == made[0]
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


# -- installing --------------------------------------------------------

def system_layout(ctx, name, mods_available=None, so=None):
    """A copy of this machine's /etc/apache2 (the Debian layout) in the
    scratch directory, its run, lock and log directories and its port
    moved there too, so apache2ctl and a2enmod work on it through
    APACHE_CONFDIR and the system's own configuration is never touched.
    mods_available: staged .load/.conf to copy in (so: the staged module
    to point the .load at).  Returns (confdir, env, port, root)."""
    import shutil
    root = os.path.join(ctx.scratch, name)
    conf = os.path.join(root, "apache2")
    shutil.copytree("/etc/apache2", conf, symlinks=True)
    if mods_available:
        for f in ("mtls_audit.load", "mtls_audit.conf"):
            text = open(os.path.join(mods_available, f)).read()
            if so and f.endswith(".load"):
                text = re.sub(r"\S*mod_mtls_audit\.so", so, text)
            with open(os.path.join(conf, "mods-available", f), "w") as fh:
                fh.write(text)
    for d in ("run", "lock", "log"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(conf, "envvars"), "a") as f:
        f.write("\n# tests: everything in the scratch directory\n"
                "export APACHE_RUN_DIR=%s/run\nexport APACHE_LOCK_DIR=%s/lock\n"
                "export APACHE_LOG_DIR=%s/log\n"
                "export APACHE_PID_FILE=%s/run/apache2.pid\n"
                % (root, root, root, root))
    port = server_mod.free_port()
    with open(os.path.join(conf, "ports.conf"), "w") as f:
        f.write("Listen 127.0.0.1:%d\n" % port)
    os.makedirs(os.path.join(root, "state"), exist_ok=True)
    env = dict(os.environ, APACHE_CONFDIR=conf,
               APACHE_STATE_DIRECTORY=os.path.join(root, "state"))
    env.pop("LD_PRELOAD", None)
    return conf, env, port, root


def run(args, env=None):
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout + r.stderr


def test_vhost(ctx, conf, port, db=None):
    p = ctx.pki
    with open(os.path.join(conf, "sites-available", "mtls-test.conf"),
              "w") as f:
        f.write("<VirtualHost 127.0.0.1:%d>\n    ServerName localhost\n"
                "    SSLEngine on\n    SSLCertificateFile %s\n"
                "    SSLCertificateKeyFile %s\n    SSLCACertificateFile %s\n"
                "    SSLVerifyClient require\n    MTLSAuditEngine On\n"
                "</VirtualHost>\n%s" % (
                    port, p["server"][0], p["server"][1], p["root"].cert,
                    "MTLSAuditDatabase %s\n" % db if db else ""))


@test(once=True)
def install_then_a2enmod_and_configtest(ctx):
    """./apxs-build.sh install with DESTDIR, then a2enmod ssl mtls_audit
    and apache2ctl configtest on (a copy of) the stock Debian layout."""
    stage = os.path.join(ctx.scratch, "stage")
    dbdir = os.path.join(ctx.scratch, "stage-db", "mtls_audit")
    env = dict(os.environ, DESTDIR=stage, PREFIX="/usr", DBDIR=dbdir)
    code, out = run([os.path.join(TOP, "apxs-build.sh"), "install"], env)
    assert code == 0, out
    files = {
        "usr/lib/apache2/modules/mod_mtls_audit.so": 0o644,
        "etc/apache2/mods-available/mtls_audit.load": 0o644,
        "etc/apache2/mods-available/mtls_audit.conf": 0o644,
        "usr/bin/mtls-audit": 0o755,
        "usr/share/man/man1/mtls-audit.1": 0o644,
    }
    for f, mode in files.items():
        st = os.stat(os.path.join(stage, f))
        assert st.st_mode & 0o777 == mode, (f, oct(st.st_mode))
    import pwd
    st = os.stat(stage + dbdir)
    assert st.st_mode & 0o777 == 0o750 and \
        st.st_uid == pwd.getpwnam("www-data").pw_uid, oct(st.st_mode)
    load = open(os.path.join(stage, "etc/apache2/mods-available/"
                             "mtls_audit.load")).read()
    assert "# Depends: ssl" in load and \
        "LoadModule mtls_audit_module /usr/lib/apache2/modules/" in load
    confd = open(os.path.join(stage, "etc/apache2/mods-available/"
                              "mtls_audit.conf")).read()
    for d in ("MTLSAuditDatabase", "MTLSAuditEngine", "MTLSAuditRequests",
              "MTLSAuditStoreCertificates", "MTLSAuditFailMode",
              "MTLSAuditQueueSize", "MTLSAuditFlushInterval",
              "MTLSAuditBusyTimeout", "MTLSAuditAnchorInterval",
              "MTLSAuditChainKey", "MTLSAuditMirror"):
        assert re.search(r"^\s*#?%s " % d, confd, re.M), d
    # The stock layout, the staged module enabled (ssl with it: the .load
    # says Depends: ssl), configtest passes; with an audited vhost too.
    conf, env, port, root = system_layout(
        ctx, "layout", os.path.join(stage, "etc/apache2/mods-available"),
        so=os.path.join(stage, "usr/lib/apache2/modules/mod_mtls_audit.so"))
    code, out = run(["a2enmod", "-q", "mtls_audit"], env)
    assert code == 0, out
    assert os.path.islink(os.path.join(conf, "mods-enabled", "ssl.load"))
    code, out = run(["apache2ctl", "configtest"], env)
    assert code == 0 and "Syntax OK" in out, out
    os.makedirs(os.path.dirname(dbdir), exist_ok=True)
    test_vhost(ctx, conf, port, db=os.path.join(stage + dbdir, "audit.db"))
    code, out = run(["a2ensite", "-q", "mtls-test"], env)
    assert code == 0, out
    code, out = run(["apache2ctl", "configtest"], env)
    assert code == 0 and "Syntax OK" in out, out
    # A bad value is one line naming the file and line.
    with open(os.path.join(conf, "mods-available", "mtls_audit.conf"),
              "a") as f:
        f.write("MTLSAuditQueueSize none\n")
    code, out = run(["apache2ctl", "configtest"], env)
    assert code != 0 and re.search(r"line \d+ of .*mtls_audit.conf", out) \
        and "MTLSAuditQueueSize: 'none'" in out, out


SYS_MODS = "/etc/apache2/mods-enabled/"
STATE = "/var/lib/apache2/module/"


def build_deb(build_dir=None):
    """./apxs-build.sh deb (into build_dir, default build/); returns the
    path of the .deb."""
    env = dict(os.environ, BUILD_DIR=build_dir) if build_dir else None
    code, out = run([os.path.join(TOP, "apxs-build.sh"), "deb"], env)
    assert code == 0, out
    debs = [l.split()[-1] for l in out.splitlines()
            if l.startswith("apxs-build.sh: built") and l.endswith(".deb")]
    assert len(debs) == 1, out
    return debs[0]


@test(once=True)
def debian_package_is_lintian_clean(ctx):
    """lintian on the .deb: not one error or warning (each printed)."""
    if server_mod.ASAN:
        return                  # the package is the plain build
    deb = build_deb(os.path.join(ctx.scratch, "deb-lintian"))
    r = subprocess.run(["lintian", deb], capture_output=True, text=True)
    bad = [l for l in (r.stdout + r.stderr).splitlines()
           if re.match(r"[EW]: ", l)]
    assert not bad, "lintian:\n" + "\n".join(bad)
    assert r.returncode == 0, r.stdout + r.stderr
    # What the package fixes stays fixed: stripped binaries, a changelog,
    # a machine-readable copyright with a notice.
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True,
                             text=True).stdout
    doc = "./usr/share/doc/libapache2-mod-mtls-audit/"
    assert doc + "changelog.gz" in listing and doc + "copyright" in listing, \
        listing
    assert re.search(r"^-rw-r--r-- .*/mod_mtls_audit\.so$", listing, re.M), \
        listing


@test(once=True)
def debian_package_installs_records_and_purges_keeping_the_data(ctx):
    """Build the .deb, dpkg -i it on this machine, enable it in (a copy
    of) the system layout, serve a handshake on a test port, read the row
    with the installed tool, purge, and find the audit database still
    there."""
    import pwd
    if server_mod.ASAN:
        return                  # the package is the plain build; once is enough
    deb = build_deb()
    assert re.search(r"libapache2-mod-mtls-audit_[0-9.]+_[a-z0-9]+\.deb$",
                     deb), deb
    code, info = run(["dpkg-deb", "-f", deb, "Depends"])
    assert code == 0 and "apache2-api-" in info and "libsqlite3-0" in info \
        and "libssl3" in info, info
    dbdir = "/var/lib/apache2/mtls_audit"
    existed = os.path.exists(dbdir)
    db = os.path.join(dbdir, "audit.db")
    had_db = os.path.exists(db)
    # Our own a2enmod/a2dismod on /etc/apache2 keep their state in the
    # scratch directory; the package's scripts use the system's.
    state = os.path.join(ctx.scratch, "deb-state")
    os.makedirs(state, exist_ok=True)
    admin_env = dict(os.environ, APACHE_STATE_DIRECTORY=state)
    admin_env.pop("APACHE_CONFDIR", None)
    fakebin = os.path.join(ctx.scratch, "deb-bin")
    os.makedirs(fakebin, exist_ok=True)
    rc_log = os.path.join(fakebin, "invoke-rc.d.log")
    with open(os.path.join(fakebin, "invoke-rc.d"), "w") as f:
        f.write("#!/bin/sh\necho \"$*\" >> %s\n" % rc_log)
    os.chmod(os.path.join(fakebin, "invoke-rc.d"), 0o755)
    helper_env = dict(os.environ, PATH=fakebin + ":" + os.environ["PATH"])
    for v in ("APACHE_CONFDIR", "APACHE_STATE_DIRECTORY", "LD_PRELOAD"):
        helper_env.pop(v, None)
    mods_before, enabled = None, False
    code, out = run(["dpkg", "-i", deb])
    assert code == 0, out
    srv_pid = None
    try:
        code, out = run(["dpkg", "-s", "libapache2-mod-mtls-audit"])
        assert code == 0 and "Status: install ok installed" in out, out
        st = os.stat(dbdir)
        assert st.st_mode & 0o777 == 0o750 and \
            st.st_uid == pwd.getpwnam("www-data").pw_uid
        conf, env, port, root = system_layout(ctx, "deb-layout")
        code, out = run(["a2enmod", "-q", "mtls_audit"], env)
        assert code == 0, out
        code, out = run(["a2dissite", "-q", "000-default"], env)
        test_vhost(ctx, conf, port)
        code, out = run(["a2ensite", "-q", "mtls-test"], env)
        assert code == 0, out
        code, out = run(["apache2ctl", "configtest"], env)
        assert code == 0 and "Syntax OK" in out, out
        code, out = run(["apache2ctl", "start"], env)
        assert code == 0, out
        pidfile = os.path.join(root, "run", "apache2.pid")
        assert wait_for(lambda: os.path.exists(pidfile), 10), out
        srv_pid = int(open(pidfile).read())
        before = count(db, "SELECT count(*) FROM handshakes") if had_db else 0
        r = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
             "--cacert", ctx.pki["root"].cert, "--resolve",
             "localhost:%d:127.0.0.1" % port, "--cert", ctx.pki["ec"][0],
             "--key", ctx.pki["ec"][1], "https://localhost:%d/" % port],
            capture_output=True, text=True)
        assert r.stdout in ("200", "404", "403"), r.stdout + r.stderr
        assert wait_for(lambda: os.path.exists(db) and count(
            db, "SELECT count(*) FROM handshakes") == before + 1, 15)
        r = subprocess.run(["/usr/bin/mtls-audit", "query", "--format",
                            "json", "--limit", "1", db], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        row = json.loads(r.stdout)[0]
        assert row["outcome"] == "accepted" and \
            row["subject_dn"] == "CN=client-ec,O=Example", row
        run(["apache2ctl", "stop"], env)
        wait_for(lambda: not os.path.exists("/proc/%d" % srv_pid), 10)
        srv_pid = None
        # Removing the package disables the module through Debian's
        # apache2-maintscript-helper (its a2query reads only /etc/apache2:
        # the module is enabled there for this).  The restart the helper
        # then asks for goes to a stand-in invoke-rc.d on PATH, never to
        # the system's service.
        mods_before = set(os.listdir(SYS_MODS))     # mtls_audit enables ssl
        code, out = run(["a2enmod", "-q", "mtls_audit"], admin_env)
        assert code == 0, out
        enabled = True
        assert os.path.islink(SYS_MODS + "mtls_audit.load")
        code, out = run(["dpkg", "--remove", "libapache2-mod-mtls-audit"],
                        helper_env)
        assert code == 0, out
        assert not os.path.lexists(SYS_MODS + "mtls_audit.load"), out
        enabled = False
        assert os.path.exists(STATE + "disabled_by_maint/mtls_audit"), out
        calls = open(rc_log).read() if os.path.exists(rc_log) else ""
        assert calls in ("", "apache2 restart\n"), calls
    finally:
        if srv_pid:
            run(["apache2ctl", "stop"], env)
            wait_for(lambda: not os.path.exists("/proc/%d" % srv_pid), 10)
        if enabled:
            run(["a2dismod", "-q", "-f", "mtls_audit"], admin_env)
        for m in sorted(set(os.listdir(SYS_MODS)) - (mods_before or set())):
            if m.endswith(".load"):
                run(["a2dismod", "-q", "-f", m[:-5]], admin_env)
        code, out = run(["dpkg", "--purge", "libapache2-mod-mtls-audit"],
                        helper_env)
    assert code == 0, out
    # Purging forgets the module's state (postrm, through the helper).
    assert not [m for m in os.listdir(STATE) if os.path.exists(
        os.path.join(STATE, m, "mtls_audit"))], out
    assert not os.path.exists("/usr/bin/mtls-audit")
    assert not os.path.exists("/etc/apache2/mods-available/mtls_audit.conf")
    assert not os.path.exists("/usr/lib/apache2/modules/mod_mtls_audit.so")
    # Audit data is never removed by a package operation.
    assert os.path.exists(db) and count(db, "SELECT count(*) FROM "
                                        "handshakes") >= 1
    if not had_db:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
    if not existed:
        os.rmdir(dbdir)
