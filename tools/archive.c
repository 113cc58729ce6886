/*
 * archive.c -- mtls-audit archive: move the oldest rows of a live audit
 * database to another file while the module goes on writing to it.
 *
 * DESIGN
 * The chains make a cut easy to prove: the archive keeps rows 1..C of a
 * table with their hashes, the live file keeps C+1.. and records (in
 * chain_cut, schema 002) that its first row chains to the hash of row C;
 * the archive records that its chain goes on after row C in the live
 * file.  Each file then verifies on its own, and `verify ARCHIVE LIVE`
 * shows that one ends exactly where the other begins.
 *
 * The cut of each table is the longest run of oldest rows (by id, the
 * chain's order) that are all older than --before; requests also stop at
 * the first one whose handshake stays live, so a request is never archived
 * without its handshake.  Certificates are not cut: the archive gets a
 * copy of every certificate the live file holds, so either file reads on
 * its own.
 *
 * Nothing is lost, even while the module writes and even if this command
 * is killed: rows move in chunks, each first committed to the archive and
 * only then deleted from the live file, in a short transaction (the
 * module's writers wait for it, far less than their busy timeout) that
 * also moves the live file's base.  A chunk interrupted in between is in
 * both files; running the same command again finds the archive's end
 * past the live file's base, checks that the rows are the same, and
 * finishes the move.  The same run appends to an archive that ends
 * exactly where the live file begins.  The rows to move are verified
 * first: an archive never takes in a broken chain.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tool.h"
#include "mtls_json.h"
#include "mtls_store.h"
#include "mtls_summary.h"

#define CHUNK_DEFAULT 5000      /* rows per transaction */

/* The tests set MTLS_AUDIT_ARCHIVE_CHUNK small, so that many transactions
 * interleave with the module's. */
static apr_int64_t CHUNK = CHUNK_DEFAULT;


typedef struct {
    sqlite3      *db;           /* the live file as main, the archive as arc */
    const char   *live, *out;
    apr_int64_t   now;
    apr_int64_t   moved[MTLS_ANCHOR_TABLES], first[MTLS_ANCHOR_TABLES];
    apr_int64_t   last[MTLS_ANCHOR_TABLES];
    char          err[512];
    /* The seal: the archive's absolute path, SHA-256 and size, and the
     * 'sealed' event of the live file that records them. */
    mtls_store_t *store;        /* the live file's, for its events */
    char          abs[4096], sha256[65];
    apr_int64_t   bytes, seal_event;
    int           unseal_checked;   /* unseal() ran in this run */
} arc_t;

static int db_error(arc_t *a, const char *what)
{
    snprintf(a->err, sizeof(a->err), "%s: %s", what, sqlite3_errmsg(a->db));
    return EXIT_DB;
}

/* The integer sql gives, with ?1 and ?2 (when it has them) bound to v1
 * and v2. */
static int get_int(arc_t *a, const char *sql, apr_int64_t v1,
                   apr_int64_t v2, apr_int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(a->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK) {
        return rc;
    }
    if (sqlite3_bind_parameter_count(st) >= 1) sqlite3_bind_int64(st, 1, v1);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, v2);
    rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* The stored hash of row id of schema.table: SQLITE_OK, or SQLITE_NOTFOUND
 * when there is no such row. */
static int row_hash(arc_t *a, const char *schema, const char *table,
                    apr_int64_t id, unsigned char out[MTLS_HASH_LEN])
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("SELECT hash FROM %s.%s WHERE id = ?1",
                                schema, table);
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL)
                 : SQLITE_NOMEM;

    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == MTLS_HASH_LEN) {
        memcpy(out, sqlite3_column_blob(st, 0), MTLS_HASH_LEN);
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        rc = SQLITE_NOTFOUND;
    }
    sqlite3_finalize(st);
    return rc;
}

