/*
 * libFuzzer target: the rows of an audit database, as someone who can
 * write the file (the web server's user) may have left them, read by
 * mtls-audit query, certs, verify, report and export, called in-process
 * (mtls_audit_main).  Nothing may crash, trip a sanitizer or grow without
 * bound, and each command must end with one of its exit codes.
 *
 * DESIGN
 * A small valid database (a template: certificates, accepted and rejected
 * handshakes with presented chains, requests, events, written through the
 * core's own store) is built once per process in a directory on tmpfs.
 * Each input is a program of row edits applied with SQL to a fresh copy of
 * it, so that libFuzzer's mutations stay productive: most inputs still
 * open, and the commands get far into their code.
 *
 *   byte 0         which report (standard, format) and query format
 *   then, repeated:
 *     op           % 6: 0 set a cell, 1 set a column in every row,
 *                  2 delete a row, 3 copy a row under another id,
 *                  4 add a chain_cut row, 5 set an AUTOINCREMENT counter
 *     table        % 5: certificates, handshakes, requests, events,
 *                  chain_cut
 *     row id       one byte (the template's ids are 1..8)
 *     column       one byte, modulo the table's columns
 *     value        a kind byte and its bytes: NULL, a 64-bit integer, a
 *                  small integer, a real, text or a blob (raw bytes, any
 *                  encoding), a long run of one byte (up to 1 MiB, at most
 *                  4 an input), a time near the template's, or a chain
 *                  (JSON array of ids, sometimes not quite JSON)
 *
 * The tool writes to stdout (pointed at /dev/null) and stderr (pointed at
 * /dev/null while a command runs; sanitizer reports go to the original
 * stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>
#include <sanitizer/common_interface_defs.h>

#include "tool.h"
#include "mtls_store.h"

#ifndef MTLS_FUZZ_CERTS
#define MTLS_FUZZ_CERTS "tests/fuzz/corpus/cert"
#endif

#define HUGE_MAX   (1 << 20)   /* the longest value an edit writes */
#define HUGE_EDITS 4           /* long values an input may write */
#define OPS_MAX    64          /* edits an input may make */

/* The file the edited cuts name (relative: in the working directory). */
#define FOLLOWED "fuzz_db-followed.db"

static char dir[256], tmpl[300], work[300];
static unsigned char *tmpl_bytes;
static size_t tmpl_len;
static int quiet_fd = -1, err_fd = -1;

static const char *const tables[] = {
    "certificates", "handshakes", "requests", "events", "chain_cut"
};
#define NTABLES 5
static char *cols[NTABLES][32];
static int ncols[NTABLES];

static void die(const char *what) __attribute__((noreturn));
static void die(const char *what)
{
    fprintf(stderr, "fuzz_db: %s\n", what);
    abort();
}

static X509 *load_cert(const char *name)
{
    char path[512];
    unsigned char buf[8192];
    const unsigned char *p = buf;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", MTLS_FUZZ_CERTS, name);
    if (!(f = fopen(path, "rb"))) die(path);
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return d2i_X509(NULL, &p, (long)n);
}

static mtls_item_t *handshake(X509 *leaf, STACK_OF(X509) *chain, int outcome,
                              apr_int64_t t)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_HANDSHAKE);
    mtls_handshake_t *hs = &it->u.hs;

    it->link = mtls_link_new();
    hs->time_us = t;
    strcpy(hs->server_name, "www.example");
    strcpy(hs->sni, "www.example");
    strcpy(hs->client_addr, outcome == MTLS_OUT_ACCEPTED ? "192.0.2.1"
                                                         : "2001:db8::7");
    hs->client_port = 40000;
    hs->local_port = 443;
    hs->tls_version = outcome == MTLS_OUT_FAILED ? 0x0301 : 0x0304;
    strcpy(hs->cipher, outcome == MTLS_OUT_FAILED ? "DES-CBC3-SHA"
                                                  : "TLS_AES_128_GCM_SHA256");
    hs->outcome = outcome;
    hs->verify_mode = MTLS_VM_REQUIRE;
    hs->verify_result = leaf ? (outcome == MTLS_OUT_ACCEPTED ? 0 : 20) : -1;
    hs->verify_depth = leaf ? 0 : -1;
    hs->alert = outcome == MTLS_OUT_ACCEPTED ? -1 : 48;
    hs->alert_received = -1;
    hs->handshake_us = 1234;
    hs->verify_us = leaf ? 99 : -1;
    hs->pid = 4242;
    if (leaf) {
        mtls_certs_set(it, leaf, chain);
        hs->has_leaf = 1;
        hs->chain_length = chain ? sk_X509_num(chain) : 1;
    }
    return it;
}

