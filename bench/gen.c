/*
 * gen.c -- mtls-gen: write synthetic audit databases through the core's
 * real write path (mtls_store_write: schema, certificates once, chains),
 * for the tool's tests (data sets whose statuses are known) and for the
 * benchmarks (millions of rows).
 *
 *   mtls-gen DB < SCRIPT
 *
 * SCRIPT, one command per line ('#' starts a comment):
 *   cert NAME KEY SIG NOT_BEFORE NOT_AFTER SUBJECT...
 *        KEY: ec | ec160 | rsa1024 | rsa2048     SIG: sha256 | sha1
 *        times: YYYY-MM-DDTHH:MM:SSZ; SUBJECT: the CN, rest of the line
 *   hs TIME CERT|- OUTCOME VERSION CIPHER VERIFY CLIENT [MODE]
 *        OUTCOME: accepted rejected no_certificate failed aborted
 *        VERSION: 1.0 1.1 1.2 1.3 -      VERIFY: X509_V code or -
 *        MODE: require (default) optional optional_no_ca none
 *   req PATH STATUS             a request on the last handshake
 *   event KIND TIME [LOST]      start, stop, gap (LOST records), ...
 *   policy TIME JSON            a policy event (the rest of the line its
 *                               detail), as the module writes at a start
 *                               or reload
 *   bulk N START END CERTS      N random handshakes (80% accepted, each
 *                               with one request) between START and END
 *                               over CERTS certificates, in time order
 *
 *   mtls-gen -b [-r | -R] DB < SCRIPT  (the store benchmark, bench/store-bench.sh)
 *        -b  keep the module's synchronous=NORMAL (not OFF) and print, on
 *            stdout, the rows written and the wall and CPU seconds spent
 *            writing them (making the records is not counted)
 *        -r  raw SQLite instead of the store: the same rows, bound to plain
 *            INSERTs in the same batches, one row a statement, with no
 *            hash chain and no certificate lookup (handshakes and
 *            requests only)
 *        -R  -r with 16 rows a statement, as many as the store puts into
 *            one INSERT
 *
 *   mtls-gen [-b] [-s N] [-t] DB < SCRIPT  (rotation, as the module rotates)
 *        -s N  seal the file after every N handshakes and go on in the next
 *              (mtls_store_rotate: DB, then DB's name with .1, .2, ...
 *              before its extension)
 *        -t    DB is a strftime(3) pattern of the generated time (UTC),
 *              e.g. year/audit-%Y-%m.db: a handshake whose name differs
 *              from the current file's seals it and goes on in that name
 *        Each rotation prints "sealed FILE -> NEXT" on stderr; the files
 *        verify together (mtls-audit verify F1 F2 ...).  A sealed file's
 *        summaries and hash are made on the store's sealer thread while
 *        the next file is written (2 cores); the exit waits for them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mtls_core.h"
#include "mtls_store.h"

#define BATCH 5000

typedef struct { char name[64]; X509 *x; } named_t;

static named_t certs[4096];
static int ncerts;
static mtls_store_t *st;
static mtls_item_t *batch[BATCH];
static X509 *batch_x[BATCH];
static int nbatch;
static mtls_link_t *last_link;
static apr_int64_t last_time;

static void die(const char *what)
{
    fprintf(stderr, "mtls-gen: %s\n", what);
    exit(2);
}

static apr_int64_t when(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
        die("bad time (want YYYY-MM-DDTHH:MM:SSZ)");
    }
    return (apr_int64_t)timegm(&tm) * 1000000;
}

/* -b: what writing cost; -r: the raw SQLite baseline. */
static int bench, raw, raw_rows = 1;
static double w_wall, w_cpu;
static long w_rows;
static apr_int64_t raw_hs_id, raw_rq_id;
static apr_int64_t bulk_ids[100000];    /* bulk's certificate j: its id */

/* Rotation: -s N and -t. */
static long split_n;                    /* handshakes a file, 0: no limit */
static int by_time;                     /* DB is a strftime pattern */
static const char *db_arg;              /* DB as given */
static long file_hs;                    /* handshakes in the current file */
static char cur_base[4096];             /* its name before a sequence no. */
static int cur_seq;

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* As the store binds them: text NULL when empty, an integer NULL when
 * below zero. */
