#!/bin/sh
# bench/year-bench.sh -- a year of audit records in 12 monthly files, and
# the reports whose cost should follow the period, not the history.
#
#   bench/year-bench.sh [ROWS]     (handshakes a month, default 2000000)
#
# The year (2025-12 to 2026-11) is written month by month by build/mtls-gen
# through the core's own write path (ROWS handshakes a month over 1000
# certificates, a request per accepted one) into a live file, and each
# month moved by `mtls-audit archive` into its own file, which archive
# seals (summaries, schema 5): audit-2025-12.db ... audit-2026-11.db in
# $BENCH_DIR/year-ROWS (default /tmp/mtls-bench), kept for the next run.
# (Until the module's rotation can be driven by mtls-gen, archive is the
# way a year of chained, sealed files comes to exist.)  Then, with the
# integrity check the report makes by default, seconds and peak memory of:
#   1. a 30-day PCI DSS report over the whole year, against the same
#      report given only the file of those 30 days (target: <= 1.2x);
#   2. a 365-day report of each standard over the year (target: < 10 s,
#      < 200 MB);
# and the 10 M-handshake single file of report-bench.sh: every report
# with integrity, 30 and 365 days (target: < 10 s) -- `bench/year-bench.sh
# --single [ROWS]` (default 10000000) runs that part alone.
# Build first: ./apxs-build.sh.  Run by `bench/run.sh --year`.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
TOOL=${MTLS_AUDIT:-$TOP/build/mtls-audit}
GEN=${MTLS_GEN:-$TOP/build/mtls-gen}
. "$TOP/bench/lib.sh"

measure() {     # measure LABEL ARGS...: one line of seconds and peak MB
    label=$1
    shift
    /usr/bin/time -o "$DIR/time.out" -f "%e %M" "$TOOL" "$@" \
        >"$DIR/out.txt" 2>"$DIR/err.txt" || true
    set -- $(tail -1 "$DIR/time.out")
    printf '%-44s %8s s %6d MB\n' "$label" "$1" $(( $2 / 1024 ))
}

single() {
    bench_db "$1"
    for days in 30 365; do
        for std in pci-dss hipaa summary; do
            measure "10M file: $std ${days}d, integrity" report \
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
    t0=$(date +%s)
    for m in 0 1 2 3 4 5 6 7 8 9 10 11; do
        s=$(date -u -d "2025-12-01 + $m month" +%Y-%m-%dT00:00:00Z)
        e=$(date -u -d "2025-12-01 + $((m + 1)) month" +%Y-%m-%dT00:00:00Z)
        name=$(date -u -d "2025-12-01 + $m month" +%Y-%m)
        echo "bulk $ROWS $s $e 1000" | "$GEN" "$DIR/live.db"
        "$TOOL" archive --before "$e" "$DIR/live.db" "$DIR/audit-$name.db" \
            >/dev/null
        echo "$name: $(( $(date +%s) - t0 )) s"
    done
    touch "$DIR/done"
fi
ls -l "$DIR"
YEAR=$(ls "$DIR"/audit-*.db)
# The 30 days of 2026-10-01..2026-10-31 lie in one file.
measure "30d pci-dss, the year's 12 files" report --standard pci-dss \
    --since 2026-10-01 --until 2026-10-31 $YEAR
measure "30d pci-dss, its one file" report --standard pci-dss \
    --since 2026-10-01 --until 2026-10-31 "$DIR/audit-2026-10.db"
for std in pci-dss hipaa summary; do
    measure "365d $std, the year's 12 files" report --standard "$std" \
        --since 2025-12-01 --until 2026-12-01 $YEAR
done
single "${SINGLE_ROWS:-10000000}"
