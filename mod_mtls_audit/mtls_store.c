/*
 * mtls_store.c -- SQLite storage of audit items; see mtls_store.h.
 *
 * Invariants:
 *  - Every audited table's columns are known here (the *_cols arrays) in
 *    the order of schema/NNN_*.sql; mtls_store_open checks the database agrees,
 *    because the chain hashes columns in table order.
 *  - An INSERT names its id explicitly (the next AUTOINCREMENT value, read
 *    inside the transaction), so the id is part of the hashed row.
 *  - Nothing here keeps state that outlives a failed transaction: on
 *    rollback the certificate cache and the chain tails are forgotten and
 *    links set by the batch are cleared.
 *  - A write is stored only if, once committed, its file is still the one
 *    at the path (SQLite commits into a removed file without a word):
 *    otherwise it fails as if rolled back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* O_PATH */
#endif
#include "mtls_store.h"
#include "mtls_json.h"
#include "mtls_cert.h"
#include "mtls_schema_sql.h"    /* generated from schema/ by apxs-build.sh */
#include "mtls_summary.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define CERT_CACHE_SIZE 1024    /* power of two */

/* Handshakes and requests go into SQLite several rows per INSERT: a
 * statement's start and end (its cursors, the AUTOINCREMENT high-water mark
 * read from and written back to sqlite_sequence, its own savepoint) cost
 * about as much as a row does.  Their rows wait in the table's `rows` until
 * ROWS_MAX are there or the batch ends, and go by ROWS_MAX, by 4 and one at
 * a time (row_sizes; the last is the one-row INSERT every table has). */
#define ROWS_MAX 16
#define N_SIZES 3
static const int row_sizes[N_SIZES] = { ROWS_MAX, 4, 1 };

#define MAX_COLS 27             /* the widest table's (handshakes) */
/* A handshake's chain as text: "[" and up to MTLS_CERTS_KEPT ids of at most
 * 20 characters each, with commas, "]" and the terminator */
#define CHAIN_TEXT_MAX (MTLS_CERTS_KEPT * 21 + 3)

/* One row waiting for its INSERT: the values to bind but the hash, which
 * follows them; text and blobs point into the items of the batch, which
 * outlive it, or into text. */
typedef struct {
    mtls_val_t    v[MAX_COLS - 1];
    unsigned char hash[MTLS_HASH_LEN];
    char          text[CHAIN_TEXT_MAX];
} row_t;

static const char *const cert_cols[] = {
    "id", "sha256", "subject_dn", "issuer_dn", "serial", "not_before",
    "not_after", "san", "key_type", "key_bits", "sig_alg", "der",
    "first_seen_us", "hash", NULL
};
static const char *const hs_cols[] = {
    "id", "time_us", "server_name", "sni", "client_addr", "client_port",
    "local_port", "tls_version", "cipher", "resumed", "outcome", "kind",
    "verify_mode", "verify_result", "verify_error", "verify_depth", "alert",
    "alert_received", "cert_id", "chain", "chain_length", "handshake_us",
    "verify_us", "pid", "hash",
    /* added by schema 3, after hash (see mtls_chain.h) */
    "revocation_method", "revocation_status", NULL
};
static const char *const rq_cols[] = {
    "id", "handshake_id", "time_us", "method", "path", "status",
    "bytes_sent", "duration_us", "hash", NULL
};
static const char *const ev_cols[] = {
    "id", "time_us", "kind", "pid", "server_version", "module_version",
    "openssl_version", "lost", "gap_start_us", "gap_end_us", "detail",
    "hash", NULL
};

enum { T_CERT, T_HS, T_RQ, T_EV, T_COUNT };

typedef struct {
    const char          *name;
    const char *const   *cols;
    int                  ncols;         /* including id and hash */
    int                  hcol;          /* hash's index in cols: the
                                           columns after it came with a
                                           later schema (mtls_chain.h) */
    sqlite3_stmt        *insert[N_SIZES];   /* of row_sizes[i] rows; only
                                               the one-row INSERT when the
                                               table's rows do not wait */
    row_t               *rows;          /* ROWS_MAX waiting rows, or NULL */
    int                  pending;       /* how many of them wait */
    sqlite3_stmt        *tail;          /* last id and hash */
    sqlite3_stmt        *seq;           /* AUTOINCREMENT high-water mark */
    int                  loaded;        /* tail read in this transaction */
    apr_int64_t          next_id;
    unsigned char        prev[MTLS_HASH_LEN];
    apr_int64_t          w_first, w_last;  /* ids the last write stored */
} table_t;

typedef struct {
    unsigned char sha256[MTLS_HASH_LEN];
    apr_int64_t   id;                   /* 0: empty slot */
} cache_slot_t;

struct mtls_store {
    sqlite3                *db;
    int                     flags;
    char                   *path;
    int                     fd;         /* O_PATH of the file SQLite
                                           opened, for its link count */
    dev_t                   dev;        /* the file we opened */
    ino_t                   ino;
    const mtls_chain_key_t *key;
    table_t                 t[T_COUNT];
    sqlite3_stmt           *find_cert;
    sqlite3_stmt           *begin, *commit;   /* prepared once: parsing
                                                 them cost as much as a row */
    sqlite3_stmt           *sealed;     /* the file its seal names, if any */
    int                     busy_ms;    /* as given to mtls_store_open */
    apr_int64_t             time_us;    /* the time rotations record; 0:
                                           the clock (mtls_store_set_time) */
    mtls_store_sealed_t     last_seal;  /* the last rotation's */
    struct sealer          *sealer;     /* finishes sealed files; NULL
                                           until the first rotation */
    apr_int64_t             start_us;   /* its first event's time, 0 not
                                           read (mtls_store_rotate_due) */
    apr_int64_t             period_end_us;
    apr_int64_t             prev_check_us;  /* when to look whether the
                                               file before this one waits
                                               to be finished; -1 never
                                               (mtls_store_finish_previous) */
    cache_slot_t            cache[CERT_CACHE_SIZE];
};

typedef struct sealer sealer_t;
static void sealer_close(mtls_store_t *st);

int mtls_schema_version(void)
{
    return mtls_migrations[MTLS_MIGRATION_COUNT - 1].version;
}

static void seterr(char *err, apr_size_t errlen, const char *what,
                   sqlite3 *db)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s: %s", what,
                 db ? sqlite3_errmsg(db) : "out of memory");
    }
}

static int user_version(sqlite3 *db, int *v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int mtls_schema_apply(sqlite3 *db, char *err, apr_size_t errlen)
{
    int rc, v, i;

    if ((rc = user_version(db, &v)) != SQLITE_OK) {
        seterr(err, errlen, "reading the schema version", db);
        return rc;
    }
    if (v > mtls_schema_version()) {
        snprintf(err, errlen, "the database has schema version %d, newer "
                 "than this build knows (%d): upgrade mod_mtls_audit", v,
                 mtls_schema_version());
        return SQLITE_MISMATCH;
    }
    if (v == mtls_schema_version()) {
        return SQLITE_OK;
    }
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "locking the database to apply the schema", db);
        return rc;
    }
    /* Read again under the lock: another process may have done it. */
    if ((rc = user_version(db, &v)) != SQLITE_OK) {
        seterr(err, errlen, "reading the schema version", db);
        goto leave;
    }
    for (i = 0; i < MTLS_MIGRATION_COUNT; i++) {
        if (mtls_migrations[i].version <= v) {
            continue;
        }
        rc = sqlite3_exec(db, mtls_migrations[i].sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            char what[64];
            snprintf(what, sizeof(what), "applying schema version %d",
                     mtls_migrations[i].version);
            seterr(err, errlen, what, db);
            goto leave;
        }
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "committing the schema", db);
    }
leave:
    if (rc != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The schema as the migrations make it                                 */
/*
 * A file is written by the web server's user and read by an operator or
 * an auditor, often as root: its schema is input like its rows.  The hash
 * chains cover rows only, so the schema is compared, object by object,
 * with the one the migrations create at the file's user_version (applied
 * to an in-memory database once per process and version: nothing here
 * lists the objects, so a new schema/NNN_*.sql needs no change), and
 * the tool reads through views of its own made from the migrations' CREATE
 * VIEW text, never through the file's.  SQLite keeps each CREATE statement
 * as it was written, from the object's name on (ALTER TABLE ADD COLUMN
 * edits that text in place), so both sides come from the same text through
 * the same SQLite; the comparison still drops comments and white space and
 * lower-cases bare words, so that only a change of meaning counts.
 * SQLite's own objects are compared like the others: sqlite_sequence and
 * the autoindexes come from the migrations too, and sqlite_stat1..4 (left
 * by ANALYZE, which nothing of ours runs) steer SQLite's query planner,
 * which a reader cannot switch off: they count as foreign.
 */

int mtls_db_harden(sqlite3 *db)
{
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    }
    return rc;
}

int mtls_schema_user_version(sqlite3 *db, const char *schema)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("PRAGMA \"%w\".user_version", schema);
    int v = -1;

    if (sql && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            v = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return v;
}

/* The CREATE text as compared: comments dropped, each run of white space
 * one space (none beside a parenthesis, comma or semicolon), bare words in
 * lower case (SQL keywords and unquoted names ignore case); quoted text
 * ('...', "...", `...`, [...]) kept as it is.  NULL stays NULL
 * (autoindexes).  Returns a malloc'ed string, or NULL. */
static char *norm_sql(const char *s)
{
    char *o, *q;
    int space = 0;

    if (!s || !(o = malloc(strlen(s) + 1))) {
        return NULL;
    }
    q = o;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        if (c == '-' && s[1] == '-') {
            while (*s && *s != '\n') s++;
            space = 1;
            continue;
        }
        if (c == '/' && s[1] == '*') {
            for (s += 2; *s && !(s[0] == '*' && s[1] == '/'); s++)
                ;
            s += *s ? 2 : 0;
            space = 1;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
            || c == '\v') {
            s++;
            space = 1;
            continue;
        }
        if (space && q > o && !strchr("(),;", q[-1]) && !strchr("(),;", c)) {
            *q++ = ' ';
        }
        space = 0;
        if (c == '\'' || c == '"' || c == '`' || c == '[') {
            char end = c == '[' ? ']' : (char)c;
            *q++ = *s++;
            while (*s) {
                if (*s == end && end != ']' && s[1] == end) {
                    *q++ = *s++;          /* a doubled quote */
                    *q++ = *s++;
                    continue;
                }
                if (*s == end) {
                    break;
                }
                *q++ = *s++;
            }
            if (*s) {
                *q++ = *s++;
            }
            continue;
        }
        *q++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        s++;
    }
    while (q > o && q[-1] == ';') q--;
    *q = '\0';
    return o;
}

typedef struct {
    char *type, *name, *tbl;
    char *sql;                          /* normalized; NULL for none */
    char *raw;                          /* as SQLite keeps it, or NULL */
} obj_t;

static void free_objects(obj_t *o, int n)
{
    int i;
    for (i = 0; o && i < n; i++) {
        free(o[i].type);
        free(o[i].name);
        free(o[i].tbl);
        free(o[i].sql);
        free(o[i].raw);
    }
    free(o);
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? strdup(v) : NULL;
}

/* Every row of schema.sqlite_master (raw text too when keep_raw). */
static int load_objects(sqlite3 *db, const char *schema, int keep_raw,
                        obj_t **out, int *n)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("SELECT type, name, tbl_name, sql FROM "
                                "\"%w\".sqlite_master", schema);
    obj_t *o = NULL;
    int rc, k = 0;

    *out = NULL;
    *n = 0;
    rc = sql ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        obj_t *no = realloc(o, sizeof(*o) * (size_t)(k + 1));
        if (!no) {
            rc = SQLITE_NOMEM;
            break;
        }
        o = no;
        memset(&o[k], 0, sizeof(*o));
        o[k].type = dup_col(st, 0);
        o[k].name = dup_col(st, 1);
        o[k].tbl = dup_col(st, 2);
        o[k].sql = norm_sql((const char *)sqlite3_column_text(st, 3));
        o[k].raw = keep_raw ? dup_col(st, 3) : NULL;
        k++;
        if (!o[k - 1].type || !o[k - 1].name || !o[k - 1].tbl) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free_objects(o, k);
        return rc == SQLITE_ROW ? SQLITE_ERROR : rc;
    }
    *out = o;
    *n = k;
    return SQLITE_OK;
}

/* The objects the migrations up to version create, applied once per
 * process to an in-memory database and kept (every connection the tool
 * opens asks, some from two threads at once). */
static pthread_mutex_t expected_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    obj_t *o;
    int    n;
} *expected;

