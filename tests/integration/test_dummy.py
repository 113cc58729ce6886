"""The MPM's internal dummy connection: to wake a child (prefork reaping an
idle child beyond MaxSpareServers, among others) the parent connects to one of its own listeners and sends a
TLS close_notify alert (a listener whose protocol is https) or a plaintext
"OPTIONS * ... (internal dummy connection)" request.  No client made it:
it must leave no handshake row."""
import os
import socket
import ssl
import time

from harness import Registry

test = Registry()


def tls_conn(srv, cert):
    """A completed mTLS handshake and one request, the connection left open
    (keep-alive holds a prefork child)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(srv.pki["root"].cert)
    c.load_cert_chain(cert[0], cert[1])
    s = c.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), 5),
                      server_hostname="localhost")
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200"), "no 200"
    return s


def rows_after(srv, after, want, settle=1.0):
    srv.wait_rows(after, want)
    time.sleep(settle)          # rows that should not exist come late
    return srv.query("SELECT * FROM v_handshakes WHERE id > ? ORDER BY id",
                     (after,))


def https_listeners(srv):
    """Declare the protocol of the server's listeners https: the dummy
    connection then sends a TLS alert instead of a plaintext request."""
    conf = open(srv.conf).read()
    for port in (srv.port, srv.port13):
        line = "Listen 127.0.0.1:%d\n" % port
        assert line in conf
        conf = conf.replace(line, "Listen 127.0.0.1:%d https\n" % port)
    with open(srv.conf, "w") as f:
        f.write(conf)


def idle_child_reap(https):
    def t(ctx):
        # Its own prefork server whatever the run's MPM: prefork is the
        # one that reaps an idle child through a dummy connection.
        import server as server_mod
        srv = server_mod.Server(
            os.path.join(ctx.scratch, "reap-https" if https else "reap"),
            ctx.pki, mpm="prefork",
            extra_global="StartServers 1\nMinSpareServers 1\n"
                         "MaxSpareServers 2\nKeepAliveTimeout 30\n")
        if https:
            https_listeners(srv)
        srv.start()
        try:
            after = srv.max_id()
            # Busy children: the parent forks spares to keep one idle.
            held = [tls_conn(srv, ctx.pki["ec"]) for _ in range(4)]
            deadline = time.time() + 15
            while len(srv.children()) < 5 and time.time() < deadline:
                time.sleep(0.2)
            peak = len(srv.children())
            assert peak >= 5, "the parent forked no spares: %d" % peak
            for s in held:
                s.close()
            # Idle again: the parent stops children down to MaxSpareServers,
            # each through a dummy connection.
            deadline = time.time() + 20
            while len(srv.children()) > 2 and time.time() < deadline:
                time.sleep(0.2)
            left = len(srv.children())
            assert left <= 2, "children were not reaped: %d of %d" % (
                left, peak)
            rows = rows_after(srv, after, 4)
            assert [(r["outcome"], r["tls_version"]) for r in rows] == \
                [("accepted", "TLSv1.3")] * 4, \
                [(r["id"], r["outcome"], r["alert"], r["client_addr"],
                  r["client_port"]) for r in rows]
            bad = srv.new_errors()
            assert not bad, bad
        finally:
            srv.stop()
    t.__name__ = "idle_child_reap_leaves_no_row" + ("_https" if https else "")
    return t


test(idle_child_reap(False), once=True)
test(idle_child_reap(True), once=True)


@test
def near_dummy_bytes_are_recorded(ctx):
    # Only the dummy connection's exact bytes are left out: from the same
    # address, anything else is still a failed handshake.
    import clients
    alert = b"\x15\x03\x01\x00\x02\x01\x00"
    for data in (b"OPTIONS * HTTP/1.0\r\n\r\n",
                 b"OPTIONS * HTTP/1.0\r\nUser-Agent: x (internal dummy "
                 b"connection)\r\n\r\nGET / HTTP/1.0\r\n\r\n",
                 alert + b"\x16",
                 b"\x15\x03\x01\x00\x02\x02\x28"):
        after = ctx.srv.max_id()
        clients.raw(ctx.srv.port, data)
        rows = ctx.srv.wait_rows(after, 1)
        assert [(r["outcome"], r["client_addr"]) for r in rows] == \
            [("failed", "127.0.0.1")], (data, rows)
