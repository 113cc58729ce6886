/*
 * mtls_chain.c -- row hashing and chain verification; see mtls_chain.h for
 * the encoding, which is a stored-data format: never change it without a
 * schema version that says how old rows are hashed.
 */
#include "mtls_chain.h"
#include "mtls_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

typedef struct {
    unsigned char *buf;
    apr_size_t     len, cap;
    int            oom;
} enc_t;

static void enc_put(enc_t *e, const void *p, apr_size_t n)
{
    if (e->oom) {
        return;
    }
    if (e->len + n > e->cap) {
        apr_size_t cap = e->cap ? e->cap : 512;
        unsigned char *nb;
        while (cap < e->len + n) {
            cap *= 2;
        }
        if (!(nb = realloc(e->buf, cap))) {
            e->oom = 1;
            return;
        }
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, p, n);
    e->len += n;
}

static void enc_u64(enc_t *e, apr_uint64_t v)
{
    unsigned char b[8];
    int i;
    for (i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    enc_put(e, b, 8);
}

static void enc_val(enc_t *e, const mtls_val_t *v)
{
    unsigned char t = (unsigned char)v->type;
    unsigned char l[4];
    apr_uint64_t bits;

    enc_put(e, &t, 1);
    switch (v->type) {
    case MTLS_V_INT:
        enc_u64(e, (apr_uint64_t)v->i);
        break;
    case MTLS_V_REAL:
        memcpy(&bits, &v->d, 8);
        enc_u64(e, bits);
        break;
    case MTLS_V_TEXT:
    case MTLS_V_BLOB:
        l[0] = (unsigned char)(v->len >> 24);
        l[1] = (unsigned char)(v->len >> 16);
        l[2] = (unsigned char)(v->len >> 8);
        l[3] = (unsigned char)v->len;
        enc_put(e, l, 4);
        enc_put(e, v->p, v->len);
        break;
    default:
        break;
    }
}

static int enc_finish(const mtls_chain_key_t *key, enc_t *e,
                      unsigned char out[MTLS_HASH_LEN])
{
    unsigned int olen = MTLS_HASH_LEN;
    int ok;

    if (e->oom) {
        free(e->buf);
        return -1;
    }
    if (key && key->key) {
        ok = HMAC(EVP_sha256(), key->key, (int)key->len, e->buf, e->len,
                  out, &olen) != NULL;
    }
    else {
        ok = EVP_Digest(e->buf, e->len, out, &olen, EVP_sha256(), NULL);
    }
    free(e->buf);
    return ok ? 0 : -1;
}

static void enc_start(enc_t *e, const char *table,
                      const unsigned char prev[MTLS_HASH_LEN])
{
    static const unsigned char zero[MTLS_HASH_LEN];
    memset(e, 0, sizeof(*e));
    enc_put(e, prev ? prev : zero, MTLS_HASH_LEN);
    enc_put(e, table, strlen(table) + 1);
}

int mtls_chain_hash(const mtls_chain_key_t *key, const char *table,
                    const unsigned char prev[MTLS_HASH_LEN],
                    const mtls_val_t *vals, int n,
                    unsigned char out[MTLS_HASH_LEN])
{
    enc_t e;
    int i;

    enc_start(&e, table, prev);
    for (i = 0; i < n; i++) {
        enc_val(&e, &vals[i]);
    }
    return enc_finish(key, &e, out);
}

int mtls_chain_hash_stmt(const mtls_chain_key_t *key, const char *table,
                         const unsigned char prev[MTLS_HASH_LEN],
                         sqlite3_stmt *stmt,
                         unsigned char out[MTLS_HASH_LEN],
                         unsigned char stored[MTLS_HASH_LEN],
                         int *has_stored)
{
    int i, n = sqlite3_column_count(stmt);
    mtls_val_t v;
    enc_t e;

    *has_stored = 0;
    enc_start(&e, table, prev);
    for (i = 0; i < n; i++) {
        if (strcmp(sqlite3_column_name(stmt, i), "hash") == 0) {
            if (sqlite3_column_type(stmt, i) == SQLITE_BLOB
                && sqlite3_column_bytes(stmt, i) == MTLS_HASH_LEN) {
                memcpy(stored, sqlite3_column_blob(stmt, i), MTLS_HASH_LEN);
                *has_stored = 1;
            }
            continue;
        }
        memset(&v, 0, sizeof(v));
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER:
            v.type = MTLS_V_INT;
            v.i = sqlite3_column_int64(stmt, i);
            break;
        case SQLITE_FLOAT:
            v.type = MTLS_V_REAL;
            v.d = sqlite3_column_double(stmt, i);
            break;
        case SQLITE_TEXT:
            v.type = MTLS_V_TEXT;
            v.p = sqlite3_column_text(stmt, i);
            v.len = (apr_size_t)sqlite3_column_bytes(stmt, i);
            break;
        case SQLITE_BLOB:
            v.type = MTLS_V_BLOB;
            v.p = sqlite3_column_blob(stmt, i);
            v.len = (apr_size_t)sqlite3_column_bytes(stmt, i);
            break;
        default:
            v.type = MTLS_V_NULL;
            break;
        }
        enc_val(&e, &v);
    }
    return enc_finish(key, &e, out);
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

int mtls_chain_verify(sqlite3 *db, const char *schema, const char *table,
                      const mtls_chain_key_t *key,
                      mtls_chain_result_t *res)
{
    unsigned char prev[MTLS_HASH_LEN], calc[MTLS_HASH_LEN];
    unsigned char stored[MTLS_HASH_LEN];
    sqlite3_stmt *stmt = NULL;
    apr_int64_t last_id = 0, id;
    int rc, has;
    char *sql;

    memset(res, 0, sizeof(*res));
    memset(prev, 0, sizeof(prev));
    sql = sqlite3_mprintf("SELECT * FROM \"%w\".\"%w\" ORDER BY id",
                          schema ? schema : "main", table);
    if (!sql) {
        return SQLITE_NOMEM;
    }
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return rc;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        id = sqlite3_column_int64(stmt, 0);
        res->rows++;
        if (mtls_chain_hash_stmt(key, table, prev, stmt, calc, stored,
                                 &has) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        if (!res->bad_id) {
            if (id != last_id + 1 && last_id != 0) {
                res->bad_id = id;
                snprintf(res->why, sizeof(res->why),
                         "ids jump from %" APR_INT64_T_FMT " to %"
                         APR_INT64_T_FMT ": rows were removed", last_id, id);
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
        memcpy(prev, has ? stored : calc, MTLS_HASH_LEN);
        last_id = id;
    }
    sqlite3_finalize(stmt);
    res->head_id = last_id;
    memcpy(res->head, prev, MTLS_HASH_LEN);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}
