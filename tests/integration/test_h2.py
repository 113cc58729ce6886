"""HTTP/2: every stream of an h2 connection is a request row linked to the
connection's handshake, exactly as an HTTP/1.1 request is, and counts in
`requests`, the mirror and the reports' identity checks.

Clients: real curl --http2 (libnghttp2), and for what curl does not do on
demand (many streams opened at once, a stream reset by the client, a
stream refused with HTTP_1_1_REQUIRED) a small HTTP/2 client over Python's
ssl module (OpenSSL) that writes the frames itself: the preface, SETTINGS,
HEADERS (HPACK literals without indexing), WINDOW_UPDATE, RST_STREAM.  It
reads the server's frames but decodes no HPACK: the statuses are checked
against httpd's own access log (logs/requests.log, mod_log_config's %>s).

mod_http2 runs under event (and worker); under prefork it declines h2
(AH10034, a warning) and clients get HTTP/1.1: the tests that need h2
start their own server under event."""
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pki
import server as server_mod
from harness import Registry, count, expect, positive_us, wait_for

test = Registry()

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = \
    0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
CANCEL, HTTP_1_1_REQUIRED = 0x8, 0xd
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BIG = 1 << 20           # bytes of /big.bin


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(
        ">BBI", ftype, flags, sid) + payload


def hpack_int(n, prefix_bits):
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([n])
    out, n = [top], n - top
    while n >= 128:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    return bytes(out + [n])


def hpack_literal(name, value):
    """A header field as a literal without indexing, new name, no Huffman
    (RFC 7541 section 6.2.2): the server's decoder keeps no state for it."""
    name, value = name.encode(), value.encode()
    return (b"\x00" + hpack_int(len(name), 7) + name
            + hpack_int(len(value), 7) + value)


class H2:
    """One HTTP/2 connection with a client certificate (or none).
    window: the streams' initial window (SETTINGS_INITIAL_WINDOW_SIZE);
    None keeps the protocol's 65,535 bytes.  The connection's window is
    opened wide at once, so only a stream's own window can stall it."""

    def __init__(self, srv, cert, host="localhost", window=(1 << 31) - 1,
                 avoid=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(srv.pki["root"].cert)
        if cert:
            ctx.load_cert_chain(*cert)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", srv.port), 10)
        # avoid: client ports already used in this test.  A connection the
        # server closed first (GOAWAY at a graceful restart) leaves its
        # TIME_WAIT on the server, so the client may get the same port
        # again; the tests tell connections apart by port.  A TCP connect
        # that sends nothing is not recorded.
        while avoid is not None and raw.getsockname()[1] in avoid:
            raw.close()
            raw = socket.create_connection(("127.0.0.1", srv.port), 10)
        self.client_port = raw.getsockname()[1]
        if avoid is not None:
            avoid.add(self.client_port)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.sock.settimeout(20)
        assert self.sock.selected_alpn_protocol() == "h2", \
            self.sock.selected_alpn_protocol()
        self.host = host
        self.next_id = 1
        self.streams = {}
        self.goaway = None
        self.buf = b""
        settings = struct.pack(">HI", 2, 0)             # no server push
        if window is not None:
            settings += struct.pack(">HI", 4, window)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings)
                          + frame(WINDOW_UPDATE, 0, 0, struct.pack(
                              ">I", (1 << 31) - 1 - 65535)))

    def request_frames(self, path, method="GET"):
        """A stream's HEADERS frame (no body); returns (id, bytes)."""
        sid = self.next_id
        self.next_id += 2
        block = b"".join(hpack_literal(n, v) for n, v in (
            (":method", method), (":scheme", "https"),
            (":authority", self.host), (":path", path),
            ("user-agent", "mtls-audit-test-h2")))
        self.streams[sid] = dict(path=path, headers=0, data=0, done=False,
                                 reset=None)
        return sid, frame(HEADERS, END_STREAM | END_HEADERS, sid, block)

    def get(self, *paths):
        """Open one stream per path, all in one write; their ids."""
        ids, out = [], b""
        for p in paths:
            sid, f = self.request_frames(p)
            ids.append(sid)
            out += f
        self.sock.sendall(out)
        return ids

    def reset(self, sid, code=CANCEL):
        self.sock.sendall(frame(RST_STREAM, 0, sid, struct.pack(">I", code)))

    def read_frame(self):
        while len(self.buf) < 9:
            b = self.sock.recv(65536)
            if not b:
                raise EOFError("the server closed the connection")
            self.buf += b
        n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
        while len(self.buf) < 9 + n:
            b = self.sock.recv(65536)
            if not b:
                raise EOFError("the server closed the connection")
            self.buf += b
        ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        return ftype, flags, sid & 0x7fffffff, payload

    def pump(self, until):
        """Read and answer frames until until() is true."""
        while not until():
            ftype, flags, sid, payload = self.read_frame()
            st = self.streams.get(sid)
            if ftype == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                # Streams above the last one the server takes are refused;
                # the others go on to their end.
                self.goaway = struct.unpack(">II", payload[:8])
                for i, other in self.streams.items():
                    if i > self.goaway[0] & 0x7fffffff:
                        other["done"] = True
                        other["reset"] = "goaway"
            elif st is None:
                continue
            elif ftype == HEADERS:
                st["headers"] += 1
            elif ftype == DATA:
                pad = payload[0] + 1 if flags & PADDED else 0
                st["data"] += len(payload) - pad
            elif ftype == RST_STREAM:
                st["reset"] = struct.unpack(">I", payload)[0]
                st["done"] = True
            if ftype in (HEADERS, DATA) and flags & END_STREAM:
                st["done"] = True

    def wait(self, ids):
        self.pump(lambda: all(self.streams[i]["done"] for i in ids))
        return [self.streams[i] for i in ids]

    def close(self):
        try:
            self.sock.sendall(frame(GOAWAY, 0, 0, struct.pack(
                ">II", self.next_id - 2 if self.next_id > 1 else 0, 0)))
            self.sock.close()
        except OSError:
            pass