static mtls_item_t *request(mtls_link_t *link, const char *path,
                            apr_int64_t t)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_REQUEST);
    it->link = mtls_link_ref(link);
    it->u.rq.time_us = t;
    strcpy(it->u.rq.method, "GET");
    it->u.rq.path = strdup(path);
    it->u.rq.status = 200;
    it->u.rq.bytes_sent = 12;
    it->u.rq.duration_us = 50;
    return it;
}

static mtls_item_t *event(const char *kind, apr_int64_t t)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_EVENT);
    it->u.ev.time_us = t;
    mtls_strlcpy(it->u.ev.kind, kind, sizeof(it->u.ev.kind));
    it->u.ev.pid = 4242;
    it->u.ev.server_version = strdup("Apache/2.4");
    it->u.ev.detail = strdup("fuzz");
    if (!strcmp(kind, "gap")) {
        it->u.ev.lost = 3;
        it->u.ev.gap_start_us = t - 1000000;
        it->u.ev.gap_end_us = t;
    }
    return it;
}

/* The template: 3 certificates, 8 handshakes (every outcome, a chain of
 * two), 4 requests (one with a card number), 3 events, over the last
 * days. */
static void build_template(void)
{
    X509 *ec = load_cert("ec-san.der"), *rsa = load_cert("rsa1024-sha1.der");
    STACK_OF(X509) *chain = sk_X509_new_null();
    mtls_item_t *it[16], *a;
    mtls_store_t *st;
    apr_int64_t t = mtls_now_us() - 3LL * 86400 * 1000000;
    char err[256];
    int n = 0, i;
    FILE *f;
    struct stat sb;

    if (!ec || !rsa || !chain) die("cannot load the template certificates");
    sk_X509_push(chain, ec);
    sk_X509_push(chain, rsa);
    if (mtls_store_open(tmpl, 0, 1000, &st, err, sizeof(err)) != SQLITE_OK) {
        die(err);
    }
    it[n++] = event("start", t);
    it[n++] = a = handshake(ec, NULL, MTLS_OUT_ACCEPTED, t + 1000);
    it[n++] = request(a->link, "/api/items/1", t + 2000);
    it[n++] = request(a->link, "/pay/4111111111111111", t + 3000);
    it[n++] = a = handshake(ec, chain, MTLS_OUT_ACCEPTED, t + 86400000000LL);
    it[n++] = request(a->link, "/", t + 86400001000LL);
    it[n++] = handshake(rsa, NULL, MTLS_OUT_REJECTED, t + 86400002000LL);
    it[n++] = handshake(rsa, chain, MTLS_OUT_REJECTED, t + 86400003000LL);
    it[n++] = handshake(NULL, NULL, MTLS_OUT_NO_CERT, t + 86400004000LL);
    it[n++] = handshake(NULL, NULL, MTLS_OUT_FAILED, t + 86400005000LL);
    it[n++] = event("gap", t + 86400006000LL);
    it[n++] = a = handshake(ec, NULL, MTLS_OUT_ACCEPTED, t + 86400007000LL);
    it[n++] = request(a->link, "/x", t + 86400008000LL);
    it[n++] = handshake(NULL, NULL, MTLS_OUT_ABORTED, t + 86400009000LL);
    it[n++] = event("stop", t + 86400010000LL);
    if (mtls_store_write(st, it, n, err, sizeof(err)) != SQLITE_OK) {
        die(err);
    }
    for (i = 0; i < n; i++) mtls_item_free(it[i]);
    /* Each table's columns, for the edits. */
    for (i = 0; i < NTABLES; i++) {
        sqlite3_stmt *q;
        char sql[128];
        snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", tables[i]);
        if (sqlite3_prepare_v2(mtls_store_db(st), sql, -1, &q, NULL)
            != SQLITE_OK) die("table_info");
        while (sqlite3_step(q) == SQLITE_ROW && ncols[i] < 32) {
            cols[i][ncols[i]++] = strdup((const char *)
                                         sqlite3_column_text(q, 1));
        }
        sqlite3_finalize(q);
    }
    mtls_store_close(st);       /* the last connection: checkpointed */
    sk_X509_free(chain);
    X509_free(ec);
    X509_free(rsa);
    if (stat(tmpl, &sb) != 0 || !(f = fopen(tmpl, "rb"))) die(tmpl);
    tmpl_len = (size_t)sb.st_size;
    if (!(tmpl_bytes = malloc(tmpl_len))
        || fread(tmpl_bytes, 1, tmpl_len, f) != tmpl_len) die("template");
    fclose(f);
}