static int expected_objects(int version, const obj_t **out, int *n,
                            char *err, apr_size_t errlen)
{
    sqlite3 *db = NULL;
    int i, rc = SQLITE_OK;

    if (version < 1 || version > mtls_schema_version()) {
        snprintf(err, errlen, "the database has schema version %d, this "
                 "build knows versions 1 to %d", version,
                 mtls_schema_version());
        return SQLITE_MISMATCH;
    }
    pthread_mutex_lock(&expected_lock);
    if (!expected && !(expected = calloc((size_t)mtls_schema_version() + 1,
                                         sizeof(*expected)))) {
        rc = SQLITE_NOMEM;
        seterr(err, errlen, "building the expected schema", NULL);
        goto leave;
    }
    if (expected[version].o) {
        goto leave;
    }
    rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE
                         | SQLITE_OPEN_NOMUTEX, NULL);
    for (i = 0; rc == SQLITE_OK && i < MTLS_MIGRATION_COUNT; i++) {
        if (mtls_migrations[i].version <= version) {
            rc = sqlite3_exec(db, mtls_migrations[i].sql, NULL, NULL, NULL);
        }
    }
    if (rc == SQLITE_OK) {
        rc = load_objects(db, "main", 1, &expected[version].o,
                          &expected[version].n);
    }
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "building the expected schema", db);
    }
    sqlite3_close(db);
leave:
    if (rc == SQLITE_OK) {
        *out = expected[version].o;
        *n = expected[version].n;
    }
    pthread_mutex_unlock(&expected_lock);
    return rc;
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Tables, views and indexes share one name space, triggers another. */
static int same_object(const obj_t *a, const obj_t *b)
{
    return !sqlite3_stricmp(a->name, b->name)
           && !strcmp(a->type, "trigger") == !strcmp(b->type, "trigger");
}

int mtls_schema_check(sqlite3 *db, const char *schema, int *ndiff,
                      char *msg, apr_size_t msglen)
{
    const obj_t *want;
    obj_t *have = NULL;
    char *matched = NULL, *text;
    int nhave = 0, nwant = 0, i, j, rc, version;
    sqlite3_str *s;

    *ndiff = 0;
    if ((version = mtls_schema_user_version(db, schema)) < 0) {
        seterr(msg, msglen, "reading the schema version", db);
        return SQLITE_ERROR;
    }
    if ((rc = expected_objects(version, &want, &nwant, msg, msglen))
        != SQLITE_OK) {
        return rc;
    }
    if ((rc = load_objects(db, schema, 0, &have, &nhave)) != SQLITE_OK) {
        seterr(msg, msglen, "reading the schema", db);
        return rc;
    }
    if (!(matched = calloc((size_t)nwant + 1, 1))) {
        free_objects(have, nhave);
        seterr(msg, msglen, "comparing the schema", NULL);
        return SQLITE_NOMEM;
    }
    s = sqlite3_str_new(NULL);
    for (i = 0; i < nhave; i++) {
        for (j = 0; j < nwant; j++) {
            if (!matched[j] && same_object(&have[i], &want[j])) break;
        }
        if (j == nwant) {
            sqlite3_str_appendf(s, "%s%s %s foreign", *ndiff ? "; " : "",
                                have[i].type, have[i].name);
            if (strcmp(have[i].name, have[i].tbl)) {
                sqlite3_str_appendf(s, " (on %s)", have[i].tbl);
            }
            (*ndiff)++;
            continue;
        }
        matched[j] = 1;
        if (strcmp(have[i].type, want[j].type)
            || sqlite3_stricmp(have[i].tbl, want[j].tbl)
            || !same_str(have[i].sql, want[j].sql)) {
            sqlite3_str_appendf(s, "%s%s %s altered", *ndiff ? "; " : "",
                                have[i].type, have[i].name);
            if (strcmp(have[i].type, want[j].type)) {
                sqlite3_str_appendf(s, " (was a %s)", want[j].type);
            }
            (*ndiff)++;
        }
    }
    for (j = 0; j < nwant; j++) {
        if (!matched[j]) {
            sqlite3_str_appendf(s, "%s%s %s missing", *ndiff ? "; " : "",
                                want[j].type, want[j].name);
            (*ndiff)++;
        }
    }
    if (!*ndiff) {
        sqlite3_str_appendf(s, "%d objects as schema version %d", nhave,
                            version);
    }
    text = sqlite3_str_finish(s);
    snprintf(msg, msglen, "%s", text ? text : "out of memory");
    if (text && strlen(text) >= msglen && msglen > 4) {
        memcpy(msg + msglen - 4, "...", 4);
    }
    rc = text ? SQLITE_OK : SQLITE_NOMEM;
    sqlite3_free(text);
    free(matched);
    free_objects(have, nhave);
    return rc;
}

/* Past white space and comments. */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        }
        else if (p[0] == '/' && p[1] == '*') {
            for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                ;
            p += *p ? 2 : 0;
        }
        else {
            return p;
        }
    }
}

/* Past a name, bare or quoted, and a "schema." before it. */
static const char *skip_name(const char *p)
{
    do {
        if (*p == '"' || *p == '`' || *p == '[') {
            char end = *p == '[' ? ']' : *p;
            for (p++; *p && *p != end; p++)
                ;
            p += *p ? 1 : 0;
        }
        else {
            while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == '$'
                          || (unsigned char)*p >= 0x80)) p++;
        }
    } while (*p == '.' && p++);
    return p;
}

/* The SELECT of "CREATE VIEW name [(columns)] AS select", or NULL. */
static const char *view_select(const char *sql)
{
    const char *p = skip_space(sql);
    int depth = 0;

    if (sqlite3_strnicmp(p, "CREATE", 6)) return NULL;
    p = skip_space(p + 6);
    if (sqlite3_strnicmp(p, "VIEW", 4)) return NULL;
    p = skip_name(skip_space(p + 4));
    p = skip_space(p);
    if (*p == '(') {
        for (; *p; p++) {
            depth += *p == '(';
            depth -= *p == ')';
            if (!depth) break;
        }
        if (!*p) return NULL;
        p = skip_space(p + 1);
    }
    if (sqlite3_strnicmp(p, "AS", 2) || isalnum((unsigned char)p[2])
        || p[2] == '_') {
        return NULL;
    }
    return skip_space(p + 2);
}

int mtls_schema_temp_views(sqlite3 *db, const char *schema, int version,
                           const char *prefix, char *err, apr_size_t errlen)
{
    const obj_t *o;
    sqlite3_str *with;
    char *tables;
    int n, i, rc;

    if ((rc = expected_objects(version, &o, &n, err, errlen)) != SQLITE_OK) {
        return rc;
    }
    /* WITH t AS NOT MATERIALIZED (SELECT * FROM schema.t), ... for every
     * table: the view's own unqualified names then mean schema's tables,
     * read as if named in place (not copied first). */
    with = sqlite3_str_new(NULL);
    for (i = 0; i < n; i++) {
        if (strcmp(o[i].type, "table") || !sqlite3_strnicmp(o[i].name,
                                                            "sqlite_", 7)) {
            continue;
        }
        sqlite3_str_appendf(with, "%s\"%w\" AS NOT MATERIALIZED (SELECT * "
                            "FROM \"%w\".\"%w\")",
                            sqlite3_str_length(with) ? ", " : "", o[i].name,
                            schema, o[i].name);
    }
    if (!(tables = sqlite3_str_finish(with))) {
        seterr(err, errlen, "making the views", NULL);
        return SQLITE_NOMEM;
    }
    for (i = 0; rc == SQLITE_OK && i < n; i++) {
        const char *body;
        char *sql;
        int recursive = 0;

        if (strcmp(o[i].type, "view")) {
            continue;
        }
        if (!o[i].raw || !(body = view_select(o[i].raw))) {
            snprintf(err, errlen, "view %s: cannot read its CREATE VIEW",
                     o[i].name);
            rc = SQLITE_ERROR;
            break;
        }
        if (!sqlite3_strnicmp(body, "WITH", 4)
            && !isalnum((unsigned char)body[4]) && body[4] != '_') {
            /* The view's own WITH goes on after the tables'. */
            body = skip_space(body + 4);
            if (!sqlite3_strnicmp(body, "RECURSIVE", 9)) {
                recursive = 1;
                body = skip_space(body + 9);
            }
            sql = sqlite3_mprintf("CREATE TEMP VIEW \"%w%w\" AS WITH %s%s, "
                                  "%s", prefix, o[i].name,
                                  recursive ? "RECURSIVE " : "", tables,
                                  body);
        }
        else {
            sql = sqlite3_mprintf("CREATE TEMP VIEW \"%w%w\" AS WITH %s %s",
                                  prefix, o[i].name, tables, body);
        }
        rc = sql ? sqlite3_exec(db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            char what[160];
            snprintf(what, sizeof(what), "making the view %s%s", prefix,
                     o[i].name);
            seterr(err, errlen, what, db);
        }
    }
    sqlite3_free(tables);
    return rc;
}

/* Check that table has exactly cols, in order. */
static int check_columns(mtls_store_t *st, table_t *t, char *err,
                         apr_size_t errlen)
{
    sqlite3_stmt *s;
    char *sql = sqlite3_mprintf("PRAGMA table_info(\"%w\")", t->name);
    int i = 0, rc, more = 0;

    rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "reading the table layout", st->db);
        return rc;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (!t->cols[i] || !name || strcmp(name, t->cols[i]) != 0) {
            more = 1;
            break;
        }
        i++;
    }
    sqlite3_finalize(s);
    /* A reader takes a file of an older schema (it never migrates): its
     * table ends at hash, without the columns added since. */
    if ((st->flags & MTLS_STORE_READONLY) && !more && i == t->hcol + 1) {
        return SQLITE_OK;
    }
    if (i != t->ncols) {
        snprintf(err, errlen, "table %s does not have the columns this "
                 "build expects: the database was altered", t->name);
        return SQLITE_MISMATCH;
    }
    return SQLITE_OK;
}

/* INSERT INTO t(every column) VALUES(?, ...), ... with nrows rows. */
static int prepare_insert(mtls_store_t *st, table_t *t, int nrows,
                          sqlite3_stmt **out)
{
    sqlite3_str *q = sqlite3_str_new(st->db);
    char *sql;
    int i, r, rc;

    /* The values in table order but hash, then hash (insert_rows). */
    sqlite3_str_appendf(q, "INSERT INTO %s(", t->name);
    for (i = 0; i < t->ncols; i++) {
        if (i != t->hcol) {
            sqlite3_str_appendf(q, "%s,", t->cols[i]);
        }
    }
    sqlite3_str_appendall(q, "hash");
    sqlite3_str_appendall(q, ") VALUES");
    for (r = 0; r < nrows; r++) {
        for (i = 0; i < t->ncols; i++) {
            sqlite3_str_appendall(q, i ? ",?" : r ? ",(?" : "(?");
        }
        sqlite3_str_appendchar(q, 1, ')');
    }
    if (!(sql = sqlite3_str_finish(q))) {
        return SQLITE_NOMEM;
    }
    rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out,
                            NULL);
    sqlite3_free(sql);
    return rc;
}

static int prepare_table(mtls_store_t *st, table_t *t, const char *name,
                         const char *const *cols, int batched, char *err,
                         apr_size_t errlen)
{
    char sql[1024];
    int i, rc;

    t->name = name;
    t->cols = cols;
    for (t->ncols = 0; cols[t->ncols]; t->ncols++) {
        if (!strcmp(cols[t->ncols], "hash")) {
            t->hcol = t->ncols;
        }
    }
    if ((rc = check_columns(st, t, err, errlen)) != SQLITE_OK) {
        return rc;
    }
    if (st->flags & MTLS_STORE_READONLY) {
        return SQLITE_OK;
    }
    for (i = batched ? 0 : N_SIZES - 1; i < N_SIZES; i++) {
        if ((rc = prepare_insert(st, t, row_sizes[i], &t->insert[i]))
            != SQLITE_OK) {
            goto fail;
        }
    }
    if (batched && !(t->rows = calloc(ROWS_MAX, sizeof(*t->rows)))) {
        rc = SQLITE_NOMEM;
        goto fail;
    }
    /* The last row, or, when an archive took every row, the one that
     * went last (chain_cut, schema 002). */
    snprintf(sql, sizeof(sql),
             "SELECT id, hash FROM (SELECT id, hash FROM %s ORDER BY id DESC "
             "LIMIT 1) UNION ALL SELECT id, hash FROM chain_cut WHERE tbl = "
             "'%s' AND side = 'base' ORDER BY 1 DESC LIMIT 1", name, name);
    if ((rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                 &t->tail, NULL)) != SQLITE_OK) {
        goto fail;
    }
    snprintf(sql, sizeof(sql),
             "SELECT seq FROM sqlite_sequence WHERE name = '%s'", name);
    if ((rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                 &t->seq, NULL)) != SQLITE_OK) {
        goto fail;
    }
    return SQLITE_OK;
fail:
    seterr(err, errlen, "preparing statements", st->db);
    return rc;
}