static void bind_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v && *v) sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
    else sqlite3_bind_null(q, i);
}

static void bind_opt(sqlite3_stmt *q, int i, apr_int64_t v)
{
    if (v >= 0) sqlite3_bind_int64(q, i, v);
    else sqlite3_bind_null(q, i);
}

/* The raw baseline's INSERTs: raw_q[t][k] puts k rows into table t
 * (0 handshakes, 1 requests), prepared when first wanted. */
#define RAW_ROWS_MAX 16
static const char *const raw_table[2] = { "handshakes", "requests" };
static const int raw_ncols[2] = { 27, 9 };   /* handshakes: schema 3 */
static sqlite3_stmt *raw_q[2][RAW_ROWS_MAX + 1];
static int raw_pend[2][RAW_ROWS_MAX];    /* batch indices waiting */
static int raw_npend[2];
static const unsigned char raw_hash[32];

static sqlite3_stmt *raw_stmt(int t, int k)
{
    sqlite3 *db = mtls_store_db(st);
    sqlite3_str *q;
    char *sql;
    int r, c;

    if (raw_q[t][k]) return raw_q[t][k];
    q = sqlite3_str_new(db);
    sqlite3_str_appendf(q, "INSERT INTO %s VALUES", raw_table[t]);
    for (r = 0; r < k; r++) {
        for (c = 0; c < raw_ncols[t]; c++) {
            sqlite3_str_appendall(q, c ? ",?" : r ? ",(?" : "(?");
        }
        sqlite3_str_appendchar(q, 1, ')');
    }
    if (!(sql = sqlite3_str_finish(q))
        || sqlite3_prepare_v2(db, sql, -1, &raw_q[t][k], NULL) != SQLITE_OK) {
        die(sqlite3_errmsg(db));
    }
    sqlite3_free(sql);
    return raw_q[t][k];
}

/* Bind batch[i], a handshake, from parameter p on. */
static void raw_bind_hs(sqlite3_stmt *q, int p, int i)
{
    mtls_handshake_t *hs = &batch[i]->u.hs;

    sqlite3_bind_int64(q, p + 0, batch[i]->link->rowid);
    sqlite3_bind_int64(q, p + 1, hs->time_us);
    bind_text(q, p + 2, hs->server_name);
    bind_text(q, p + 3, hs->sni);
    bind_text(q, p + 4, hs->client_addr);
    bind_opt(q, p + 5, hs->client_port);
    bind_opt(q, p + 6, hs->local_port);
    bind_opt(q, p + 7, hs->tls_version ? hs->tls_version : -1);
    bind_text(q, p + 8, hs->cipher);
    sqlite3_bind_int(q, p + 9, hs->resumed);
    sqlite3_bind_int(q, p + 10, hs->outcome);
    sqlite3_bind_int(q, p + 11, hs->kind);
    sqlite3_bind_int(q, p + 12, hs->verify_mode);
    bind_opt(q, p + 13, hs->verify_result);
    bind_text(q, p + 14, hs->verify_result >= 0
              ? X509_verify_cert_error_string(hs->verify_result) : NULL);
    bind_opt(q, p + 15, hs->verify_depth);
    bind_opt(q, p + 16, hs->alert);
    bind_opt(q, p + 17, hs->alert_received);
    if (batch_x[i]) {
        /* bulk's certificates have serials 10000 + j; those it found in
         * the file have the ids the store gives them, new ones are
         * numbered from 1 (a raw run into an empty file). */
        long j = ASN1_INTEGER_get(X509_get0_serialNumber(batch_x[i])) - 10000;
        apr_int64_t cid = j >= 0 && j < (long)(sizeof(bulk_ids)
                          / sizeof(bulk_ids[0])) && bulk_ids[j]
                          ? bulk_ids[j] : j + 1;
        sqlite3_bind_int64(q, p + 18, cid);
    }
    else {
        sqlite3_bind_null(q, p + 18);
    }
    /* mtls-gen's handshakes present no chain beyond the leaf: the store
     * writes none */
    sqlite3_bind_null(q, p + 19);
    sqlite3_bind_int(q, p + 20, hs->chain_length);
    bind_opt(q, p + 21, hs->handshake_us);
    bind_opt(q, p + 22, hs->verify_us);
    bind_opt(q, p + 23, hs->pid);
    sqlite3_bind_blob(q, p + 24, raw_hash, 32, SQLITE_STATIC);
    bind_text(q, p + 25, mtls_rev_method_name(hs->revocation_method));
    bind_text(q, p + 26, mtls_rev_status_name(hs->revocation_status));
}

