#!/bin/sh
# bench/report-bench.sh -- time every mtls-audit report over a large
# generated database: 30 days and 365 days, with and without the
# hash-chain walk; prints seconds and peak memory (RSS).
#
#   bench/report-bench.sh [ROWS]     (default 10000000; 1000000 for a short run)
#
# The database is written by build/mtls-gen through the core's own write
# path (ROWS handshakes over 365 days, 1000 certificates, a request per
# accepted handshake) into $BENCH_DIR (default /tmp/mtls-bench), and kept
# there for the next run.  Build first: ./apxs-build.sh
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${1:-10000000}
TOOL="$TOP/build/mtls-audit"
. "$TOP/bench/lib.sh"
bench_db "$ROWS"
ls -l "$DB"
printf '%-9s %-8s %-10s %9s %10s\n' standard period verify seconds peak_MB
for days in 30 365; do
    for std in pci-dss hipaa summary; do
        for v in --no-verify verify; do
            flag=$v
            [ "$v" = verify ] && flag=""
            # time's own figures go to a file: the report's output and
            # messages are not wanted here.
            /usr/bin/time -o "$DIR/time.out" -f "%e %M" "$TOOL" report \
                --standard "$std" \
                --since "$(date -u -d "2026-11-27 - $days days" +%Y-%m-%d)" \
                --until 2026-11-27 $flag "$DB" >/dev/null 2>&1 || true
            set -- $(tail -1 "$DIR/time.out")
            printf '%-9s %-8s %-10s %9s %10d\n' "$std" "${days}d" "$v" "$1" $(( $2 / 1024 ))
        done
    done
done
/usr/bin/time -f "verify alone: %e s, peak %M KB" "$TOOL" verify --no-record "$DB" >/dev/null