/* Create the file with mode 0640 before SQLite does (it would use 0644). */
static int create_private(const char *path, char *err, apr_size_t errlen)
{
    /* Not through a symbolic link: someone who can write the directory
     * could point one anywhere. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot %s %s: %s",
                 access(path, F_OK) == 0 ? "open" : "create", path,
                 strerror(e));
        return SQLITE_CANTOPEN;
    }
    close(fd);
    return SQLITE_OK;
}

int mtls_store_open(const char *path, int flags, int busy_timeout_ms,
                    mtls_store_t **out, char *err, apr_size_t errlen)
{
    mtls_store_t *st;
    int rc, oflags;

    *out = NULL;
    if (!(st = calloc(1, sizeof(*st)))) {
        seterr(err, errlen, "opening the database", NULL);
        return SQLITE_NOMEM;
    }
    st->flags = flags;
    st->fd = -1;
    st->busy_ms = busy_timeout_ms;
    if (flags & MTLS_STORE_READONLY) {
        oflags = SQLITE_OPEN_READONLY;
    }
    else {
        oflags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
        if ((rc = create_private(path, err, errlen)) != SQLITE_OK) {
            free(st);
            return rc;
        }
    }
    rc = sqlite3_open_v2(path, &st->db, oflags | SQLITE_OPEN_NOMUTEX,
                         (flags & MTLS_STORE_SCAN)
                         && sqlite3_vfs_find(MTLS_STORE_SCAN_VFS)
                         ? MTLS_STORE_SCAN_VFS : NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "opening the database", st->db);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, busy_timeout_ms);
    /* Before anything reads the schema: the file may come from someone
     * less trusted than whoever opens it (the tool, run as root). */
    if ((rc = mtls_db_harden(st->db)) != SQLITE_OK) {
        seterr(err, errlen, "hardening the connection", st->db);
        goto fail;
    }
    if (!(flags & MTLS_STORE_READONLY)) {
        /* temp_store=MEMORY keeps the statement journal in memory.  A
         * multi-row INSERT has one (a failing row must undo the rows
         * before it), holding every page the statement changes; past
         * 64 KiB (16 pages: a 16-row INSERT whose certificates fall on
         * as many leaves of handshakes_cert) SQLite moves it to a temp
         * file for the rest of the transaction, two pwrite()s a page
         * each statement.  In memory it costs a copy of those pages:
         * the store's CPU a record fell by a quarter (see
         * bench/store-bench.sh). */
        rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; "
                          "PRAGMA synchronous=NORMAL; "
                          "PRAGMA temp_store=MEMORY", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "switching the database to WAL", st->db);
            goto fail;
        }
        if ((rc = mtls_schema_apply(st->db, err, errlen)) != SQLITE_OK) {
            goto fail;
        }
    }
    else {
        int v;
        if ((rc = user_version(st->db, &v)) != SQLITE_OK) {
            seterr(err, errlen, "reading the database", st->db);
            goto fail;
        }
        /* Older versions read fine (the views are the same); a reader
         * never migrates. */
        if (v < 1 || v > mtls_schema_version()) {
            snprintf(err, errlen, "the database has schema version %d, this "
                     "build reads versions 1 to %d", v,
                     mtls_schema_version());
            rc = SQLITE_MISMATCH;
            goto fail;
        }
    }
    /* A certificate is looked up by fingerprint before it is stored, and
     * events are few: their rows go in at once. */
    if ((rc = prepare_table(st, &st->t[T_CERT], "certificates", cert_cols,
                            0, err, errlen)) != SQLITE_OK
        || (rc = prepare_table(st, &st->t[T_HS], "handshakes", hs_cols,
                               1, err, errlen)) != SQLITE_OK
        || (rc = prepare_table(st, &st->t[T_RQ], "requests", rq_cols,
                               1, err, errlen)) != SQLITE_OK
        || (rc = prepare_table(st, &st->t[T_EV], "events", ev_cols,
                               0, err, errlen)) != SQLITE_OK) {
        goto fail;
    }
    /* The views every reader of this connection uses (mtls_json_rows,
     * the mirror, export): TEMP ones from the migrations, which hide the
     * file's own, whatever someone made of them. */
    if ((rc = sqlite3_exec(st->db, "PRAGMA temp_store=MEMORY", NULL, NULL,
                           NULL)) != SQLITE_OK) {
        seterr(err, errlen, "making the views", st->db);
        goto fail;
    }
    if ((rc = mtls_schema_temp_views(st->db, "main",
                                     mtls_schema_user_version(st->db, "main"),
                                     "", err, errlen)) != SQLITE_OK) {
        goto fail;
    }
    /* Remember the file SQLite opened, to tell later whether it is still
     * the one at path (mtls_store_file_gone).  An O_PATH descriptor, not
     * a real one: closing a real one would drop the process's POSIX locks
     * on the file, SQLite's included; this one holds none. */
    {
        struct stat sb;
        int moved = 0;
        st->path = strdup(path);
        st->fd = open(path, O_PATH | O_CLOEXEC);
        if ((st->fd >= 0 && fstat(st->fd, &sb) == 0) || stat(path, &sb) == 0) {
            st->dev = sb.st_dev;
            st->ino = sb.st_ino;
        }
        /* SQLite's own file against the path: replaced while we opened? */
        if (sqlite3_file_control(st->db, "main", SQLITE_FCNTL_HAS_MOVED,
                                 &moved) == SQLITE_OK && moved) {
            snprintf(err, errlen, "%s was replaced while it was opened",
                     path);
            rc = SQLITE_CANTOPEN;
            goto fail;
        }
    }
    if (!(flags & MTLS_STORE_READONLY)) {
        rc = sqlite3_prepare_v3(st->db,
                                "SELECT id FROM certificates WHERE sha256 = ?",
                                -1, SQLITE_PREPARE_PERSISTENT, &st->find_cert,
                                NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_prepare_v3(st->db, "BEGIN IMMEDIATE", -1,
                                    SQLITE_PREPARE_PERSISTENT, &st->begin,
                                    NULL);
        }
        if (rc == SQLITE_OK) {
            rc = sqlite3_prepare_v3(st->db, "COMMIT", -1,
                                    SQLITE_PREPARE_PERSISTENT, &st->commit,
                                    NULL);
        }
        /* A sealed file (rotation, archive) has 'end' cuts; the events'
         * names the file where writing goes on. */
        if (rc == SQLITE_OK) {
            rc = sqlite3_prepare_v3(st->db, "SELECT coalesce(other, '') FROM "
                                    "chain_cut WHERE side = 'end' ORDER BY "
                                    "tbl = 'events' DESC LIMIT 1", -1,
                                    SQLITE_PREPARE_PERSISTENT, &st->sealed,
                                    NULL);
        }
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "preparing statements", st->db);
            goto fail;
        }
    }
    *out = st;
    return SQLITE_OK;
fail:
    mtls_store_close(st);
    return rc;
}

void mtls_store_set_key(mtls_store_t *st, const mtls_chain_key_t *key)
{
    st->key = key;
}

sqlite3 *mtls_store_db(mtls_store_t *st)
{
    return st->db;
}

void mtls_store_close(mtls_store_t *st)
{
    int i;

    if (!st) {
        return;
    }
    sealer_close(st);
    for (i = 0; i < T_COUNT; i++) {
        int k;
        for (k = 0; k < N_SIZES; k++) {
            sqlite3_finalize(st->t[i].insert[k]);
        }
        free(st->t[i].rows);
        sqlite3_finalize(st->t[i].tail);
        sqlite3_finalize(st->t[i].seq);
    }
    sqlite3_finalize(st->find_cert);
    sqlite3_finalize(st->begin);
    sqlite3_finalize(st->commit);
    sqlite3_finalize(st->sealed);
    sqlite3_close_v2(st->db);
    if (st->fd >= 0) {
        close(st->fd);
    }
    free(st->path);
    free(st);
}

int mtls_store_file_gone(mtls_store_t *st)
{
    struct stat sb;

    if (!st->path) {
        return MTLS_FILE_REMOVED;
    }
    if (stat(st->path, &sb) == 0) {
        return sb.st_dev == st->dev && sb.st_ino == st->ino
               ? MTLS_FILE_IN_PLACE : MTLS_FILE_REPLACED;
    }
    if (errno == ENOENT || errno == ENOTDIR || st->fd < 0) {
        return MTLS_FILE_REMOVED;
    }
    /* The path cannot be looked at (a directory on the way that we may
     * not search): the file is in place as long as it has a link. */
    return fstat(st->fd, &sb) == 0 && sb.st_nlink == 0
           ? MTLS_FILE_REMOVED : MTLS_FILE_IN_PLACE;
}

