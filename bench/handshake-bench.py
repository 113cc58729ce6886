#!/usr/bin/env python3
"""Handshake benchmark: what mod_mtls_audit costs a mutual-TLS server.

Three scratch servers (the real Debian apache2, mpm_event, 127.0.0.1, the
same settings), measured side by side, interleaved round by round (the
order rotates, and each round runs it forward and back: A B C C B A,
B C A A C B, ...; a server's two runs are merged, so that a drift of the
host during the round weighs on the three alike):
  A  mod_ssl with SSLVerifyClient require, mod_mtls_audit not loaded
  B  A + mod_mtls_audit (MTLSAuditEngine On, requests recorded, defaults)
  C  A + a CustomLog of SSL_CLIENT_S_DN, _I_DN, _M_SERIAL, _VERIFY,
     SSL_PROTOCOL, SSL_CIPHER (what users do today)
Load: build/mtls-hsload, every connection a full handshake (no
resumption) and one GET.  For each run: connections per second, latency
p50/p99, and the server's CPU per handshake (the CPU time of the httpd
parent, its children alive and reaped, over the run, divided by the
connections).  Ratios are taken per round (B and A of the same round) and
their median is reported, with the spread (10th-90th percentile).  With
--together the three servers are loaded at the same time in each round,
each by its own client: a neighbour's burst on this shared host then slows
all three alike instead of whichever ran during it.  With --control, C is
a second copy of A, and the table adds C/A: what two identical servers
measure on this host, the noise floor of B/A.  With --compare SO, C is B
with the mod_mtls_audit.so at SO (another build, e.g. the one before a
change): B/C is then this build over that one.  With --rotate SPEC, C is
B with MTLSAuditRotate SPEC (and MTLSAuditDatabase audit-%Y-%m.db): give
a SIZE small enough to rotate several times during the runs (1M), and
B/C is what rotation costs, or not.

With --certs N, one more scenario spreads its connections over N distinct
client certificates (TLS 1.3, EC), so that the resident memory reported
after the runs includes what many certificates cost (the writer's SQLite
page cache, its certificate cache).

    bench/handshake-bench.py [--rounds N] [--connections N] [--short]
                             [--together]
                             [--control | --compare SO | --rotate SPEC]
                             [--certs N]
                             [--json FILE]
"""
import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
import pki as pki_mod            # noqa: E402
import server as server_mod      # noqa: E402

HTTPD = "/usr/sbin/apache2"
BUILD = os.path.join(TOP, "build")
HSLOAD = os.path.join(BUILD, "mtls-hsload")
TICK = os.sysconf("SC_CLK_TCK")