def stopped(srv, expected=()):
    """Stop srv; its error log must hold no error but those expected, and
    no child may have died of a signal."""
    srv.stop()
    bad = srv.new_errors(expected)
    bad += [l for l in srv.read_error_log().splitlines()
            if "exit signal" in l]
    bad += srv.sanitizer_reports()
    assert not bad, "errors in %s:\n  %s" % (srv.error_log,
                                             "\n  ".join(bad))


def h2_server(ctx, name, mpm="event", extra=""):
    srv = server_mod.Server(os.path.join(ctx.scratch, name), ctx.pki,
                            mpm=mpm, extra_global=extra, h2=True)
    for fname, size in (("big.bin", BIG), ("mid.bin", 65536)):
        with open(os.path.join(srv.root, "htdocs", fname), "wb") as f:
            f.write(os.urandom(size))
    srv.start()
    return srv


def curl(srv, cert, urls, http="--http2", host="localhost"):
    """curl on one connection; a (http_version, http_code) per URL."""
    args = ["curl", "-sS", http, "-w", "%{http_version} %{http_code}\\n",
            "--cacert", srv.pki["root"].cert,
            "--resolve", "%s:%d:127.0.0.1" % (host, srv.port)]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    for u in urls:
        args += ["-o", "/dev/null", "https://%s:%d%s" % (host, srv.port, u)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [tuple(l.split()) for l in r.stdout.splitlines()]


def handshakes(srv, n, requests=0, timeout=10):
    """Exactly n handshake rows, once `requests` request rows are stored
    (a stream's request is logged after its response went out)."""
    wait_for(lambda: count(srv.db, "SELECT count(*) FROM requests")
             >= requests, timeout)
    time.sleep(0.2)             # to see a row too many
    assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM handshakes")
                    >= n, timeout), "fewer than %d handshake rows" % n
    rows = srv.query("SELECT * FROM v_handshakes ORDER BY id")
    assert len(rows) == n, [(r["id"], r["outcome"]) for r in rows]
    return rows