static int cut_set(arc_t *a, const char *schema, const char *table,
                   const char *side, apr_int64_t id,
                   const unsigned char hash[MTLS_HASH_LEN], const char *other)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf(
        "INSERT INTO %s.chain_cut(tbl, side, id, hash, time_us, other) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(tbl, side) DO UPDATE "
        "SET id = excluded.id, hash = excluded.hash, time_us = "
        "excluded.time_us, other = excluded.other", schema);
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL)
                 : SQLITE_NOMEM;

    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, side, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, id);
    sqlite3_bind_blob(st, 4, hash, MTLS_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, a->now);
    if (other) {
        sqlite3_bind_text(st, 6, other, -1, SQLITE_STATIC);
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Run sql over ids [lo, hi] (bound as ?1, ?2). */
static int range_exec(arc_t *a, const char *fmt, const char *table,
                      apr_int64_t lo, apr_int64_t hi)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf(fmt, table, table);
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL)
                 : SQLITE_NOMEM;

    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, hi);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int commit_or_rollback(arc_t *a, int rc)
{
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* Copy rows [lo, hi] of table into the archive and commit: the archive
 * now ends at hi. */
static int copy_chunk(arc_t *a, const char *table, apr_int64_t lo,
                      apr_int64_t hi, unsigned char hash[MTLS_HASH_LEN])
{
    int rc = sqlite3_exec(a->db, "BEGIN", NULL, NULL, NULL);

    if (rc == SQLITE_OK) {
        rc = range_exec(a, "INSERT INTO arc.%s SELECT * FROM main.%s WHERE "
                        "id BETWEEN ?1 AND ?2", table, lo, hi);
    }
    if (rc == SQLITE_OK) {
        rc = row_hash(a, "arc", table, hi, hash);
    }
    if (rc == SQLITE_OK) {
        rc = cut_set(a, "arc", table, "end", hi, hash, a->live);
    }
    return commit_or_rollback(a, rc);
}

/* Delete rows [lo, hi] of table, which the archive holds, from the live
 * file, whose chain now starts after hi. */
static int drop_chunk(arc_t *a, const char *table, apr_int64_t lo,
                      apr_int64_t hi, const unsigned char hash[MTLS_HASH_LEN])
{
    int rc = sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK) {
        rc = range_exec(a, "DELETE FROM main.%s WHERE id BETWEEN ?1 AND ?2",
                        table, lo, hi);
    }
    if (rc == SQLITE_OK) {
        rc = cut_set(a, "main", table, "base", hi, hash, a->out);
    }
    return commit_or_rollback(a, rc);
}

/* Where table's cut falls: the last id of the run of oldest rows all
 * older than before (for requests, also with a handshake up to hs_cut);
 * base when there is none. */
static int find_cut(arc_t *a, int t, apr_int64_t before, apr_int64_t base,
                    apr_int64_t hs_cut, apr_int64_t *cut)
{
    static const char *const sql[MTLS_ANCHOR_TABLES] = {
        "SELECT coalesce(max(id), 0) FROM main.certificates",
        "SELECT coalesce((SELECT min(id) FROM main.handshakes WHERE time_us "
        ">= ?1) - 1, (SELECT max(id) FROM main.handshakes), 0)",
        "SELECT coalesce((SELECT min(id) FROM main.requests WHERE time_us >= "
        "?1 OR handshake_id > ?2) - 1, (SELECT max(id) FROM main.requests), "
        "0)",
        "SELECT coalesce((SELECT min(id) FROM main.events WHERE time_us >= "
        "?1) - 1, (SELECT max(id) FROM main.events), 0)"
    };
    int rc = get_int(a, sql[t], before, hs_cut, cut);

    if (*cut < base) {
        *cut = base;
    }
    return rc;
}

/* An event of kind about the archive, for the live file: detail
 * {"file": ABSOLUTE PATH, "seal": 0, "archive": true, REST}.  "seal": 0:
 * an archive has no 'seal' event (a rotation's file has). */
static mtls_item_t *archive_event(const arc_t *a, const char *kind,
                                  const char *rest)
{
    mtls_item_t *ev = mtls_item_new(MTLS_ITEM_EVENT);
    sqlite3_str *o = sqlite3_str_new(NULL);
    char *v;

    sqlite3_str_appendall(o, "{\"file\": ");
    mtls_json_str(o, a->abs, -1);
    sqlite3_str_appendf(o, ", \"seal\": 0, \"archive\": true, %s}", rest);
    v = sqlite3_str_finish(o);
    if (ev && v && (ev->u.ev.detail = strdup(v))) {
        ev->u.ev.time_us = mtls_now_us();
        mtls_strlcpy(ev->u.ev.kind, kind, sizeof(ev->u.ev.kind));
        ev->u.ev.pid = (int)getpid();
    }
    else {
        mtls_item_free(ev);
        ev = NULL;
    }
    sqlite3_free(v);
    return ev;
}

