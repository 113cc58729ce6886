"""Faults, on purpose, against the real server: the database removed while
in use, locked by another process, unwritable under MTLSAuditFailMode
closed.  Each test runs its own server so that what it breaks stays
broken for it alone.  The rule throughout: the server serves as
configured, and every handshake is either stored or counted as lost."""
import os
import re
import subprocess
import sqlite3
import threading
import time

import clients
import server as server_mod
from harness import Registry, count, keep_going, wait_for

test = Registry()

WRITE_ERRORS = (r"mtls_audit: cannot write to", r"mtls_audit: dropped",
                r"mtls_audit: record lost", r"mtls_audit: writing to .* again",
                r"refusing a request", r"refusing new connections",
                r"mtls_audit: cannot open .* yet")


def own_server(ctx, name, extra=""):
    srv = server_mod.Server(os.path.join(ctx.scratch, name), ctx.pki,
                            mpm=ctx.srv.mpm, extra_global=extra)
    srv.start()
    return srv


def ok(srv, cert):
    r = clients.curl(srv, cert)
    return r.stdout.strip()


class Load:
    """Clients handshaking with srv (a GET each, connection closed) on
    threads until stop(); answered[0] counts the 200s, errors what went
    wrong (it must stay empty)."""

    def __init__(self, ctx, srv, clients_n=8):
        import ssl
        self.srv = srv
        self.c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.c.load_verify_locations(ctx.pki["root"].cert)
        self.c.load_cert_chain(*ctx.pki["ec"])
        self.c.options |= ssl.OP_NO_TICKET
        self.answered, self.errors = [0], []
        self.lock, self.done = threading.Lock(), False
        self.ts = [threading.Thread(target=self.worker)
                   for _ in range(clients_n)]

    def worker(self):
        import socket
        while not self.done:
            try:
                with socket.create_connection(("127.0.0.1", self.srv.port),
                                              10) as s:
                    with self.c.wrap_socket(s, server_hostname="localhost") \
                            as t:
                        t.settimeout(10)
                        t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: close\r\n\r\n")
                        data = t.recv(100)
                assert data.startswith(b"HTTP/1.1 200"), data
                with self.lock:
                    self.answered[0] += 1
            except Exception as e:      # counted: must not happen
                with self.lock:
                    self.errors.append(repr(e))

    def start(self):
        for t in self.ts:
            t.start()

    def stop(self):
        self.done = True
        for t in self.ts:
            if t.is_alive():
                t.join()




