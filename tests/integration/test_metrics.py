"""Metrics for monitoring: the mtls-audit-metrics handler (Prometheus text
format) and mod_status's figures, scraped from the real server under load
and checked against the rows the writers stored.  Each test runs its own
server with a plain-HTTP vhost that serves the handler."""
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

import clients
import server as server_mod
from harness import Registry, count, wait_for
from test_faults import Load, WRITE_ERRORS, ok

test = Registry()

PROMTOOL = "/usr/bin/promtool"      # Debian's package prometheus
OUTCOMES = {1: "accepted", 2: "rejected", 3: "no_certificate",
            4: "failed", 5: "aborted"}


def metrics_server(ctx, name, extra=""):
    """A server of its own with the handler on a plain-HTTP port (.mport):
    /metrics open to 127.0.0.1, /metrics-10 only to 10.0.0.1, and
    mod_status at /server-status."""
    mport = server_mod.free_port()
    probe = server_mod.Server(os.path.join(ctx.scratch, name), ctx.pki,
                              mpm=ctx.srv.mpm)
    glob = """{status}
Listen 127.0.0.1:{mport}
<VirtualHost 127.0.0.1:{mport}>
    ServerName metrics.test
    <Location "/metrics">
        SetHandler mtls-audit-metrics
    </Location>
    <Location "/metrics-10">
        SetHandler mtls-audit-metrics
        Require ip 10.0.0.1
    </Location>
    <Location "/server-status">
        SetHandler server-status
    </Location>
</VirtualHost>
{extra}
""".format(status=probe.load("status", "status")
           + probe.load("authz_host", "authz_host"), mport=mport, extra=extra)
    srv = server_mod.Server(os.path.join(ctx.scratch, name), ctx.pki,
                            mpm=ctx.srv.mpm, extra_global=glob)
    srv.mport = mport
    srv.start()
    return srv