def request_rows(srv, hid, n, timeout=10):
    """The request rows of handshake hid, in id order, once there are n."""
    wait_for(lambda: count(srv.db, "SELECT count(*) FROM requests WHERE "
                           "handshake_id = %d" % hid) >= n, timeout)
    time.sleep(0.2)             # to see a row too many
    return srv.query("SELECT * FROM v_requests WHERE handshake_id = ? "
                     "ORDER BY id", (hid,))


def logged(srv, client_port, n, timeout=10):
    """httpd's access log lines of the connection from client_port."""
    wait_for(lambda: len([l for l in srv.requests_lines()
                          if l["client_port"] == client_port]) >= n, timeout)
    return [l for l in srv.requests_lines() if l["client_port"] == client_port]


def as_logged(rows):
    """Request rows as the access log shows them, sorted (streams finish
    in any order)."""
    return sorted((r["method"], r["path"], r["status"], r["bytes_sent"])
                  for r in rows)


def log_tuples(lines):
    return sorted((l["method"], l["path"], l["status"], l["bytes"])
                  for l in lines)


def check_linked(rows, hs):
    for r in rows:
        expect(r, handshake_id=hs["id"], cert_sha256=hs["cert_sha256"],
               subject_dn=hs["subject_dn"],
               duration_us=lambda v: isinstance(v, int) and v >= 0,
               time_utc=lambda t: t is not None and t >= hs["time_utc"])


@test
def h2_requests_are_recorded_as_http11_requests_are(ctx):
    """curl --http2, three requests on one connection; then the same three
    with --http1.1: the same rows.  Under prefork mod_http2 declines h2
    (AH10034) and curl falls back to HTTP/1.1, recorded as ever."""
    srv = h2_server(ctx, "h2-curl", mpm=ctx.srv.mpm)
    cert = ctx.pki["ec"]
    urls = ("/index.html", "/a?card=4111111111111111", "/b")
    proto = "1.1" if ctx.srv.mpm == "prefork" else "2"
    try:
        got = curl(srv, cert, urls)
        assert got == [(proto, "200"), (proto, "404"), (proto, "404")], got
        hs = handshakes(srv, 1, 3)[0]
        h2rows = request_rows(srv, hs["id"], 3)
        got = curl(srv, cert, urls, http="--http1.1")
        assert got == [("1.1", "200"), ("1.1", "404"), ("1.1", "404")], got
        hs2 = handshakes(srv, 2, 6)[1]
        h1rows = request_rows(srv, hs2["id"], 3)
        log = srv.requests_lines()
    finally:
        stopped(srv)
    expect(hs, outcome="accepted", requests=3, tls_version="TLSv1.3",
           cert_sha256=pki.fingerprint(cert[0]), sni="localhost")
    expect(hs2, outcome="accepted", requests=3)
    # Exact rows: method, path without the query, status, bytes; linked.
    assert [(r["method"], r["path"], r["status"]) for r in h2rows] == [
        ("GET", "/index.html", 200), ("GET", "/a", 404), ("GET", "/b", 404)
    ], h2rows
    assert h2rows[0]["bytes_sent"] == 6, h2rows[0]
    check_linked(h2rows, hs)
    check_linked(h1rows, hs2)
    assert not any("4111" in r["path"] for r in h2rows)
    # As HTTP/1.1 records them, and as httpd logged them.
    assert as_logged(h2rows) == as_logged(h1rows), (h2rows, h1rows)
    assert log_tuples(l for l in log if l["client_port"]
                      == hs["client_port"]) == as_logged(h2rows), log
    assert {l["protocol"] for l in log if l["client_port"]
            == hs["client_port"]} == {"HTTP/2.0" if proto == "2"
                                      else "HTTP/1.1"}, log