class Srv:
    def __init__(self, base, name, pki, kind, so=None, rotate=None):
        self.name = name
        self.root = os.path.join(base, name)
        self.port = server_mod.free_port()
        self.db = os.path.join(self.root, "auditdb", "audit.db")
        os.makedirs(os.path.join(self.root, "logs"))
        os.makedirs(os.path.join(self.root, "htdocs"))
        with open(os.path.join(self.root, "htdocs", "index.html"), "w") as f:
            f.write("hello\n")
        os.chmod(self.root, 0o755)
        mods = ""
        for mod in ("mpm_event", "authz_core", "mime", "dir", "log_config",
                    "ssl", "socache_shmcb"):
            if "mod_%s.c" % mod not in server_mod.static_modules():
                mods += "LoadModule %s_module %s/mod_%s.so\n" % (
                    mod, server_mod.MODULES, mod)
        extra = vhost = ""
        if kind == "B":
            d = os.path.dirname(self.db)
            os.makedirs(d)
            www = pwd.getpwnam("www-data")
            os.chown(d, www.pw_uid, www.pw_gid)
            os.chmod(d, 0o750)
            mods += "LoadModule mtls_audit_module %s\n" % (
                so or os.path.join(BUILD, "mod_mtls_audit.so"))
            extra = "MTLSAuditDatabase %s\n" % self.db
            if rotate:
                extra = ("MTLSAuditDatabase %s/audit-%%Y-%%m.db\n"
                         "MTLSAuditRotate %s\n" % (d, rotate))
            vhost = "    MTLSAuditEngine On\n"
        elif kind == "C":
            vhost = ('    CustomLog "%s/logs/ssl.log" "%%{SSL_CLIENT_S_DN}x|'
                     '%%{SSL_CLIENT_I_DN}x|%%{SSL_CLIENT_M_SERIAL}x|'
                     '%%{SSL_CLIENT_VERIFY}x|%%{SSL_PROTOCOL}x|'
                     '%%{SSL_CIPHER}x %%h %%t \\"%%r\\" %%>s %%b"\n'
                     % self.root)
        self.conf = os.path.join(self.root, "httpd.conf")
        with open(self.conf, "w") as f:
            f.write("""
ServerRoot "{root}"
PidFile "{root}/logs/httpd.pid"
DefaultRuntimeDir "{root}/logs"
Mutex file:{root}/logs default
ErrorLog "{root}/logs/error.log"
LogLevel warn
User www-data
Group www-data
ServerName localhost
Listen 127.0.0.1:{port}
{mods}
TypesConfig /etc/mime.types
DocumentRoot "{root}/htdocs"
DirectoryIndex index.html
<Directory "{root}/htdocs">
    Require all granted
</Directory>
StartServers 2
ServerLimit 4
ThreadsPerChild 25
MaxRequestWorkers 100
SSLSessionCache shmcb:{root}/logs/ssl_scache(512000)
SSLRandomSeed startup builtin
{extra}
<VirtualHost 127.0.0.1:{port}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    SSLCACertificateFile {ca}
    SSLVerifyClient require
{vhost}</VirtualHost>
""".format(root=self.root, port=self.port, mods=mods, extra=extra,
           vhost=vhost, cert=pki["server"][0], key=pki["server"][1],
           ca=pki["root"].cert))

    def start(self):
        r = subprocess.run([HTTPD, "-d", self.root, "-f", self.conf, "-k",
                            "start"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("%s: %s" % (self.name, r.stderr))
        for _ in range(100):
            if os.path.exists(os.path.join(self.root, "logs", "httpd.pid")):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        self.pid = int(open(os.path.join(self.root, "logs",
                                         "httpd.pid")).read())

    def stop(self):
        try:
            os.kill(self.pid, 15)
        except ProcessLookupError:
            return
        for _ in range(200):
            if not os.path.exists("/proc/%d" % self.pid):
                return
            time.sleep(0.05)

    def children(self):
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                f = open("/proc/%s/stat" % p).read()
            except OSError:
                continue
            fields = f[f.rindex(")") + 2:].split()
            if int(fields[1]) == self.pid:
                out.append((int(p), fields))
        return out

    def cpu(self):
        """Seconds of CPU: the parent's own and its reaped children's, and
        the live children's."""
        f = open("/proc/%d/stat" % self.pid).read()
        fields = f[f.rindex(")") + 2:].split()
        t = sum(int(x) for x in fields[11:15])
        for _, cf in self.children():
            t += int(cf[11]) + int(cf[12])
        return t / TICK

    def writer_cpu(self):
        """Seconds of CPU of the module's writer threads (named
        mtls-writer), in the live children: the scheduler's own count in
        nanoseconds (schedstat), not clock ticks, which at 10 ms were too
        coarse for a thread that runs a millisecond a second."""
        ns = 0
        for pid, _ in self.children():
            try:
                tids = os.listdir("/proc/%d/task" % pid)
            except OSError:
                continue
            for tid in tids:
                task = "/proc/%d/task/%s/" % (pid, tid)
                try:
                    if open(task + "comm").read().strip() != "mtls-writer":
                        continue
                    ns += int(open(task + "schedstat").read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        return ns / 1e9

    def rss_per_child_kb(self):
        sizes = []
        for pid, _ in self.children():
            for line in open("/proc/%d/status" % pid):
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]))
        return statistics.mean(sizes) if sizes else 0


def run_loads(srvs, pki, version, clients, n, c):
    """The same load against each server of srvs, all at once (each its
    own mtls-hsload): whatever else the host runs then weighs on all of
    them alike.  One result per server."""
    procs, before = [], []
    for srv in srvs:
        args = [HSLOAD, "-p", str(srv.port), "-n", str(n), "-c", str(c),
                "-v", version, "--ca", pki["root"].cert]
        for spec in clients:
            args += ["--client", spec]
        before.append((srv.cpu(), srv.writer_cpu()))
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    # B's writer flushes within a second: its CPU counts too.
    time.sleep(1.1)
    results = []
    for srv, p, (out, err), (cpu0, w0) in zip(srvs, procs, outs, before):
        if p.returncode != 0:
            raise SystemExit("mtls-hsload: " + err)
        res = json.loads(out)
        res["server_cpu_ms_per_hs"] = (srv.cpu() - cpu0) * 1000.0 / n
        res["writer_cpu_us_per_hs"] = (srv.writer_cpu() - w0) * 1e6 / n
        results.append(res)
    return results


def run_load(srv, pki, version, clients, n, c):
    return run_loads([srv], pki, version, clients, n, c)[0]


def merge(runs):
    """One result for several runs of the same load: connections per
    second over their total time, the other figures averaged."""
    out = {k: statistics.mean(r[k] for r in runs) for k in runs[0]
           if isinstance(runs[0][k], (int, float))}
    out["rps"] = sum(r["connections"] for r in runs) / \
        sum(r["seconds"] for r in runs)
    return out


