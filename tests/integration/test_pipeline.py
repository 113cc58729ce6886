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
    return lines[0].replace(SOCKET, sock)


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
        self.srv = server_mod.Server(os.path.join(base, "srv"), ctx.pki,
                                     mpm=ctx.srv.mpm,
                                     extra_global=mirror_directive(sock))

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

    def logs(self):
        return "sender:\n%s\nreceiver:\n%s\nserver:\n%s" % (
            self.sender.log(), self.receiver.log(),
            self.srv.read_error_log()[-3000:])


@test(once=True, expect_errors=EXPECT)
def relp_pipeline_delivers_every_record_across_a_receiver_crash(ctx):
    """Under load, the log host's rsyslog is killed (SIGKILL) and started
    again on the same port: every handshake, request and event row of the
    database arrives in its file (duplicates allowed, gaps not), and the
    database is unaffected."""
    p = Pipeline(ctx, "pipeline-relp")
    srv = p.srv
    p.start()
    load = Load(ctx, srv)
    try:
        load.start()
        # Records flow to the log host before it dies ...
        assert wait_for(lambda: len(p.received()) >= 200, 60), \
            "nothing arrived before the kill:\n" + p.logs()
        p.receiver.kill()
        at_kill = load.answered[0]
        time.sleep(3)
        # ... handshakes go on while it is down ...
        down = load.answered[0] - at_kill
        p.receiver.start()
        at_restart = load.answered[0]
        time.sleep(3)
        after = load.answered[0] - at_restart
    finally:
        load.stop()
    try:
        assert not load.errors, load.errors[:5]
        assert down >= 50 and after >= 50, (down, after)
        answered = load.answered[0]
        # SQLite: one handshake and one request per answered connection,
        # no gap.
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "requests") == answered, 30), \
            (answered, count(srv.db, "SELECT count(*) FROM requests"))
        assert count(srv.db, "SELECT count(*) FROM handshakes") == answered
        assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                     "'gap'") == 0
        stored = p.stored()

        deadline = time.time() + 60
        while time.time() < deadline and not stored <= {
                (r["type"], r["id"]) for r in p.received()}:
            time.sleep(1)
        got = p.received()
        keys = [(r["type"], r["id"]) for r in got]
        missing = sorted(stored - set(keys))
        assert not missing, "%d of %d records did not arrive, e.g. %r\n%s" % (
            len(missing), len(stored), missing[:10], p.logs())
        assert set(keys) == stored, sorted(set(keys) - stored)[:10]
        assert {r["source"] for r in got} == {srv.db}
        assert not os.path.exists(p.unparsed), open(p.unparsed).read()[:2000]
        assert not re.search(r"mirror: cannot write", srv.read_error_log())
        bad = srv.new_errors(EXPECT)
        assert not bad, bad
        v = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        print("    relp: %d records (%d handshakes, %d while the log host "
              "was down), %d arrived twice" % (
                  len(stored), answered, down, len(keys) - len(set(keys))))
    finally:
        p.stop()


@test(once=True)
def relp_pipeline_carries_a_record_longer_than_8k_whole(ctx):
    """A handshake whose certificate has 400 SANs makes a mirror line of
    about 11 KB, longer than rsyslog's default maxMessageSize (8k): with
    the configuration's 16k it arrives whole and parses as JSON."""
    p = Pipeline(ctx, "pipeline-8k")
    srv = p.srv
    p.start()
    try:
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
        assert wait_for(line, 30), "the line did not arrive:\n" + p.logs()
        got = line()
        assert len(got) > 8192, len(got)
        rec = json.loads(got)
        assert rec["id"] == row["id"] and rec["san"] == row["san"], \
            rec["san"][-200:]
        assert not os.path.exists(p.unparsed), open(p.unparsed).read()[:2000]
        bad = srv.new_errors()
        assert not bad, bad
    finally:
        p.stop()
