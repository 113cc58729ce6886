/*
 * mtls_chain.c -- row hashing and chain verification; see mtls_chain.h for
 * the encoding, which is a stored-data format: never change it without a
 * schema version that says how old rows are hashed.
 */
#include "mtls_chain.h"
#include "mtls_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <endian.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* The encoding of one row is built in a per-thread buffer that grows as
 * needed and is kept, and hashed with a per-thread digest context and a
 * SHA-256 fetched once: OpenSSL 3 would otherwise look the algorithm up
 * and allocate a context for every row. */
typedef struct {
    unsigned char *buf;
    apr_size_t     len, cap;
    int            oom;
} enc_t;

static __thread enc_t   tls_enc;
static __thread EVP_MD_CTX *tls_ctx;
static __thread EVP_MD *tls_sha256;

/* Room for n more bytes at the end of e's buffer, or NULL (e->oom set).
 * The verifier encodes millions of rows: the common case is one compare. */
static unsigned char *enc_room(enc_t *e, apr_size_t n)
{
    if (e->oom) {
        return NULL;
    }
    if (e->len + n > e->cap) {
        apr_size_t cap = e->cap ? e->cap : 512;
        unsigned char *nb;
        while (cap < e->len + n) {
            cap *= 2;
        }
        if (!(nb = realloc(e->buf, cap))) {
            e->oom = 1;
            return NULL;
        }
        e->buf = nb;
        e->cap = cap;
    }
    return e->buf + e->len;
}

static void enc_put(enc_t *e, const void *p, apr_size_t n)
{
    unsigned char *d;

    if (n && (d = enc_room(e, n))) {    /* a zero-length BLOB comes as NULL */
        memcpy(d, p, n);
        e->len += n;
    }
}

/* The encodings of mtls_chain.h: a type byte, then 8 bytes big-endian, or
 * a 4-byte big-endian length and the bytes. */
static apr_size_t val_size(const mtls_val_t *v)
{
    switch (v->type) {
    case MTLS_V_INT:
    case MTLS_V_REAL:
        return 9;
    case MTLS_V_TEXT:
    case MTLS_V_BLOB:
        return 5 + v->len;
    default:
        return 1;
    }
}

/* Write v at d (val_size(v) bytes of room). */
static void put_val(unsigned char *d, const mtls_val_t *v)
{
    apr_uint64_t bits;

    switch (v->type) {
    case MTLS_V_INT:
    case MTLS_V_REAL:
        d[0] = (unsigned char)v->type;
        if (v->type == MTLS_V_INT) {
            bits = (apr_uint64_t)v->i;
        }
        else {
            memcpy(&bits, &v->d, 8);
        }
        bits = htobe64(bits);
        memcpy(d + 1, &bits, 8);
        break;
    case MTLS_V_TEXT:
    case MTLS_V_BLOB:
        d[0] = (unsigned char)v->type;
        d[1] = (unsigned char)(v->len >> 24);
        d[2] = (unsigned char)(v->len >> 16);
        d[3] = (unsigned char)(v->len >> 8);
        d[4] = (unsigned char)v->len;
        if (v->len) {                   /* a zero-length BLOB comes as NULL */
            memcpy(d + 5, v->p, v->len);
        }
        break;
    default:
        d[0] = MTLS_V_NULL;
        break;
    }
}

static void enc_val(enc_t *e, const mtls_val_t *v)
{
    apr_size_t n = val_size(v);
    unsigned char *d = enc_room(e, n);

    if (d) {
        put_val(d, v);
        e->len += n;
    }
}

static int enc_finish(const mtls_chain_key_t *key, enc_t *e,
                      unsigned char out[MTLS_HASH_LEN])
{
    unsigned int olen = MTLS_HASH_LEN;

    if (e->oom) {
        e->oom = 0;
        return -1;
    }
    if (key && key->key) {
        return HMAC(EVP_sha256(), key->key, (int)key->len, e->buf, e->len,
                    out, &olen) != NULL ? 0 : -1;
    }
    return mtls_sha256(e->buf, e->len, out);
}