@test(once=True, expect_errors=(r"was removed or replaced while in use",))
def database_removed_while_serving(ctx):
    srv = own_server(ctx, "removed")
    try:
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 3)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(srv.db + suffix):
                os.unlink(srv.db + suffix)
        for _ in range(4):
            assert ok(srv, ctx.pki["ec"]) == "200"
        # The four are in a new file at the same path, which says why.
        assert wait_for(lambda: os.path.exists(srv.db) and count(
            srv.db, "SELECT count(*) FROM handshakes") == 4), \
            "the records after the removal were not stored"
        assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                     "'reopen'") >= 1
        assert os.stat(srv.db).st_mode & 0o007 == 0
    finally:
        srv.stop()
    assert any("was removed or replaced" in l
               for l in srv.read_error_log().splitlines())
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True, expect_errors=WRITE_ERRORS)
def database_locked_by_another_process(ctx):
    srv = own_server(ctx, "locked", "MTLSAuditBusyTimeout 500")
    try:
        assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 1)
        holder = sqlite3.connect(srv.db, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        statuses = []
        t0 = time.time()
        try:
            while time.time() - t0 < 5:
                statuses.append(ok(srv, ctx.pki["ec"]))
                time.sleep(0.25)
        finally:
            holder.execute("COMMIT")
            holder.close()
        # Open mode: served all along.
        assert statuses and all(s == "200" for s in statuses), statuses
        # Recording resumes by itself; every handshake is stored or counted.
        assert ok(srv, ctx.pki["ec"]) == "200"
        attempts = 1 + len(statuses) + 1

        def lost_handshakes():
            con = sqlite3.connect("file:%s?mode=ro" % srv.db, uri=True)
            details = [r[0] for r in con.execute(
                "SELECT detail FROM events WHERE kind = 'gap'")]
            con.close()
            return sum(int(re.search(r"\((\d+) handshakes", d).group(1))
                       for d in details)

        def settled():
            stored = count(srv.db, "SELECT count(*) FROM handshakes")
            lost = lost_handshakes()
            return (stored, lost) if stored + lost == attempts else None
        got = wait_for(settled, 30)
        assert got, (count(srv.db, "SELECT count(*) FROM handshakes"),
                     lost_handshakes(), attempts)
        stored, lost = got
        if lost:
            assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                         "'gap' AND detail LIKE '%database%'") >= 1
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True, expect_errors=WRITE_ERRORS)
def fail_closed_refuses_then_recovers(ctx):
    srv = own_server(ctx, "closed", "MTLSAuditFailMode closed\n"
                     "MTLSAuditBusyTimeout 100")
    try:
        assert ok(srv, ctx.pki["ec"]) == "200"
        holder = sqlite3.connect(srv.db, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            # Once the writer knows it cannot write, new connections are
            # refused before their handshake (curl sees no HTTP status),
            # and nothing is served unrecorded.
            refused = wait_for(lambda: ok(srv, ctx.pki["ec"]) == "000", 20)
            assert refused, "no connection was refused while the database " \
                            "was locked"
            served = [ok(srv, ctx.pki["ec"]) for _ in range(3)]
            assert "200" not in served, served
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert wait_for(lambda: ok(srv, ctx.pki["ec"]) == "200", 30), \
            "requests were not served again once the database was writable"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM events "
                                      "WHERE kind = 'gap'") >= 1, 20), \
            "the records lost while refusing were not counted"
        log = srv.read_error_log()
        assert "refusing new connections" in log, log[-3000:]
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def anchors_in_the_error_log_find_a_cut_tail(ctx):
    import shutil
    import subprocess
    srv = own_server(ctx, "anchors", "MTLSAuditAnchorInterval 1")
    try:
        for _ in range(5):
            assert ok(srv, ctx.pki["ec"]) == "200"
        time.sleep(1.2)
        assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 6)
    finally:
        srv.stop()
    log = srv.read_error_log()
    anchors = [l for l in log.splitlines() if "mtls_audit: anchor " in l]
    assert any("(start)" in l for l in anchors), anchors
    assert any("(stop)" in l for l in anchors), anchors
    assert any("handshakes=6:" in l for l in anchors), anchors
    r = subprocess.run([ctx.tool, "verify", "--no-record", "--anchor",
                        srv.error_log, srv.db], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "anchors      ok" in r.stdout, r.stdout
    rep = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                          "--format", "json", "--anchor", srv.error_log,
                          srv.db], capture_output=True, text=True)
    import json
    c = {x["id"]: x for x in json.loads(rep.stdout)["checks"]}
    assert c["10.3.4"]["status"] == "PASS", c["10.3.4"]
    # Cut the last two handshakes from a copy: the chain alone cannot
    # tell, the anchor can.
    cut = os.path.join(ctx.scratch, "anchors", "cut.db")
    shutil.copy(srv.db, cut)
    con = sqlite3.connect(cut)
    con.execute("DELETE FROM handshakes WHERE id > 4")
    con.execute("UPDATE sqlite_sequence SET seq = 4 WHERE name = "
                "'handshakes'")
    con.commit()
    con.close()
    r = subprocess.run([ctx.tool, "verify", "--no-record", cut],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    r = subprocess.run([ctx.tool, "verify", "--no-record", "--anchor",
                        srv.error_log, cut], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert "anchors      BROKEN" in r.stdout and "missing" in r.stdout, \
        r.stdout
    rep = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                          "--format", "json", "--anchor", srv.error_log, cut],
                         capture_output=True, text=True)
    assert rep.returncode == 1
    c = {x["id"]: x for x in json.loads(rep.stdout)["checks"]}
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def chain_key_makes_an_hmac_chain(ctx):
    import subprocess
    key = os.path.join(ctx.scratch, "chain.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)                # read by root, before the switch
    srv = own_server(ctx, "hmac", "MTLSAuditChainKey %s" % key)
    try:
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 3)
    finally:
        srv.stop()
    # Without the key the chain cannot be checked (nor rebuilt); with it,
    # it holds.
    r = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "handshakes   BROKEN at id 1" in r.stdout, \
        r.stdout
    r = subprocess.run([ctx.tool, "verify", "--no-record", "--key", key,
                        srv.db], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # A read without the key is not recorded (it would break the chain)...
    r = subprocess.run([ctx.tool, "query", srv.db], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "give --key" in r.stderr, r.stderr
    # ...with the key it is, and the chain still holds.
    r = subprocess.run([ctx.tool, "verify", "--key", key, srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                 "'access'") == 1
    r = subprocess.run([ctx.tool, "verify", "--no-record", "--key", key,
                        srv.db], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def unsafe_database_locations_are_refused_at_start(ctx):
    import pwd
    # A directory anyone can write to.
    srv = server_mod.Server(os.path.join(ctx.scratch, "worldwritable"),
                            ctx.pki, mpm=ctx.srv.mpm)
    os.makedirs(os.path.dirname(srv.db))
    os.chmod(os.path.dirname(srv.db), 0o777)
    try:
        srv.start()
        srv.stop()
        raise AssertionError("httpd started with a world-writable "
                             "database directory")
    except RuntimeError as e:
        assert "writable by others" in str(e), str(e)[-2000:]
    # A database that belongs to another user.
    srv = server_mod.Server(os.path.join(ctx.scratch, "foreign"), ctx.pki,
                            mpm=ctx.srv.mpm)
    os.makedirs(os.path.dirname(srv.db), mode=0o750)
    www = pwd.getpwnam("www-data")
    os.chown(os.path.dirname(srv.db), www.pw_uid, www.pw_gid)
    open(srv.db, "w").close()
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(srv.db, nobody, -1)
    try:
        srv.start()
        srv.stop()
        raise AssertionError("httpd started with a database owned by "
                             "another user")
    except RuntimeError as e:
        assert "owned by uid %d" % nobody in str(e), str(e)[-2000:]
    assert srv.pid() is None or not os.path.exists("/proc/%d" % srv.pid())


def answered_under_load(ctx, srv, stop_graceful, seconds=3):
    """Clients with a good certificate hammer srv; the server is stopped
    (graceful or not) in the middle.  Returns (responses, rows): requests
    that got an HTTP response had a completed handshake, so each needs
    its row."""
    import socket
    import ssl
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(ctx.pki["root"].cert)
    c.load_cert_chain(*ctx.pki["ec"])
    c.options |= ssl.OP_NO_TICKET
    answered = [0]
    lock = threading.Lock()
    stop_at = time.time() + seconds
    done = [False]

    def worker():
        while not done[0]:
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), 5)
            except OSError:
                if time.time() > stop_at:
                    return
                time.sleep(0.01)
                continue
            try:
                t = c.wrap_socket(s, server_hostname="localhost")
                t.settimeout(5)
                t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n")
                data = t.recv(100)
                if data.startswith(b"HTTP/1.1 200"):
                    with lock:
                        answered[0] += 1
                t.close()
            except (ssl.SSLError, OSError):
                pass
            finally:
                s.close()

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    srv.stop(graceful=stop_graceful)
    done[0] = True
    for t in ts:
        t.join()
    rows = count(srv.db, "SELECT count(*) FROM handshakes WHERE outcome = 1")
    return answered[0], rows


@test(once=True)
def stop_and_graceful_stop_under_load_lose_nothing_answered(ctx):
    for graceful in (False, True):
        srv = own_server(ctx, "stopload-%s" % ("graceful" if graceful
                                               else "hard"))
        answered, rows = answered_under_load(ctx, srv, graceful)
        assert answered > 50, answered
        # Every answered request had its handshake recorded; a few more
        # rows may exist for handshakes whose response was cut.
        assert rows >= answered, (graceful, answered, rows)
        kinds = [r[0] for r in sqlite3.connect(srv.db).execute(
            "SELECT kind FROM events ORDER BY id")]
        assert kinds[0] == "start" and kinds[-1] == "stop", kinds
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True, expect_errors=WRITE_ERRORS)
def disk_full_then_space_again(ctx):
    import re
    import subprocess
    srv = server_mod.Server(os.path.join(ctx.scratch, "diskfull"), ctx.pki,
                            mpm=ctx.srv.mpm, extra_global="MTLSAuditBusyTimeout 200")
    mnt = os.path.dirname(srv.db)
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750",
                        "tmpfs", mnt], capture_output=True, text=True)
    assert r.returncode == 0, "cannot mount a small tmpfs: " + r.stderr
    import pwd
    www = pwd.getpwnam("www-data")
    os.chown(mnt, www.pw_uid, www.pw_gid)
    filler = os.path.join(mnt, "filler")
    try:
        srv.start()
        attempts = 0
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
            attempts += 1
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 3)
        # Fill the file system to the last byte (unbuffered: the bytes of
        # a short last write are not kept for close to flush, which would
        # fail with ENOSPC; how the free space falls decides that).
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        # Open mode: served all along while nothing can be written.
        for _ in range(30):
            assert ok(srv, ctx.pki["ec"]) == "200"
            attempts += 1
        time.sleep(3)
        os.unlink(filler)
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
            attempts += 1

        def lost_handshakes():
            con = sqlite3.connect("file:%s?mode=ro" % srv.db, uri=True)
            details = [d for (d,) in con.execute(
                "SELECT detail FROM events WHERE kind = 'gap'")]
            con.close()
            return sum(int(re.search(r"\((\d+) handshakes", d).group(1))
                       for d in details), details

        def settled():
            stored = count(srv.db, "SELECT count(*) FROM handshakes")
            lost, details = lost_handshakes()
            return (stored, lost, details) if stored + lost == attempts \
                else None
        got = wait_for(settled, 30)
        assert got, (count(srv.db, "SELECT count(*) FROM handshakes"),
                     lost_handshakes(), attempts)
        stored, lost, details = got
        assert lost > 0 and any("full" in d for d in details), details
    finally:
        srv.stop()
        if os.path.exists(filler):
            os.unlink(filler)
        subprocess.run(["umount", mnt])
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def bad_directive_values_fail_configtest_with_file_and_line(ctx):
    cases = [
        ("MTLSAuditQueueSize lots", "MTLSAuditQueueSize: 'lots' is not a "
         "whole number from 1 to 10000000"),
        ("MTLSAuditFlushInterval 0", "MTLSAuditFlushInterval: '0'"),
        ("MTLSAuditAnchorInterval -5", "MTLSAuditAnchorInterval: '-5'"),
        ("MTLSAuditFailMode sometimes", "MTLSAuditFailMode: 'sometimes' is "
         "neither 'open' nor 'closed'"),
        ("MTLSAuditEngine maybe", "MTLSAuditEngine must be On or Off"),
    ]
    for i, (line, want) in enumerate(cases):
        srv = server_mod.Server(os.path.join(ctx.scratch, "conf%d" % i),
                                ctx.pki, mpm=ctx.srv.mpm, extra_global=line)
        r = srv.httpd("-t")
        out = r.stdout + r.stderr
        assert r.returncode != 0, (line, out)
        assert want in out, (line, out)
        assert "httpd.conf" in out and re.search(r"line \d+", out), out


