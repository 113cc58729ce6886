"""Load: hundreds of concurrent full handshakes, good and bad mixed, with a
graceful restart in the middle; afterwards the rows must equal the
handshakes the clients attempted, exactly, outcome by outcome.

The clients use Python's ssl module, which is OpenSSL: each attempt is a
fresh TCP connection that sends a ClientHello (no session reuse)."""
import os
import socket
import ssl
import subprocess
import threading
import time

from harness import Registry

test = Registry()

THREADS = 16
PER_THREAD = 25
KINDS = ("ec", "expired", "untrusted", None)
WANT = {"ec": "accepted", "expired": "rejected", "untrusted": "rejected",
        None: "no_certificate"}


def attempt(srv, kind, contexts):
    """One handshake (and a request when accepted).  Returns True when the
    ClientHello was sent, i.e. the server owes us a row."""
    try:
        sock = socket.create_connection(("127.0.0.1", srv.port), 10)
    except OSError:
        return False
    try:
        s = contexts[kind].wrap_socket(sock, server_hostname="localhost",
                                       do_handshake_on_connect=False)
        s.settimeout(10)
        try:
            s.do_handshake()
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                      b"Connection: close\r\n\r\n")
            while s.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass
        finally:
            s.close()
    finally:
        sock.close()
    return True


def client_contexts(ctx):
    """One OpenSSL client context per kind of client, without tickets:
    every attempt is a full handshake."""
    contexts = {}
    for kind in KINDS:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.load_verify_locations(ctx.pki["root"].cert)
        c.options |= ssl.OP_NO_TICKET
        if kind:
            c.load_cert_chain(*ctx.pki[kind])
        contexts[kind] = c
    return contexts


def start_load(srv, contexts, until, n):
    """n threads making handshakes of each kind in turn until the time
    until; returns the threads and the attempts that reached the server, by
    kind (final once the threads are joined)."""
    counts = {k: 0 for k in KINDS}
    lock = threading.Lock()

    def worker(k):
        i = 0
        while time.time() < until:
            kind = KINDS[(k + i) % len(KINDS)]
            i += 1
            if attempt(srv, kind, contexts):
                with lock:
                    counts[kind] += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    return ts, counts


def load_run(ctx, threads=THREADS, per_thread=PER_THREAD, restarts=1):
    srv = ctx.srv
    contexts = client_contexts(ctx)
    counts = {k: 0 for k in KINDS}
    lock = threading.Lock()
    done = [0]
    total = threads * per_thread
    after = srv.max_id()

    def worker(n):
        for i in range(per_thread):
            kind = KINDS[(n + i) % len(KINDS)]
            if attempt(srv, kind, contexts):
                with lock:
                    counts[kind] += 1
            with lock:
                done[0] += 1

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    marks = [total * (r + 1) // (restarts + 1) for r in range(restarts)]
    for m in marks:
        while done[0] < m and any(t.is_alive() for t in ts):
            time.sleep(0.01)
        srv.graceful()
    for t in ts:
        t.join()
    attempted = sum(counts.values())
    deadline = time.time() + 60
    rows = []
    while time.time() < deadline:
        rows = srv.query("SELECT outcome, count(*) AS n FROM handshakes "
                         "WHERE id > ? GROUP BY outcome", (after,))
        if sum(r["n"] for r in rows) >= attempted:
            time.sleep(0.5)
            rows = srv.query("SELECT outcome, count(*) AS n FROM handshakes "
                             "WHERE id > ? GROUP BY outcome", (after,))
            break
        time.sleep(0.2)
    names = {1: "accepted", 2: "rejected", 3: "no_certificate", 4: "failed",
             5: "aborted"}
    got = {names[r["outcome"]]: r["n"] for r in rows}
    want = {}
    for k, n in counts.items():
        want[WANT[k]] = want.get(WANT[k], 0) + n
    return attempted, got, want


@test(expect_errors=(r"AH02039: Certificate Verification: Error",))
def load_mixed_with_graceful_restart(ctx):
    attempted, got, want = load_run(ctx)
    assert attempted >= THREADS * PER_THREAD * 0.95, attempted
    assert got == want, "rows by outcome %r, attempts %r (total %d)" % (
        got, want, attempted)
    lost = ctx.srv.query("SELECT coalesce(sum(lost), 0) AS n FROM events "
                         "WHERE kind = 'gap'")[0]["n"]
    assert lost == 0, lost


SOAK_SECONDS = int(os.environ.get("MTLS_SOAK_SECONDS", "60"))


@test(once=True, expect_errors=(r"AH02039: Certificate Verification: Error",))
def soak_with_graceful_restart_every_5_seconds(ctx):
    """16 clients making full handshakes (good, expired, untrusted, none)
    for MTLS_SOAK_SECONDS (default 60) while the server restarts
    gracefully every 5 s: afterwards rows = attempts, exactly, and the
    chains verify."""
    srv = ctx.srv
    contexts = client_contexts(ctx)
    after = srv.max_id()
    deadline = time.time() + SOAK_SECONDS
    ts, counts = start_load(srv, contexts, deadline, 16)
    restarts = 0
    while time.time() < deadline - 1:
        time.sleep(5)
        srv.graceful()
        restarts += 1
    for t in ts:
        t.join()
    attempted = sum(counts.values())
    want = {}
    for k, n in counts.items():
        want[WANT[k]] = want.get(WANT[k], 0) + n
    names = {1: "accepted", 2: "rejected", 3: "no_certificate", 4: "failed",
             5: "aborted"}
    got = {}
    end = time.time() + 60
    while time.time() < end:
        rows = srv.query("SELECT outcome, count(*) AS n FROM handshakes "
                         "WHERE id > ? GROUP BY outcome", (after,))
        got = {names[r["outcome"]]: r["n"] for r in rows}
        if sum(got.values()) >= attempted:
            time.sleep(0.5)
            rows = srv.query("SELECT outcome, count(*) AS n FROM handshakes "
                             "WHERE id > ? GROUP BY outcome", (after,))
            got = {names[r["outcome"]]: r["n"] for r in rows}
            break
        time.sleep(0.2)
    assert attempted > 100 and restarts >= SOAK_SECONDS // 5 - 2, \
        (attempted, restarts)
    assert got == want, "rows by outcome %r, attempts %r (total %d, %d " \
        "graceful restarts)" % (got, want, attempted, restarts)
    r = subprocess.run([ctx.tool, "verify", "--no-record", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    print("    soak: %d handshakes in %d s, %d graceful restarts" % (
        attempted, SOAK_SECONDS, restarts))