/* Read the tail of t's chain, once per transaction. */
static int load_tail(table_t *t)
{
    apr_int64_t last = 0, seq = 0;
    int rc;

    if (t->loaded) {
        return SQLITE_OK;
    }
    memset(t->prev, 0, sizeof(t->prev));
    rc = sqlite3_step(t->tail);
    if (rc == SQLITE_ROW) {
        last = sqlite3_column_int64(t->tail, 0);
        if (sqlite3_column_bytes(t->tail, 1) == MTLS_HASH_LEN) {
            memcpy(t->prev, sqlite3_column_blob(t->tail, 1), MTLS_HASH_LEN);
        }
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(t->tail);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(t->seq);
    if (rc == SQLITE_ROW) {
        seq = sqlite3_column_int64(t->seq, 0);
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(t->seq);
    t->next_id = (seq > last ? seq : last) + 1;
    t->loaded = 1;
    return rc;
}

static int bind_val(sqlite3_stmt *s, int i, const mtls_val_t *v)
{
    switch (v->type) {
    case MTLS_V_INT:
        return sqlite3_bind_int64(s, i, v->i);
    case MTLS_V_REAL:
        return sqlite3_bind_double(s, i, v->d);
    case MTLS_V_TEXT:
        return sqlite3_bind_text(s, i, v->p, (int)v->len, SQLITE_STATIC);
    case MTLS_V_BLOB:
        return sqlite3_bind_blob(s, i, v->p, (int)v->len, SQLITE_STATIC);
    default:
        return sqlite3_bind_null(s, i);
    }
}

/* Bind rows[0..nrows) to s, an INSERT of that many rows, and run it. */
static int insert_rows(table_t *t, sqlite3_stmt *s, const row_t *rows,
                       int nrows)
{
    int r, i, p = 1, n = t->ncols - 1, rc = SQLITE_OK;

    for (r = 0; r < nrows && rc == SQLITE_OK; r++) {
        for (i = 0; i < n && rc == SQLITE_OK; i++) {
            rc = bind_val(s, p++, &rows[r].v[i]);
        }
        if (rc == SQLITE_OK) {
            rc = sqlite3_bind_blob(s, p++, rows[r].hash, MTLS_HASH_LEN,
                                   SQLITE_STATIC);
        }
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    /* Every parameter is bound again before the next run: no need to
     * clear them. */
    sqlite3_reset(s);
    return rc;
}

/* Insert the rows waiting in t, the most at a time that there are. */
static int flush_rows(table_t *t)
{
    int done = 0, k, rc = SQLITE_OK;

    while (done < t->pending && rc == SQLITE_OK) {
        for (k = 0; row_sizes[k] > t->pending - done; k++)
            ;
        rc = insert_rows(t, t->insert[k], t->rows + done, row_sizes[k]);
        done += row_sizes[k];
    }
    t->pending = 0;
    return rc;
}

/* Where the next row of t that waits keeps its chain text: for the caller
 * to fill before append, when t's rows wait (NULL otherwise). */
static char *next_row_text(table_t *t)
{
    return t->rows ? t->rows[t->pending].text : NULL;
}

/* Append one row to t: vals[0] is the id slot (filled here), vals[1..]
 * the other columns but hash.  The row is hashed into the chain now and
 * inserted now or, for a table whose rows wait, with the next ROWS_MAX or
 * at the end of the batch.  Returns the new id, or 0 with *rc set. */
static apr_int64_t append(mtls_store_t *st, table_t *t, mtls_val_t *vals,
                          int *rc)
{
    row_t one, *row;
    int n = t->ncols - 1;
    apr_int64_t id;

    if ((*rc = load_tail(t)) != SQLITE_OK) {
        return 0;
    }
    row = t->rows ? &t->rows[t->pending] : &one;
    id = t->next_id;
    vals[0].type = MTLS_V_INT;
    vals[0].i = id;
    /* vals are in table order without hash: those from t->hcol on came
     * with a later schema, hashed up to the last that is not NULL. */
    if (mtls_chain_hash(st->key, t->name, t->prev, vals,
                        mtls_chain_trim(vals, n, t->hcol), row->hash) != 0) {
        *rc = SQLITE_NOMEM;
        return 0;
    }
    memcpy(row->v, vals, sizeof(*vals) * (size_t)n);
    if (t->rows) {
        *rc = ++t->pending == ROWS_MAX ? flush_rows(t) : SQLITE_OK;
    }
    else {
        *rc = insert_rows(t, t->insert[N_SIZES - 1], row, 1);
    }
    if (*rc != SQLITE_OK) {
        return 0;
    }
    /* A row that waits is in the chain already: a failed INSERT fails the
     * whole transaction, which forgets the tails. */
    memcpy(t->prev, row->hash, MTLS_HASH_LEN);
    t->next_id = id + 1;
    if (!t->w_first) {
        t->w_first = id;
    }
    t->w_last = id;
    return id;
}

static mtls_val_t v_int(apr_int64_t i)
{
    mtls_val_t v = { MTLS_V_INT, i, 0, NULL, 0 };
    return v;
}

/* An integer, or NULL when i is below zero (our "not applicable"). */
static mtls_val_t v_opt(apr_int64_t i)
{
    mtls_val_t v = { i < 0 ? MTLS_V_NULL : MTLS_V_INT, i, 0, NULL, 0 };
    return v;
}

static mtls_val_t v_text(const char *s)
{
    mtls_val_t v = { MTLS_V_NULL, 0, 0, NULL, 0 };
    if (s) {
        v.type = MTLS_V_TEXT;
        v.p = s;
        v.len = strlen(s);
    }
    return v;
}

/* Text, or NULL for an empty string. */
static mtls_val_t v_nz(const char *s)
{
    return v_text(s && *s ? s : NULL);
}

static mtls_val_t v_blob(const void *p, apr_size_t len)
{
    mtls_val_t v = { p ? MTLS_V_BLOB : MTLS_V_NULL, 0, 0, p, len };
    return v;
}

static cache_slot_t *cache_slot(mtls_store_t *st, const unsigned char *sha)
{
    unsigned int h = ((unsigned int)sha[0] << 8 | sha[1]) ^ sha[2];
    return &st->cache[h & (CERT_CACHE_SIZE - 1)];
}

/* The id of the certificate whose DER is der[0..len), stored now if it was
 * not yet.  0 with *rc SQLITE_OK for one that cannot be read (stored as no
 * certificate); 0 and *rc set on a database error. */
static apr_int64_t cert_id(mtls_store_t *st, const unsigned char *der,
                           apr_uint32_t len, apr_int64_t seen_us, int *rc)
{
    mtls_cert_info_t ci;
    mtls_val_t v[13];
    cache_slot_t *slot;
    apr_int64_t id = 0;
    unsigned char md[MTLS_HASH_LEN];

    *rc = SQLITE_OK;
    /* A certificate seen before costs a digest of its DER, and one not in
     * the cache a lookup by fingerprint; only a new one is parsed. */
    if (!len || mtls_sha256(der, len, md) != 0) {
        return 0;
    }
    slot = cache_slot(st, md);
    if (slot->id && memcmp(slot->sha256, md, MTLS_HASH_LEN) == 0) {
        return slot->id;
    }
    sqlite3_bind_blob(st->find_cert, 1, md, MTLS_HASH_LEN, SQLITE_STATIC);
    *rc = sqlite3_step(st->find_cert);
    if (*rc == SQLITE_ROW) {
        id = sqlite3_column_int64(st->find_cert, 0);
        *rc = SQLITE_OK;
    }
    else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_OK;
    }
    sqlite3_reset(st->find_cert);
    if (*rc != SQLITE_OK) {
        return 0;
    }
    if (!id) {
        if (mtls_cert_info_der(der, (long)len, &ci) != 0) {
            return 0;
        }
        v[1] = v_blob(ci.sha256, MTLS_HASH_LEN);
        v[2] = v_text(ci.subject_dn);
        v[3] = v_text(ci.issuer_dn);
        v[4] = v_text(ci.serial);
        v[5] = v_int(ci.not_before);
        v[6] = v_int(ci.not_after);
        v[7] = v_text(ci.san);
        v[8] = v_nz(ci.key_type);
        v[9] = v_int(ci.key_bits);
        v[10] = v_nz(ci.sig_alg);
        v[11] = (st->flags & MTLS_STORE_NO_DER)
                ? v_blob(NULL, 0) : v_blob(ci.der, (apr_size_t)ci.der_len);
        v[12] = v_int(seen_us);
        id = append(st, &st->t[T_CERT], v, rc);
        mtls_cert_info_clear(&ci);
    }
    if (id) {
        memcpy(slot->sha256, md, MTLS_HASH_LEN);
        slot->id = id;
    }
    return id;
}

/* The decimal digits of id (not negative) at p; returns how many (at most
 * 20). */
static apr_size_t put_id(char *p, apr_int64_t id)
{
    char d[20];
    apr_uint64_t u = id > 0 ? (apr_uint64_t)id : 0;
    apr_size_t n = 0, k;

    do {
        d[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (k = 0; k < n; k++) {
        p[k] = d[n - 1 - k];
    }
    return n;
}

static int write_handshake(mtls_store_t *st, mtls_item_t *item)
{
    mtls_handshake_t *hs = &item->u.hs;
    const mtls_certs_t *c = &hs->certs;
    const unsigned char *der = c->der;
    const char *verr = NULL;
    char own[CHAIN_TEXT_MAX], *chain = next_row_text(&st->t[T_HS]);
    apr_size_t off = 0;
    apr_int64_t leaf_id = 0, id;
    mtls_val_t v[26];
    int rc = SQLITE_OK, i;

    if (!chain) {
        chain = own;
    }
    /* The chain text goes with the row: "[" and ids, comma-separated. */
    for (i = 0; i < c->n; der += c->len[i++]) {
        apr_int64_t cid = cert_id(st, der, c->len[i], hs->time_us, &rc);
        if (rc != SQLITE_OK) {
            return rc;
        }
        if (i == 0 && c->leaf) {
            leaf_id = cid;
        }
        if (c->chain_from >= 0 && i >= c->chain_from) {
            chain[off] = off ? ',' : '[';
            off += 1 + put_id(chain + off + 1, cid);
        }
    }
    if (off) {
        chain[off++] = ']';
    }
    chain[off] = '\0';
    if (hs->verify_result > 0) {
        verr = X509_verify_cert_error_string(hs->verify_result);
    }
    else if (hs->verify_result == 0) {
        verr = "ok";
    }
    v[1] = v_int(hs->time_us);
    v[2] = v_nz(hs->server_name);
    v[3] = v_nz(hs->sni);
    v[4] = v_nz(hs->client_addr);
    v[5] = v_opt(hs->client_port);
    v[6] = v_opt(hs->local_port);
    v[7] = hs->tls_version ? v_int(hs->tls_version) : v_opt(-1);
    v[8] = v_nz(hs->cipher);
    v[9] = v_int(hs->resumed);
    v[10] = v_int(hs->outcome);
    v[11] = v_int(hs->kind);
    v[12] = v_int(hs->verify_mode);
    v[13] = v_opt(hs->verify_result);
    v[14] = v_text(verr);
    v[15] = v_opt(hs->verify_depth);
    v[16] = v_opt(hs->alert);
    v[17] = v_opt(hs->alert_received);
    v[18] = leaf_id ? v_int(leaf_id) : v_opt(-1);
    v[19] = v_nz(chain);
    v[20] = v_int(hs->chain_length);
    v[21] = v_opt(hs->handshake_us);
    v[22] = v_opt(hs->verify_us);
    v[23] = v_opt(hs->pid);
    v[24] = v_text(mtls_rev_method_name(hs->revocation_method));
    v[25] = v_text(mtls_rev_status_name(hs->revocation_status));
    id = append(st, &st->t[T_HS], v, &rc);
    if (id && item->link) {
        item->link->rowid = id;
    }
    return rc;
}

static int write_request(mtls_store_t *st, mtls_item_t *item)
{
    mtls_request_t *rq = &item->u.rq;
    apr_int64_t hid = item->link ? item->link->rowid : 0;
    mtls_val_t v[8];
    int rc;

    v[1] = hid ? v_int(hid) : v_opt(-1);
    v[2] = v_int(rq->time_us);
    v[3] = v_nz(rq->method);
    v[4] = v_text(rq->path);
    v[5] = v_int(rq->status);
    v[6] = v_int(rq->bytes_sent);
    v[7] = v_opt(rq->duration_us);
    append(st, &st->t[T_RQ], v, &rc);
    return rc;
}

static int write_event(mtls_store_t *st, mtls_item_t *item)
{
    mtls_event_t *ev = &item->u.ev;
    int is_gap = strcmp(ev->kind, "gap") == 0;
    mtls_val_t v[11];
    int rc;

    v[1] = v_int(ev->time_us);
    v[2] = v_text(ev->kind);
    v[3] = v_opt(ev->pid);
    v[4] = v_text(ev->server_version);
    v[5] = v_text(MTLS_VERSION);
    v[6] = v_text(OpenSSL_version(OPENSSL_VERSION));
    v[7] = is_gap ? v_int(ev->lost) : v_opt(-1);
    v[8] = is_gap ? v_int(ev->gap_start_us) : v_opt(-1);
    v[9] = is_gap ? v_int(ev->gap_end_us) : v_opt(-1);
    v[10] = v_text(ev->detail);
    append(st, &st->t[T_EV], v, &rc);
    return rc;
}

/* Run a statement that returns no rows; SQLITE_OK when it ran. */
static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);

    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void forget(mtls_store_t *st, mtls_item_t **items, int n)
{
    int i;


    memset(st->cache, 0, sizeof(st->cache));
    for (i = 0; i < n; i++) {
        if (items[i]->type == MTLS_ITEM_HANDSHAKE && items[i]->link) {
            items[i]->link->rowid = 0;
        }
    }
}

/* The file st's seal names (malloc'ed), or NULL when st is not sealed;
 * inside the caller's transaction.  *rc gets the error, if any. */
static char *sealed_next(mtls_store_t *st, int *rc)
{
    char *next = NULL;

    *rc = sqlite3_step(st->sealed);
    if (*rc == SQLITE_ROW) {
        const char *o = (const char *)sqlite3_column_text(st->sealed, 0);
        next = strdup(o ? o : "");
        *rc = next ? SQLITE_OK : SQLITE_NOMEM;
    }
    else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_OK;
    }
    sqlite3_reset(st->sealed);
    return next;
}

/* Make st the store of the file at path: open it as st was opened, then
 * trade the insides (the old ones are closed).  The key and the time
 * stay. */
static int switch_to(mtls_store_t *st, const char *path, char *err,
                     apr_size_t errlen)
{
    mtls_store_t *n, tmp;
    int rc;

    if (!*path) {
        snprintf(err, errlen, "%s is sealed and names no next file",
                 st->path);
        return SQLITE_READONLY;
    }
    if ((rc = mtls_store_open(path, st->flags, st->busy_ms, &n, err, errlen))
        != SQLITE_OK) {
        return rc;
    }
    n->key = st->key;
    n->time_us = st->time_us;
    n->last_seal = st->last_seal;
    n->sealer = st->sealer;     /* carried over, not closed with the old */
    st->sealer = NULL;
    tmp = *st;
    *st = *n;
    *n = tmp;
    mtls_store_close(n);
    return SQLITE_OK;
}

/* One try of mtls_store_write; *next gets the file to follow when st
 * turned out to be sealed (nothing written then). */
static int write_once(mtls_store_t *st, mtls_item_t **items, int n,
                      char **next, char *err, apr_size_t errlen)
{
    int i, rc;

    *next = NULL;
    for (i = 0; i < T_COUNT; i++) {
        st->t[i].loaded = 0;
        st->t[i].pending = 0;
        st->t[i].w_first = st->t[i].w_last = 0;
    }
    rc = step_done(st->begin);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "starting a write", st->db);
        return rc;
    }
    /* Sealed (by another process's rotation, since we last wrote): the
     * seal names where writing goes on.  Checked under the write lock, so
     * no row goes in after the seal. */
    if ((*next = sealed_next(st, &rc)) != NULL || rc != SQLITE_OK) {
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "reading the seal", st->db);
        }
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    for (i = 0; i < n && rc == SQLITE_OK; i++) {
        switch (items[i]->type) {
        case MTLS_ITEM_HANDSHAKE: rc = write_handshake(st, items[i]); break;
        case MTLS_ITEM_REQUEST:   rc = write_request(st, items[i]); break;
        case MTLS_ITEM_EVENT:     rc = write_event(st, items[i]); break;
        }
    }
    for (i = 0; i < T_COUNT; i++) {
        if (rc == SQLITE_OK && st->t[i].pending) {
            rc = flush_rows(&st->t[i]);
        }
        st->t[i].pending = 0;
    }
    if (rc == SQLITE_OK) {
        rc = step_done(st->commit);
        /* Committed into a file that is no longer at its path (removed or
         * replaced since the writer last looked): nobody will read these
         * rows, so they are not stored. */
        if (rc == SQLITE_OK && !(st->flags & MTLS_STORE_READONLY)
            && mtls_store_file_gone(st) != MTLS_FILE_IN_PLACE) {
            snprintf(err, errlen, "the database file was removed or "
                     "replaced while records were written to it");
            forget(st, items, n);
            for (i = 0; i < T_COUNT; i++) {
                st->t[i].w_first = st->t[i].w_last = 0;
            }
            return SQLITE_IOERR;
        }
    }
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "writing records", st->db);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        forget(st, items, n);
        for (i = 0; i < T_COUNT; i++) {
            st->t[i].w_first = st->t[i].w_last = 0;
        }
    }
    return rc;
}