@test(once=True)
def h2_many_concurrent_streams_on_one_connection(ctx):
    """90 streams opened at once on one connection, served by several h2
    workers at the same time, then one more: 91 rows, one handshake,
    requests = 91."""
    srv = h2_server(ctx, "h2-many")
    cert = ctx.pki["rsa"]
    paths = []
    for i in range(30):
        paths += ["/mid.bin", "/missing/%d?q=%d" % (i, i),
                  "/index.html?x=%d" % i]
    try:
        c = H2(srv, cert)
        ids = c.get(*paths)
        streams = c.wait(ids)
        # The connection serves on after them.
        more = c.wait(c.get("/index.html"))
        c.close()
        hs = handshakes(srv, 1, len(paths) + 1)[0]
        rows = request_rows(srv, hs["id"], len(paths) + 1)
        log = logged(srv, c.client_port, len(paths) + 1)
    finally:
        stopped(srv)
    assert all(s["reset"] is None and s["headers"] == 1 for s in streams
               + more), streams
    assert [s["data"] for s in streams[0::3]] == [65536] * 30
    expect(hs, outcome="accepted", requests=len(paths) + 1,
           cert_sha256=pki.fingerprint(cert[0]), client_port=c.client_port)
    assert len(rows) == len(paths) + 1, len(rows)
    check_linked(rows, hs)
    want = sorted([("GET", "/mid.bin", 200)] * 30
                  + [("GET", "/missing/%d" % i, 404) for i in range(30)]
                  + [("GET", "/index.html", 200)] * 31)
    assert sorted(t[:3] for t in as_logged(rows)) == want, as_logged(rows)
    assert as_logged(rows) == log_tuples(log), (as_logged(rows), log)
    assert {l["protocol"] for l in log} == {"HTTP/2.0"}, log
    assert all(t[3] == {200: 65536 if t[1] == "/mid.bin" else 6}.get(
        t[2], t[3]) for t in as_logged(rows)), as_logged(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    # Streams were in flight together: requests whose spans overlap.
    assert overlapping(srv, hs["id"]) > 0


def overlapping(srv, hid):
    """Pairs of hid's requests whose [start, start + duration] overlap."""
    return srv.query(
        "SELECT count(*) AS n FROM requests a JOIN requests b ON a.id < b.id "
        "AND a.handshake_id = ? AND b.handshake_id = ? AND b.time_us < "
        "a.time_us + a.duration_us AND a.time_us < b.time_us + "
        "b.duration_us", (hid, hid))[0]["n"]


def h2_traffic(srv, cert, during=None):
    """6 clients, 10 h2 connections each, 40 streams on each opened at
    once; every other connection is dropped (TCP close, no GOAWAY) as soon
    as its first response arrives, while its other streams still run on
    the h2 workers.  during() is called once 30 connections are done.
    Returns the client ports and those that received all 40 responses."""
    import threading
    ports, waited, errors, lock = [], set(), [], threading.Lock()
    used = set()
    done = [0]

    def client(k):
        for i in range(10):
            c = None
            try:
                c = H2(srv, cert, avoid=used)
                ids = c.get(*(["/mid.bin", "/index.html?n=%d" % i,
                               "/missing/%d" % k, "/big.bin"] * 10))
                with lock:
                    ports.append(c.client_port)
                if i % 2:
                    c.pump(lambda: any(c.streams[j]["done"] for j in ids))
                    c.sock.close()
                else:
                    got = c.wait(ids)
                    c.close()
                    if all(g["reset"] is None for g in got):
                        with lock:
                            waited.add(c.client_port)
            except Exception as e:      # noqa: BLE001 - reported below
                if not (isinstance(e, EOFError) and c and c.goaway):
                    with lock:
                        errors.append(repr(e))
            with lock:
                done[0] += 1

    ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    if during:
        while done[0] < 30 and any(t.is_alive() for t in ts):
            time.sleep(0.01)
        during()
    for t in ts:
        t.join()
    assert not errors, errors
    # Dropped connections' streams finish on the server after the client
    # has gone: wait until the log and the rows stop growing.
    last = None
    for _ in range(100):
        now = (len(srv.requests_lines()),
               count(srv.db, "SELECT count(*) FROM requests"))
        if now == last and now[0] == now[1]:
            break
        last = now
        time.sleep(0.3)
    return ports, waited


def check_counts(srv, ports, waited):
    """Every request httpd logged is a row of its connection's handshake,
    and `requests` is that count, exactly."""
    log = srv.requests_lines()
    hss = srv.query("SELECT * FROM v_handshakes ORDER BY id")
    assert sorted(h["client_port"] for h in hss) == sorted(ports), (
        len(hss), len(ports))
    assert len(set(ports)) == len(ports), "a client port used twice"
    by_port = {}
    for l in log:
        by_port.setdefault(l["client_port"], []).append(l)
    for h in hss:
        rows = srv.query("SELECT * FROM v_requests WHERE handshake_id = ?",
                         (h["id"],))
        mine = by_port.get(h["client_port"], [])
        assert h["requests"] == len(rows) == len(mine), (
            h["id"], h["requests"], len(rows), len(mine))
        if h["client_port"] in waited:
            assert len(mine) == 40, (h["id"], len(mine))
            assert as_logged(rows) == log_tuples(mine), h["id"]
        else:
            # %B is 0 for a body that never went out (r->sent_bodyct);
            # bytes_sent is what httpd counted, as for HTTP/1.1.
            assert [t[:3] for t in as_logged(rows)] == [
                t[:3] for t in log_tuples(mine)], h["id"]
    assert count(srv.db, "SELECT count(*) FROM requests WHERE handshake_id "
                 "IS NULL") == 0
    assert len(log) == count(srv.db, "SELECT count(*) FROM requests")


@test(once=True)
def h2_connections_closed_midway_count_exactly(ctx):
    """60 h2 connections of 40 streams from 6 clients, every other one
    dropped while its streams run (h2_traffic): each handshake's
    `requests` is what httpd logged on its connection."""
    srv = h2_server(ctx, "h2-drop")
    try:
        ports, waited = h2_traffic(srv, ctx.pki["ec"])
    finally:
        stopped(srv)
    assert len(waited) == 30, len(waited)
    check_counts(srv, ports, waited)


@test(once=True)
def h2_graceful_restart_while_streams_run_counts_exactly(ctx):
    """The same traffic with a graceful restart halfway: the old
    generation's children finish their h2 connections (mod_http2 sends
    GOAWAY) and drain their writers; nothing is lost or doubled."""
    srv = h2_server(ctx, "h2-graceful")
    try:
        ports, waited = h2_traffic(srv, ctx.pki["ec"], during=srv.graceful)
    finally:
        stopped(srv)
    assert len(waited) >= 20, len(waited)
    check_counts(srv, ports, waited)
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                 "'reload'") == 1
    assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                 "'gap'") == 0


