"""The mirror shipped as the README tells an operator to ship it: the
module's MTLSAuditMirror into logger, logger into an rsyslog of the web
server, which forwards over RELP, through a disk-assisted queue, to a
second rsyslog (the log host) that writes a file.  Both rsyslogs are the
real rsyslogd, run with the very configuration files of docs/rsyslog/
that the README shows (the test checks that the README holds them word for
word), changed only in their paths, address and port.

Each rsyslogd is the test's own: `rsyslogd -n -f CONF -i PIDFILE` in the
scratch directory, with its own work directory, its input on a socket in
the scratch directory (sender) or on 127.0.0.1 (receiver), stopped by its
pid.  The system's rsyslog, /etc/rsyslog.conf and /dev/log are never
used: the main configuration here stands for Debian's /etc/rsyslog.conf
(a work directory, imuxsock) without the system socket."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import clients
import server as server_mod
from harness import Registry, count, wait_for
from test_faults import Load

test = Registry()

TOP = server_mod.TOP
DOCS = os.path.join(TOP, "docs", "rsyslog")
README = os.path.join(TOP, "README.md")
SENDER = "30-mtls-audit.conf"
RECEIVER = "30-mtls-audit-receiver.conf"
RSYSLOGD = "/usr/sbin/rsyslogd"

# What the configurations name on a real machine, and what the test puts
# in their place.  Each must be in the file: a configuration changed so
# that the test would no longer run it as the README shows fails here.
SOCKET = "/run/mtls-audit/log.sock"
LOGHOST = 'target="loghost.example.org"'
ADDRESS = 'address="192.0.2.10"'
PORT = 'port="2514"'
LOGDIR = "/var/log/mtls-audit/"

# The part of Debian's /etc/rsyslog.conf that the drop-ins rely on: a work
# directory and imuxsock loaded, here without the system socket /dev/log.
SENDER_MAIN = """global(workDirectory="{work}")
module(load="imuxsock" sysSock.use="off")
include(file="{dropin}")
"""
RECEIVER_MAIN = """global(workDirectory="{work}")
include(file="{dropin}")
"""

EXPECT = (r"AH02039: Certificate Verification: Error",)


def readme_blocks():
    """The README's indented code blocks, each dedented, in order."""
    blocks, cur = [], None
    for line in open(README, encoding="utf-8").read().split("\n"):
        if line.startswith("    ") or (cur is not None and not line.strip()):
            if cur is None:
                cur = []
            cur.append(line[4:])
        else:
            if cur is not None:
                blocks.append("\n".join(cur).strip("\n") + "\n")
            cur = None
    if cur is not None:
        blocks.append("\n".join(cur).strip("\n") + "\n")
    return blocks


def doc(name):
    """docs/rsyslog/NAME, which the README must show word for word."""
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        text = f.read()
    assert text in readme_blocks(), \
        "README.md does not show docs/rsyslog/%s as it is" % name
    return text


def mirror_directive(sock):
    """The MTLSAuditMirror line of the README, as the sender's drop-in
    names it too, with the test's socket."""
    lines = [b.strip() for b in readme_blocks()
             if b.startswith('MTLSAuditMirror "|/usr/bin/logger')]
    assert len(lines) == 1, lines
    assert "#   " + lines[0] + "\n" in doc(SENDER), \
        "the sender's drop-in names another MTLSAuditMirror than the README"
    assert SOCKET in lines[0], lines[0]
    line = lines[0].replace(SOCKET, sock)
    if server_mod.ASAN:
        # httpd passes its environment to the program, and logger with
        # the sanitizer runtime preloaded hangs at its start (a futex in
        # the runtime's initialisation): the test's own environment only.
        line = line.replace('"|/usr/bin/logger',
                            '"|/usr/bin/env -u LD_PRELOAD /usr/bin/logger')
    return line


def substitute(text, pairs):
    for old, new in pairs:
        assert old in text, "%r is not in the configuration" % old
        text = text.replace(old, new)
    return text