/* Bind batch[i], a request, from parameter p on. */
static void raw_bind_rq(sqlite3_stmt *q, int p, int i)
{
    mtls_request_t *rq = &batch[i]->u.rq;

    sqlite3_bind_int64(q, p + 0, ++raw_rq_id);
    sqlite3_bind_int64(q, p + 1, batch[i]->link->rowid);
    sqlite3_bind_int64(q, p + 2, rq->time_us);
    bind_text(q, p + 3, rq->method);
    bind_text(q, p + 4, rq->path);
    sqlite3_bind_int(q, p + 5, rq->status);
    sqlite3_bind_int64(q, p + 6, rq->bytes_sent);
    bind_opt(q, p + 7, rq->duration_us);
    sqlite3_bind_blob(q, p + 8, raw_hash, 32, SQLITE_STATIC);
}

/* Insert the rows of table t that wait, all in one statement. */
static void raw_flush(int t)
{
    int k = raw_npend[t], r;
    sqlite3_stmt *q;

    if (!k) return;
    q = raw_stmt(t, k);
    for (r = 0; r < k; r++) {
        (t ? raw_bind_rq : raw_bind_hs)(q, 1 + r * raw_ncols[t],
                                        raw_pend[t][r]);
    }
    if (sqlite3_step(q) != SQLITE_DONE) die(sqlite3_errmsg(mtls_store_db(st)));
    sqlite3_reset(q);
    raw_npend[t] = 0;
}

/* The rows the store would write for the batch, with plain INSERTs of
 * raw_rows rows each (the tail of a table's rows in one shorter INSERT):
 * the store's rows but the hash, 32 constant bytes here. */
static void raw_write(void)
{
    sqlite3 *db = mtls_store_db(st);
    sqlite3_stmt *q;
    int i, t;

    if (!raw_hs_id && !raw_rq_id) {
        sqlite3_prepare_v2(db, "SELECT (SELECT coalesce(max(id), 0) FROM "
                           "handshakes), (SELECT coalesce(max(id), 0) FROM "
                           "requests)", -1, &q, NULL);
        sqlite3_step(q);
        raw_hs_id = sqlite3_column_int64(q, 0);
        raw_rq_id = sqlite3_column_int64(q, 1);
        sqlite3_finalize(q);
    }
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        die(sqlite3_errmsg(db));
    }
    for (i = 0; i < nbatch; i++) {
        if (batch[i]->type == MTLS_ITEM_HANDSHAKE) {
            batch[i]->link->rowid = ++raw_hs_id;
            t = 0;
        }
        else if (batch[i]->type == MTLS_ITEM_REQUEST) {
            t = 1;
        }
        else {
            continue;
        }
        raw_pend[t][raw_npend[t]++] = i;
        if (raw_npend[t] == raw_rows) raw_flush(t);
    }
    raw_flush(0);
    raw_flush(1);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        die(sqlite3_errmsg(db));
    }
}

static void flush(void)
{
    char err[256];
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    int i;

    if (!nbatch) return;
    if (raw) {
        raw_write();
    }
    else if (mtls_store_write(st, batch, nbatch, err, sizeof(err))
             != SQLITE_OK) {
        die(err);
    }
    w_wall += clock_s(CLOCK_MONOTONIC) - t0;
    w_cpu += clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    w_rows += nbatch;
    for (i = 0; i < nbatch; i++) mtls_item_free(batch[i]);
    nbatch = 0;
}