@test(once=True)
def h2_reset_stream_is_recorded(ctx):
    """A stream the client resets (RST_STREAM CANCEL) after its response
    began, while the server waits for the stream's window: one request row
    all the same, with what httpd logged for it; the streams around it
    are recorded too."""
    srv = h2_server(ctx, "h2-reset")
    cert = ctx.pki["ec"]
    try:
        c = H2(srv, cert, window=None)      # streams get 65,535 bytes
        first = c.wait(c.get("/index.html"))
        big, = c.get("/big.bin")
        # The response has begun and stalls at the stream's window.
        c.pump(lambda: c.streams[big]["data"] >= 65535)
        c.reset(big)
        after = c.wait(c.get("/index.html", "/missing"))
        c.close()
        hs = handshakes(srv, 1, 4)[0]
        rows = request_rows(srv, hs["id"], 4)
        log = logged(srv, c.client_port, 4)
    finally:
        stopped(srv)
    assert c.streams[big]["data"] == 65535 and not c.streams[big]["done"]
    assert [s["data"] for s in first + after][:2] == [6, 6]
    expect(hs, outcome="accepted", requests=4)
    check_linked(rows, hs)
    assert [(r["method"], r["path"]) for r in rows if r["path"]
            == "/big.bin"] == [("GET", "/big.bin")], rows
    reset_row = [r for r in rows if r["path"] == "/big.bin"][0]
    expect(reset_row, status=200, duration_us=positive_us())
    assert as_logged(rows) == log_tuples(log), (rows, log)
    assert sorted((r["path"], r["status"]) for r in rows) == [
        ("/big.bin", 200), ("/index.html", 200), ("/index.html", 200),
        ("/missing", 404)], rows