class Rsyslog:
    """One rsyslogd of the test's own, in base: `rsyslogd -n -f CONF -i
    PIDFILE`, its own work directory, stopped by its pid."""

    def __init__(self, base, main, dropin, ready):
        self.base = base
        self.work = os.path.join(base, "work")
        os.makedirs(self.work, exist_ok=True)
        self.dropin_path = os.path.join(base, "dropin.conf")
        with open(self.dropin_path, "w") as f:
            f.write(dropin)
        self.conf = os.path.join(base, "rsyslog.conf")
        with open(self.conf, "w") as f:
            f.write(main.format(work=self.work, dropin=self.dropin_path))
        self.pidfile = os.path.join(base, "rsyslogd.pid")
        self.logfile = os.path.join(base, "rsyslogd.log")
        self.ready = ready
        self.proc = None

    def start(self):
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        assert wait_for(lambda: self.proc.poll() is None and self.ready(),
                        15), "rsyslogd did not come up:\n" + self.log()

    def kill(self):
        """SIGKILL: a crash, with no chance to save anything."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self):
        try:
            return open(self.logfile, errors="replace").read()[-3000:]
        except OSError:
            return ""


def listening(port):
    def check():
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False
    return check


class Pipeline:
    """server -> logger -> rsyslog (sender) -RELP-> rsyslog (receiver) ->
    out/audit.json, all in the scratch directory base."""

    def __init__(self, ctx, name):
        base = os.path.join(ctx.scratch, name)
        self.out = os.path.join(base, "loghost", "out")
        os.makedirs(self.out)
        self.file = os.path.join(self.out, "audit.json")
        self.unparsed = os.path.join(self.out, "unparsed.log")
        port = server_mod.free_port()
        sock = os.path.join(base, "sender", "log.sock")
        self.receiver = Rsyslog(
            os.path.join(base, "loghost"), RECEIVER_MAIN,
            substitute(doc(RECEIVER), [
                (ADDRESS, 'address="127.0.0.1"'),
                (PORT, 'port="%d"' % port),
                (LOGDIR, self.out + "/")]),
            listening(port))
        self.sender = Rsyslog(
            os.path.join(base, "sender"), SENDER_MAIN,
            substitute(doc(SENDER), [
                (SOCKET, sock),
                (LOGHOST, 'target="127.0.0.1"'),
                (PORT, 'port="%d"' % port)]),
            lambda: os.path.exists(sock))
        # prefork: children made idle when a load stops are not stopped
        # during the test; the parent stops one through a connection of
        # its own to the listener ("OPTIONS *" in plain HTTP on these
        # ports, which name no https protocol), and the module records it
        # as a failed handshake that no client made.
        self.srv = server_mod.Server(
            os.path.join(base, "srv"), ctx.pki, mpm=ctx.srv.mpm,
            extra_global=mirror_directive(sock) + "\n<IfModule "
            "mpm_prefork_module>\n    MaxSpareServers 64\n</IfModule>")

    def start(self):
        self.receiver.start()
        self.sender.start()
        self.srv.start()

    def stop(self):
        self.srv.stop()
        self.sender.stop()
        self.receiver.stop()

    def received(self):
        """The receiver's file: a list of the records, each parsed."""
        try:
            with open(self.file, encoding="utf-8") as f:
                return [json.loads(l) for l in f.read().split("\n") if l]
        except FileNotFoundError:
            return []

    def stored(self):
        """(type, id) of every row the database holds."""
        keys = set()
        for table, kind in (("handshakes", "handshake"),
                            ("requests", "request"), ("events", "event")):
            keys |= {(kind, r["id"]) for r in self.srv.query(
                "SELECT id FROM %s" % table)}
        return keys

    def settle(self, answered):
        """Wait until the database holds one handshake and one request per
        answered connection; it must, exactly, and no gap."""
        db = self.srv.db
        assert wait_for(lambda: count(db, "SELECT count(*) FROM requests")
                        == answered, 30), \
            (answered, count(db, "SELECT count(*) FROM requests"))
        assert count(db, "SELECT count(*) FROM handshakes") == answered
        assert count(db, "SELECT count(*) FROM events WHERE kind = "
                     "'gap'") == 0

    def all_arrived(self, timeout=60):
        """Wait until every row of the database is in the receiver's file;
        fails with the ids that are not.  Returns (rows, lines) as
        (type, id) keys."""
        stored = self.stored()
        deadline = time.time() + timeout
        while time.time() < deadline and not stored <= {
                (r["type"], r["id"]) for r in self.received()}:
            time.sleep(1)
        got = self.received()
        keys = [(r["type"], r["id"]) for r in got]
        missing = sorted(stored - set(keys))
        assert not missing, "%d of %d records did not arrive, e.g. %r\n%s" \
            % (len(missing), len(stored), missing[:10], self.logs())
        assert set(keys) == stored, sorted(set(keys) - stored)[:10]
        assert {r["source"] for r in got} == {self.srv.db}
        assert not os.path.exists(self.unparsed), \
            open(self.unparsed).read()[:2000]
        return stored, keys

    def logs(self):
        return "sender:\n%s\nreceiver:\n%s\nserver:\n%s" % (
            self.sender.log(), self.receiver.log(),
            self.srv.read_error_log()[-3000:])