/* Are a and b names in one directory (the same text before their last
 * slash), b's own name not "." or ".."? */
static int same_dir(const char *a, const char *b)
{
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t la = sa ? (size_t)(sa - a) : 0, lb = sb ? (size_t)(sb - b) : 0;
    const char *nb = sb ? sb + 1 : b;

    return la == lb && !strncmp(a, b, la) && *nb && strcmp(nb, ".")
           && strcmp(nb, "..");
}

/* Files sealed one after the other that a write follows at most (a
 * writer idle over several rotations). */
#define FOLLOW_MAX 64

int mtls_store_write(mtls_store_t *st, mtls_item_t **items, int n,
                     char *err, apr_size_t errlen)
{
    char *next = NULL;
    int rc, hops;

    for (hops = 0; ; hops++) {
        rc = write_once(st, items, n, &next, err, errlen);
        if (!next) {
            return rc;
        }
        if (st->flags & MTLS_STORE_NOFOLLOW) {
            snprintf(err, errlen, "%s is sealed", st->path);
            free(next);
            return SQLITE_READONLY;
        }
        /* The seal is the file's own word: whoever can write the file
         * can name any path in it.  Rotation only ever goes on in the
         * same directory, so nothing else is followed (a root parent
         * would create it). */
        if (!same_dir(st->path, next)) {
            snprintf(err, errlen, "%s is sealed, and its seal names %s, "
                     "outside its directory: not followed", st->path, next);
            free(next);
            return SQLITE_READONLY;
        }
        if (hops == FOLLOW_MAX) {
            snprintf(err, errlen, "%s is sealed, and so are the %d files "
                     "after it", st->path, FOLLOW_MAX);
            free(next);
            return SQLITE_READONLY;
        }
        mtls_log(MTLS_LOG_INFO, "%s is sealed: writing goes on in %s",
                 st->path, next);
        rc = switch_to(st, next, err, errlen);
        free(next);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Rotation and sealing                                                 */
/*
 * The file left behind is sealed like an archive: in one write
 * transaction of it (so every writer's rows are either before the seal
 * or, found sealed, go to the next file), its summaries are filled, a
 * last event 'seal' names the next file and each table's head, and each
 * table gets a chain_cut 'end' row.  The next file is made complete
 * under a temporary name first (schema, a copy of the certificates --
 * same ids, same chain -- 'base' cuts that continue the chains and the
 * ids, and its first event 'rotate') and linked to its name only if the
 * name is free; the old file's transaction commits last.  A crash before
 * that commit leaves the old file unsealed and live (and at worst an
 * unused next file, which a later rotation does not take: its name is
 * taken).  Then, once the old file's WAL is checkpointed, nothing writes
 * it again: its SHA-256 goes into the new file as event 'sealed' and
 * into the error log.
 */

void mtls_store_set_time(mtls_store_t *st, apr_int64_t time_us)
{
    st->time_us = time_us;
}

const char *mtls_store_path(mtls_store_t *st)
{
    return st->path;
}

const mtls_store_sealed_t *mtls_store_last_seal(mtls_store_t *st)
{
    return st->last_seal.seal ? &st->last_seal : NULL;
}

static apr_int64_t rot_now(mtls_store_t *st)
{
    return st->time_us ? st->time_us : mtls_now_us();
}

/* The integer the one-row query sql gives (0 for NULL or no row). */
static int query_int(sqlite3 *db, const char *sql, apr_int64_t *out)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);

    *out = 0;
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(q, 0);
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

/* The last row of t (id and hash; its base when it has no row left) and
 * its AUTOINCREMENT high-water mark, in the caller's transaction. */
static int table_head(table_t *t, apr_int64_t *id, unsigned char *hash,
                      apr_int64_t *seq)
{
    int rc = sqlite3_step(t->tail);

    *id = *seq = 0;
    memset(hash, 0, MTLS_HASH_LEN);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(t->tail, 0);
        if (sqlite3_column_bytes(t->tail, 1) == MTLS_HASH_LEN) {
            memcpy(hash, sqlite3_column_blob(t->tail, 1), MTLS_HASH_LEN);
        }
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(t->tail);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(t->seq);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(t->seq, 0);
        rc = SQLITE_OK;
    }
    else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(t->seq);
    if (*seq < *id) {
        *seq = *id;
    }
    return rc;
}

static int cut_row(sqlite3 *db, const char *tbl, const char *side,
                   apr_int64_t id, const unsigned char *hash,
                   apr_int64_t time_us, const char *other)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, "INSERT INTO main.chain_cut(tbl, side, "
                                "id, hash, time_us, other) VALUES(?1, ?2, "
                                "?3, ?4, ?5, ?6)", -1, &q, NULL);

    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(q, 1, tbl, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, side, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, id);
    sqlite3_bind_blob(q, 4, hash, MTLS_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, time_us);
    sqlite3_bind_text(q, 6, other, -1, SQLITE_STATIC);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int set_seq(sqlite3 *db, const char *tbl, apr_int64_t seq)
{
    sqlite3_stmt *q;
    int rc;

    if (!seq) {
        return SQLITE_OK;
    }
    rc = sqlite3_prepare_v2(db, "INSERT INTO sqlite_sequence(name, seq) "
                            "SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM "
                            "sqlite_sequence WHERE name = ?1)", -1, &q,
                            NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(q, 1, tbl, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, seq);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* path as a JSON string, quotes included (sqlite3_free it): a file name
 * may hold a quote or a backslash, which %w would not escape for JSON. */
static char *json_path(const char *path)
{
    sqlite3_str *o = sqlite3_str_new(NULL);

    mtls_json_str(o, path, -1);
    return sqlite3_str_finish(o);
}

static mtls_item_t *rot_event(const char *kind, apr_int64_t time_us,
                              char *detail)
{
    mtls_item_t *ev = mtls_item_new(MTLS_ITEM_EVENT);

    if (!ev) {
        sqlite3_free(detail);
        return NULL;
    }
    ev->u.ev.time_us = time_us;
    mtls_strlcpy(ev->u.ev.kind, kind, sizeof(ev->u.ev.kind));
    ev->u.ev.pid = (int)getpid();
    ev->u.ev.detail = detail ? strdup(detail) : NULL;
    sqlite3_free(detail);
    return ev;
}

static void unlink_db(const char *path)
{
    char buf[4096];

    unlink(path);
    snprintf(buf, sizeof(buf), "%s-wal", path);
    unlink(buf);
    snprintf(buf, sizeof(buf), "%s-shm", path);
    unlink(buf);
    snprintf(buf, sizeof(buf), "%s-journal", path);
    unlink(buf);
}

/* The TLS policy in force, carried into the next file after its 'rotate'
 * event: for each vhost of the last start or reload (or of the rows the
 * previous file carried itself), its full policy row again, without the
 * keys that spoke of a change, plus "carried" (the row it repeats, in the
 * file before) and "since_us" (when that policy was recorded).  A file
 * then holds the policy its own period ran under, however long ago the
 * server started, and a reload compares against a row of its own file. */
static int carry_policy(mtls_store_t *nst, apr_int64_t now, char *err,
                        apr_size_t errlen)
{
    static const char sql[] =
        "SELECT json_set(json_remove(f.detail, '$.changed', '$.previous', "
        "  '$.unchanged_since', '$.carried', '$.since_us'), '$.carried', "
        "  f.id, '$.since_us', coalesce(json_extract(f.detail, "
        "  '$.since_us'), f.time_us)) "
        "FROM (SELECT max(id) AS id FROM prev.events WHERE kind = 'policy' "
        "      AND json_valid(detail) AND id > coalesce((SELECT max(id) "
        "      FROM prev.events WHERE kind IN ('start', 'reload')), 0) "
        "      GROUP BY json_extract(detail, '$.vhost'), "
        "      json_extract(detail, '$.addresses')) l "
        "JOIN prev.events p ON p.id = l.id "
        "JOIN prev.events f ON f.id = coalesce(json_extract(p.detail, "
        "  '$.unchanged_since'), p.id) AND f.kind = 'policy' "
        "  AND json_valid(f.detail) "
        "ORDER BY p.id";
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(nst->db, sql, -1, &q, NULL);

    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(q, 0);
        mtls_item_t *ev = d ? rot_event("policy", now,
                                        sqlite3_mprintf("%s", d)) : NULL;
        rc = SQLITE_OK;
        if (ev) {
            rc = mtls_store_write(nst, &ev, 1, err, errlen);
            mtls_item_free(ev);
        }
    }
    if (rc != SQLITE_DONE) {
        /* The rotation goes on: the file's reports lack only the policy
         * evidence, as one written before policy rows existed. */
        mtls_log(MTLS_LOG_WARNING, "the TLS policy in force is not carried "
                 "into the next file: %s", rc == SQLITE_OK ? err
                 : sqlite3_errmsg(nst->db));
    }
    sqlite3_finalize(q);
    return SQLITE_OK;
}

/* Make the next file, complete, at next_path: see above.  heads, hashes
 * and seqs are the old file's tables' (mtls_anchor_tables' order), seal
 * the id of its seal event. */
static int make_next(mtls_store_t *st, const char *next_path,
                     const apr_int64_t *heads,
                     unsigned char (*hashes)[MTLS_HASH_LEN],
                     const apr_int64_t *seqs, apr_int64_t seal,
                     apr_int64_t now, char *err, apr_size_t errlen)
{
    char part[4096];
    mtls_store_t *nst = NULL;
    mtls_item_t *ev;
    sqlite3 *db;
    char *sql;
    int rc, t;

    if (access(next_path, F_OK) == 0) {
        snprintf(err, errlen, "cannot rotate to %s: the name is taken",
                 next_path);
        return SQLITE_CANTOPEN;
    }
    snprintf(part, sizeof(part), "%s.part", next_path);
    unlink_db(part);
    if ((rc = mtls_store_open(part, st->flags, st->busy_ms, &nst, err,
                              errlen)) != SQLITE_OK) {
        return rc;
    }
    nst->key = st->key;
    db = nst->db;
    sql = sqlite3_mprintf("ATTACH %Q AS prev", st->path);
    rc = sql ? sqlite3_exec(db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "BEGIN; INSERT INTO main.certificates "
                          "SELECT * FROM prev.certificates", NULL, NULL,
                          NULL);
    }
    /* A deferred BEGIN: an IMMEDIATE one would want the write lock of
     * prev too, which our own seal holds.  Certificates are copied whole
     * (as archive does): the new file reads on its own.  The other tables
     * go on after the old file's heads. */
    for (t = 1; rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        if (heads[t]) {
            rc = cut_row(db, mtls_anchor_tables[t], "base", heads[t],
                         hashes[t], now, st->path);
        }
        if (rc == SQLITE_OK) {
            rc = set_seq(db, mtls_anchor_tables[t], seqs[t]);
        }
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "making the next file", db);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        char *prev = json_path(st->path);
        ev = prev ? rot_event("rotate", now, sqlite3_mprintf(
            "{\"previous\": %s, \"seal\": %lld}", prev, (long long)seal))
                  : NULL;
        sqlite3_free(prev);
        rc = ev ? mtls_store_write(nst, &ev, 1, err, errlen) : SQLITE_NOMEM;
        mtls_item_free(ev);
    }
    if (rc == SQLITE_OK) {
        rc = carry_policy(nst, now, err, errlen);
    }
    sqlite3_exec(db, "DETACH prev", NULL, NULL, NULL);
    /* The last connection to close checkpoints and removes the WAL: the
     * file is whole under its temporary name. */
    mtls_store_close(nst);
    if (rc == SQLITE_OK && link(part, next_path) != 0) {
        snprintf(err, errlen, "cannot rotate to %s: %s", next_path,
                 strerror(errno));
        rc = SQLITE_CANTOPEN;
    }
    unlink_db(part);
    return rc;
}

/* Whether *stop (an int set with __atomic_store_n) asks to give up. */
static int asked_to_stop(const int *stop)
{
    return stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE);
}

/* After the seal: the old file's WAL into the file, then its SHA-256.
 * Returns 0, or -1 (WAL still held after max_tries, an I/O error, or
 * *stop set meanwhile). */