def pct(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=2000,
                    help="per run (each server runs twice a round "
                    "unless --together)")
    ap.add_argument("--short", action="store_true",
                    help="3 rounds of 500 connections, A, B and C loaded "
                    "together (about 1.5 minutes)")
    ap.add_argument("--together", action="store_true",
                    help="load A, B and C at the same time in each round "
                    "(the host's other load then weighs on all three "
                    "alike) instead of one after the other")
    ap.add_argument("--control", action="store_true",
                    help="C is a second copy of A: what two identical "
                    "servers measure (the noise floor of the ratios)")
    ap.add_argument("--compare", metavar="SO",
                    help="C is B with this mod_mtls_audit.so (another "
                    "build): B/C is this build over that one")
    ap.add_argument("--rotate", metavar="SPEC",
                    help="C is B with MTLSAuditRotate SPEC (e.g. 1M): B/C "
                    "is what rotation costs")
    ap.add_argument("--certs", type=int, default=0,
                    help="add a scenario over N distinct client "
                    "certificates (at most 2000)")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.certs <= 2000:
        ap.error("--certs takes 0 to 2000 (mtls-hsload's limit of client "
                 "certificates is 2048)")
    if sum(map(bool, (args.control, args.compare, args.rotate))) > 1:
        ap.error("--control, --compare and --rotate each say what C is: "
                 "take one")
    if args.compare and not os.path.isfile(args.compare):
        ap.error("--compare: no such file: %s" % args.compare)
    if args.compare:
        args.compare = os.path.abspath(args.compare)
    if args.short:
        args.rounds, args.connections, args.together = 3, 500, True
    base = tempfile.mkdtemp(prefix="mtls-hsbench-")
    os.chmod(base, 0o755)
    pki = pki_mod.make_pki(os.path.join(base, "pki"))
    rsa = pki["rsa"]
    ec = pki["ec"]

    def spec(pair, w=1):
        return "%s,%s,%d" % (pair[0], pair[1], w)

    mix = [spec(ec, 7), spec(pki["expired"]), spec(pki["untrusted"]),
           "none,,1"]
    n = args.connections
    scenarios = [
        ("TLS1.3 EC c16", "1.3", [spec(ec)], n, 16),
        ("TLS1.2 EC c16", "1.2", [spec(ec)], n, 16),
        ("TLS1.3 RSA c16", "1.3", [spec(rsa)], n, 16),
        ("TLS1.2 RSA c16", "1.2", [spec(rsa)], n, 16),
        ("TLS1.3 30%fail c16", "1.3", mix, n, 16),
        ("TLS1.3 EC c1", "1.3", [spec(ec)], max(200, n // 4), 1),
    ]
    if args.certs > 0:
        many = [pki["root"].issue(os.path.join(base, "pki"), "many-%d" % i,
                                  "/O=Example/CN=bench-client-%d" % i)
                for i in range(args.certs)]
        scenarios.append(("TLS1.3 %d certs" % len(many), "1.3",
                          [spec(c) for c in many], n, 16))
    kind_c = ("A" if args.control else "B" if args.compare or args.rotate
              else "C")
    srvs = [Srv(base, "A", pki, "A"), Srv(base, "B", pki, "B"),
            Srv(base, "C", pki, kind_c, args.compare, args.rotate)]
    results = {s[0]: {k: [] for k in "ABC"} for s in scenarios}
    try:
        for s in srvs:
            s.start()
        for s in srvs:          # warm up
            run_load(s, pki, "1.3", [spec(ec)], 200, 16)
        t0 = time.time()
        for r in range(args.rounds):
            order = srvs[r % 3:] + srvs[:r % 3]
            for name, ver, clients, count, conc in scenarios:
                if args.together:
                    # The launch order rotates too: the first client
                    # started gets a head start.
                    for s, res in zip(order, run_loads(order, pki, ver,
                                                       clients, count,
                                                       conc)):
                        results[name][s.name].append(res)
                    continue
                # Forward and back (A B C C B A): each server's two runs
                # are centred on the same moment, so a drift of the host
                # over the round weighs on all three alike.
                runs = {s.name: [] for s in srvs}
                for s in order + order[::-1]:
                    runs[s.name].append(run_load(s, pki, ver, clients,
                                                 count, conc))
                for s in srvs:
                    results[name][s.name].append(merge(runs[s.name]))
            print("round %d/%d done (%.0f s)" % (r + 1, args.rounds,
                                                 time.time() - t0),
                  file=sys.stderr)
        rss = {s.name: s.rss_per_child_kb() for s in srvs}
        rows = {}
        if os.path.exists(srvs[1].db):
            import sqlite3
            time.sleep(1)
            con = sqlite3.connect("file:%s?mode=ro" % srvs[1].db, uri=True)
            rows = dict(con.execute("SELECT 'handshakes', count(*) FROM "
                                    "handshakes UNION ALL SELECT 'requests', "
                                    "count(*) FROM requests").fetchall())
            con.close()
    finally:
        for s in srvs:
            s.stop()
    expected = 200 + sum(s[3] for s in scenarios) * args.rounds * (
        1 if args.together else 2)
    print_table(results, args, rss, rows, expected)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "rss_kb": rss, "rows": rows},
                      f, indent=1)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