@test(once=True)
def h2_per_directory_client_auth_is_refused_and_recorded(ctx):
    """HTTP/2 forbids renegotiation and post-handshake authentication: on
    an h2 connection, a <Location> with SSLVerifyClient require is refused
    by mod_ssl (403), which mod_http2 turns into RST_STREAM
    HTTP_1_1_REQUIRED.  Recorded: the request, status 403, on the
    handshake without a certificate; no second handshake row."""
    srv = h2_server(ctx, "h2-perdir")
    cert = ctx.pki["ec"]
    try:
        c = H2(srv, cert, host="perdir.test")
        ok, secure = c.wait(c.get("/index.html", "/secure/"))
        c.close()
        hs = handshakes(srv, 1, 2)[0]
        rows = request_rows(srv, hs["id"], 2)
        log = logged(srv, c.client_port, 2)
    finally:
        stopped(srv)
    assert ok["reset"] is None and ok["data"] == 6, ok
    assert secure["reset"] == HTTP_1_1_REQUIRED and secure["data"] == 0, \
        secure
    expect(hs, outcome="accepted", kind="initial", verify_mode="none",
           cert_sha256=None, sni="perdir.test", server_name="perdir.test",
           requests=2)
    check_linked(rows, hs)
    assert sorted((r["path"], r["status"]) for r in rows) == [
        ("/index.html", 200), ("/secure/", 403)], rows
    assert as_logged(rows) == log_tuples(log), (rows, log)


FAIL_CLOSED_ERRORS = (r"refusing a request", r"record lost",
                      r"mtls_audit: cannot write to", r"mtls_audit: dropped",
                      r"mtls_audit: writing to .* again")


