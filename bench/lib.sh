# bench/lib.sh -- sourced by the benchmarks: the generated database they
# share.  bench_db ROWS sets DB to $BENCH_DIR/report-ROWS.db (default
# directory /tmp/mtls-bench, mode 0700), writing it first if it is not
# there: ROWS handshakes over 365 days (2025-11-28 to 2026-11-27), 1000
# certificates, a request per accepted handshake, through build/mtls-gen
# (the core's own write path).  It is kept for the next run.
bench_db() {
    DIR=${BENCH_DIR:-/tmp/mtls-bench}
    DB="$DIR/report-$1.db"
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ ! -s "$DB" ]; then
        echo "generating $1 handshakes into $DB"
        /usr/bin/time -f "generated in %e s, peak %M KB" sh -c \
            "echo 'bulk $1 2025-11-28T00:00:00Z 2026-11-27T00:00:00Z 1000' | '$TOP/build/mtls-gen' '$DB'"
    fi
}