static apr_int64_t item_time(const mtls_item_t *it)
{
    return it->type == MTLS_ITEM_HANDSHAKE ? it->u.hs.time_us
         : it->type == MTLS_ITEM_REQUEST ? it->u.rq.time_us
         : it->u.ev.time_us;
}

static void open_store(const char *path)
{
    char err[256];

    if (mtls_store_open(path, 0, 60000, &st, err, sizeof(err)) != SQLITE_OK) {
        die(err);
    }
    if (!bench) {
        sqlite3_exec(mtls_store_db(st), "PRAGMA synchronous=OFF", NULL, NULL,
                     NULL);
    }
}

/* The name of the file for time t (-t), before a sequence number. */
static void base_name(apr_int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)(t / 1000000);
    struct tm tm;

    if (!by_time) {
        snprintf(out, len, "%s", db_arg);
    }
    else if (!gmtime_r(&tt, &tm) || !strftime(out, len, db_arg, &tm)) {
        die("-t: the pattern gives no name");
    }
}

/* Before item it: open the first file, or seal the current one and go
 * on in the next when it is a handshake past the limit (-s) or of
 * another period (-t). */
static void maybe_rotate(const mtls_item_t *it)
{
    char base[4096], next[4096], err[512];
    apr_int64_t t = item_time(it);
    int newbase;

    if (!st) {
        base_name(t, cur_base, sizeof(cur_base));
        open_store(cur_base);
        return;
    }
    if (it->type != MTLS_ITEM_HANDSHAKE || (!split_n && !by_time)) {
        return;
    }
    base_name(t, base, sizeof(base));
    newbase = strcmp(base, cur_base) != 0;
    if (!newbase && !(split_n && file_hs >= split_n)) {
        return;
    }
    flush();
    if (newbase) {
        snprintf(cur_base, sizeof(cur_base), "%s", base);
        cur_seq = 0;
    }
    else {
        cur_seq++;
    }
    if (mtls_store_seq_name(cur_base, cur_seq, next, sizeof(next)) != 0) {
        die("name too long");
    }
    mtls_store_set_time(st, t);
    if (mtls_store_rotate(st, next, err, sizeof(err)) != SQLITE_OK) {
        die(err);
    }
    if (!bench) {
        sqlite3_exec(mtls_store_db(st), "PRAGMA synchronous=OFF", NULL, NULL,
                     NULL);
    }
    fprintf(stderr, "mtls-gen: sealed %s -> %s\n",
            mtls_store_last_seal(st)->file, next);
    file_hs = 0;
}

/* x: a handshake's certificate (the raw path reads its serial), or NULL. */
static void push(mtls_item_t *it, X509 *x)
{
    maybe_rotate(it);
    file_hs += it->type == MTLS_ITEM_HANDSHAKE;
    batch_x[nbatch] = x;
    batch[nbatch++] = it;
    if (nbatch == BATCH) flush();
}

static X509 *make_cert(const char *key, const char *sig, const char *nb,
                       const char *na, const char *cn, long serial)
{
    EVP_PKEY *pk;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    time_t t;

    if (!strcmp(key, "rsa1024")) pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    else if (!strcmp(key, "rsa2048")) pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else if (!strcmp(key, "ec160")) pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp160r1");
    else pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!pk) die("cannot make a key of that kind");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               (const unsigned char *)"mtls-gen", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_NAME_free(name);
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)"mtls-gen CA", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_NAME_free(name);
    t = (time_t)(when(nb) / 1000000);
    X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &t);
    t = (time_t)(when(na) / 1000000);
    X509_time_adj_ex(X509_getm_notAfter(x), 0, 0, &t);
    X509_set_pubkey(x, pk);
    X509_sign(x, pk, !strcmp(sig, "sha1") ? EVP_sha1() : EVP_sha256());
    EVP_PKEY_free(pk);
    /* Through DER and back: a certificate as a server receives it, with
     * its encoding cached, as the module sees them. */
    {
        unsigned char *der = NULL;
        const unsigned char *p;
        int len = i2d_X509(x, &der);
        X509 *y;
        p = der;
        if (len <= 0 || !(y = d2i_X509(NULL, &p, len))) die("i2d/d2i");
        OPENSSL_free(der);
        X509_free(x);
        x = y;
    }
    return x;
}