/* The live file's record that the archive is about to change: its seal
 * no longer holds (verify walks it) until this run seals it again.
 * Written once, before the first row goes into an archive that has a
 * seal. */
static int unseal(arc_t *a)
{
    mtls_item_t *ev;
    char had[65], err[256];
    int rc;

    if (a->unseal_checked++
        || !sealed_record(a->db, a->abs, 0, had, NULL, NULL)) {
        return EXIT_OK;
    }
    ev = archive_event(a, "unsealed", "\"why\": \"mtls-audit archive "
                       "appends to it\"");
    rc = ev ? mtls_store_write(a->store, &ev, 1, err, sizeof(err))
            : SQLITE_NOMEM;
    mtls_item_free(ev);
    if (rc != SQLITE_OK) {
        snprintf(a->err, sizeof(a->err), "%s: cannot record that %s is "
                 "sealed no more (%s): nothing moved into it", a->live,
                 a->out, ev ? err : "out of memory");
        return EXIT_DB;
    }
    return EXIT_OK;
}

/* Move (or, for certificates, copy) table t's rows up to cut. */
static int move_table(arc_t *a, int t, apr_int64_t cut,
                      const mtls_chain_key_t *key)
{
    const char *table = mtls_anchor_tables[t];
    int is_cert = t == 0;
    unsigned char lbase[MTLS_HASH_LEN], oend[MTLS_HASH_LEN];
    unsigned char h[MTLS_HASH_LEN];
    apr_int64_t lb, oe, orows, start, lo, hi;
    mtls_chain_result_t res;
    char *lother = NULL, *sql = NULL;
    int rc;

    if ((rc = mtls_chain_cut(a->db, "main", table, "base", &lb, lbase,
                             &lother)) != SQLITE_OK
        || (rc = mtls_chain_cut(a->db, "arc", table, "end", &oe, oend, NULL))
           != SQLITE_OK
        || !(sql = sqlite3_mprintf("SELECT EXISTS (SELECT 1 FROM arc.%s)",
                                   table))
        || (rc = get_int(a, sql, 0, 0, &orows)) != SQLITE_OK) {
        sqlite3_free(sql);
        sqlite3_free(lother);
        return db_error(a, "reading the cut");
    }
    sqlite3_free(sql);
    if (!oe && !orows) {
        /* A new archive of this table: it starts where the live file
         * does, and its own base points at the earlier archive. */
        start = lb + 1;
        if (lb && (rc = cut_set(a, "arc", table, "base", lb, lbase,
                                lother)) == SQLITE_OK) {
            rc = cut_set(a, "arc", table, "end", lb, lbase, a->live);
        }
    }
    else if (oe < lb) {
        snprintf(a->err, sizeof(a->err), "%s ends at row %lld of %s, but "
                 "%s begins after row %lld: the rows between are in another "
                 "archive", a->out, (long long)oe, table, a->live,
                 (long long)lb);
        sqlite3_free(lother);
        return EXIT_USAGE;
    }
    else {
        /* Appending, or finishing an interrupted move: the archive's last
         * row must be the live file's row of that id (or its base). */
        rc = oe == lb ? (memcmp(oend, lbase, MTLS_HASH_LEN) ? SQLITE_MISMATCH
                                                            : SQLITE_OK)
                      : row_hash(a, "main", table, oe, h);
        if (rc == SQLITE_OK && oe != lb && memcmp(h, oend, MTLS_HASH_LEN)) {
            rc = SQLITE_MISMATCH;
        }
        if (rc == SQLITE_MISMATCH || rc == SQLITE_NOTFOUND) {
            snprintf(a->err, sizeof(a->err), "%s is not an archive of %s: "
                     "its %s end at row %lld with another hash", a->out,
                     a->live, table, (long long)oe);
            sqlite3_free(lother);
            return EXIT_USAGE;
        }
        start = oe + 1;
        if (!is_cert && oe > lb) {
            for (lo = lb + 1; rc == SQLITE_OK && lo <= oe; lo = hi + 1) {
                hi = lo + CHUNK - 1 < oe ? lo + CHUNK - 1 : oe;
                if (hi != oe) {
                    rc = row_hash(a, "main", table, hi, h);
                }
                if (rc == SQLITE_OK) {
                    rc = drop_chunk(a, table, lo, hi, hi == oe ? oend : h);
                }
                a->moved[t] += hi - lo + 1;
            }
            a->first[t] = lb + 1;
            a->last[t] = oe;
        }
    }
    sqlite3_free(lother);
    if (rc != SQLITE_OK) {
        return db_error(a, "starting the archive");
    }
    if (cut < start) {
        return EXIT_OK;
    }
    /* Never take in a broken chain. */
    rc = mtls_chain_verify_range(a->db, "main", table, key, start, cut, &res);
    if (rc != SQLITE_OK) {
        return db_error(a, "verifying the rows to archive");
    }
    if (res.bad_id || res.rows != cut - start + 1) {
        snprintf(a->err, sizeof(a->err), "%s: the chain of %s breaks at id "
                 "%lld (%s); nothing more was moved: see 'mtls-audit verify'",
                 a->live, table, (long long)(res.bad_id ? res.bad_id : start),
                 res.bad_id ? res.why : "rows are missing");
        return EXIT_FINDING;
    }
    if (!a->first[t]) {
        a->first[t] = start;
    }
    if ((rc = unseal(a)) != EXIT_OK) {
        return rc;
    }
    for (lo = start; lo <= cut; lo = hi + 1) {
        hi = lo + CHUNK - 1 < cut ? lo + CHUNK - 1 : cut;
        if ((rc = copy_chunk(a, table, lo, hi, h)) != SQLITE_OK) {
            return db_error(a, "writing the archive");
        }
        if (!is_cert && (rc = drop_chunk(a, table, lo, hi, h)) != SQLITE_OK) {
            return db_error(a, "removing archived rows from the live file");
        }
        a->moved[t] += hi - lo + 1;
        a->last[t] = hi;
    }
    return EXIT_OK;
}