static void cleanup(void)
{
    static const char *const suffix[] = { "", "-wal", "-shm" };
    char path[320];
    int i;

    for (i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", work, suffix[i]);
        unlink(path);
        snprintf(path, sizeof(path), "%s%s", tmpl, suffix[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "%s/fuzz_db-%d", base, (int)getpid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) die(dir);
    snprintf(tmpl, sizeof(tmpl), "%s/template.db", dir);
    snprintf(work, sizeof(work), "%s/audit.db", dir);
    unlink(tmpl);
    atexit(cleanup);
    build_template();
    /* Sanitizer reports keep the real stderr; the tool's messages go to
     * /dev/null, as its reports do. */
    err_fd = dup(2);
    quiet_fd = open("/dev/null", O_WRONLY);
    if (err_fd < 0 || quiet_fd < 0 || !freopen("/dev/null", "w", stdout)) {
        die("cannot redirect the output");
    }
    __sanitizer_set_report_fd((void *)(intptr_t)err_fd);
    return 0;
}

/* ---- the input ---- */

typedef struct {
    const uint8_t *p, *end;
    int huge;
} input_t;

static unsigned next(input_t *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

static uint64_t next64(input_t *in)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++) v = v << 8 | next(in);
    return v;
}

/* Bind the value the input describes to parameter i of q. */
static void bind_value(sqlite3_stmt *q, int i, input_t *in)
{
    unsigned kind = next(in) % 9, n;
    apr_int64_t t0 = mtls_now_us();

    switch (kind) {
    case 0:
        sqlite3_bind_null(q, i);
        break;
    case 1:
        sqlite3_bind_int64(q, i, (sqlite3_int64)next64(in));
        break;
    case 2:
        sqlite3_bind_int(q, i, (signed char)next(in));
        break;
    case 3: {
        uint64_t bits = next64(in);
        double d;
        memcpy(&d, &bits, sizeof(d));
        sqlite3_bind_double(q, i, d);
        break;
    }
    case 4:
    case 5:
        n = next(in);
        if (n > (unsigned)(in->end - in->p)) n = (unsigned)(in->end - in->p);
        if (kind == 4) {
            sqlite3_bind_text(q, i, (const char *)in->p, (int)n,
                              SQLITE_TRANSIENT);
        }
        else {
            sqlite3_bind_blob(q, i, in->p, (int)n, SQLITE_TRANSIENT);
        }
        in->p += n;
        break;
    case 6: {
        unsigned len = (next(in) + 1) * (HUGE_MAX / 256);
        unsigned char c = (unsigned char)next(in);
        char *s;
        if (in->huge++ >= HUGE_EDITS || !(s = malloc(len))) {
            sqlite3_bind_null(q, i);
            break;
        }
        memset(s, c ? c : 'A', len);
        sqlite3_bind_text(q, i, s, (int)len, free);
        break;
    }
    case 7:     /* a time: days around now, in microseconds */
        sqlite3_bind_int64(q, i, t0 + (apr_int64_t)(int16_t)(next(in) << 8
                           | next(in)) * 3600LL * 1000000 + next(in));
        break;
    default: {  /* a chain: "[id,id,...]", now and then broken */
        sqlite3_str *s = sqlite3_str_new(NULL);
        unsigned k, cnt = next(in) % 6, shape = next(in);
        char *v;
        sqlite3_str_appendchar(s, 1, shape & 1 ? '{' : '[');
        for (k = 0; k < cnt; k++) {
            sqlite3_str_appendf(s, "%s%d", k ? "," : "",
                                (int)(signed char)next(in));
        }
        if (!(shape & 2)) sqlite3_str_appendchar(s, 1, ']');
        v = sqlite3_str_finish(s);
        sqlite3_bind_text(q, i, v ? v : "[]", -1, SQLITE_TRANSIENT);
        sqlite3_free(v);
        break;
    }
    }
}

/* Apply one edit; errors (a constraint, a type) are part of the game. */
static void edit(sqlite3 *db, input_t *in)
{
    unsigned op = next(in) % 6, t = next(in) % NTABLES;
    unsigned id = next(in), c = ncols[t] ? next(in) % (unsigned)ncols[t] : 0;
    sqlite3_stmt *q = NULL;
    sqlite3_str *s;
    char *sql;
    int k;

    s = sqlite3_str_new(NULL);
    switch (op) {
    case 0:
        sqlite3_str_appendf(s, "UPDATE %s SET \"%w\" = ?1 WHERE rowid = %u",
                            tables[t], cols[t][c], id);
        break;
    case 1:
        sqlite3_str_appendf(s, "UPDATE %s SET \"%w\" = ?1", tables[t],
                            cols[t][c]);
        break;
    case 2:
        sqlite3_str_appendf(s, "DELETE FROM %s WHERE rowid = %u", tables[t],
                            id);
        break;
    case 3:     /* the row under id ?1 (any id: value) */
        sqlite3_str_appendf(s, "INSERT OR REPLACE INTO %s SELECT ?1",
                            tables[t]);
        for (k = 1; k < ncols[t]; k++) {
            sqlite3_str_appendf(s, ", \"%w\"", cols[t][k]);
        }
        sqlite3_str_appendf(s, " FROM %s WHERE rowid = %u", tables[t], id);
        break;
    case 4:
        sqlite3_str_appendf(s, "INSERT OR REPLACE INTO chain_cut VALUES "
                            "('%s', '%s', ?1, randomblob(32), 0, '"
                            FOLLOWED "')",
                            tables[t % 4], id & 1 ? "base" : "end");
        break;
    default:
        sqlite3_str_appendf(s, "UPDATE sqlite_sequence SET seq = ?1 WHERE "
                            "name = '%s'", tables[t % 4]);
        break;
    }
    sql = sqlite3_str_finish(s);
    if (sql && sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_bind_parameter_count(q) > 0) {
            bind_value(q, 1, in);
        }
        sqlite3_step(q);
    }
    sqlite3_finalize(q);
    sqlite3_free(sql);
}