static int hash_sealed(sqlite3 *db, const char *path, int max_tries,
                       const int *stop, mtls_store_sealed_t *out)
{
    unsigned char buf[65536], md[MTLS_HASH_LEN];
    EVP_MD_CTX *ctx;
    unsigned int mdlen = 0;
    int tries, busy = 1, logsz = -1, done = -1;
    size_t r;
    FILE *f;

    for (tries = 0; tries < max_tries && (busy || logsz != done); tries++) {
        sqlite3_stmt *q;
        if (asked_to_stop(stop)) {
            return -1;
        }
        if (tries) {
            usleep(100000);
        }
        if (sqlite3_prepare_v2(db, "PRAGMA main.wal_checkpoint(TRUNCATE)",
                               -1, &q, NULL) != SQLITE_OK) {
            return -1;
        }
        if (sqlite3_step(q) == SQLITE_ROW) {
            busy = sqlite3_column_int(q, 0);
            logsz = sqlite3_column_int(q, 1);
            done = sqlite3_column_int(q, 2);
        }
        sqlite3_finalize(q);
    }
    if (busy || logsz != done || !(f = fopen(path, "rb"))) {
        return -1;
    }
    if (!(ctx = EVP_MD_CTX_new())
        || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        fclose(f);
        return -1;
    }
    out->bytes = 0;
    while ((r = fread(buf, 1, sizeof(buf), f)) > 0 && !asked_to_stop(stop)) {
        EVP_DigestUpdate(ctx, buf, r);
        out->bytes += (apr_int64_t)r;
    }
    if (ferror(f) || asked_to_stop(stop) || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
        EVP_MD_CTX_free(ctx);
        fclose(f);
        return -1;
    }
    EVP_MD_CTX_free(ctx);
    fclose(f);
    mtls_hex(md, MTLS_HASH_LEN, out->sha256);
    return 0;
}

int mtls_store_seq_name(const char *name, int seq, char *out,
                        apr_size_t len)
{
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    int n;

    if (seq <= 0) {
        n = snprintf(out, len, "%s", name);
    }
    else if (dot && dot != (slash ? slash + 1 : name)) {
        n = snprintf(out, len, "%.*s.%d%s", (int)(dot - name), name, seq,
                     dot);
    }
    else {
        n = snprintf(out, len, "%s.%d", name, seq);
    }
    return n < 0 || (apr_size_t)n >= len ? -1 : 0;
}

int mtls_store_name(const char *pattern, apr_int64_t time_us, char *out,
                    apr_size_t len)
{
    char base[4096];
    time_t tt = (time_t)(time_us / 1000000);
    struct tm tm;
    int seq;

    if (!gmtime_r(&tt, &tm) || !strftime(base, sizeof(base), pattern, &tm)) {
        return -1;
    }
    /* The first free one of audit.db, audit.1.db, audit.2.db, ... */
    for (seq = 0; seq < 100000; seq++) {
        if (mtls_store_seq_name(base, seq, out, len) != 0) {
            return -1;
        }
        if (access(out, F_OK) != 0) {
            return 0;
        }
    }
    return -1;
}

/* The period length the tests set (MTLS_AUDIT_TEST_ROTATE_SECONDS), or
 * 0: read once per process. */
static apr_int64_t test_period_s(void)
{
    static apr_int64_t v = -1;

    if (v < 0) {
        const char *e = getenv("MTLS_AUDIT_TEST_ROTATE_SECONDS");
        v = e && atoll(e) > 0 ? atoll(e) : 0;
    }
    return v;
}

apr_int64_t mtls_rotate_period_end(int mode, apr_int64_t t_us)
{
    time_t t = (time_t)(t_us / 1000000);
    apr_int64_t p = test_period_s();
    struct tm tm;

    if (p) {
        return ((apr_int64_t)t / p + 1) * p * 1000000;
    }
    if (!gmtime_r(&t, &tm)) {
        return 0;
    }
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    switch (mode) {
    case MTLS_ROTATE_DAILY:   tm.tm_mday += 1; break;
    case MTLS_ROTATE_WEEKLY:  tm.tm_mday += 7 - (tm.tm_wday + 6) % 7; break;
    case MTLS_ROTATE_MONTHLY: tm.tm_mday = 1; tm.tm_mon += 1; break;
    default:                  return 0;
    }
    return (apr_int64_t)timegm(&tm) * 1000000;
}

int mtls_store_rotate_due(mtls_store_t *st, int mode, apr_int64_t size,
                          apr_int64_t now_us)
{
    if (mode == MTLS_ROTATE_SIZE) {
        apr_int64_t pages = 0, psize = 0, any = 0;
        if (query_int(st->db, "PRAGMA page_count", &pages) != SQLITE_OK
            || query_int(st->db, "PRAGMA page_size", &psize) != SQLITE_OK) {
            return 0;
        }
        /* A new file begins with every certificate: one that holds no
         * handshake yet is not rotated again, whatever its size. */
        return pages * psize >= size
               && query_int(st->db, "SELECT EXISTS (SELECT 1 FROM "
                            "handshakes)", &any) == SQLITE_OK && any;
    }
    if (mode < MTLS_ROTATE_DAILY || mode > MTLS_ROTATE_MONTHLY) {
        return 0;
    }
    /* The file's period is that of its first event (its 'start', or the
     * 'rotate' that began it), read once per file. */
    if (!st->start_us) {
        apr_int64_t v = 0;
        query_int(st->db, "SELECT time_us FROM events ORDER BY id LIMIT 1",
                  &v);
        st->start_us = v ? v : now_us;
        st->period_end_us = mtls_rotate_period_end(mode, st->start_us);
    }
    return st->period_end_us && now_us >= st->period_end_us;
}

/* A strftime pattern as a glob(3) pattern: each conversion a '*', glob's
 * own characters escaped. */
/* path opened read-only on a connection of this thread's, hardened
 * before anything reads its schema (*db to close in any case). */
static int open_hardened_ro(const char *path, sqlite3 **db)
{
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY
                             | SQLITE_OPEN_NOMUTEX, NULL);

    return rc == SQLITE_OK ? mtls_db_harden(*db) : rc;
}

static void pattern_glob(const char *pat, char *out, apr_size_t len)
{
    apr_size_t o = 0;

    for (; *pat && o + 3 < len; pat++) {
        if (*pat == '%' && pat[1] == '%') {
            out[o++] = '%';
            pat++;
        }
        else if (*pat == '%' && pat[1]) {
            /* flags and modifiers (%-d, %Ey, %Od) then the conversion */
            while (pat[1] && strchr("_-0^#EO", pat[1])) pat++;
            if (pat[1]) pat++;
            if (!o || out[o - 1] != '*') out[o++] = '*';
        }
        else {
            if (strchr("*?[\\", *pat)) out[o++] = '\\';
            out[o++] = *pat;
        }
    }
    out[o] = '\0';
}

/* One look at the files g1 and g2 match for mtls_store_find_live; *any
 * says whether one of them was sealed. */
static int find_live_once(const char *g1, const char *g2, char *out,
                          apr_size_t len, int *any)
{
    apr_int64_t best = -1;
    glob_t gl;
    size_t i;
    int found = 0;

    *any = 0;
    memset(&gl, 0, sizeof(gl));
    {
        int r1 = glob(g1, 0, NULL, &gl);
        int r2 = glob(g2, r1 == 0 ? GLOB_APPEND : 0, NULL, &gl);
        if (r1 != 0 && r2 != 0) {
            globfree(&gl);
            return 0;
        }
    }
    for (i = 0; i < gl.gl_pathc; i++) {
        const char *p = gl.gl_pathv[i];
        size_t n = strlen(p);
        sqlite3 *db = NULL;
        apr_int64_t sealed = 1, last = 0;

        if ((n > 5 && !strcmp(p + n - 5, ".part"))
            || (n > 4 && (!strcmp(p + n - 4, "-wal")
                          || !strcmp(p + n - 4, "-shm")))
            || (n > 8 && !strcmp(p + n - 8, "-journal"))) {
            continue;
        }
        if (open_hardened_ro(p, &db) == SQLITE_OK) {
            sqlite3_busy_timeout(db, 5000);
            if (query_int(db, "SELECT EXISTS (SELECT 1 FROM chain_cut WHERE "
                          "side = 'end')", &sealed) != SQLITE_OK) {
                sealed = 0;     /* older than schema 2: never sealed */
            }
            query_int(db, "SELECT max(id) FROM events", &last);
        }
        sqlite3_close(db);
        *any |= sealed != 0;
        /* The newest: events' ids go on from file to file. */
        if (!sealed && last > best) {
            best = last;
            found = snprintf(out, len, "%s", p) < (int)len;
        }
    }
    globfree(&gl);
    return found;
}

int mtls_store_find_live(const char *pattern, char *out, apr_size_t len)
{
    char g1[4096], g2[4200];
    const char *slash, *dot;
    int tries, found = 0, any = 0;

    pattern_glob(pattern, g1, sizeof(g1));
    /* and with a sequence number before the extension */
    slash = strrchr(g1, '/');
    dot = strrchr(slash ? slash + 1 : g1, '.');
    if (dot && dot != (slash ? slash + 1 : g1)) {
        snprintf(g2, sizeof(g2), "%.*s.*%s", (int)(dot - g1), g1, dot);
    }
    else {
        snprintf(g2, sizeof(g2), "%s.*", g1);
    }
    /* A rotation meanwhile (a child's, while the server restarts) links
     * the next file before its seal commits: a file listed before that
     * link and read sealed after it leaves every file seen sealed.  A
     * new look sees the next one. */
    for (tries = 0; tries < 8 && !found; tries++) {
        found = find_live_once(g1, g2, out, len, &any);
        if (!any) {
            break;
        }
    }
    return found;
}

/* The 'sealed' event of seal s, which has its SHA-256, into st; and the
 * line in the log. */