/* The archive's summaries (schema 005), made again from all its rows in
 * one transaction of its own: a report reads them instead of the rows. */
static char err_summary[512];

static int summarize(const char *path)
{
    mtls_store_t *st;
    sqlite3 *db;
    int rc;

    if (mtls_store_open(path, 0, 10000, &st, err_summary,
                        sizeof(err_summary)) != SQLITE_OK) {
        return EXIT_DB;
    }
    db = mtls_store_db(st);
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err_summary, sizeof(err_summary), "%s", sqlite3_errmsg(db));
    }
    else if (mtls_summary_fill(db, err_summary, sizeof(err_summary)) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = SQLITE_ERROR;
    }
    else if ((rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL))
             != SQLITE_OK) {
        snprintf(err_summary, sizeof(err_summary), "%s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    mtls_store_close(st);
    return rc == SQLITE_OK ? EXIT_OK : EXIT_DB;
}

/* The archive is sealed as a rotated file is: its bytes made final, its
 * SHA-256 recorded in a 'sealed' event of the file after it, the live
 * one, whose events chain (anchored in the error log) then covers it.
 * verify and report check it by that hash instead of walking its rows. */
#define SEAL_NONE 0     /* not sealed (said why on stderr) */
#define SEAL_NEW  1     /* a new hash, to record */
#define SEAL_KEPT 2     /* nothing changed: the last record holds */

/* Summarize the archive and make it final: SEAL_NEW with a's sha256 and
 * bytes, SEAL_NONE when its WAL could not be emptied (readers), or -1
 * when summarize failed (reported).  A run that moved nothing leaves an
 * archive alone whose hash the live file recorded last; one whose hash
 * it did not (a run killed before its seal) is summarized and sealed
 * now. */
static int seal_archive(arc_t *a, mtls_store_t *live)
{
    char why[512], had[65];
    int t, moved = 0;

    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        moved |= a->moved[t] > 0;
    }
    if (!moved && settle_file(a->out, a->sha256, &a->bytes, why,
                              sizeof(why)) == 0
        && sealed_record(mtls_store_db(live), a->abs, 0, had, NULL,
                         &a->seal_event)
        && !strcasecmp(had, a->sha256)) {
        return SEAL_KEPT;
    }
    if (summarize(a->out) != EXIT_OK) {
        fail("%s: %s", a->out, err_summary);
        return -1;
    }
    if (settle_file(a->out, a->sha256, &a->bytes, why, sizeof(why)) != 0) {
        fail("note: %s is not sealed: %s; its rows are walked to verify it "
             "until it is: run the same command again to seal it", a->out,
             why);
        return SEAL_NONE;
    }
    return SEAL_NEW;
}