static void fresh_copy(void)
{
    char side[320];
    int fd;

    snprintf(side, sizeof(side), "%s-wal", work);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", work);
    unlink(side);
    fd = open(work, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, tmpl_bytes, tmpl_len) != (ssize_t)tmpl_len) {
        die("cannot copy the template");
    }
    close(fd);
}

/* One command, its output and messages thrown away; returns its code. */
static int run(int argc, const char **argv)
{
    int rc;

    fflush(stderr);
    dup2(quiet_fd, 2);
    rc = mtls_audit_main(argc, (char **)argv);
    fflush(stdout);
    clearerr(stdout);
    fflush(stderr);
    dup2(err_fd, 2);
    if (rc < 0 || rc > 3) {
        fprintf(stderr, "fuzz_db: %s exited %d\n", argv[1], rc);
        abort();
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const standards[] = { "pci-dss", "hipaa", "summary" };
    static const char *const rformats[] = { "text", "json", "csv", "html" };
    static const char *const qformats[] = { "table", "json", "csv" };
    input_t in = { data, data + size, 0 };
    unsigned sel = next(&in), ops = 0;
    sqlite3 *db;

    fresh_copy();
    if (sqlite3_open(work, &db) != SQLITE_OK) die("cannot open the copy");
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    while (in.p < in.end && ops++ < OPS_MAX) {
        edit(db, &in);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    {
        const char *q[] = { "mtls-audit", "query", "--limit", "0",
                            "--format", qformats[sel % 3], work };
        const char *c[] = { "mtls-audit", "certs", "--format",
                            qformats[(sel >> 2) % 3], work };
        const char *e[] = { "mtls-audit", "export", work };
        const char *v[] = { "mtls-audit", "verify", work };
        const char *r[] = { "mtls-audit", "report", "--standard",
                            standards[(sel >> 4) % 3], "--format",
                            rformats[(sel >> 6) % 4], "--since",
                            "2000-01-01", work };
        run(7, q);
        run(5, c);
        run(3, e);
        run(3, v);
        run(9, r);
    }
    /* The file a cut names is the file's writer's word: the tool never
     * opens it for writing (it would create it, as root). */
    if (access(FOLLOWED, F_OK) == 0) {
        fprintf(stderr, "fuzz_db: a command created %s, named by a cut\n",
                FOLLOWED);
        abort();
    }
    return 0;
}