static int record_sealed(mtls_store_t *st, const mtls_store_sealed_t *s,
                         char *err, apr_size_t errlen)
{
    mtls_item_t *ev;
    char *file = json_path(s->file);
    int rc;

    ev = file ? rot_event("sealed", rot_now(st), sqlite3_mprintf(
        "{\"file\": %s, \"sha256\": \"%s\", \"bytes\": %lld, "
        "\"seal\": %lld}", file, s->sha256, (long long)s->bytes,
        (long long)s->seal)) : NULL;
    sqlite3_free(file);
    rc = ev ? mtls_store_write(st, &ev, 1, err, errlen) : SQLITE_NOMEM;
    mtls_item_free(ev);
    if (rc == SQLITE_OK) {
        mtls_log(MTLS_LOG_NOTICE, "sealed %s sha256=%s bytes=%lld seal=%lld "
                 "next=%s", s->file, s->sha256, (long long)s->bytes,
                 (long long)s->seal, s->next);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The sealer                                                           */
/*
 * A sealed file's summaries take seconds a million rows (GROUP BY passes
 * over every row), its SHA-256 a read of the whole file: a writer that
 * did them itself would store nothing meanwhile, and its queue would
 * overflow.  So once the seal has committed and the store has switched
 * to the next file, the rest is a job for the store's sealer: a thread
 * (started at the store's first rotation, ended by mtls_store_close)
 * with a connection of its own to the sealed file -- never the store's.
 * Jobs run one at a time, in the order of the seals: the summaries
 * (committed), the WAL into the file, its SHA-256; nothing writes the
 * file after that.  A finished job waits in the list until the store's
 * own thread records it (mtls_store_seal_hash, _seal_wait, close): event
 * 'sealed' into the file the store writes, and the log line.  A rotation
 * waits for the record of the seal before it (the writer puts it off,
 * mtls_store_seal_pending; mtls_store_rotate itself waits), so that the
 * record lands in the sealed file's successor, where the tool looks for
 * it, before the successor is sealed in turn.
 *
 * Locking: `lock` guards the list, the states and `db`; a job's `s` is
 * the sealer's while the job runs and the store's once it is done.
 * Others only interrupt the running job's connection, under the lock.
 */

enum {
    JOB_QUEUED,         /* waits for the sealer */
    JOB_RUNNING,        /* summaries, then the hash's first tries */
    JOB_RETRY,          /* readers held the WAL: tried again every 10 s
                           (or when someone waits), until the next seal */
    JOB_DONE,           /* hash taken: to be recorded */
    JOB_FAILED          /* given up (logged): nothing to record */
};

typedef struct seal_job {
    struct seal_job     *next;
    mtls_store_sealed_t  s;
    int                  state;
    int                  lock_fd;   /* the file, flock()ed while the job
                                       runs and until it is recorded; -1 */
} seal_job_t;

/* Close a job's lock.  Only once no SQLite connection of this process
 * has the file open: closing any descriptor of a file drops the
 * process's POSIX locks on it, SQLite's too. */
static void job_unlock(seal_job_t *j)
{
    if (j->lock_fd >= 0) {
        close(j->lock_fd);
        j->lock_fd = -1;
    }
}

/* Take the job's cross-process lock on the file (flock, which Linux keeps
 * apart from SQLite's POSIX locks): one process at a time finishes a
 * sealed file, whoever started it.  Returns 0, or -1 when another holds
 * it (or the file is gone). */
static int job_lock(seal_job_t *j)
{
    if (j->lock_fd >= 0) {
        return 0;
    }
    if ((j->lock_fd = open(j->s.file, O_RDONLY | O_CLOEXEC)) < 0) {
        return -1;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        job_unlock(j);
        return -1;
    }
    return 0;
}

/* Is the 'sealed' record of seal s in its successor already (another
 * process finished it)?  Read-only, on a connection of its own. */
static int recorded_in_next(const mtls_store_sealed_t *s)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int found = 0;

    if (open_hardened_ro(s->next, &db) == SQLITE_OK
        && sqlite3_prepare_v2(db, "SELECT 1 FROM events WHERE kind = "
                              "'sealed' AND json_valid(detail) AND "
                              "json_extract(detail, '$.seal') = ?", -1, &q,
                              NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 1000);
        sqlite3_bind_int64(q, 1, s->seal);
        found = sqlite3_step(q) == SQLITE_ROW;
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return found;
}

struct sealer {
    pthread_mutex_t  lock;
    pthread_cond_t   cond;      /* a job queued or finished, a nudge, stop */
    pthread_t        thread;
    int              busy_ms;   /* the store's patience for locks */
    int              delay_ms;  /* tests: a sleep before each fill
                                   (MTLS_AUDIT_TEST_SEAL_DELAY_MS) */
    int              stop;      /* give up now (__atomic: read unlocked) */
    int              nudge;     /* someone waits: try a held WAL now */
    sqlite3         *db;        /* the running job's connection, or NULL */
    seal_job_t      *jobs;      /* oldest first */
};

/* How long mtls_store_close waits for a running job before giving it up:
 * a child's exit must not wait for hours of summaries. */
#define SEAL_CLOSE_MS 2000
#define SEAL_RETRY_US 10000000
/* How soon a file another process is finishing is looked at again (that
 * process may end before it is done). */
#define PREV_RETRY_US 2000000

static void deadline_in(struct timespec *ts, apr_int64_t us)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(us / 1000000);
    ts->tv_nsec += (long)(us % 1000000) * 1000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Wait on sl's cond (lock held) until woken or ts passes: ETIMEDOUT. */
static int sealer_wait(sealer_t *sl, const struct timespec *ts)
{
    return ts ? pthread_cond_timedwait(&sl->cond, &sl->lock, ts)
              : pthread_cond_wait(&sl->cond, &sl->lock);
}

/* Finish the sealed file of job j on a connection of our own; the job's
 * state at the end says how it went (failures are logged here). */
static void run_job(sealer_t *sl, seal_job_t *j)
{
    mtls_store_sealed_t r;
    struct timespec ts;
    char err[512];
    sqlite3 *db = NULL;
    apr_int64_t have = 0;
    int state = JOB_FAILED, wrc = 0;

    pthread_mutex_lock(&sl->lock);
    r = j->s;
    pthread_mutex_unlock(&sl->lock);
    /* Another process finishes it, or has: nothing for us to do. */
    if (job_lock(j) != 0 || recorded_in_next(&r)) {
        goto done;
    }
    if (sqlite3_open_v2(r.file, &db, SQLITE_OPEN_READWRITE
                        | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK
        || mtls_db_harden(db) != SQLITE_OK
        || sqlite3_exec(db, "PRAGMA temp_store=MEMORY", NULL, NULL, NULL)
           != SQLITE_OK) {
        mtls_log(MTLS_LOG_WARNING, "%s is sealed, but cannot be opened to "
                 "finish it (%s): no summaries, and its SHA-256 is not "
                 "recorded; reports read its rows", r.file,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        db = NULL;
        goto done;
    }
    sqlite3_busy_timeout(db, sl->busy_ms);
    pthread_mutex_lock(&sl->lock);
    sl->db = db;
    if (sl->delay_ms > 0) {
        deadline_in(&ts, (apr_int64_t)sl->delay_ms * 1000);
        while (!sl->stop && wrc != ETIMEDOUT) {
            wrc = sealer_wait(sl, &ts);
        }
    }
    pthread_mutex_unlock(&sl->lock);
    if (asked_to_stop(&sl->stop)) {
        goto done;
    }
    /* (Summaries there already: filled by a process that did not get as
     * far as the hash.) */
    if ((query_int(db, "SELECT count(*) FROM summaries", &have) != SQLITE_OK
         || have == 0)
        && mtls_summary_fill(db, err, sizeof(err)) != 0
        && !asked_to_stop(&sl->stop)) {
        mtls_log(MTLS_LOG_WARNING, "%s is sealed without its summaries "
                 "(%s): reports read its rows", r.file, err);
    }
    /* Readers holding the WAL are waited for by the tries, not by a long
     * busy handler. */
    sqlite3_busy_timeout(db, 50);
    if (hash_sealed(db, r.file, 20, &sl->stop, &r) == 0) {
        state = JOB_DONE;
        goto done;
    }
    if (asked_to_stop(&sl->stop)) {
        goto done;
    }
    mtls_log(MTLS_LOG_WARNING, "%s is sealed, but its WAL could not be "
             "checkpointed yet (readers hold it): its SHA-256 is recorded "
             "when it can be", r.file);
    pthread_mutex_lock(&sl->lock);
    j->state = JOB_RETRY;
    for (;;) {
        deadline_in(&ts, SEAL_RETRY_US);
        wrc = 0;
        while (!sl->stop && !sl->nudge && !j->next && wrc != ETIMEDOUT) {
            wrc = sealer_wait(sl, &ts);
        }
        if (sl->stop) {
            break;
        }
        if (j->next) {
            mtls_log(MTLS_LOG_WARNING, "the SHA-256 of sealed file %s is not "
                     "recorded: readers held its WAL until %s was sealed "
                     "too; verify walks its rows", r.file, j->next->s.file);
            break;
        }
        sl->nudge = 0;
        pthread_mutex_unlock(&sl->lock);
        wrc = hash_sealed(db, r.file, 1, &sl->stop, &r);
        pthread_mutex_lock(&sl->lock);
        if (wrc == 0) {
            state = JOB_DONE;
            break;
        }
    }
    pthread_mutex_unlock(&sl->lock);
done:
    pthread_mutex_lock(&sl->lock);
    sl->db = NULL;
    pthread_mutex_unlock(&sl->lock);
    sqlite3_close(db);
    if (state != JOB_DONE) {
        job_unlock(j);          /* (a done one's, once it is recorded) */
    }
    pthread_mutex_lock(&sl->lock);
    if (state == JOB_DONE) {
        j->s = r;
    }
    j->state = state;
    pthread_cond_broadcast(&sl->cond);
    pthread_mutex_unlock(&sl->lock);
}

static void *sealer_main(void *arg)
{
    sealer_t *sl = arg;
    seal_job_t *j;

    pthread_mutex_lock(&sl->lock);
    while (!sl->stop) {
        for (j = sl->jobs; j && j->state != JOB_QUEUED; j = j->next) {
        }
        if (!j) {
            sealer_wait(sl, NULL);
            continue;
        }
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&sl->lock);
        run_job(sl, j);
        pthread_mutex_lock(&sl->lock);
    }
    pthread_mutex_unlock(&sl->lock);
    return NULL;
}

/* A job for the sealed file s, for st's sealer (started the first time).
 * Returns 0, or -1 when no thread could be started or no memory had. */
static int sealer_add(mtls_store_t *st, const mtls_store_sealed_t *s,
                      int lock_fd)
{
    sealer_t *sl = st->sealer;
    seal_job_t *j, **p;

    if (!(j = calloc(1, sizeof(*j)))) {
        return -1;
    }
    j->s = *s;
    j->state = JOB_QUEUED;
    j->lock_fd = lock_fd;
    if (!sl) {
        pthread_condattr_t ca;
        const char *e = getenv("MTLS_AUDIT_TEST_SEAL_DELAY_MS");
        if (!(sl = calloc(1, sizeof(*sl)))) {
            free(j);
            return -1;
        }
        sl->busy_ms = st->busy_ms;
        sl->delay_ms = e && atoi(e) > 0 ? atoi(e) : 0;
        pthread_mutex_init(&sl->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&sl->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&sl->thread, NULL, sealer_main, sl) != 0) {
            pthread_cond_destroy(&sl->cond);
            pthread_mutex_destroy(&sl->lock);
            free(sl);
            free(j);            /* (lock_fd: the caller's still) */
            return -1;
        }
#ifdef __linux__
        pthread_setname_np(sl->thread, "mtls-sealer");
#endif
        st->sealer = sl;
    }
    pthread_mutex_lock(&sl->lock);
    for (p = &sl->jobs; *p; p = &(*p)->next) {
    }
    *p = j;
    pthread_cond_broadcast(&sl->cond);
    pthread_mutex_unlock(&sl->lock);
    return 0;
}

/* Record, in order, the jobs at the head of the list that are finished.
 * Returns SQLITE_OK, or the error of a record that failed (that job
 * stays, for the next try). */
static int sealer_record(mtls_store_t *st, char *err, apr_size_t errlen)
{
    sealer_t *sl = st->sealer;
    seal_job_t *j;
    int rc = SQLITE_OK;

    while (sl) {
        pthread_mutex_lock(&sl->lock);
        j = sl->jobs;
        if (!j || (j->state != JOB_DONE && j->state != JOB_FAILED)) {
            pthread_mutex_unlock(&sl->lock);
            break;
        }
        sl->jobs = j->next;
        pthread_mutex_unlock(&sl->lock);
        if (j->state == JOB_DONE) {
            if ((rc = record_sealed(st, &j->s, err, errlen)) != SQLITE_OK) {
                pthread_mutex_lock(&sl->lock);
                j->next = sl->jobs;
                sl->jobs = j;
                pthread_mutex_unlock(&sl->lock);
                break;
            }
            if (st->last_seal.seal == j->s.seal
                && !strcmp(st->last_seal.file, j->s.file)) {
                st->last_seal = j->s;
            }
        }
        job_unlock(j);
        free(j);
        sl = st->sealer;        /* (the write may have switched files) */
    }
    return rc;
}

int mtls_store_seal_pending(mtls_store_t *st)
{
    sealer_t *sl = st->sealer;
    seal_job_t *j;
    int n = 0;

    if (!sl) {
        return 0;
    }
    pthread_mutex_lock(&sl->lock);
    for (j = sl->jobs; j; j = j->next) {
        n += j->state != JOB_RETRY && j->state != JOB_FAILED;
    }
    pthread_mutex_unlock(&sl->lock);
    return n > 0;
}

int mtls_store_seal_ready(mtls_store_t *st)
{
    sealer_t *sl = st->sealer;
    int ready;

    if (!sl) {
        return 0;
    }
    pthread_mutex_lock(&sl->lock);
    ready = sl->jobs && (sl->jobs->state == JOB_DONE
                         || sl->jobs->state == JOB_FAILED);
    pthread_mutex_unlock(&sl->lock);
    return ready;
}

int mtls_store_seal_hash(mtls_store_t *st, char *err, apr_size_t errlen)
{
    return sealer_record(st, err, errlen);
}

int mtls_store_seal_wait(mtls_store_t *st, int timeout_ms, char *err,
                         apr_size_t errlen)
{
    struct timespec ts;
    sealer_t *sl;
    int rc, wrc = 0;

    if (timeout_ms >= 0) {
        deadline_in(&ts, (apr_int64_t)timeout_ms * 1000);
    }
    for (;;) {
        if ((rc = sealer_record(st, err, errlen)) != SQLITE_OK) {
            return rc;
        }
        if (!(sl = st->sealer)) {
            return SQLITE_OK;
        }
        pthread_mutex_lock(&sl->lock);
        if (!sl->jobs) {
            pthread_mutex_unlock(&sl->lock);
            return SQLITE_OK;
        }
        if (sl->jobs->state != JOB_DONE && sl->jobs->state != JOB_FAILED) {
            if (wrc == ETIMEDOUT) {
                snprintf(err, errlen, "%s: its summaries and SHA-256 are "
                         "not done yet", sl->jobs->s.file);
                pthread_mutex_unlock(&sl->lock);
                return SQLITE_BUSY;
            }
            sl->nudge = 1;
            pthread_cond_broadcast(&sl->cond);
            wrc = sealer_wait(sl, timeout_ms >= 0 ? &ts : NULL);
        }
        pthread_mutex_unlock(&sl->lock);
    }
}

/* The seal before st's file as its 'rotate' event names it (previous,
 * seal): 1 when there is one, 0 when st's file begins a chain. */
static int previous_seal(mtls_store_t *st, mtls_store_sealed_t *s)
{
    sqlite3_stmt *q;
    int found = 0;

    memset(s, 0, sizeof(*s));
    if (sqlite3_prepare_v2(st->db, "SELECT json_extract(detail, "
                           "'$.previous'), json_extract(detail, '$.seal') "
                           "FROM events WHERE kind = 'rotate' AND "
                           "json_valid(detail) ORDER BY id LIMIT 1", -1, &q,
                           NULL) != SQLITE_OK) {
        return 0;
    }
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0)) {
        mtls_strlcpy(s->file, (const char *)sqlite3_column_text(q, 0),
                     sizeof(s->file));
        s->seal = sqlite3_column_int64(q, 1);
        mtls_strlcpy(s->next, st->path, sizeof(s->next));
        found = s->file[0] && s->seal > 0;
    }
    sqlite3_finalize(q);
    return found;
}