@test(once=True, expect_errors=EXPECT, asan=False)   # rsyslog restarts
def relp_pipeline_delivers_every_record_across_a_receiver_crash(ctx):
    """1. Under load, the log host's rsyslog is killed (SIGKILL) and
    started again on the same port.  2. It is killed again and the web
    server's rsyslog restarted; the records made while the log host is
    down wait in the web server's rsyslog, which is restarted again (its
    queue goes to disk and comes back).  After
    each, every handshake, request and event row of the database is in
    the log host's file (duplicates allowed, gaps not), and the database
    holds exactly the handshakes answered, without a gap."""
    p = Pipeline(ctx, "pipeline-relp")
    srv = p.srv
    loads = []

    def load():
        loads.append(Load(ctx, srv))
        loads[-1].start()
        return loads[-1]

    try:
        p.start()
        # 1. Records flow to the log host when it dies, handshakes go on
        # while it is down and after it is back.
        first = load()
        assert wait_for(lambda: len(p.received()) >= 200, 60), \
            "nothing arrived before the kill:\n" + p.logs()
        p.receiver.kill()
        n = first.answered[0]
        time.sleep(3)
        down = first.answered[0] - n
        p.receiver.start()
        n = first.answered[0]
        time.sleep(3)
        after = first.answered[0] - n
        first.stop()
        assert not first.errors, first.errors[:5]
        assert down >= 50 and after >= 50, (down, after)
        p.settle(first.answered[0])
        rows1, lines1 = p.all_arrived()
        # 2. The log host is down when the web server's rsyslog starts;
        # the records made meanwhile are in its queue when it is
        # restarted again: they go to disk and come back.  (Restarted
        # with no handshake under way: logger drops what it reads while
        # the socket is gone.  Not restarted while records are in flight
        # in a RELP session that broke: see the README's limits.)
        p.receiver.kill()
        p.sender.stop()
        p.sender.start()
        second = load()
        time.sleep(3)
        second.stop()
        assert not second.errors, second.errors[:5]
        assert second.answered[0] >= 50, second.answered[0]
        p.settle(first.answered[0] + second.answered[0])
        time.sleep(1)
        p.sender.stop()
        on_disk = [f for f in os.listdir(p.sender.work)
                   if f.startswith("mtls-audit-relp.")]
        assert len(on_disk) >= 2, on_disk      # its data and its .qi
        p.sender.start()
        p.receiver.start()
        rows, lines = p.all_arrived()
        assert not re.search(r"mirror: cannot write", srv.read_error_log())
        bad = srv.new_errors(EXPECT)
        assert not bad, bad
        v = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        print("    relp: %d records; %d handshakes while the log host was "
              "down, %d across a restart of the sender; %d arrived twice"
              % (len(rows), down, second.answered[0],
                 len(lines) - len(set(lines))))
    finally:
        for l in loads:
            l.stop()
        p.stop()


@test(once=True)
def relp_pipeline_carries_a_record_longer_than_8k_whole(ctx):
    """A handshake whose certificate has 400 SANs makes a mirror line of
    about 11 KB, longer than rsyslog's default maxMessageSize (8k): with
    the configuration's 16k it arrives whole and parses as JSON."""
    p = Pipeline(ctx, "pipeline-8k")
    srv = p.srv
    try:
        p.start()
        assert clients.curl(srv, ctx.pki["sans_over_8k"]).stdout.strip() \
            == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "requests") == 1)
        row = srv.query("SELECT id, san FROM v_handshakes")[0]
        assert len(row["san"].split(", ")) == 400, row["san"][:200]

        def line():
            try:
                with open(p.file, encoding="utf-8") as f:
                    for l in f:
                        if '"type":"handshake"' in l:
                            return l
            except FileNotFoundError:
                pass
            return None
        assert wait_for(lambda: line() or os.path.exists(p.unparsed), 30), \
            "the line did not arrive:\n" + p.logs()
        assert not os.path.exists(p.unparsed), \
            "cut: " + open(p.unparsed).read()[-300:]
        got = line()
        assert got, "the line did not arrive:\n" + p.logs()
        assert len(got) > 8192, len(got)
        rec = json.loads(got)
        assert rec["id"] == row["id"] and rec["san"] == row["san"], \
            rec["san"][-200:]
        bad = srv.new_errors()
        assert not bad, bad
    finally:
        p.stop()