def get(srv, path):
    """(status, body) of a plain GET on the metrics port."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s"
                                    % (srv.mport, path), timeout=20) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def parse(text):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "not an exposition line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                      m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def scrape(srv):
    st, body, headers = get(srv, "/metrics")
    assert st == 200, (st, body)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), \
        headers["Content-Type"]
    check_promtool(body)
    return parse(body)


def check_promtool(body):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() \
        and not r.stderr.strip(), (r.returncode, r.stdout, r.stderr, body)


def value(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def totals(m):
    return {k: v for k, v in m.items() if k[0].endswith("_total")
            or k[0].endswith(("_bucket", "_count", "_sum"))}


def never_decrease(before, after):
    for k, v in before.items():
        assert k in after, ("series gone", k)
        assert after[k] >= v, ("counter went down", k, v, after[k])


def handshake_rows(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return {(r[0], OUTCOMES[r[1]]): r[2] for r in con.execute(
            "SELECT server_name, outcome, count(*) FROM handshakes "
            "GROUP BY 1, 2")}
    finally:
        con.close()


def handshake_series(m):
    out = {}
    for (name, labels), v in m.items():
        if name == "mtls_audit_handshakes_total" and v:
            d = dict(labels)
            out[(d["vhost"], d["outcome"])] = int(v)
    return out


def drained(srv, rows_now):
    """A scrape once the writers have stored everything the counters say
    was handshaken (and their queues are empty)."""
    def settled():
        m = scrape(srv)
        if value(m, "mtls_audit_queue_depth") != 0:
            return None
        n = sum(handshake_series(m).values())
        return m if n and n == rows_now() else None
    return wait_for(settled, 30)


@test()
def metrics_match_the_database_under_load(ctx):
    srv = metrics_server(ctx, "metrics")
    try:
        load = Load(ctx, srv, clients_n=4)
        load.start()
        scrapes = []
        try:
            t0 = time.time()
            while time.time() - t0 < 3:
                scrapes.append(scrape(srv))
                # Other outcomes, certificates and vhosts: none, expired,
                # and SNI to nocheck.test (optional_no_ca) with another.
                assert ok(srv, None) == "000"
                assert ok(srv, ctx.pki["expired"]) == "000"
                assert clients.curl(srv, ctx.pki["rsa"], host="nocheck.test") \
                    .stdout.strip() == "200"
        finally:
            load.stop()
        assert not load.errors, load.errors[:3]
        assert load.answered[0] > 0
        for a, b in zip(scrapes, scrapes[1:]):
            never_decrease(totals(a), totals(b))
        m = drained(srv, lambda: count(srv.db, "SELECT count(*) FROM "
                                                "handshakes"))
        assert m, (handshake_series(scrape(srv)), handshake_rows(srv.db))
        rows = handshake_rows(srv.db)
        assert handshake_series(m) == rows, (handshake_series(m), rows)
        assert ("localhost", "no_certificate") in rows
        assert ("localhost", "rejected") in rows
        assert ("nocheck.test", "accepted") in rows
        n_hs = count(srv.db, "SELECT count(*) FROM handshakes")
        n_rq = count(srv.db, "SELECT count(*) FROM requests")
        n_ev = count(srv.db, "SELECT count(*) FROM events WHERE kind NOT IN "
                             "('start', 'reload', 'stop', 'policy')")
        assert wait_for(lambda: value(scrape(srv), "mtls_audit_requests_total")
                        == count(srv.db, "SELECT count(*) FROM requests"))
        m = scrape(srv)
        n_rq = count(srv.db, "SELECT count(*) FROM requests")
        assert value(m, "mtls_audit_requests_total") == n_rq
        assert value(m, "mtls_audit_records_written_total",
                     type="handshake") == n_hs
        assert value(m, "mtls_audit_records_written_total",
                     type="request") == n_rq
        assert value(m, "mtls_audit_records_written_total",
                     type="event") == n_ev
        for cause in ("queue_full", "writer_stopped", "write_failed",
                      "process_died", "no_writer"):
            assert value(m, "mtls_audit_records_lost_total", cause=cause) == 0
        assert value(m, "mtls_audit_queue_depth") == 0
        assert 1 <= value(m, "mtls_audit_queue_depth_max") <= 10000
        tx = value(m, "mtls_audit_write_transactions_total", result="ok")
        assert tx >= 1
        assert value(m, "mtls_audit_write_transactions_total",
                     result="failed") == 0
        assert value(m, "mtls_audit_write_duration_seconds_count") == tx
        assert value(m, "mtls_audit_write_duration_seconds_bucket",
                     le="+Inf") == tx
        assert value(m, "mtls_audit_write_duration_seconds_sum") > 0
        assert 0 <= value(m, "mtls_audit_seconds_since_last_write") < 30
        # The file's size, read around the scrape (a checkpoint may grow it).
        s0 = os.stat(srv.db).st_size
        m = scrape(srv)
        s1 = os.stat(srv.db).st_size
        assert value(m, "mtls_audit_database_bytes") in (s0, s1), \
            (value(m, "mtls_audit_database_bytes"), s0, s1)
        # The certificate figures: a query shared by all processes, run
        # again once its answer is 30 s old (the first scrapes, before the
        # load's rows were stored, may have counted none).
        day = int(time.time() * 1e6) - 86400 * 10**6
        certs = count(srv.db, "SELECT count(DISTINCT cert_id) FROM handshakes "
                              "WHERE outcome = 1 AND time_us >= %d" % day)
        soonest = count(srv.db, "SELECT min(c.not_after) FROM handshakes h "
                                "JOIN certificates c ON c.id = h.cert_id "
                                "WHERE h.outcome = 1 AND h.time_us >= %d"
                                % day)
        assert certs == 2       # the load's (ec) and nocheck.test's (rsa)

        def certs_now():
            m = scrape(srv)
            k = ("mtls_audit_client_certificates", frozenset())
            return m if m.get(k) == certs else None
        m = wait_for(certs_now, 45)
        assert m, (scrape(srv), certs)
        assert value(m, "mtls_audit_client_certificate_soonest_expiry_"
                        "seconds") == soonest
        assert value(m, "mtls_audit_processes") >= 1
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True, expect_errors=WRITE_ERRORS)
def metrics_count_the_records_lost(ctx):
    """Losses provoked as in database_locked_by_another_process: the lost
    counters equal the gap events' counts."""
    srv = metrics_server(ctx, "metrics-lost", "MTLSAuditBusyTimeout 300")
    try:
        assert ok(srv, ctx.pki["ec"]) == "200"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 1)
        holder = sqlite3.connect(srv.db, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        t0 = time.time()
        try:
            while time.time() - t0 < 5:
                assert ok(srv, ctx.pki["ec"]) == "200"
                time.sleep(0.2)
            # While the file is locked, the writers cannot write.
            m = scrape(srv)
            assert value(m, "mtls_audit_write_transactions_total",
                         result="failed") >= 1
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert ok(srv, ctx.pki["ec"]) == "200"

        def settled():
            m = scrape(srv)
            gaps, gap_hs, gap_rq = lost_in_gaps(srv.db)
            lost = sum(v for (n, _), v in m.items()
                       if n == "mtls_audit_records_lost_total")
            hs = sum(handshake_series(m).values())
            stored = count(srv.db, "SELECT count(*) FROM handshakes")
            requests = count(srv.db, "SELECT count(*) FROM requests")
            if value(m, "mtls_audit_queue_depth") == 0 and gaps and \
                    lost == gaps and hs == stored + gap_hs and \
                    value(m, "mtls_audit_requests_total") \
                    == requests + gap_rq:
                return m, gaps
            return None
        got = wait_for(settled, 40)
        assert got, (scrape(srv), lost_in_gaps(srv.db))
        m, gaps = got
        assert value(m, "mtls_audit_records_lost_total",
                     cause="write_failed") == gaps
        assert value(m, "mtls_audit_records_written_total",
                     type="handshake") == count(srv.db, "SELECT count(*) "
                                                "FROM handshakes")
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


def lost_in_gaps(db):
    """(records, handshakes, requests) the gap events say were lost."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        rows = con.execute("SELECT lost, detail FROM events "
                           "WHERE kind = 'gap'").fetchall()
    finally:
        con.close()
    hs = sum(int(re.search(r"\((\d+) handshakes", d).group(1))
             for _, d in rows)
    rq = sum(int(re.search(r"(\d+) requests", d).group(1)) for _, d in rows)
    return sum(n for n, _ in rows), hs, rq


@test()
def metrics_survive_graceful_and_plain_restarts(ctx):
    srv = metrics_server(ctx, "metrics-graceful")
    try:
        for _ in range(6):
            assert ok(srv, ctx.pki["ec"]) == "200"
        rows = lambda: count(srv.db, "SELECT count(*) FROM handshakes")  # noqa
        before = drained(srv, rows)
        assert before and sum(handshake_series(before).values()) == 6
        pids = set(srv.children())
        srv.graceful()
        # The old generation's children are gone, new ones write.
        assert wait_for(lambda: pids.isdisjoint(srv.children())
                        and srv.writers() >= 1, 30), "no new generation"
        after = scrape(srv)
        never_decrease(totals(before), totals(after))
        assert sum(handshake_series(after).values()) == 6
        for _ in range(4):
            assert ok(srv, ctx.pki["ec"]) == "200"
        later = drained(srv, rows)
        assert later, (handshake_series(scrape(srv)), rows())
        never_decrease(totals(after), totals(later))
        assert sum(handshake_series(later).values()) == 10 == rows()
        assert value(later, "mtls_audit_records_written_total",
                     type="handshake") == 10
        # A plain restart (SIGHUP): the parent stays, and so do the counts.
        pids = set(srv.children())
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: pids.isdisjoint(srv.children())
                        and srv.writers() >= 1, 30), "no new generation"
        assert ok(srv, ctx.pki["ec"]) == "200"
        last = drained(srv, rows)
        assert last, (handshake_series(scrape(srv)), rows())
        never_decrease(totals(later), totals(last))
        assert sum(handshake_series(last).values()) == 11 == rows()
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test()
def metrics_in_mod_status_auto(ctx):
    srv = metrics_server(ctx, "metrics-status")
    try:
        for _ in range(3):
            assert ok(srv, ctx.pki["ec"]) == "200"
        assert ok(srv, None) == "000"
        m = drained(srv, lambda: count(srv.db, "SELECT count(*) FROM "
                                                "handshakes"))
        assert m
        st, body, _ = get(srv, "/server-status?auto")
        assert st == 200, (st, body)
        auto = dict(l.split(": ", 1) for l in body.splitlines() if ": " in l)
        assert auto["MtlsAuditHandshakesAccepted"] == "3", body
        assert auto["MtlsAuditHandshakesNoCertificate"] == "1", body
        assert int(auto["MtlsAuditRequests"]) == \
            value(m, "mtls_audit_requests_total")
        assert int(auto["MtlsAuditRecordsWrittenHandshakes"]) == 4
        for k in ("RecordsLostQueueFull", "RecordsLostWriteFailed",
                  "RecordsLostProcessDied", "QueueDepth", "QueueDepthMax",
                  "WriteTransactions", "SecondsSinceLastWrite",
                  "DatabaseBytes", "ClientCertificates",
                  "ClientCertificateSoonestExpiry"):
            assert "MtlsAudit" + k in auto, (k, body)
        m = scrape(srv)         # the same shared figures
        assert int(auto["MtlsAuditClientCertificates"]) == \
            value(m, "mtls_audit_client_certificates"), body
        st, html, _ = get(srv, "/server-status")
        assert st == 200 and "mod_mtls_audit" in html \
            and "MtlsAuditHandshakesAccepted: 3" in html, html[-2000:]
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def metrics_handler_obeys_require(ctx):
    srv = metrics_server(ctx, "metrics-require")
    try:
        st, body, _ = get(srv, "/metrics-10")
        assert st == 403, (st, body)
        assert "mtls_audit" not in body
        st, body, _ = get(srv, "/metrics")
        assert st == 200 and "mtls_audit_handshakes_total" in body
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())