@test(once=True)
def configtest_refuses_a_configuration_that_cannot_audit(ctx):
    """Each on one line naming the directive, the file and the line, at
    `apache2 -t` and at start alike."""
    # An audited virtual host that makes no TLS handshake.
    port = server_mod.free_port()
    srv = server_mod.Server(
        os.path.join(ctx.scratch, "nossl"), ctx.pki, mpm=ctx.srv.mpm,
        extra_global="Listen 127.0.0.1:%d\n<VirtualHost 127.0.0.1:%d>\n"
        "    ServerName plain.test\n    MTLSAuditEngine On\n"
        "</VirtualHost>" % (port, port))
    r = srv.httpd("-t")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    line = [l for l in out.splitlines() if "SSLEngine on" in l]
    assert len(line) == 1, out
    assert re.search(r"MTLSAuditEngine On \(%s:\d+\): the virtual host "
                     r"plain.test \(%s:\d+\) has no 'SSLEngine on'"
                     % (re.escape(srv.conf), re.escape(srv.conf)), line[0]), \
        line[0]
    try:
        srv.start()
        srv.stop()
        raise AssertionError("httpd started")
    except RuntimeError as e:
        assert "has no 'SSLEngine on'" in str(e)
    # mod_ssl not loaded at all.
    root = os.path.join(ctx.scratch, "nomodssl")
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    conf = os.path.join(root, "httpd.conf")
    with open(conf, "w") as f:
        f.write('ServerRoot "%s"\nPidFile "%s/logs/httpd.pid"\n'
                'ErrorLog "%s/logs/error.log"\nServerName localhost\n'
                'Listen 127.0.0.1:%d\n%s'
                'LoadModule mtls_audit_module %s/mod_mtls_audit.so\n'
                'MTLSAuditEngine On\n' % (
                    root, root, root, server_mod.free_port(),
                    "" if "mod_mpm_event.c" in server_mod.static_modules()
                    else "LoadModule mpm_event_module %s/mod_mpm_event.so\n"
                    % server_mod.MODULES, server_mod.MODULE_DIR))
    r = subprocess.run([server_mod.HTTPD, "-d", root, "-f", conf, "-t"],
                       capture_output=True, text=True, env=srv.env())
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert re.search(r"MTLSAuditEngine On \(%s:\d+\) needs mod_ssl, which is "
                     r"not loaded" % re.escape(conf), out), out
    # A database directory the run user cannot write in (root's, 0755).
    d = os.path.join(ctx.scratch, "rootsdir")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    srv = server_mod.Server(os.path.join(ctx.scratch, "rootsdb"), ctx.pki,
                            mpm=ctx.srv.mpm, extra_global="MTLSAuditDatabase"
                            " %s/audit.db" % d)
    r = srv.httpd("-t")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert re.search(r"MTLSAuditDatabase %s/audit.db \(%s:\d+\): the user "
                     r"httpd runs as \(uid \d+\) cannot write in its "
                     r"directory" % (re.escape(d), re.escape(srv.conf)), out), \
        out
    assert os.stat(d).st_uid == 0       # and it was left as it was
    # A directory the run user may write through its group is used as it
    # is: the module records there and leaves owner and mode alone.
    import pwd
    www = pwd.getpwnam("www-data")
    shared = os.path.join(ctx.scratch, "groupdir")
    os.makedirs(shared, exist_ok=True)
    os.chown(shared, 0, www.pw_gid)
    os.chmod(shared, 0o770)
    srv = server_mod.Server(os.path.join(ctx.scratch, "groupdb"), ctx.pki,
                            mpm=ctx.srv.mpm, extra_global="MTLSAuditDatabase"
                            " %s/audit.db" % shared)
    srv.start()
    try:
        assert clients.curl(srv, ctx.pki["ec"]).stdout.strip() == "200"
        assert wait_for(lambda: count(os.path.join(shared, "audit.db"),
                                      "SELECT count(*) FROM handshakes") == 1)
    finally:
        srv.stop()
    st = os.stat(shared)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == \
        (0, www.pw_gid, 0o770), (st.st_uid, st.st_gid, oct(st.st_mode))
    # The same server with a directory that does not exist yet is fine.
    srv = server_mod.Server(os.path.join(ctx.scratch, "newdir"), ctx.pki,
                            mpm=ctx.srv.mpm)
    r = srv.httpd("-t")
    assert r.returncode == 0 and "Syntax OK" in r.stdout + r.stderr, \
        r.stdout + r.stderr