/* Is the file at s->file the one sealed by event s->seal (its last event,
 * with its 'end' cuts naming s->next)? */
static int is_that_seal(const mtls_store_sealed_t *s)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int same = 0;

    if (open_hardened_ro(s->file, &db) == SQLITE_OK
        && sqlite3_prepare_v2(db, "SELECT (SELECT max(id) FROM events) = ? "
                              "AND (SELECT kind FROM events WHERE id = ?) = "
                              "'seal' AND EXISTS (SELECT 1 FROM chain_cut "
                              "WHERE side = 'end' AND other = ?)", -1, &q,
                              NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 1000);
        sqlite3_bind_int64(q, 1, s->seal);
        sqlite3_bind_int64(q, 2, s->seal);
        sqlite3_bind_text(q, 3, s->next, -1, SQLITE_TRANSIENT);
        same = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return same;
}

int mtls_store_finish_previous(mtls_store_t *st)
{
    apr_int64_t now = mtls_now_us();
    mtls_store_sealed_t s;
    sqlite3_stmt *q;
    seal_job_t *j;
    int fd, recorded = 1;

    if (st->prev_check_us < 0 || now < st->prev_check_us) {
        return 0;
    }
    st->prev_check_us = -1;     /* settled, unless another holds it */
    if ((st->flags & MTLS_STORE_READONLY) || !previous_seal(st, &s)) {
        return 0;
    }
    /* Recorded here already? */
    if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM events WHERE kind = "
                           "'sealed' AND json_valid(detail) AND "
                           "json_extract(detail, '$.seal') = ?", -1, &q,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, s.seal);
        recorded = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
    }
    if (recorded) {
        return 0;
    }
    /* Our own sealer's already (we sealed it)? */
    if (st->sealer) {
        int mine = 0;
        pthread_mutex_lock(&st->sealer->lock);
        for (j = st->sealer->jobs; j && !mine; j = j->next) {
            mine = j->s.seal == s.seal;
        }
        pthread_mutex_unlock(&st->sealer->lock);
        if (mine) {
            return 0;
        }
    }
    /* Still there, and still that file (not moved, not replaced)? */
    if (access(s.file, F_OK) != 0 || !is_that_seal(&s)) {
        return 0;
    }
    /* Another process finishing it: look again later (it may end before
     * it is done). */
    if ((fd = open(s.file, O_RDONLY | O_CLOEXEC)) < 0) {
        return 0;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        st->prev_check_us = now + PREV_RETRY_US;
        return 0;
    }
    s.time_us = now;
    if (sealer_add(st, &s, fd) != 0) {
        close(fd);
        st->prev_check_us = now + PREV_RETRY_US;
        return 0;
    }
    mtls_log(MTLS_LOG_NOTICE, "%s is sealed, but its SHA-256 is not "
             "recorded in %s: finishing it (summaries, hash)", s.file,
             st->path);
    return 1;
}

void mtls_store_move_seals(mtls_store_t *to, mtls_store_t *from)
{
    if (to == from || !from) {
        return;
    }
    sealer_close(to);
    to->sealer = from->sealer;
    to->last_seal = from->last_seal;
    from->sealer = NULL;
}

/* Record what is finished, give up the rest (after SEAL_CLOSE_MS), end
 * the thread.  From mtls_store_close, before st's statements go. */
static void sealer_close(mtls_store_t *st)
{
    sealer_t *sl = st->sealer;
    seal_job_t *j;
    char err[512];

    if (!sl) {
        return;
    }
    if (st->db && mtls_store_seal_wait(st, SEAL_CLOSE_MS, err, sizeof(err))
                  != SQLITE_OK) {
        mtls_log(MTLS_LOG_WARNING, "closing %s with a sealed file not "
                 "finished: %s", st->path ? st->path : "the database", err);
    }
    sl = st->sealer;
    pthread_mutex_lock(&sl->lock);
    for (j = sl->jobs; j; j = j->next) {
        if (j->state != JOB_DONE && j->state != JOB_FAILED) {
            mtls_log(MTLS_LOG_WARNING, "%s is sealed, but this process ends "
                     "before its summaries and SHA-256 are done: the next "
                     "writer of %s finishes it (until then, reports and "
                     "verify read its rows)", j->s.file, j->s.next);
        }
    }
    __atomic_store_n(&sl->stop, 1, __ATOMIC_RELEASE);
    if (sl->db) {
        sqlite3_interrupt(sl->db);
    }
    pthread_cond_broadcast(&sl->cond);
    pthread_mutex_unlock(&sl->lock);
    pthread_join(sl->thread, NULL);
    /* A job that finished while we gave up is still recorded. */
    if (st->db && sealer_record(st, err, sizeof(err)) != SQLITE_OK) {
        mtls_log(MTLS_LOG_WARNING, "the SHA-256 of a sealed file is not "
                 "recorded: %s", err);
    }
    sl = st->sealer;
    st->sealer = NULL;
    while (sl->jobs) {
        j = sl->jobs;
        sl->jobs = j->next;
        job_unlock(j);
        free(j);
    }
    pthread_cond_destroy(&sl->cond);
    pthread_mutex_destroy(&sl->lock);
    free(sl);
}

int mtls_store_rotate(mtls_store_t *st, const char *next_path, char *err,
                      apr_size_t errlen)
{
    static const int tmap[MTLS_ANCHOR_TABLES] = { T_CERT, T_HS, T_RQ, T_EV };
    apr_int64_t heads[MTLS_ANCHOR_TABLES], seqs[MTLS_ANCHOR_TABLES];
    unsigned char hashes[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    apr_int64_t first_us = 0, last_us = 0, seal, now, v;
    mtls_store_sealed_t sealed;
    sqlite3_str *d;
    mtls_item_t *ev;
    char *next, *detail, hex[2 * MTLS_HASH_LEN + 1];
    int rc, t;

    if (st->flags & MTLS_STORE_READONLY) {
        snprintf(err, errlen, "%s is open read-only", st->path);
        return SQLITE_READONLY;
    }
    /* The seal before this one is recorded in this file first (see The
     * sealer).  The writer does not get here while it runs. */
    if ((rc = mtls_store_seal_wait(st, -1, err, errlen)) != SQLITE_OK) {
        return rc;
    }
    for (t = 0; t < T_COUNT; t++) {
        st->t[t].loaded = 0;
        st->t[t].pending = 0;
        st->t[t].w_first = st->t[t].w_last = 0;
    }
    if ((rc = step_done(st->begin)) != SQLITE_OK) {
        seterr(err, errlen, "starting the rotation", st->db);
        return rc;
    }
    if ((next = sealed_next(st, &rc)) != NULL || rc != SQLITE_OK) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "reading the seal", st->db);
            return rc;
        }
        /* Another writer sealed it first: go where its seal says (and
         * on, as a write does, past files sealed since). */
        free(next);
        return mtls_store_write(st, NULL, 0, err, errlen);
    }
    now = rot_now(st);
    /* Under the write lock: the heads, the time range. */
    for (t = 0; rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        rc = table_head(&st->t[tmap[t]], &heads[t], hashes[t], &seqs[t]);
    }
    if (rc == SQLITE_OK) {
        static const char *const range[] = {
            "SELECT min(time_us) FROM handshakes",
            "SELECT max(time_us) FROM handshakes",
            "SELECT time_us FROM requests ORDER BY id LIMIT 1",
            "SELECT time_us FROM requests ORDER BY id DESC LIMIT 1",
            "SELECT min(time_us) FROM events",
            "SELECT max(time_us) FROM events"
        };
        int k;
        for (k = 0; rc == SQLITE_OK && k < 6; k++) {
            rc = query_int(st->db, range[k], &v);
            if (v && k % 2 == 0 && (!first_us || v < first_us)) {
                first_us = v;
            }
            if (v && k % 2 == 1 && v > last_us) {
                last_us = v;
            }
        }
    }
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "reading the file to seal", st->db);
        goto fail;
    }
    /* The seal: the last event. */
    d = sqlite3_str_new(st->db);
    sqlite3_str_appendall(d, "{\"next\": ");
    mtls_json_str(d, next_path, -1);
    sqlite3_str_appendf(d, ", \"first_us\": %lld, \"last_us\": %lld, "
                        "\"tables\": {", (long long)first_us,
                        (long long)last_us);
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        apr_int64_t base = 0;
        unsigned char bh[MTLS_HASH_LEN];
        mtls_chain_cut(st->db, "main", mtls_anchor_tables[t], "base", &base,
                       bh, NULL);
        mtls_hex(hashes[t], MTLS_HASH_LEN, hex);
        sqlite3_str_appendf(d, "%s\"%s\": {\"rows\": %lld, \"head\": %lld, "
                            "\"hash\": \"%s\"}", t ? ", " : "",
                            mtls_anchor_tables[t],
                            (long long)(heads[t] - base), (long long)heads[t],
                            heads[t] ? hex : "");
    }
    sqlite3_str_appendall(d, "}}");
    detail = sqlite3_str_finish(d);
    if (!(ev = rot_event("seal", now, detail))) {
        rc = SQLITE_NOMEM;
        seterr(err, errlen, "sealing", NULL);
        goto fail;
    }
    rc = write_event(st, ev);
    mtls_item_free(ev);
    seal = st->t[T_EV].w_last;
    heads[3] = seal;
    seqs[3] = seqs[3] > seal ? seqs[3] : seal;
    memcpy(hashes[3], st->t[T_EV].prev, MTLS_HASH_LEN);
    for (t = 0; rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        if (heads[t]) {
            rc = cut_row(st->db, mtls_anchor_tables[t], "end", heads[t],
                         hashes[t], now, next_path);
        }
    }
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "sealing", st->db);
        goto fail;
    }
    /* The next file, whole, before the seal commits. */
    if ((rc = make_next(st, next_path, heads, hashes, seqs, seal, now, err,
                        errlen)) != SQLITE_OK) {
        goto fail;
    }
    if ((rc = step_done(st->commit)) != SQLITE_OK) {
        seterr(err, errlen, "committing the seal", st->db);
        unlink_db(next_path);
        goto fail;
    }
    /* The sealed file's last heads (the seal's among them), to the log:
     * the anchor of its end. */
    {
        mtls_anchor_t a;
        char line[1024];
        if (mtls_anchor_read(st->db, &a) == SQLITE_OK) {
            mtls_anchor_format(st->path, &a, line, sizeof(line));
            mtls_log(MTLS_LOG_NOTICE, "%s (seal)", line);
        }
    }
    memset(&sealed, 0, sizeof(sealed));
    mtls_strlcpy(sealed.file, st->path, sizeof(sealed.file));
    mtls_strlcpy(sealed.next, next_path, sizeof(sealed.next));
    sealed.seal = seal;
    sealed.time_us = now;
    /* Nobody writes the old file's rows now: each writer finds the seal
     * inside its own write transaction.  Its summaries (counted in reads
     * that hold no other writer back), then its WAL into it, and its hash
     * are the sealer's, while we write on in the next file.  A file left
     * without them (an error, a crash, an exit first) is read row by
     * row. */
    rc = switch_to(st, next_path, err, errlen);
    st->last_seal = sealed;
    if (sealer_add(st, &sealed, -1) != 0) {
        mtls_log(MTLS_LOG_WARNING, "%s is sealed, but no thread could be "
                 "started to finish it: no summaries, and its SHA-256 is "
                 "not recorded; reports read its rows", sealed.file);
    }
    /* (Failed: st is still on the sealed file; its next write follows the
     * seal, and records this one when it is done.) */
    return rc;
fail:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    for (t = 0; t < T_COUNT; t++) {
        st->t[t].w_first = st->t[t].w_last = 0;
    }
    return rc;
}

void mtls_store_written(mtls_store_t *st, int table, apr_int64_t *first,
                        apr_int64_t *last)
{
    static const int map[] = { T_HS, T_RQ, T_EV };
    table_t *t = &st->t[map[table]];
    *first = t->w_first;
    *last = t->w_last;
}

int mtls_store_cert_stats(const char *path, apr_int64_t since_us,
                          int timeout_ms, apr_int64_t *count,
                          apr_int64_t *soonest, char *err,
                          apr_size_t errlen)
{
    static const char sql[] =
        "SELECT count(DISTINCT h.cert_id), min(c.not_after)"
        " FROM handshakes h JOIN certificates c ON c.id = h.cert_id"
        " WHERE h.time_us >= ?1 AND h.outcome = 1";
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int rc;

    *count = 0;
    *soonest = 0;
    err[0] = '\0';
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY
                         | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        goto leave;
    }
    sqlite3_busy_timeout(db, timeout_ms);
    if ((rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL)) != SQLITE_OK) {
        goto leave;
    }
    sqlite3_bind_int64(q, 1, since_us);
    if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        *count = sqlite3_column_int64(q, 0);
        *soonest = sqlite3_column_int64(q, 1);  /* NULL: 0 */
        rc = SQLITE_OK;
    }
leave:
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db)
                                       : sqlite3_errstr(rc));
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return rc;
}