int mtls_sha256(const void *p, apr_size_t len,
                unsigned char out[MTLS_HASH_LEN])
{
    unsigned int olen = MTLS_HASH_LEN;

    if (!tls_sha256 && !(tls_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
        return -1;
    }
    if (!tls_ctx && !(tls_ctx = EVP_MD_CTX_new())) {
        return -1;
    }
    return EVP_DigestInit_ex(tls_ctx, tls_sha256, NULL)
           && EVP_DigestUpdate(tls_ctx, p, len)
           && EVP_DigestFinal_ex(tls_ctx, out, &olen) ? 0 : -1;
}

static enc_t *enc_start(const char *table,
                        const unsigned char prev[MTLS_HASH_LEN])
{
    static const unsigned char zero[MTLS_HASH_LEN];
    enc_t *e = &tls_enc;

    e->len = 0;
    e->oom = 0;
    enc_put(e, prev ? prev : zero, MTLS_HASH_LEN);
    enc_put(e, table, strlen(table) + 1);
    return e;
}

void mtls_chain_thread_done(void)
{
    free(tls_enc.buf);
    memset(&tls_enc, 0, sizeof(tls_enc));
    EVP_MD_CTX_free(tls_ctx);
    tls_ctx = NULL;
    EVP_MD_free(tls_sha256);
    tls_sha256 = NULL;
}

int mtls_chain_hash(const mtls_chain_key_t *key, const char *table,
                    const unsigned char prev[MTLS_HASH_LEN],
                    const mtls_val_t *vals, int n,
                    unsigned char out[MTLS_HASH_LEN])
{
    enc_t *e = enc_start(table, prev);
    int i;

    for (i = 0; i < n; i++) {
        enc_val(e, &vals[i]);
    }
    return enc_finish(key, e, out);
}

int mtls_chain_trim(const mtls_val_t *vals, int n, int first_added)
{
    while (n > first_added && vals[n - 1].type == MTLS_V_NULL) {
        n--;
    }
    return n;
}

int mtls_chain_hash_column(sqlite3_stmt *stmt)
{
    int i, n = sqlite3_column_count(stmt);
    for (i = 0; i < n; i++) {
        if (strcmp(sqlite3_column_name(stmt, i), "hash") == 0) {
            return i;
        }
    }
    return -1;
}

int mtls_chain_row_values(sqlite3_stmt *stmt, mtls_val_t *vals, int max)
{
    int i, n = sqlite3_column_count(stmt);
    sqlite3_value *val;

    if (n > max) {
        n = max;
    }
    for (i = 0; i < n; i++) {
        mtls_val_t *v = &vals[i];
        /* The column's value once, then the cheap sqlite3_value_*
         * accessors (each sqlite3_column_* call re-checks the statement).
         * The connection is this thread's only, as those need. */
        val = sqlite3_column_value(stmt, i);
        v->i = 0;
        v->p = NULL;
        v->len = 0;
        switch ((v->type = sqlite3_value_type(val))) {
        case SQLITE_INTEGER:
            v->type = MTLS_V_INT;
            v->i = sqlite3_value_int64(val);
            break;
        case SQLITE_FLOAT:
            v->type = MTLS_V_REAL;
            v->d = sqlite3_value_double(val);
            /* (a NaN or a huge real in a hostile file: no undefined cast) */
            v->i = v->d > -9.2e18 && v->d < 9.2e18 ? (apr_int64_t)v->d : 0;
            break;
        case SQLITE_TEXT:
            v->type = MTLS_V_TEXT;
            v->p = sqlite3_value_text(val);
            v->len = (apr_size_t)sqlite3_value_bytes(val);
            break;
        case SQLITE_BLOB:
            v->type = MTLS_V_BLOB;
            v->p = sqlite3_value_blob(val);
            v->len = (apr_size_t)sqlite3_value_bytes(val);
            break;
        default:
            v->type = MTLS_V_NULL;
            break;
        }
    }
    return n;
}

/* The hash of a row of n decoded columns, column hcol (the stored hash)
 * left out; *stored is that column when it holds a hash. */
static int hash_vals(const mtls_chain_key_t *key, const char *table,
                     const unsigned char prev[MTLS_HASH_LEN],
                     const mtls_val_t *vals, int n, int hcol,
                     unsigned char out[MTLS_HASH_LEN],
                     unsigned char stored[MTLS_HASH_LEN], int *has_stored)
{
    enc_t *e = enc_start(table, prev);
    apr_size_t size = 0;
    unsigned char *d;
    int i;

    *has_stored = 0;
    if (hcol >= 0) {            /* columns added after hash (schema 3) */
        n = mtls_chain_trim(vals, n, hcol + 1);
    }
    /* Room for the whole row at once: millions of rows go through here. */
    for (i = 0; i < n; i++) {
        if (i != hcol) {
            size += val_size(&vals[i]);
        }
        else if (vals[i].type == MTLS_V_BLOB
                 && vals[i].len == MTLS_HASH_LEN) {
            memcpy(stored, vals[i].p, MTLS_HASH_LEN);
            *has_stored = 1;
        }
    }
    if ((d = enc_room(e, size))) {
        for (i = 0; i < n; i++) {
            if (i != hcol) {
                put_val(d, &vals[i]);
                d += val_size(&vals[i]);
            }
        }
        e->len += size;
    }
    return enc_finish(key, e, out);
}

static int hash_row(const mtls_chain_key_t *key, const char *table,
                    const unsigned char prev[MTLS_HASH_LEN],
                    sqlite3_stmt *stmt, int hcol,
                    unsigned char out[MTLS_HASH_LEN],
                    unsigned char stored[MTLS_HASH_LEN], int *has_stored)
{
    mtls_val_t vals[MTLS_MAX_COLUMNS];
    int n = mtls_chain_row_values(stmt, vals, MTLS_MAX_COLUMNS);

    return hash_vals(key, table, prev, vals, n, hcol, out, stored,
                     has_stored);
}

int mtls_chain_hash_stmt(const mtls_chain_key_t *key, const char *table,
                         const unsigned char prev[MTLS_HASH_LEN],
                         sqlite3_stmt *stmt,
                         unsigned char out[MTLS_HASH_LEN],
                         unsigned char stored[MTLS_HASH_LEN],
                         int *has_stored)
{
    return hash_row(key, table, prev, stmt, mtls_chain_hash_column(stmt),
                    out, stored, has_stored);
}

int mtls_chain_key_load(const char *path, mtls_chain_key_t *key,
                        const char **err)
{
    unsigned char buf[4097];
    size_t n;
    FILE *f;

    memset(key, 0, sizeof(*key));
    if (!(f = fopen(path, "rb"))) {
        *err = "cannot open the chain key file";
        return -1;
    }
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n < 16) {
        *err = "the chain key file holds fewer than 16 bytes";
        return -1;
    }
    if (n > 4096) {
        *err = "the chain key file holds more than 4096 bytes";
        return -1;
    }
    if (!(key->key = malloc(n))) {
        *err = "out of memory";
        return -1;
    }
    memcpy(key->key, buf, n);
    key->len = n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

void mtls_chain_key_clear(mtls_chain_key_t *key)
{
    if (key->key) {
        OPENSSL_cleanse(key->key, key->len);
        free(key->key);
    }
    memset(key, 0, sizeof(*key));
}

int mtls_chain_cut(sqlite3 *db, const char *schema, const char *table,
                   const char *side, apr_int64_t *id,
                   unsigned char hash[MTLS_HASH_LEN], char **other)
{
    sqlite3_stmt *stmt = NULL;
    char *sql;
    int rc;

    *id = 0;
    memset(hash, 0, MTLS_HASH_LEN);
    if (other) {
        *other = NULL;
    }
    schema = schema ? schema : "main";
    sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_master WHERE type = "
                          "'table' AND name = 'chain_cut'", schema);
    rc = sql ? sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW) {
        return rc == SQLITE_DONE ? SQLITE_OK : rc;     /* schema 1 */
    }
    sql = sqlite3_mprintf("SELECT id, hash, other FROM \"%w\".chain_cut "
                          "WHERE tbl = ?1 AND side = ?2", schema);
    rc = sql ? sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, side, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(stmt, 0);
        if (sqlite3_column_bytes(stmt, 1) == MTLS_HASH_LEN) {
            memcpy(hash, sqlite3_column_blob(stmt, 1), MTLS_HASH_LEN);
        }
        if (other && sqlite3_column_type(stmt, 2) == SQLITE_TEXT) {
            *other = sqlite3_mprintf("%s", sqlite3_column_text(stmt, 2));
        }
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int mtls_chain_verify(sqlite3 *db, const char *schema, const char *table,
                      const mtls_chain_key_t *key,
                      mtls_chain_result_t *res)
{
    /* From the lowest id there is: one below 1 is forged. */
    return mtls_chain_verify_range(db, schema, table, key, INT64_MIN,
                                   INT64_MAX, res);
}