@test(once=True, expect_errors=(r"ended without writing",) + WRITE_ERRORS)
def kill_9_of_a_child_is_counted_never_silent(ctx):
    import signal
    import subprocess
    srv = own_server(ctx, "kill9", "MTLSAuditMirror logs/mirror.jsonl")
    done = [False]
    answered = [0]
    lock = threading.Lock()

    def worker():
        while not done[0]:
            if ok(srv, ctx.pki["ec"]) == "200":
                with lock:
                    answered[0] += 1

    ts = [threading.Thread(target=worker) for _ in range(6)]
    for t in ts:
        t.start()
    time.sleep(1)
    # Hold the database so that queues fill, then kill one child hard.
    holder = sqlite3.connect(srv.db, timeout=10, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    time.sleep(1)
    children = [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(srv.pid())], capture_output=True,
        text=True).stdout.split()]
    assert children, "no httpd children"
    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.5)
    holder.execute("COMMIT")
    holder.close()
    time.sleep(1.5)
    done[0] = True
    for t in ts:
        t.join()
    srv.stop()
    gaps = sqlite3.connect(srv.db).execute(
        "SELECT pid, lost, detail FROM events WHERE kind = 'gap' AND "
        "detail LIKE '%killed or crashed%'").fetchall()
    assert gaps and gaps[0][0] == victim and gaps[0][1] > 0, gaps
    # The gap row a survivor stored for the dead child is mirrored too,
    # whichever of its writes stored it.
    import json
    with open(os.path.join(srv.root, "logs", "mirror.jsonl")) as f:
        mirrored = [json.loads(l) for l in f]
    assert any(l["type"] == "event" and l["kind"] == "gap"
               and "killed or crashed" in (l["detail"] or "")
               for l in mirrored), [l for l in mirrored
                                    if l["type"] == "event"]
    # What the others served is all there; what the victim could not
    # write is counted, never a silent hole.
    stored = count(srv.db, "SELECT count(*) FROM handshakes WHERE outcome = 1")
    lost = sum(g[1] for g in gaps)
    assert stored + lost >= answered[0], (stored, lost, answered[0])
    r = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    rep = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                          "--format", "json", srv.db], capture_output=True,
                         text=True)
    import json
    c = {x["id"]: x for x in json.loads(rep.stdout)["checks"]}
    assert c["10.7.2"]["status"] == "ATTENTION", c["10.7.2"]
    assert any("killed or crashed" in (e.get("cause") or "")
               for e in c["10.7.2"]["evidence"]), c["10.7.2"]["evidence"]
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True, expect_errors=WRITE_ERRORS)
def database_directory_made_read_only(ctx):
    import re
    srv = own_server(ctx, "readonly", "MTLSAuditBusyTimeout 200")
    d = os.path.dirname(srv.db)
    try:
        attempts = 0
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
            attempts += 1
        os.chmod(d, 0o550)
        os.chmod(srv.db, 0o440)
        for _ in range(10):
            assert ok(srv, ctx.pki["ec"]) == "200"     # open mode: served
            attempts += 1
        time.sleep(2)
        os.chmod(d, 0o750)
        os.chmod(srv.db, 0o640)
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
            attempts += 1

        def settled():
            con = sqlite3.connect("file:%s?mode=ro" % srv.db, uri=True)
            stored = con.execute("SELECT count(*) FROM handshakes").fetchone()[0]
            lost = sum(int(re.search(r"\((\d+) handshakes", d).group(1))
                       for (d,) in con.execute("SELECT detail FROM events "
                                               "WHERE kind = 'gap'"))
            con.close()
            return (stored, lost) if stored + lost == attempts else None
        got = wait_for(settled, 30)
        assert got, attempts
    finally:
        os.chmod(d, 0o750)
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