@test(once=True)
def h2_fail_closed_answers_every_stream_503(ctx):
    """MTLSAuditFailMode closed: a connection whose handshake record left
    the queue full (MTLSAuditQueueSize 1, the database locked so the
    writer cannot empty it) serves nothing: every stream of the h2
    connection is answered 503."""
    import sqlite3
    srv = h2_server(ctx, "h2-closed", extra="MTLSAuditFailMode closed\n"
                    "MTLSAuditQueueSize 1\nMTLSAuditBusyTimeout 2000")
    cert = ctx.pki["ec"]
    try:
        holder = sqlite3.connect(srv.db, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            c = H2(srv, cert)
            streams = c.wait(c.get("/index.html", "/index.html?x=1",
                                   "/missing"))
            c.close()
            log = logged(srv, c.client_port, 3)
        finally:
            holder.execute("COMMIT")
            holder.close()
        hs = handshakes(srv, 1, 30)[0]
    finally:
        stopped(srv, FAIL_CLOSED_ERRORS)
    assert all(s["reset"] is None and s["headers"] == 1 for s in streams), \
        streams
    assert sorted((l["path"], l["status"], l["protocol"]) for l in log) == [
        ("/index.html", 503, "HTTP/2.0"), ("/index.html", 503, "HTTP/2.0"),
        ("/missing", 503, "HTTP/2.0")], log
    expect(hs, outcome="accepted")
    text = srv.read_error_log()
    assert text.count("refusing a request: its handshake could not be "
                      "recorded") == 3, text[-3000:]


def checks_of(ctx, db, standard):
    r = subprocess.run([ctx.tool, "report", "--standard", standard,
                        "--format", "json", db], capture_output=True,
                       text=True)
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    return {c["id"]: c for c in json.loads(r.stdout)["checks"]}


IDENTITY = (("pci-dss", "8.2.1"), ("hipaa", "164.312(a)(1), (a)(2)(i)"),
            ("hipaa", "164.312(d)"))


@test(once=True)
def h2_requests_count_in_the_reports_and_the_mirror(ctx):
    """The same traffic over h2 (one server) and over HTTP/1.1 (another):
    5 requests with a verified certificate and 1 answered on perdir.test
    without one.  PCI 8.2.1 and HIPAA 164.312(a) count the h2 requests as
    they count HTTP/1.1 ones (FAIL: 4 answered, below 400, 1 without a
    verified certificate), 164.312(d) alike; the mirror has a line per h2
    request, linked to its handshake."""
    cert = ctx.pki["ec"]
    results = {}
    for http in ("--http2", "--http1.1"):
        name = "h2-report" + http.replace("--http", "")
        mirror = os.path.join(ctx.scratch, name, "logs", "mirror.jsonl")
        srv = h2_server(ctx, name, extra="MTLSAuditMirror logs/mirror.jsonl")
        try:
            proto = "2" if http == "--http2" else "1.1"
            got = curl(srv, cert, ("/index.html", "/x?q=1", "/mid.bin",
                                   "/index.html", "/y"), http=http)
            assert [v for v, _ in got] == [proto] * 5, got
            got = curl(srv, None, ("/index.html?pan=4111111111111111",),
                       http=http, host="perdir.test")
            assert got == [(proto, "200")], got
            hss = handshakes(srv, 2, 6)
            assert [h["requests"] for h in hss] == [5, 1], hss
            assert wait_for(lambda: sum(
                1 for l in open(mirror) if '"type":"request"' in
                l.replace(" ", "")) >= 6)
        finally:
            stopped(srv)
        lines = [json.loads(l) for l in open(mirror) if l.strip()]
        rq = [l for l in lines if l["type"] == "request"]
        hl = [l for l in lines if l["type"] == "handshake"]
        assert len(rq) == 6 and len(hl) == 2, lines
        assert sorted(l["handshake_id"] for l in rq) == [hss[0]["id"]] * 5 + [
            hss[1]["id"]], rq
        # A handshake line counts the requests stored with it (README).
        assert all(0 <= h["requests"] <= want for h, want
                   in zip(hl, (5, 1))), hl
        assert sorted((l["method"], l["path"], l["status"]) for l in rq) == \
            sorted([("GET", "/index.html", 200)] * 3 + [
                ("GET", "/x", 404), ("GET", "/mid.bin", 200),
                ("GET", "/y", 404)]), rq
        results[http] = {cid: checks_of(ctx, srv.db, std)[cid]
                         for std, cid in IDENTITY}
    h2, h1 = results["--http2"], results["--http1.1"]
    for _, cid in IDENTITY:
        assert (h2[cid]["status"], h2[cid]["metric"]) == (
            h1[cid]["status"], h1[cid]["metric"]), (cid, h2[cid], h1[cid])
    for cid in ("8.2.1", "164.312(a)(1), (a)(2)(i)"):
        assert h2[cid]["status"] == "FAIL", h2[cid]
        assert h2[cid]["metric"] == "4 requests answered, 1 of them " \
            "without a verified certificate", h2[cid]["metric"]
        ev = h2[cid]["evidence"]
        assert len(ev) == 1 and ev[0]["path"] == "/index.html" and \
            str(ev[0]["status"]) == "200", ev
    assert h2["164.312(d)"]["status"] == "FAIL", h2["164.312(d)"]