int mtls_chain_walk_begin(mtls_chain_walk_t *w, sqlite3 *db,
                          const char *schema, const char *table,
                          const mtls_chain_key_t *key, apr_int64_t lo,
                          mtls_chain_result_t *res)
{
    sqlite3_stmt *stmt = NULL;
    char *sql;
    int rc;

    memset(w, 0, sizeof(*w));
    memset(res, 0, sizeof(*res));
    w->table = table;
    w->key = key;
    w->res = res;
    w->hcol = -2;
    schema = schema ? schema : "main";
    if ((rc = mtls_chain_cut(db, schema, table, "end", &res->end_id, w->end,
                             NULL)) != SQLITE_OK
        || (rc = mtls_chain_cut(db, schema, table, "base", &res->base_id,
                                w->prev, NULL)) != SQLITE_OK) {
        return rc;
    }
    w->last_id = res->base_id;
    memcpy(res->base, w->prev, MTLS_HASH_LEN);
    if (res->base_id < INT64_MAX && lo > res->base_id + 1) {
        /* Start from the stored hash of the row before the range: that
         * row is checked by whoever walks the range below. */
        sql = sqlite3_mprintf("SELECT id, hash FROM \"%w\".\"%w\" WHERE id < "
                              "?1 ORDER BY id DESC LIMIT 1", schema, table);
        rc = sql ? sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
                 : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            return rc;
        }
        sqlite3_bind_int64(stmt, 1, lo);
        if (sqlite3_step(stmt) == SQLITE_ROW) {
            w->last_id = sqlite3_column_int64(stmt, 0);
            if (sqlite3_column_bytes(stmt, 1) == MTLS_HASH_LEN) {
                memcpy(w->prev, sqlite3_column_blob(stmt, 1), MTLS_HASH_LEN);
            }
        }
        rc = sqlite3_finalize(stmt);
    }
    return rc;
}