# The database file taken from its path while no child can open one there:
# what the children accept meanwhile is counted as lost, never written into
# the file that is gone (where no reader would ever find it).
GONE_ERRORS = WRITE_ERRORS + (
    r"mtls_audit: .*: database file (removed|replaced)",
    r"was removed or replaced while in use")


def lost_in(db):
    """Handshakes and requests lost by the gap events of db, and their
    details."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        details = [d for (d,) in con.execute(
            "SELECT detail FROM events WHERE kind = 'gap'")]
    finally:
        con.close()
    hs = rq = 0
    for d in details:
        m = re.search(r"\((\d+) handshakes, (\d+) requests", d)
        hs, rq = hs + int(m.group(1)), rq + int(m.group(2))
    return hs, rq, details


def take_the_path_away(ctx, srv, closed, break_it, mend_it, n, cause):
    """One episode: break_it() leaves no file a child can use at the
    database's path; n handshakes are attempted; mend_it() makes the path
    usable again; handshakes until one is served.  Then the file at the
    path must hold the handshakes served after the mending and, in its gap
    events, exactly the ones accepted before it (none of which reached a
    file anybody can read), with the cause."""
    break_it()
    codes = [ok(srv, ctx.pki["ec"]) for _ in range(n)]
    # Long enough for every writer to finish the tries of its last batch
    # (5 tries, 1.5 s): after that no record of the episode can be stored.
    time.sleep(4)
    mend_it()
    after = []
    deadline = time.time() + 30
    while not after or after[-1] != "200":
        assert time.time() < deadline, "not served again: %s" % after
        after.append(ok(srv, ctx.pki["ec"]))
    assert set(codes + after) <= {"200", "503", "000"}, codes + after
    if closed:
        # Refused before the handshake ("000", no record) from the first
        # refusal until the path could be written again; accepted before
        # the writer learned (200, or 503 when the request came after).
        assert "000" in codes, codes
        first = codes.index("000")
        assert set(codes[first:]) == {"000"}, codes
    else:
        assert codes == ["200"] * n, codes      # open mode serves on
    accepted = len([c for c in codes if c != "000"])
    accepted_after = len([c for c in after if c != "000"])

    def settled():
        # Each accepted connection made a handshake and a request record.
        try:
            hs, rq, details = lost_in(srv.db)
            got = (count(srv.db, "SELECT count(*) FROM handshakes"),
                   count(srv.db, "SELECT count(*) FROM requests"), hs, rq)
        except sqlite3.Error:
            return None
        return (got, details) if got == (accepted_after, accepted_after,
                                         accepted, accepted) else None
    got = wait_for(settled, 30)
    if not got:
        try:
            now = (count(srv.db, "SELECT count(*) FROM handshakes"),
                   count(srv.db, "SELECT count(*) FROM requests"),
                   lost_in(srv.db))
        except sqlite3.Error as e:
            now = repr(e)
        raise AssertionError("want %d handshakes and requests stored, %d "
                             "of each lost; the file holds %r (codes %s, "
                             "then %s)" % (accepted_after, accepted, now,
                                           codes, after))
    # Each child that lost records stored a gap with the cause; a child
    # started meanwhile (the event MPM keeps spare threads) never opened
    # the file at all.
    details = got[1]
    assert any(re.search(cause, d) for d in details), (cause, details)
    assert all(re.search(cause, d) or re.search(
        r"^database write failed: cannot open %s \(%s" % (
            re.escape(srv.db), cause.split("(", 1)[1]), d) for d in details), \
        (cause, details)
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                 "'reopen'") >= 1
    # Every child serves again, those started while the path could not be
    # written too (each looks for itself, about once a second when idle).
    time.sleep(2)
    more = [ok(srv, ctx.pki["ec"]) for _ in range(6)]
    assert more == ["200"] * 6, more
    assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM requests")
                    == accepted_after + 6)
    assert count(srv.db, "SELECT count(*) FROM handshakes") == \
        accepted_after + 6
    return codes


def unlink_db(srv):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(srv.db + suffix):
            os.unlink(srv.db + suffix)


def removed_with_directory_unwritable(ctx, closed, n):
    srv = own_server(ctx, "gone-dir-%s" % ("closed" if closed else "open"),
                     "MTLSAuditFailMode closed" if closed else "")
    d = os.path.dirname(srv.db)

    def break_it():
        os.chmod(d, 0)      # the children (www-data) cannot create a file
        unlink_db(srv)

    try:
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "requests") == 3)
        # A directory the children cannot even search: the file they hold
        # is still at its path (it has its link), and written on.
        os.chmod(d, 0)
        for _ in range(2):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "requests") == 5)
        assert count(srv.db, "SELECT count(*) FROM handshakes") == 5
        assert count(srv.db, "SELECT count(*) FROM events WHERE kind IN "
                     "('gap', 'reopen')") == 0
        take_the_path_away(ctx, srv, closed, break_it,
                           lambda: os.chmod(d, 0o750), n,
                           r"^database file removed and cannot be created "
                           r"again \(cannot create .*Permission denied\)")
    finally:
        os.chmod(d, 0o750)
        srv.stop()
    log = srv.read_error_log()
    assert re.search(r"\[mtls_audit:error\] .*mtls_audit: %s: database file "
                     r"removed and cannot be created again" % re.escape(
                         srv.db), log), log[-3000:]
    if closed:
        assert "refusing new connections" in log, log[-3000:]
    bad = srv.new_errors(GONE_ERRORS)
    assert not bad, bad
    assert not srv.sanitizer_reports(), srv.sanitizer_reports()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(expect_errors=GONE_ERRORS)
def database_removed_and_directory_unwritable_open_counts_the_loss(ctx):
    removed_with_directory_unwritable(ctx, False, 40)


@test(expect_errors=GONE_ERRORS)
def database_removed_and_directory_unwritable_closed_refuses(ctx):
    removed_with_directory_unwritable(ctx, True, 50)


def replaced_by_unusable_files(ctx, closed):
    """Three episodes on one server, each mended before the next: the
    file replaced by one that is not SQLite, by a database of a newer
    schema, by one owned by root with mode 0600."""
    import pwd
    www = pwd.getpwnam("www-data")
    srv = own_server(ctx, "replaced-%s" % ("closed" if closed else "open"),
                     "MTLSAuditFailMode closed" if closed else "")
    d = os.path.dirname(srv.db)
    tmp = os.path.join(d, "replacement")

    def replace_with(write, owner):
        def break_it():
            write(tmp)
            os.chown(tmp, owner, owner)
            os.chmod(tmp, 0o640 if owner else 0o600)
            # The WAL goes first: a child opening the new file beside the
            # old WAL would read the old file's pages from it.
            for suffix in ("-wal", "-shm"):
                if os.path.exists(srv.db + suffix):
                    os.unlink(srv.db + suffix)
            os.replace(tmp, srv.db)
        return break_it

    def text(path):
        with open(path, "w") as f:
            f.write("these are not the records you are looking for\n" * 100)

    def newer(path):
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (x)")
        con.execute("PRAGMA user_version = 99")
        con.commit()
        con.close()

    def give_to_www():
        os.chown(srv.db, www.pw_uid, www.pw_gid)
        os.chmod(srv.db, 0o640)

    try:
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "requests") == 3)
        why = r"^database file replaced by one that cannot be used \(%s"
        take_the_path_away(ctx, srv, closed, replace_with(text, www.pw_uid),
                           lambda: unlink_db(srv), 10,
                           why % ".*file is not a database")
        take_the_path_away(ctx, srv, closed, replace_with(newer, www.pw_uid),
                           lambda: unlink_db(srv), 10,
                           why % ".*schema version 99, newer than this build")
        take_the_path_away(ctx, srv, closed,
                           replace_with(lambda p: open(p, "w").close(), 0),
                           give_to_www, 10,
                           why % "cannot open .*: Permission denied")
    finally:
        srv.stop()
    log = srv.read_error_log()
    for what in ("file is not a database", "schema version 99",
                 "Permission denied"):
        assert re.search(r"\[mtls_audit:error\] .*mtls_audit: %s: database "
                         r"file replaced by one that cannot be used \(.*%s"
                         % (re.escape(srv.db), what), log), (what,
                                                             log[-3000:])
    bad = srv.new_errors(GONE_ERRORS)
    assert not bad, bad
    assert not srv.sanitizer_reports(), srv.sanitizer_reports()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(expect_errors=GONE_ERRORS)
def database_replaced_by_an_unusable_file_open_counts_the_loss(ctx):
    replaced_by_unusable_files(ctx, False)


@test(expect_errors=GONE_ERRORS)
def database_replaced_by_an_unusable_file_closed_refuses(ctx):
    replaced_by_unusable_files(ctx, True)


@test(once=True)
def requests_and_certificate_der_can_be_turned_off(ctx):
    srv = own_server(ctx, "offswitches", "MTLSAuditRequests Off\n"
                     "MTLSAuditStoreCertificates Off")
    try:
        assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 1)
        time.sleep(0.3)
    finally:
        srv.stop()
    assert count(srv.db, "SELECT count(*) FROM requests") == 0
    assert count(srv.db, "SELECT count(*) FROM certificates") >= 1
    assert count(srv.db, "SELECT count(*) FROM certificates WHERE der IS "
                 "NOT NULL") == 0
    # The parsed fields stay.
    assert count(srv.db, "SELECT count(*) FROM v_handshakes WHERE "
                 "subject_dn = 'CN=client-ec,O=Example'") == 1


def archive_under_load(ctx, srv, out, before, after):
    """8 clients handshake with srv; after `before` seconds, `mtls-audit
    archive` moves what is older than then into out in 50-row chunks; the
    load goes on `after` seconds more.  Waits until every answered
    handshake is stored in one of the files, stops srv; returns the load."""
    import datetime
    load = Load(ctx, srv)
    try:
        load.start()
        time.sleep(before)
        cut = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")[:23] + "Z"
        time.sleep(1)
        env = dict(os.environ, MTLS_AUDIT_ARCHIVE_CHUNK="50")
        r = subprocess.run([ctx.tool, "archive", "--before", cut, srv.db,
                            out], capture_output=True, text=True, env=env)
        time.sleep(after)
        load.stop()
        assert r.returncode == 0, r.stdout + r.stderr
        assert not load.errors, load.errors[:5]
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") + count(out, "SELECT "
                                      "count(*) FROM handshakes")
                        >= load.answered[0])
    finally:
        load.stop()
        srv.stop()
    return load


@test(once=True)
def archive_while_the_server_writes_loses_nothing(ctx):
    """`mtls-audit archive` moves rows in many small transactions (50 rows
    each here) while 8 clients keep handshaking: every handshake is in
    exactly one of the two files, no gap is recorded, the files verify
    and join, and the anchors of the error log still hold."""
    srv = own_server(ctx, "archive", "MTLSAuditAnchorInterval 1")
    out = os.path.join(ctx.scratch, "archive", "old.db")
    load = archive_under_load(ctx, srv, out, 3, 1)
    answered = load.answered
    assert answered[0] > 100, answered
    moved = count(out, "SELECT count(*) FROM handshakes")
    kept = count(srv.db, "SELECT count(*) FROM handshakes")
    assert moved > 100 and kept > 0, (moved, kept)
    assert moved + kept == answered[0], (moved, kept, answered)
    assert count(out, "SELECT count(*) FROM requests") + count(
        srv.db, "SELECT count(*) FROM requests") == answered[0]
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = 'gap'") \
        == 0
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                 "'archive'") == 1
    v = subprocess.run([ctx.tool, "verify", "--no-record", out, srv.db],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
    assert "continues into" in v.stdout, v.stdout
    v = subprocess.run([ctx.tool, "verify", "--no-record", "--anchor",
                        srv.error_log, srv.db], capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout
    assert "other side of an archive cut" in v.stdout, v.stdout
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


def anchor_lines(log):
    return [l for l in log.splitlines() if "mtls_audit: anchor " in l]


def anchored_ids(log, table):
    return [int(m.group(1)) for m in (re.search(r" %s=(\d+):" % table, l)
                                      for l in anchor_lines(log)) if m]


@test(once=True)
def archive_recipe_verifies_with_the_error_logs_anchors(ctx):
    """The README's retention recipe under load: anchors every second,
    `mtls-audit archive` while 8 clients write, then
    `verify --anchor ERRORLOG ARCHIVE LIVE` exits 0 and says where each
    anchored row was checked (the heads anchored before the run are in the
    archive now, and are checked there); `report --anchor` gives 10.3.4
    PASS.  A row cut from the end of the archive (its cut record rewritten
    to match, so that the archive verifies on its own) and rows cut from
    the live tail are still found."""
    import json
    import shutil
    srv = own_server(ctx, "recipe", "MTLSAuditAnchorInterval 1")
    out = os.path.join(ctx.scratch, "recipe", "archive-old.db")
    archive_under_load(ctx, srv, out, 3.5, 2.5)
    log = srv.read_error_log()
    base = count(srv.db, "SELECT id FROM chain_cut WHERE tbl = 'handshakes' "
                 "AND side = 'base'")
    ids = anchored_ids(log, "handshakes")
    # Heads anchored before the run are archived rows now, some after it
    # are live rows: the recipe needs both files to check them.
    assert any(0 < i <= base for i in ids), (base, ids)
    assert any(i > base for i in ids), (base, ids)
    assert all(srv.db in l for l in anchor_lines(log))

    def verify(*files):
        return subprocess.run([ctx.tool, "verify", "--no-record", "--anchor",
                               srv.error_log] + list(files),
                              capture_output=True, text=True)

    def anchors_line(stdout, db):
        """The `anchors` line printed under db's name."""
        block = stdout.split(db + "\n", 1)[1]
        return [l for l in block.splitlines()
                if l.strip().startswith("anchors")][0]

    def c1034(*files):
        rep = subprocess.run([ctx.tool, "report", "--standard", "pci-dss",
                              "--format", "json", "--anchor",
                              srv.error_log] + list(files),
                             capture_output=True, text=True)
        assert rep.returncode in (0, 1), rep.stderr
        return {x["id"]: x for x in json.loads(rep.stdout)["checks"]}[
            "10.3.4"], rep
    v = verify(out, srv.db)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "continues into" in v.stdout, v.stdout
    # The archive is sealed (its record in the live file, which the server
    # went on writing), and checked by its hash: the module logs no line
    # for it, which is no finding.
    assert re.match(r"  sealed +ok +its SHA-256 matches the one %s recorded"
                    % re.escape(srv.db), v.stdout.split(out + "\n", 1)[1]), \
        v.stdout
    arc, live = anchors_line(v.stdout, out), anchors_line(v.stdout, srv.db)
    n = len(anchor_lines(log))
    moved = sum(1 for l in anchor_lines(log)
                for t in ("handshakes", "requests", "events")
                if 0 < int(re.search(r" %s=(\d+):" % t, l).group(1))
                <= count(srv.db, "SELECT id FROM chain_cut WHERE tbl = "
                         "'%s' AND side = 'base'" % t))
    assert moved > 0
    assert re.search(r"anchors +ok +%d anchors from %s name it; of their "
                     r"\d+ anchored rows, \d+ hold here, %d were checked "
                     r"in %s$"
                     % (n, re.escape(srv.error_log), moved, re.escape(out)),
                     live), live
    assert re.search(r"anchors +ok +no anchor names it; %d anchored rows of "
                     r"%s hold here$" % (moved, re.escape(srv.db)), arc), arc
    c, rep = c1034(out, srv.db)
    assert c["status"] == "PASS", c
    # The live file alone: the archived rows are said to be elsewhere.
    v = verify(srv.db)
    assert v.returncode == 0, v.stdout
    assert "other side of an archive cut" in v.stdout, v.stdout

    keep = os.path.join(ctx.scratch, "recipe", "keep")
    os.makedirs(keep)
    for f in (out, srv.db):         # nothing has them open: file and WAL
        for suffix in ("", "-wal"):
            if os.path.exists(f + suffix):
                shutil.copy(f + suffix, keep)

    def restore():
        for f in (out, srv.db):
            for suffix in ("-wal", "-shm"):
                if os.path.exists(f + suffix):
                    os.unlink(f + suffix)
            for suffix in ("", "-wal"):
                k = os.path.join(keep, os.path.basename(f) + suffix)
                if os.path.exists(k):
                    shutil.copy(k, f + suffix)

    # The last handshake cut from the archive, and its end moved back to
    # the row before: the archive verifies alone, and plain verify of the
    # two does not see it.
    # Its requests need not be the last requests (connections end in any
    # order): the requests from its first one on go with it, and the
    # requests' end moves back too, so that only the cut is wrong.
    last = count(out, "SELECT max(id) FROM handshakes")
    con = sqlite3.connect(out)
    first = con.execute("SELECT min(id) FROM requests WHERE handshake_id = ?",
                        (last,)).fetchone()[0]
    if first is not None:
        con.execute("DELETE FROM requests WHERE id >= ?", (first,))
        con.execute("UPDATE chain_cut SET id = ?, hash = (SELECT hash FROM "
                    "requests WHERE id = ?) WHERE tbl = 'requests' AND "
                    "side = 'end'", (first - 1, first - 1))
    con.execute("DELETE FROM handshakes WHERE id = ?", (last,))
    con.execute("UPDATE chain_cut SET id = ?, hash = (SELECT hash FROM "
                "handshakes WHERE id = ?) WHERE tbl = 'handshakes' AND "
                "side = 'end'", (last - 1, last - 1))
    con.commit()
    con.close()
    r = subprocess.run([ctx.tool, "verify", "--no-record", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    # With the live file, whose cut names the archive, even without the
    # anchors.
    r = subprocess.run([ctx.tool, "verify", "--no-record", out, srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert "handshakes: %s ends at row %d, but %s, whose cut names it, " \
        "starts after row %d: rows %d-%d are in neither file" % (
            out, last - 1, srv.db, last, last, last) in r.stdout, r.stdout
    v = verify(out, srv.db)
    assert v.returncode == 1, v.stdout
    arc = anchors_line(v.stdout, out)
    assert "BROKEN" in arc and "handshakes" in arc and str(last) in arc, \
        v.stdout
    c, rep = c1034(out, srv.db)
    assert c["status"] == "FAIL" and rep.returncode == 1, c
    restore()
    # An anchored archived row cut (the archive's own walk finds it too).
    row = max(i for i in ids if 0 < i <= base)
    con = sqlite3.connect(out)
    con.execute("DELETE FROM requests WHERE handshake_id = ?", (row,))
    con.execute("DELETE FROM handshakes WHERE id = ?", (row,))
    con.commit()
    con.close()
    v = verify(out, srv.db)
    assert v.returncode == 1, v.stdout
    arc = anchors_line(v.stdout, out)
    assert "BROKEN" in arc and "row %d" % row in arc and "missing" in arc, \
        v.stdout
    restore()
    # Rows cut from the live tail: the stop anchor names the last one.
    con = sqlite3.connect(srv.db)
    last = count(srv.db, "SELECT max(id) FROM requests")
    con.execute("DELETE FROM requests WHERE id >= ?", (last - 1,))
    con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = "
                "'requests'", (last - 2,))
    con.commit()
    con.close()
    r = subprocess.run([ctx.tool, "verify", "--no-record", out, srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    v = verify(out, srv.db)
    assert v.returncode == 1, v.stdout
    live = anchors_line(v.stdout, srv.db)
    assert "BROKEN" in live and "missing" in live, v.stdout
    c, rep = c1034(out, srv.db)
    assert c["status"] == "FAIL" and rep.returncode == 1, c
    restore()
    v = verify(out, srv.db)
    assert v.returncode == 0, v.stdout
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def report_while_the_server_writes_reads_consistent_rows(ctx):
    """The report reads each table in many pieces (one read transaction
    each, through the read-ahead VFS) while 8 clients keep handshaking and
    the WAL is checkpointed into the file under it: every run must find
    the chains intact, and count no more handshakes than were made."""
    import json
    srv = own_server(ctx, "livereport")
    load = Load(ctx, srv)
    env = dict(os.environ, MTLS_AUDIT_SCAN_PIECE="40")
    runs, sizes, stop = 0, [], [False]

    def checkpoint():
        # Besides the writer's own: copy the WAL into the file often.
        while not stop[0]:
            con = sqlite3.connect(srv.db, timeout=5)
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            con.close()
            time.sleep(0.2)

    cp = threading.Thread(target=checkpoint)
    try:
        load.start()
        time.sleep(2)
        cp.start()
        sizes.append(os.path.getsize(srv.db))
        go = keep_going(8, 3)
        while go():
            before = count(srv.db, "SELECT count(*) FROM handshakes")
            r = subprocess.run([ctx.tool, "report", "--standard", "summary",
                                "--format", "json", srv.db],
                               capture_output=True, text=True, env=env)
            after = count(srv.db, "SELECT count(*) FROM handshakes")
            assert r.returncode in (0, 1), r.stderr
            doc = json.loads(r.stdout)
            db = doc["report"]["databases"][0]
            assert db["integrity"] == "hash chains verified", db
            assert not db["chain_broken"], db
            # Every row there when it started, none that was not made.
            seen = doc["report"]["records"]["handshakes"]
            assert before <= seen <= after, (before, seen, after)
            runs += 1
        sizes.append(os.path.getsize(srv.db))
        stop[0] = True
        cp.join()
        load.stop()
        assert not load.errors, load.errors[:5]
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == load.answered[0])
        n = count(srv.db, "SELECT count(*) FROM handshakes")
    finally:
        stop[0] = True
        if cp.is_alive():
            cp.join()
        load.stop()
        srv.stop()
    assert runs >= 3 and n > 200, (runs, n)
    # Pages were copied into the file while the reports read it.
    assert sizes[1] > sizes[0], sizes
    r = subprocess.run([ctx.tool, "report", "--standard", "summary",
                        "--format", "json", srv.db], capture_output=True,
                       text=True, env=env)
    doc = json.loads(r.stdout)
    assert doc["report"]["records"]["handshakes"] == n, (doc["report"], n)
    ctx.srv.err_offset = len(ctx.srv.read_error_log())
