#!/bin/sh
# bench/run.sh -- every benchmark of mod_mtls_audit, one after the other,
# each printing its table:
#   1. handshake-bench.py  what the module costs a mutual-TLS server: A
#      (mod_ssl), B (A + mod_mtls_audit), C (A + a CustomLog of the SSL
#      variables), interleaved rounds, the three loaded at once each
#      round;
#      handshakes/s, server CPU per handshake, p99 latency, the ratios
#      B/A and B/C; memory per child
#   2. store-bench.sh      bytes per row; the writer's records/s and CPU
#      per record into a large database, against raw SQLite; 1, 2, 4
#      writing processes
#   3. report-bench.sh     every mtls-audit report over that database, 30
#      and 365 days, with and without the chain walk; seconds, peak memory
#   4. instr-bench.py      instructions per handshake of A, B and C under
#      callgrind (repeatable where CPU time is not); skipped without
#      valgrind
#
#   bench/run.sh            the full run: 20 rounds of A, B and C loaded
#                           together, 2,000 connections a run (the README's
#                           figures), a 10 M-handshake database (generated once
#                           into $BENCH_DIR, default /tmp/mtls-bench: ~3 GB
#                           and several minutes the first time); about 35
#                           minutes
#   bench/run.sh --year     bench/year-bench.sh alone: a year in 12 monthly
#                           files (2 M handshakes each) and the reports over
#                           it, and every report over the 10 M file (about
#                           an hour the first time, generating)
#   bench/run.sh --short    3 rounds x 500 connections, loaded together,
#                           1 M handshakes: about 3.5 minutes (plus about
#                           20 s to generate the database the first time)
#
# Needs root (the scratch servers run as www-data) and a build
# (./apxs-build.sh build).  Nothing is timed against a threshold here: the
# numbers are for people to read (the issue notes quote them).
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --year ]; then
    "$TOP/bench/year-bench.sh"
elif [ "${1:-}" = --short ]; then
    python3 "$TOP/bench/handshake-bench.py" --short
    STORE_ADD=100000 "$TOP/bench/store-bench.sh" 1000000
    "$TOP/bench/report-bench.sh" 1000000
    if command -v valgrind >/dev/null; then
        python3 "$TOP/bench/instr-bench.py" --short
    fi
else
    python3 "$TOP/bench/handshake-bench.py" --together --rounds 20
    "$TOP/bench/store-bench.sh" 10000000
    "$TOP/bench/report-bench.sh" 10000000
    if command -v valgrind >/dev/null; then
        python3 "$TOP/bench/instr-bench.py"
    else
        echo "instr-bench.py skipped: no valgrind (apt-get install valgrind)"
    fi
fi