static X509 *find(const char *name)
{
    int i;
    if (!strcmp(name, "-")) return NULL;
    for (i = 0; i < ncerts; i++) {
        if (!strcmp(certs[i].name, name)) return certs[i].x;
    }
    die("unknown certificate name");
    return NULL;
}

static int outcome_code(const char *s)
{
    static const char *const n[] = { "", "accepted", "rejected",
        "no_certificate", "failed", "aborted" };
    int i;
    for (i = 1; i <= 5; i++) if (!strcmp(s, n[i])) return i;
    die("bad outcome");
    return 0;
}

static int version_code(const char *s)
{
    if (!strcmp(s, "1.3")) return 0x0304;
    if (!strcmp(s, "1.2")) return 0x0303;
    if (!strcmp(s, "1.1")) return 0x0302;
    if (!strcmp(s, "1.0")) return 0x0301;
    return 0;
}

static mtls_item_t *handshake(apr_int64_t t, X509 *x, int outcome, int ver,
                              const char *cipher, long verify,
                              const char *client, int mode)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_HANDSHAKE);
    mtls_handshake_t *hs = &it->u.hs;

    it->link = mtls_link_new();
    hs->time_us = t;
    strcpy(hs->server_name, "api.example");
    strcpy(hs->sni, "api.example");
    mtls_strlcpy(hs->client_addr, client, sizeof(hs->client_addr));
    hs->client_port = 40000 + (int)(t % 20000);
    hs->local_port = 443;
    hs->tls_version = ver;
    mtls_strlcpy(hs->cipher, strcmp(cipher, "-") ? cipher : "",
                 sizeof(hs->cipher));
    hs->outcome = outcome;
    hs->verify_mode = mode;
    hs->verify_result = x ? verify : -1;
    hs->verify_depth = x ? 0 : -1;
    hs->handshake_us = 1500 + t % 700;
    hs->verify_us = x ? 80 + t % 40 : -1;
    hs->pid = 1000 + (int)(t % 4);
    if (x) {
        mtls_certs_set(it, x, NULL);
        hs->has_leaf = 1;
        hs->chain_length = 1;
    }
    mtls_link_unref(last_link);
    last_link = mtls_link_ref(it->link);
    last_time = t;
    return it;
}

static mtls_item_t *request(apr_int64_t t, const char *path, int status)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_REQUEST);
    if (!last_link) die("req before any hs");
    it->link = mtls_link_ref(last_link);
    it->u.rq.time_us = t;
    strcpy(it->u.rq.method, "GET");
    it->u.rq.path = strdup(path);
    it->u.rq.status = status;
    it->u.rq.bytes_sent = 512;
    it->u.rq.duration_us = 300;
    return it;
}

/* Certificate j of an earlier bulk (serial 10000 + j) from the file,
 * with its id for -r; 0 when it is not there. */
