#!/bin/sh
# bench/store-bench.sh -- how fast the module's store writes into a large
# database, against raw SQLite, and how many bytes a row takes.
#
#   bench/store-bench.sh [ROWS]      (default 10000000; 1000000 for a short run)
#
# 1. Size: bytes on disk per handshake row and per request row, indexes
#    included (SQLite's dbstat), in a database of ROWS handshakes over 1000
#    certificates (80% accepted, a request each), written by build/mtls-gen
#    through the core's own write path.  That database is shared with
#    report-bench.sh and kept in $BENCH_DIR (default /tmp/mtls-bench).
# 2. Throughput: a copy of it takes ADD more handshakes (and their
#    requests; default 200000) per run, in the writer's batches, with
#    synchronous=NORMAL as the module runs it: through the store (hash
#    chain, certificate lookup, 16 rows an INSERT) and as raw SQLite
#    INSERTs of the same rows (no chain, no lookup), one row a statement
#    ("raw") and 16 ("raw16"), in turn, 5 rounds after a warm-up; then
#    from 1, 2 and 4 processes at once into the one file.  Records per
#    second (wall) and CPU microseconds per record count the writing only,
#    not making the records.
#    With STORE_OLD=PATH (the mtls-gen of another build, e.g. the one before
#    a change), each round also writes through that build's store ("old"),
#    and store/old is printed.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${1:-10000000}
ADD=${STORE_ADD:-200000}
GEN="$TOP/build/mtls-gen"
. "$TOP/bench/lib.sh"
bench_db "$ROWS"
BASE="$DB"
WORK="$DIR/store-$ROWS.db"

echo "== size: $ROWS handshakes over 1000 certificates ($BASE)"
sqlite3 "file:$BASE?mode=ro" "
WITH s AS (SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name),
     n AS (SELECT (SELECT count(*) FROM handshakes) AS hs,
                  (SELECT count(*) FROM requests) AS rq,
                  (SELECT count(*) FROM certificates) AS certs)
SELECT printf('handshakes   %10d rows  %6.1f bytes/row (table %.1f, indexes %.1f)',
              hs, (SELECT sum(bytes) FROM s WHERE name IN ('handshakes',
              'handshakes_time', 'handshakes_cert')) * 1.0 / hs,
              (SELECT bytes FROM s WHERE name = 'handshakes') * 1.0 / hs,
              (SELECT sum(bytes) FROM s WHERE name IN ('handshakes_time',
              'handshakes_cert')) * 1.0 / hs) FROM n
UNION ALL
SELECT printf('requests     %10d rows  %6.1f bytes/row (table %.1f, indexes %.1f)',
              rq, (SELECT sum(bytes) FROM s WHERE name IN ('requests',
              'requests_handshake')) * 1.0 / rq,
              (SELECT bytes FROM s WHERE name = 'requests') * 1.0 / rq,
              (SELECT bytes FROM s WHERE name = 'requests_handshake') * 1.0 / rq)
  FROM n
UNION ALL
SELECT printf('certificates %10d rows  %6.0f bytes each, stored once (DER included)',
              certs, (SELECT sum(bytes) FROM s WHERE name IN ('certificates',
              'sqlite_autoindex_certificates_1')) * 1.0 / certs) FROM n
UNION ALL
SELECT printf('file         %10.1f MB', (SELECT sum(bytes) FROM s) / 1e6);"

echo "== throughput: +$ADD handshakes per run into a copy of $BASE"
rm -f "$WORK" "$WORK-wal" "$WORK-shm"
cp "$BASE" "$WORK"
day=0
run() {         # run MODE PROCS -> one line
    mode=$1 procs=$2
    day=$((day + 1))
    per=$((ADD / procs))
    i=0 pids="" outs=""
    while [ $i -lt "$procs" ]; do
        out="$DIR/store-run.$i"
        start=$(date -u -d "2026-11-27 + $day days + $i hours" +%Y-%m-%dT%H:%M:%SZ)
        end=$(date -u -d "2026-11-27 + $day days + $i hours + 50 minutes" +%Y-%m-%dT%H:%M:%SZ)
        flag="" gen=$GEN
        [ "$mode" = raw ] && flag=-r
        [ "$mode" = raw16 ] && flag=-R
        [ "$mode" = old ] && gen=$STORE_OLD
        echo "bulk $per $start $end 1000" | "$gen" -b $flag "$WORK" > "$out" &
        pids="$pids $!" outs="$outs $out"
        i=$((i + 1))
    done
    for p in $pids; do wait "$p"; done
    # rows: sum; wall: the slowest process; cpu: sum
    cat $outs | python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin]
rows = sum(r["rows"] for r in rs)
wall = max(r["wall_s"] for r in rs)
cpu = sum(r["cpu_s"] for r in rs)
print("%-6s %d proc  %8d records  %8.0f records/s  %6.2f us CPU/record"
      % (sys.argv[1], int(sys.argv[2]), rows, rows / wall, cpu * 1e6 / rows))
' "$mode" "$procs" | tee -a "$LINES"
    rm -f $outs
}
LINES="$DIR/store-lines"
echo "(warm-up, reads the copy into the page cache:)"
run store 1
: > "$LINES"
for round in 1 2 3 4 5; do
    run store 1
    run raw 1
    run raw16 1
    if [ -n "${STORE_OLD:-}" ]; then run old 1; fi
done
# the five rounds: medians, and the medians of the per-round ratios
python3 -c '
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
modes = ["store", "raw", "raw16"] + (["old"] if any(r[0] == "old"
                                                   for r in rows) else [])
by = {m: [r for r in rows if r[0] == m] for m in modes}
rate = lambda m: st.median(float(r[5]) for r in by[m])
cpu = lambda m: st.median(float(r[7]) for r in by[m])
ratio = lambda m: st.median(float(s[5]) / float(r[5])
                            for s, r in zip(by["store"], by[m]))
for m in modes:
    print("median: %-6s %8.0f records/s  %6.2f us CPU/record" % (m, rate(m), cpu(m)))
print("store/raw %.2f, store/raw16 %.2f%s (medians of the per-round ratios)"
      % (ratio("raw"), ratio("raw16"), ", store/old %.2f" % ratio("old")
         if "old" in modes else ""))
' "$LINES"
for procs in 1 2 4; do
    run store "$procs"
done
rm -f "$WORK" "$WORK-wal" "$WORK-shm" "$LINES"
