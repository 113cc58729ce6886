#!/usr/bin/env python3
"""Instruction benchmark: what mod_mtls_audit costs a handshake, counted.

Server CPU time on a shared 2-core VM varies by 5-10 % from run to run,
more than the module costs; instructions executed do not.  This runs the
same three servers as handshake-bench.py (A mod_ssl only, B A +
mod_mtls_audit with its defaults, C A + a CustomLog of the SSL
variables) one at a time as a single process (httpd -X, mpm_event) under
valgrind --tool=callgrind, makes N1 and then N2 full handshakes (each
with one GET) against a fresh start of each, and reports the difference
divided by N2 - N1: the instructions per handshake with start-up and
shutdown taken out.  B's writer thread is counted on its own.

What it does not count: time in the kernel (the writer's system calls;
handshake-bench.py measures the writer's CPU with them), cache misses,
and SHA instructions the emulated CPU lacks (valgrind's CPU has no SHA
extensions, so SHA-256 runs the slower generic code in A and B alike).

    bench/instr-bench.py [--short] [--n1 N] [--n2 N]

Needs root, valgrind and a build (./apxs-build.sh build).
"""
import argparse
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
import pki as pki_mod            # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "handshake_bench", os.path.join(TOP, "bench", "handshake-bench.py"))
hb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hb)


def totals(files):
    """Instructions in each callgrind output file: {file: Ir}."""
    out = {}
    for f in files:
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    out[f] = int(line.split()[1])
                    break
    return out


def measure(srv, pki, ver, clients, n, outdir):
    """Start srv under callgrind, make n handshakes, stop it; returns
    (instructions of every thread, of the writer thread)."""
    www = pwd.getpwnam("www-data")
    out = os.path.join(outdir, "%s-%s-%d" % (srv.name, ver, n))
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         "--callgrind-out-file=" + out, hb.HTTPD, "-X", "-d", srv.root,
         "-f", srv.conf], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            # valgrind creates its file as root; httpd writes it as
            # www-data when it ends.
            for f in glob.glob(out + "*"):
                os.chown(f, www.pw_uid, www.pw_gid)
            try:
                socket.create_connection(("127.0.0.1", srv.port), 0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        args = [hb.HSLOAD, "-p", str(srv.port), "-n", str(n), "-c", "2",
                "-v", ver, "--ca", pki["root"].cert]
        for c in clients:
            args += ["--client", c]
        r = subprocess.run(args, capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            raise SystemExit("mtls-hsload: " + r.stderr)
        time.sleep(2.5)         # B's writer flushes every second
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    t = totals(glob.glob(out + "-*"))
    writer = [f for f in t if "writer_main" in open(f).read()]
    return sum(t.values()), sum(t[f] for f in writer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true",
                    help="TLS 1.3 EC only, 30 and 120 handshakes")
    ap.add_argument("--n1", type=int, default=40)
    ap.add_argument("--n2", type=int, default=200)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("instr-bench: needs valgrind (apt-get install "
                         "valgrind)")
    if args.short:
        args.n1, args.n2 = 30, 120
    base = tempfile.mkdtemp(prefix="mtls-instr-")
    os.chmod(base, 0o755)
    outdir = os.path.join(base, "callgrind")
    os.makedirs(outdir)
    os.chmod(outdir, 0o1777)
    pki = pki_mod.make_pki(os.path.join(base, "pki"))

    def spec(pair, w=1):
        return "%s,%s,%d" % (pair[0], pair[1], w)

    scenarios = [("TLS1.3 EC", "1.3", [spec(pki["ec"])])]
    if not args.short:
        scenarios += [
            ("TLS1.2 EC", "1.2", [spec(pki["ec"])]),
            ("TLS1.3 RSA", "1.3", [spec(pki["rsa"])]),
            ("TLS1.2 RSA", "1.2", [spec(pki["rsa"])]),
            ("TLS1.3 30%fail", "1.3", [spec(pki["ec"], 7),
                                       spec(pki["expired"]),
                                       spec(pki["untrusted"]), "none,,1"]),
        ]
    srvs = [hb.Srv(base, k, pki, k) for k in "ABC"]
    rows = []
    try:
        for name, ver, clients in scenarios:
            per = {}
            for s in srvs:
                lo = measure(s, pki, ver, clients, args.n1, outdir)
                hi = measure(s, pki, ver, clients, args.n2, outdir)
                d = args.n2 - args.n1
                per[s.name] = ((hi[0] - lo[0]) / d, (hi[1] - lo[1]) / d)
            rows.append((name, per))
            print("%s done" % name, file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("\nInstructions per handshake (callgrind, httpd -X, mpm_event; "
          "%d minus %d handshakes, each with one GET)" % (args.n2, args.n1))
    hdr = "%-16s %12s %12s %12s %8s %8s %14s %12s" % (
        "scenario", "A", "B", "C", "B/A", "B/C", "B's writer", "B-A other")
    print(hdr)
    print("-" * len(hdr))
    for name, per in rows:
        a, b, c = per["A"][0], per["B"][0], per["C"][0]
        w = per["B"][1]
        print("%-16s %12.0f %12.0f %12.0f %8.4f %8.4f %14.0f %12.0f" % (
            name, a, b, c, b / a, b / c, w, b - a - w))
    print("(B's writer: the writer thread's instructions per handshake; "
          "B-A other: the rest of what B adds, the capture in the "
          "handshake and the request; user space only)")


if __name__ == "__main__":
    main()
