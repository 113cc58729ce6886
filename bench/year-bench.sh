#!/bin/sh
# bench/year-bench.sh -- a year of audit records in 12 monthly files, and
# the reports whose cost should follow the period, not the history.
#
#   bench/year-bench.sh [ROWS]     (handshakes a month, default 2000000)
#   bench/year-bench.sh --single [ROWS]     (only part 3 below)
#
# The year (2025-12 to 2026-11) is written by one build/mtls-gen run
# through the core's own write path and its rotation (mtls-gen -t, as the
# module's MTLSAuditRotate monthly: mtls_store_rotate seals each month's
# file with its summaries and goes on in the next): ROWS handshakes a
# month over 1000 certificates, a request per accepted one, into
# audit-2025-12.db ... audit-2026-11.db (the last one live) in
# $BENCH_DIR/year-ROWS (default /tmp/mtls-bench), kept for the next run.
# Then, with the integrity check the report makes by default (a sealed
# file: its SHA-256 against the one its successor recorded; the live file:
# its chains walked), seconds and peak memory (RSS) of:
#   1. a 30-day PCI DSS report over the year's directory, against the same
#      report given only the file that holds those 30 days (target: at
#      most 1.2x);
#   2. a 365-day report of each standard over the year's directory
#      (target: under 10 s and 200 MB);
#   3. every report over the 10 M-handshake single file of
#      report-bench.sh, 30 and 365 days (target: under 10 s).
# Build first: ./apxs-build.sh.  Run by `bench/run.sh --year`.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
TOOL=${MTLS_AUDIT:-$TOP/build/mtls-audit}
GEN=${MTLS_GEN:-$TOP/build/mtls-gen}
. "$TOP/bench/lib.sh"

measure() {     # measure LABEL ARGS...: wall and CPU seconds, peak MB
    label=$1
    shift
    /usr/bin/time -o "$DIR/time.out" -f "%e %M %U %S" "$TOOL" "$@" \
        >"$DIR/out.txt" 2>"$DIR/err.txt" || true
    set -- $(tail -1 "$DIR/time.out")
    printf '%-46s %8s s %8.2f s CPU %6d MB\n' "$label" "$1" \
        "$(echo "$3 + $4" | bc)" $(( $2 / 1024 ))
}

single() {
    bench_db "$1"
    for days in 30 365; do
        for std in pci-dss hipaa summary; do
            measure "$1 file: $std ${days}d, integrity" report \
                --standard "$std" \
                --since "$(date -u -d "2026-11-27 - $days days" +%Y-%m-%d)" \
                --until 2026-11-27 "$DB"
        done
    done
}

if [ "${1:-}" = --single ]; then
    single "${2:-10000000}"
    exit 0
fi
ROWS=${1:-2000000}
DIR=${BENCH_DIR:-/tmp/mtls-bench}/year-$ROWS
mkdir -p "$DIR"
chmod 700 "$DIR"
if [ ! -e "$DIR/done" ]; then
    rm -f "$DIR"/*.db "$DIR"/*.db-wal "$DIR"/*.db-shm
    for m in 0 1 2 3 4 5 6 7 8 9 10 11; do
        s=$(date -u -d "2025-12-01 + $m month" +%Y-%m-%dT00:00:00Z)
        e=$(date -u -d "2025-12-01 + $((m + 1)) month" +%Y-%m-%dT00:00:00Z)
        echo "bulk $ROWS $s $e 1000"
    done | /usr/bin/time -f "generated in %e s, peak %M KB" \
        "$GEN" -t "$DIR/audit-%Y-%m.db" 2>&1 | grep -v '^mtls_audit: sealed'
    touch "$DIR/done"
fi
ls -l "$DIR"
# The 30 days of 2026-10-01..2026-10-31 lie in one file.
measure "30d pci-dss, the year's directory" report --standard pci-dss \
    --since 2026-10-01 --until 2026-10-31 "$DIR/"
measure "30d pci-dss, its one file" report --standard pci-dss \
    --since 2026-10-01 --until 2026-10-31 "$DIR/audit-2026-10.db"
for std in pci-dss hipaa summary; do
    measure "365d $std, the year's directory" report --standard "$std" \
        --since 2025-12-01 --until 2026-12-01 "$DIR/"
    grep -h 'at most' "$DIR/err.txt" || :
    # The longest period whose files this SQLite attaches together (10).
    measure "303d $std, the directory (10 files)" report \
        --standard "$std" --since 2026-02-01 --until 2026-12-01 "$DIR/"
done
MTLS_AUDIT_NO_SUMMARIES=1 measure "303d pci-dss, 10 files, no summaries" \
    report --standard pci-dss --since 2026-02-01 --until 2026-12-01 "$DIR/"
single "${SINGLE_ROWS:-10000000}"