int mtls_chain_walk_row(mtls_chain_walk_t *w, sqlite3_stmt *stmt)
{
    mtls_val_t vals[MTLS_MAX_COLUMNS];
    int n = mtls_chain_row_values(stmt, vals, MTLS_MAX_COLUMNS);

    if (w->hcol == -2) {
        w->hcol = mtls_chain_hash_column(stmt);
    }
    return mtls_chain_walk_vals(w, vals, n, w->hcol);
}

int mtls_chain_walk_vals(mtls_chain_walk_t *w, const mtls_val_t *vals,
                         int n, int hcol)
{
    unsigned char calc[MTLS_HASH_LEN], stored[MTLS_HASH_LEN];
    mtls_chain_result_t *res = w->res;
    apr_int64_t id = n > 0 ? vals[0].i : 0;
    int has;

    res->rows++;
    if (hash_vals(w->key, w->table, w->prev, vals, n, hcol, calc, stored,
                  &has) != 0) {
        return -1;
    }
    if (!res->bad_id) {
        if (id < 1) {
            /* AUTOINCREMENT starts at 1: only a forged row has one. */
            res->bad_id = id;
            snprintf(res->why, sizeof(res->why), "row %" APR_INT64_T_FMT
                     " has an id the module never writes (ids start at 1)",
                     id);
        }
        else if (id <= res->base_id) {
            res->bad_id = id;
            snprintf(res->why, sizeof(res->why), "row %" APR_INT64_T_FMT
                     " should have been archived (the chain starts "
                     "after row %" APR_INT64_T_FMT ")", id, res->base_id);
        }
        else if (res->end_id && id > res->end_id) {
            res->bad_id = id;
            snprintf(res->why, sizeof(res->why), "row %" APR_INT64_T_FMT
                     " lies after the end of this archive (row %"
                     APR_INT64_T_FMT ")", id, res->end_id);
        }
        else if (w->last_id != 0 && (w->last_id == INT64_MAX
                                     || id != w->last_id + 1)) {
            res->bad_id = id;
            snprintf(res->why, sizeof(res->why),
                     "ids jump from %" APR_INT64_T_FMT " to %"
                     APR_INT64_T_FMT ": rows were removed", w->last_id, id);
        }
        else if (!has || memcmp(calc, stored, MTLS_HASH_LEN) != 0) {
            res->bad_id = id;
            snprintf(res->why, sizeof(res->why), "%s",
                     "the stored hash does not match the row: the row "
                     "was changed, inserted or moved, or the one before "
                     "it removed");
        }
    }
    /* Go on from the stored hash, so one edited row is reported once
     * and the rest of the table is still checked against it. */
    memcpy(w->prev, has ? stored : calc, MTLS_HASH_LEN);
    w->last_id = id;
    return 0;
}

void mtls_chain_walk_end(mtls_chain_walk_t *w, apr_int64_t hi)
{
    mtls_chain_result_t *res = w->res;

    if (!res->bad_id && res->end_id && hi >= res->end_id
        && (w->last_id != res->end_id
            || memcmp(w->prev, w->end, MTLS_HASH_LEN))) {
        res->bad_id = w->last_id;
        snprintf(res->why, sizeof(res->why), "this archive should end at "
                 "row %" APR_INT64_T_FMT " with the hash its cut names: rows "
                 "were removed from its end", res->end_id);
    }
    res->head_id = w->last_id;
    memcpy(res->head, w->prev, MTLS_HASH_LEN);
}