static int reuse_cert(int j, X509 **out)
{
    sqlite3_stmt *q;
    const unsigned char *p;
    char serial[16];
    int ok = 0;

    if (j >= (int)(sizeof(bulk_ids) / sizeof(bulk_ids[0])) || !st) return 0;
    snprintf(serial, sizeof(serial), "%X", 10000 + j);
    if (sqlite3_prepare_v2(mtls_store_db(st), "SELECT id, der FROM "
                           "certificates WHERE serial = ?1 AND subject_dn "
                           "LIKE 'CN=client-%' AND der IS NOT NULL ORDER BY "
                           "id LIMIT 1", -1, &q, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_text(q, 1, serial, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        p = sqlite3_column_blob(q, 1);
        if (p && (*out = d2i_X509(NULL, &p, sqlite3_column_bytes(q, 1)))) {
            bulk_ids[j] = sqlite3_column_int64(q, 0);
            ok = 1;
        }
    }
    sqlite3_finalize(q);
    return ok;
}

static void bulk(long n, apr_int64_t start, apr_int64_t end, int k)
{
    static const char *const ciphers[] = {
        "TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384"
    };
    static const char *const paths[] = {
        "/api/v1/accounts", "/api/v1/payments", "/api/v1/status",
        "/health", "/api/v1/records/42"
    };
    X509 **pool = calloc((size_t)k, sizeof(X509 *));
    unsigned long long seed = 88172645463325252ULL;
    apr_int64_t step = (end - start) / (n ? n : 1);
    long i;
    int j;

    /* The certificates an earlier bulk stored, when the file holds them:
     * a server sees the same clients again, so their rows go to the
     * existing ids (all over the cert_id index), not to new ones at its
     * end.  Else new ones. */
    for (j = 0; j < k && reuse_cert(j, &pool[j]); j++)
        ;
    for (; j < k; j++) {
        char cn[64];
        snprintf(cn, sizeof(cn), "client-%04d", j);
        pool[j] = make_cert("ec", "sha256", "2025-01-01T00:00:00Z",
                            j % 50 ? "2028-01-01T00:00:00Z"
                                   : "2026-12-10T00:00:00Z", cn, 10000 + j);
    }
    for (i = 0; i < n; i++) {
        apr_int64_t t = start + step * i;
        int roll, outcome, ver;
        X509 *x;
        long verify = 0;
        char client[32];

        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        roll = (int)(seed % 100);
        x = pool[(seed >> 8) % (unsigned)k];
        snprintf(client, sizeof(client), "10.%d.%d.%d",
                 (int)((seed >> 20) % 4), (int)((seed >> 28) % 256),
                 (int)((seed >> 36) % 250) + 1);
        ver = (seed >> 44) % 5 ? 0x0304 : 0x0303;
        if (roll < 80) outcome = 1;
        else if (roll < 90) { outcome = 2; verify = roll % 2 ? 10 : 20; }
        else if (roll < 95) { outcome = 3; x = NULL; }
        else if (roll < 98) { outcome = 4; x = NULL; }
        else { outcome = 5; x = NULL; }
        push(handshake(t, x, outcome, ver,
                       ciphers[ver == 0x0303 ? 2 : (seed >> 50) % 2],
                       verify, client, MTLS_VM_REQUIRE), x);
        if (outcome == 1) {
            push(request(t + 2000, paths[(seed >> 52) % 5], 200), NULL);
        }
    }
    flush();                /* the raw path reads the batch's certificates */
    for (j = 0; j < k; j++) X509_free(pool[j]);
    free(pool);
}

int main(int argc, char **argv)
{
    char line[16384];
    long lineno = 0;
    int i;

    while (argc > 2 && argv[1][0] == '-') {
        if (!strcmp(argv[1], "-b")) bench = 1;
        else if (!strcmp(argv[1], "-t")) by_time = 1;
        else if (!strcmp(argv[1], "-s") && argc > 3) {
            split_n = atol(argv[2]);
            if (split_n < 1) die("-s: give a number of handshakes");
            argv++;
            argc--;
        }
        else if (!strcmp(argv[1], "-r")) raw = 1;
        else if (!strcmp(argv[1], "-R")) raw = 1, raw_rows = RAW_ROWS_MAX;
        else break;
        argv++;
        argc--;
    }
    /* A DB named like an option is a mistake (mtls-gen -h), not a file to
     * create: name it ./-h to mean it. */
    if (argc != 2 || argv[1][0] == '-') {
        int help = argc == 2 && (!strcmp(argv[1], "-h")
                                 || !strcmp(argv[1], "--help"));
        fprintf(help ? stdout : stderr,
                "usage: mtls-gen [-b [-r | -R]] [-s N] [-t] DB < SCRIPT\n");
        return help ? 0 : 2;
    }
    if (raw && (split_n || by_time)) {
        die("-r and -R write no chains: they do not rotate");
    }
    db_arg = argv[1];
    /* With -t the first file is named after the first record's time. */
    if (!by_time) {
        snprintf(cur_base, sizeof(cur_base), "%s", db_arg);
        open_store(db_arg);
    }
    while (fgets(line, sizeof(line), stdin)) {
        char *w[12] = { 0 }, *p = line;
        int n = 0;

        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        /* Words split on spaces; a cert's subject is the rest of the line. */
        while (*p && n < 12) {
            w[n++] = p;
            if (n == 7 && !strcmp(w[0], "cert")) break;
            if (n == 3 && !strcmp(w[0], "policy")) break;
            p += strcspn(p, " ");
            if (*p) *p++ = '\0';
        }
        if (!strcmp(w[0], "cert") && n >= 7) {
            if (ncerts == 4096) die("too many certificates");
            mtls_strlcpy(certs[ncerts].name, w[1], sizeof(certs[0].name));
            certs[ncerts].x = make_cert(w[2], w[3], w[4], w[5], w[6],
                                        1000 + ncerts);
            ncerts++;
        }
        else if (!strcmp(w[0], "hs") && n >= 8) {
            int mode = MTLS_VM_REQUIRE;
            if (n > 8) {
                mode = !strcmp(w[8], "none") ? MTLS_VM_NONE
                     : !strcmp(w[8], "optional") ? MTLS_VM_OPTIONAL
                     : !strcmp(w[8], "optional_no_ca") ? MTLS_VM_OPTIONAL_NO_CA
                     : MTLS_VM_REQUIRE;
            }
            X509 *x = find(w[2]);
            push(handshake(when(w[1]), x, outcome_code(w[3]),
                           version_code(w[4]), w[5],
                           strcmp(w[6], "-") ? atol(w[6]) : -1, w[7], mode),
                 x);
        }
        else if (!strcmp(w[0], "req") && n >= 3) {
            push(request(last_time + 1000, w[1], atoi(w[2])), NULL);
        }
        else if (!strcmp(w[0], "event") && n >= 3) {
            mtls_item_t *it = mtls_item_new(MTLS_ITEM_EVENT);
            it->u.ev.time_us = when(w[2]);
            mtls_strlcpy(it->u.ev.kind, w[1], sizeof(it->u.ev.kind));
            it->u.ev.pid = 1;
            it->u.ev.server_version = strdup("Apache/2.4.71 (synthetic)");
            if (n > 3) {
                it->u.ev.lost = atol(w[3]);
                it->u.ev.gap_start_us = it->u.ev.time_us - 60000000;
                it->u.ev.gap_end_us = it->u.ev.time_us;
                it->u.ev.detail = strdup("synthetic gap");
            }
            push(it, NULL);
        }
        else if (!strcmp(w[0], "policy") && n >= 3) {
            mtls_item_t *it = mtls_item_new(MTLS_ITEM_EVENT);
            it->u.ev.time_us = when(w[1]);
            mtls_strlcpy(it->u.ev.kind, "policy", sizeof(it->u.ev.kind));
            it->u.ev.pid = 1;
            it->u.ev.detail = strdup(w[2]);
            push(it, NULL);
        }
        else if (!strcmp(w[0], "bulk") && n >= 5) {
            flush();
            bulk(atol(w[1]), when(w[2]), when(w[3]), atoi(w[4]));
        }
        else {
            fprintf(stderr, "mtls-gen: line %ld: cannot read '%s'\n", lineno,
                    w[0]);
            return 2;
        }
    }
    flush();
    mtls_link_unref(last_link);
    for (ncerts--; ncerts >= 0; ncerts--) X509_free(certs[ncerts].x);
    for (i = 0; i <= RAW_ROWS_MAX; i++) {
        sqlite3_finalize(raw_q[0][i]);
        sqlite3_finalize(raw_q[1][i]);
    }
    /* The last sealed files are finished (summaries, hash, 'sealed'
     * event) on the store's sealer, while we went on writing: wait. */
    if (st) {
        char err[512];
        if (mtls_store_seal_wait(st, -1, err, sizeof(err)) != SQLITE_OK) {
            die(err);
        }
    }
    mtls_store_close(st);
    if (bench) {
        printf("{\"rows\": %ld, \"wall_s\": %.3f, \"cpu_s\": %.3f}\n",
               w_rows, w_wall, w_cpu);
    }
    return 0;
}