static const char archive_help[] =
"usage: mtls-audit archive --before DATE [--key FILE] LIVE-DB ARCHIVE-DB\n"
"\n"
"Move the rows older than DATE from LIVE-DB to ARCHIVE-DB, while the server\n"
"goes on writing to LIVE-DB.  In each table the oldest rows move, by id, up\n"
"to the first one that is not older than DATE (a request stays with a\n"
"handshake that stays); certificates are copied, so each file reads on its\n"
"own.  Both files keep the cut: the live file's chain starts after the last\n"
"archived row and the archive's ends there, so\n"
"    mtls-audit verify ARCHIVE-DB LIVE-DB\n"
"proves that no row fell between them, and a report over both files reads\n"
"them as one.  ARCHIVE-DB is created (mode 0640) or, when it ends exactly\n"
"where LIVE-DB begins, appended to; a run that was interrupted is finished\n"
"by running it again.  Rows move in chunks of a few thousand, each in a\n"
"short transaction, so the server never waits long; the live file keeps its\n"
"size (SQLite reuses the freed pages).  The rows are verified before they\n"
"move, and the move is recorded as an event in LIVE-DB.\n"
"\n"
"ARCHIVE-DB is then sealed, as a rotated file is: its write-ahead log is\n"
"written into it and its SHA-256 recorded in a 'sealed' event of LIVE-DB\n"
"(\"sealed ARCHIVE-DB sha256=... (recorded in LIVE-DB, event N)\"); verify\n"
"and report check it by that hash instead of walking its rows (verify\n"
"--deep walks them too), even when it was moved to another directory since\n"
"(found by its file name).  A run that appends to it records 'unsealed'\n"
"first and seals it again.  If readers hold it, it is left unsealed (said\n"
"on stderr, exit 0) and is walked until a later run seals it: running the\n"
"same command again always does.\n"
"\n"
"  --before DATE  2026-01-01 or 2026-01-01T00:00:00Z (UTC)\n"
"  --key FILE     the MTLSAuditChainKey file, when the server uses one\n"
"\n"
"A broken chain in LIVE-DB stops the move (exit 1), and so does a schema\n"
"of either file that is not the one its version defines (a foreign trigger\n"
"would run with the rights of whoever archives; see verify); an ARCHIVE-DB\n"
"that is not an archive of LIVE-DB is a usage error.\n"
"\n"
"Exit: 0 moved, 1 a broken chain or an altered schema, 2 usage, 3 database\n"
"or I/O error.\n";