def print_table(results, args, rss, rows, expected):
    print("\nHandshake benchmark: %d %s rounds, %d connections per "
          "run (c1: fewer), mpm_event, 127.0.0.1" % (
              args.rounds, "simultaneous (A, B, C loaded at once)"
              if args.together else "interleaved (A B C C B A)",
              args.connections))
    print("A = mod_ssl only, B = A + mod_mtls_audit, C = %s; medians; "
          "ratios: median of per-round ratios [p10-p90]" % (
              "a second copy of A (--control)" if args.control
              else "B with %s (--compare)" % args.compare if args.compare
              else "B with MTLSAuditRotate %s (--rotate)" % args.rotate
              if args.rotate
              else "A + CustomLog of SSL variables"))
    hdr = ("%-19s %8s %8s %8s %19s %19s %7s %7s %7s %19s %7s %7s %19s"
           % ("scenario", "A hs/s", "B hs/s", "C hs/s", "B/A hs/s",
              "B/C hs/s", "A ms", "B ms", "C ms", "B/A cpu/hs", "A p99",
              "B p99", "B/A p99"))
    print(hdr)
    print("-" * len(hdr))

    def med(xs):
        return statistics.median(xs)

    def ratio(name, key, num, den):
        rs = [a[key] / b[key] for a, b in zip(results[name][num],
                                              results[name][den])]
        return "%.3f [%.2f-%.2f]" % (med(rs), pct(rs, .1), pct(rs, .9))

    for name in results:
        R = results[name]
        print("%-19s %8.0f %8.0f %8.0f %19s %19s %7.3f %7.3f %7.3f %19s "
              "%7.1f %7.1f %19s" % (
                  name, med([x["rps"] for x in R["A"]]),
                  med([x["rps"] for x in R["B"]]),
                  med([x["rps"] for x in R["C"]]),
                  ratio(name, "rps", "B", "A"), ratio(name, "rps", "B", "C"),
                  med([x["server_cpu_ms_per_hs"] for x in R["A"]]),
                  med([x["server_cpu_ms_per_hs"] for x in R["B"]]),
                  med([x["server_cpu_ms_per_hs"] for x in R["C"]]),
                  ratio(name, "server_cpu_ms_per_hs", "B", "A"),
                  med([x["p99_us"] for x in R["A"]]) / 1000,
                  med([x["p99_us"] for x in R["B"]]) / 1000,
                  ratio(name, "p99_us", "B", "A")))
    print("(hs/s: connections per second, each a full handshake and one "
          "request; ms: server CPU per handshake; p99 in ms)")
    if args.control:
        for name in results:
            print("control, %-19s C/A hs/s %s, cpu/hs %s, p99 %s" % (
                name, ratio(name, "rps", "C", "A"),
                ratio(name, "server_cpu_ms_per_hs", "C", "A"),
                ratio(name, "p99_us", "C", "A")))
    print("B's CPU a handshake over A's (median of per-round "
          "differences): the writer thread's, and the rest's (the "
          "capture in the handshake path and its side effects)")
    for name in results:
        R = results[name]
        w = [x["writer_cpu_us_per_hs"] for x in R["B"]]
        rest = [(b["server_cpu_ms_per_hs"] - a["server_cpu_ms_per_hs"])
                * 1000 - b["writer_cpu_us_per_hs"]
                for a, b in zip(R["A"], R["B"])]
        line = "  %-19s writer %6.1f us, the rest %6.1f us" % (
            name, med(w), med(rest))
        if args.compare or args.rotate:
            wc = [x["writer_cpu_us_per_hs"] for x in R["C"]]
            restc = [(c["server_cpu_ms_per_hs"] - a["server_cpu_ms_per_hs"])
                     * 1000 - c["writer_cpu_us_per_hs"]
                     for a, c in zip(R["A"], R["C"])]
            line += "; C: writer %6.1f us, the rest %6.1f us" % (
                med(wc), med(restc))
        print(line)
    print("resident memory per child after the runs: A %.0f KB, B %.0f KB, "
          "C %.0f KB; B-A %+.0f KB" % (rss["A"], rss["B"], rss["C"],
                                       rss["B"] - rss["A"]))
    if rows:
        print("B recorded %d handshakes for %d connections made, %d "
              "requests" % (rows.get("handshakes", 0), expected,
                            rows.get("requests", 0)))


if __name__ == "__main__":
    main()