void mtls_chain_result_join(mtls_chain_result_t *acc,
                            const mtls_chain_result_t *next)
{
    apr_int64_t rows = acc->rows + next->rows;

    if (!acc->bad_id && next->bad_id) {
        acc->bad_id = next->bad_id;
        memcpy(acc->why, next->why, sizeof(acc->why));
    }
    if (next->rows) {
        acc->head_id = next->head_id;
        memcpy(acc->head, next->head, MTLS_HASH_LEN);
    }
    acc->rows = rows;
}

int mtls_chain_verify_range(sqlite3 *db, const char *schema,
                            const char *table, const mtls_chain_key_t *key,
                            apr_int64_t lo, apr_int64_t hi,
                            mtls_chain_result_t *res)
{
    mtls_chain_walk_t w;
    sqlite3_stmt *stmt = NULL;
    int rc;
    char *sql;

    schema = schema ? schema : "main";
    if ((rc = mtls_chain_walk_begin(&w, db, schema, table, key, lo, res))
        != SQLITE_OK) {
        return rc;
    }
    sql = sqlite3_mprintf("SELECT * FROM \"%w\".\"%w\" WHERE id BETWEEN ?1 "
                          "AND ?2 ORDER BY id", schema, table);
    if (!sql) {
        return SQLITE_NOMEM;
    }
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(stmt, 1, lo);
    sqlite3_bind_int64(stmt, 2, hi);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (mtls_chain_walk_row(&w, stmt) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(stmt);
    mtls_chain_walk_end(&w, hi);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ------------------------------------------------------------------ */
/* Anchors                                                              */

const char *const mtls_anchor_tables[MTLS_ANCHOR_TABLES] = {
    "certificates", "handshakes", "requests", "events"
};

int mtls_anchor_read(sqlite3 *db, mtls_anchor_t *a)
{
    int t, rc = SQLITE_OK;

    memset(a, 0, sizeof(*a));
    for (t = 0; t < MTLS_ANCHOR_TABLES && rc == SQLITE_OK; t++) {
        sqlite3_stmt *st;
        char *sql = sqlite3_mprintf("SELECT id, hash FROM \"%w\" ORDER BY id "
                                    "DESC LIMIT 1", mtls_anchor_tables[t]);
        rc = sql ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            break;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            a->id[t] = sqlite3_column_int64(st, 0);
            if (sqlite3_column_bytes(st, 1) == MTLS_HASH_LEN) {
                memcpy(a->hash[t], sqlite3_column_blob(st, 1), MTLS_HASH_LEN);
            }
        }
        rc = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? SQLITE_OK : rc;
        sqlite3_finalize(st);
    }
    return rc;
}

void mtls_anchor_format(const char *path, const mtls_anchor_t *a, char *buf,
                        apr_size_t len)
{
    apr_size_t off;
    int t, i;

    off = (apr_size_t)snprintf(buf, len, "anchor %s", path);
    for (t = 0; t < MTLS_ANCHOR_TABLES && off < len; t++) {
        off += (apr_size_t)snprintf(buf + off, len - off, " %s=%" 
                                    APR_INT64_T_FMT ":", mtls_anchor_tables[t],
                                    a->id[t]);
        for (i = 0; i < MTLS_HASH_LEN && off + 2 < len; i++) {
            off += (apr_size_t)snprintf(buf + off, len - off, "%02x",
                                        a->hash[t][i]);
        }
    }
}

static int unhex(const char *s, unsigned char *out, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        unsigned int v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int mtls_anchor_parse(const char *line, char *path, apr_size_t pathlen,
                      mtls_anchor_t *a)
{
    const char *p = strstr(line, "anchor "), *end;
    int t;

    if (!p) {
        return -1;
    }
    p += 7;
    end = strstr(p, " certificates=");
    if (!end || (apr_size_t)(end - p) >= pathlen) {
        return -1;
    }
    memcpy(path, p, (size_t)(end - p));
    path[end - p] = '\0';
    memset(a, 0, sizeof(*a));
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        char key[32];
        const char *q;
        long long id;
        snprintf(key, sizeof(key), " %s=", mtls_anchor_tables[t]);
        if (!(q = strstr(end, key))) {
            return -1;
        }
        q += strlen(key);
        if (sscanf(q, "%lld:", &id) != 1 || !(q = strchr(q, ':'))
            || strspn(q + 1, "0123456789abcdef") < 2 * MTLS_HASH_LEN
            || unhex(q + 1, a->hash[t], MTLS_HASH_LEN) != 0) {
            return -1;
        }
        a->id[t] = id;
    }
    return 0;
}