int cmd_archive(int argc, char **argv)
{
    const char *before_s = NULL, *keyfile = NULL, *kerr;
    const opt_t opts[] = {
        { "--before", 1, &before_s, NULL }, { "--key", 1, &keyfile, NULL },
        { NULL, 0, NULL, NULL }
    };
    mtls_chain_key_t key = { NULL, 0 };
    mtls_store_t *live = NULL, *out = NULL;
    apr_int64_t before, cut[MTLS_ANCHOR_TABLES] = { 0 }, base[MTLS_ANCHOR_TABLES];
    unsigned char h[MTLS_HASH_LEN];
    char **files, err[256], *sql;
    arc_t a;
    int rc, t, nfiles, seal = SEAL_NONE;

    memset(&a, 0, sizeof(a));
    if (getenv("MTLS_AUDIT_ARCHIVE_CHUNK")) {
        CHUNK = atoll(getenv("MTLS_AUDIT_ARCHIVE_CHUNK"));
        if (CHUNK < 1) CHUNK = CHUNK_DEFAULT;
    }
    rc = parse_opts(argc, argv, opts, archive_help, "archive", &files,
                    &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    if (nfiles != 2 || !before_s) {
        fail("archive needs --before DATE, the live database and the "
             "archive; see 'mtls-audit archive --help'");
        free(files);
        return EXIT_USAGE;
    }
    if (parse_time(before_s, &before) != 0) {
        fail("--before: '%s' is not a date (2026-01-31 or "
             "2026-01-31T10:00:00Z)", before_s);
        free(files);
        return EXIT_USAGE;
    }
    a.live = files[0];
    a.out = files[1];
    if (access(a.live, F_OK) != 0) {
        fail("%s: no such database", a.live);
        free(files);
        return EXIT_DB;
    }
    {
        struct stat l, o;
        if (stat(a.out, &o) == 0 && stat(a.live, &l) == 0
            && l.st_dev == o.st_dev && l.st_ino == o.st_ino) {
            fail("%s and %s are the same file", a.live, a.out);
            free(files);
            return EXIT_USAGE;
        }
    }
    if (keyfile && mtls_chain_key_load(keyfile, &key, &kerr) != 0) {
        fail("%s: %s", keyfile, kerr);
        free(files);
        return EXIT_DB;
    }
    /* Nothing is written into a file whose schema someone changed: a
     * trigger of theirs would run as whoever archives.  Checked read-only,
     * before either file is opened for writing. */
    {
        const char *names[2] = { a.live, a.out };
        char why[1024];
        int k, ndiff = 0;
        struct stat ob;
        rc = EXIT_OK;
        for (k = 0; k < 2; k++) {
            if (k == 1 && (stat(a.out, &ob) != 0 || ob.st_size == 0)) {
                break;              /* made below, by the migrations */
            }
            if (schema_file(names[k], &ndiff, why, sizeof(why)) != 0) {
                fail("%s: %s", names[k], why);
                rc = EXIT_DB;
            }
            else if (ndiff) {
                fail("%s: its schema is not the one its version defines: "
                     "%s; nothing archived (see mtls-audit verify)",
                     names[k], why);
                rc = EXIT_FINDING;
            }
            if (rc != EXIT_OK) {
                mtls_chain_key_clear(&key);
                free(files);
                return rc;
            }
        }
    }
    if (mtls_store_open(a.live, MTLS_STORE_NOFOLLOW, 10000, &live, err,
                        sizeof(err))
        != SQLITE_OK) {
        fail("%s: %s", a.live, err);
        rc = EXIT_DB;
        goto done;
    }
    a.db = mtls_store_db(live);
    if (!tail_matches(a.db, &key)) {
        fail("%s: its chain has a %s: give %s", a.live,
             keyfile ? "different key" : "key (MTLSAuditChainKey)",
             keyfile ? "the server's key file" : "--key FILE");
        rc = EXIT_USAGE;
        goto done;
    }
    mtls_store_set_key(live, key.key ? &key : NULL);
    /* Create the archive through the core (schema, mode 0640), then read
     * both through one connection. */
    if (mtls_store_open(a.out, 0, 10000, &out, err, sizeof(err))
        != SQLITE_OK) {
        fail("%s: %s", a.out, err);
        rc = EXIT_DB;
        goto done;
    }
    mtls_store_close(out);
    a.store = live;
    if (!realpath(a.out, a.abs)) {
        mtls_strlcpy(a.abs, a.out, sizeof(a.abs));
    }
    sql = sqlite3_mprintf("ATTACH %Q AS arc", a.out);
    rc = sqlite3_exec(a.db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        fail("%s: %s", a.out, sqlite3_errmsg(a.db));
        rc = EXIT_DB;
        goto done;
    }
    a.now = mtls_now_us();
    /* The cuts, from one snapshot of the live file. */
    rc = sqlite3_exec(a.db, "BEGIN", NULL, NULL, NULL);
    for (t = 0; rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        rc = mtls_chain_cut(a.db, "main", mtls_anchor_tables[t], "base", &base[t], h,
                            NULL);
        if (rc == SQLITE_OK) {
            rc = find_cut(&a, t, before, base[t], cut[1], &cut[t]);
        }
    }
    rc = commit_or_rollback(&a, rc);
    if (rc != SQLITE_OK) {
        fail("%s: %s", a.live, sqlite3_errmsg(a.db));
        rc = EXIT_DB;
        goto done;
    }
    for (t = 0, rc = EXIT_OK; rc == EXIT_OK && t < MTLS_ANCHOR_TABLES; t++) {
        rc = move_table(&a, t, cut[t], &key);
    }
    /* No connection of ours holds the archive from here on but the ones
     * that summarize and seal it. */
    sqlite3_exec(a.db, "DETACH arc", NULL, NULL, NULL);
    if (rc != EXIT_OK) {
        fail("%s", a.err);
    }
    else {
        seal = seal_archive(&a, live);
        rc = seal < 0 ? EXIT_DB : EXIT_OK;
    }
    /* Say what moved, in the live file's own record, with the seal. */
    {
        char detail[1024], tb[32], rest[160];
        size_t off;
        mtls_item_t *ev[2] = { mtls_item_new(MTLS_ITEM_EVENT), NULL };

        off = (size_t)snprintf(detail, sizeof(detail), "mtls-audit archive "
                               "--before %s to %s%s:", format_time(before, tb),
                               a.out, rc == EXIT_OK ? "" : " (stopped)");
        for (t = 0; t < MTLS_ANCHOR_TABLES && off < sizeof(detail); t++) {
            off += (size_t)snprintf(detail + off, sizeof(detail) - off,
                                    " %s %s %lld (ids %lld-%lld)",
                                    mtls_anchor_tables[t], t ? "moved" : "copied",
                                    (long long)a.moved[t],
                                    (long long)a.first[t],
                                    (long long)a.last[t]);
        }
        if (ev[0]) {
            ev[0]->u.ev.time_us = mtls_now_us();
            mtls_strlcpy(ev[0]->u.ev.kind, "archive", sizeof(ev[0]->u.ev.kind));
            ev[0]->u.ev.pid = (int)getpid();
            ev[0]->u.ev.detail = strdup(detail);
            snprintf(rest, sizeof(rest), "\"sha256\": \"%s\", \"bytes\": "
                     "%lld", a.sha256, (long long)a.bytes);
            if (seal == SEAL_NEW
                && !(ev[1] = archive_event(&a, "sealed", rest))) {
                fail("note: %s is not sealed: out of memory", a.out);
            }
            if (mtls_store_write(live, ev, ev[1] ? 2 : 1, err, sizeof(err))
                != SQLITE_OK) {
                fail("note: the archive is not recorded in %s: %s%s", a.live,
                     err, ev[1] ? "; nor is its seal: run the same command "
                     "again to seal it" : "");
                seal = SEAL_NONE;
            }
            else if (ev[1]) {
                apr_int64_t first;
                mtls_store_written(live, 2, &first, &a.seal_event);
            }
            mtls_item_free(ev[0]);
            mtls_item_free(ev[1]);
        }
        if (seal == SEAL_NEW && !a.seal_event) {
            seal = SEAL_NONE;
        }
    }
    printf("%s: rows before %s", a.live, format_time(before, err));
    printf(" %s %s\n", rc == EXIT_OK ? "->" : "(stopped) ->", a.out);
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        printf("  %-12s %s %lld", mtls_anchor_tables[t], t ? "moved " : "copied",
               (long long)a.moved[t]);
        if (a.moved[t]) {
            printf("  (ids %lld-%lld)", (long long)a.first[t],
                   (long long)a.last[t]);
        }
        putchar('\n');
    }
    if (seal == SEAL_NEW || seal == SEAL_KEPT) {
        printf("sealed %s sha256=%s bytes=%lld (%srecorded in %s, event "
               "%lld)\n", a.out, a.sha256, (long long)a.bytes,
               seal == SEAL_KEPT ? "already " : "", a.live,
               (long long)a.seal_event);
    }
    if (rc == EXIT_OK) {
        printf("check both: mtls-audit verify %s %s\n", a.out, a.live);
    }
done:
    mtls_store_close(live);
    mtls_chain_key_clear(&key);
    free(files);
    return finish_output(stdout, rc);
}
