/* The store and the hash chain, on real SQLite files. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "unit.h"
#include "mtls_schema_sql.h"    /* the migrations, to make older files */

static const char *const subj_a[] = { "CN", "alice", NULL };
static const char *const subj_b[] = { "CN", "bob", NULL };

const char *unit_db(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s.db", unit_dir, name);
    unlink(path);
    return path;
}

mtls_item_t *unit_handshake(X509 *leaf, int outcome)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_HANDSHAKE);
    mtls_handshake_t *hs = &it->u.hs;

    it->link = mtls_link_new();
    hs->time_us = mtls_now_us();
    strcpy(hs->server_name, "www.example");
    strcpy(hs->sni, "www.example");
    strcpy(hs->client_addr, "192.0.2.1");
    hs->client_port = 40000;
    hs->local_port = 443;
    hs->tls_version = 0x0304;
    strcpy(hs->cipher, "TLS_AES_128_GCM_SHA256");
    hs->outcome = outcome;
    hs->verify_mode = MTLS_VM_REQUIRE;
    hs->verify_result = outcome == MTLS_OUT_ACCEPTED ? 0 : 20;
    hs->verify_depth = 0;
    hs->handshake_us = 1234;
    hs->verify_us = 99;
    hs->pid = 4242;
    if (leaf) {
        /* Takes the reference it is given, as the server's copy does. */
        mtls_certs_set(it, leaf, NULL);
        hs->has_leaf = 1;
        hs->chain_length = 1;
        X509_free(leaf);
    }
    return it;
}

static mtls_item_t *request(mtls_link_t *link, const char *path)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_REQUEST);
    it->link = mtls_link_ref(link);
    it->u.rq.time_us = mtls_now_us();
    strcpy(it->u.rq.method, "GET");
    it->u.rq.path = strdup(path);
    it->u.rq.status = 200;
    it->u.rq.bytes_sent = 12;
    it->u.rq.duration_us = 50;
    return it;
}

static long long scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static char *text(sqlite3 *db, const char *sql)
{
    static char buf[1024];
    sqlite3_stmt *st;
    buf[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        snprintf(buf, sizeof(buf), "%s", sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return buf;
}

/* Write a small data set: 3 handshakes (2 with alice's cert, 1 with bob's),
 * 2 requests, 1 event.  Returns the open store. */
static mtls_store_t *populate(const char *path, const mtls_chain_key_t *key)
{
    mtls_item_t *items[6];
    X509 *a = unit_cert(subj_a, "ec", 1, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    X509 *b = unit_cert(subj_b, "ec", 2, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    mtls_store_t *st;
    char err[256];
    int i;

    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    mtls_store_set_key(st, key);
    X509_up_ref(a);
    items[0] = unit_handshake(a, MTLS_OUT_ACCEPTED);
    items[1] = request(items[0]->link, "/one");
    items[2] = unit_handshake(a, MTLS_OUT_ACCEPTED);
    items[3] = request(items[2]->link, "/two");
    items[4] = unit_handshake(b, MTLS_OUT_REJECTED);
    items[5] = mtls_item_new(MTLS_ITEM_EVENT);
    items[5]->u.ev.time_us = mtls_now_us();
    strcpy(items[5]->u.ev.kind, "start");
    CU_ASSERT_EQUAL(mtls_store_write(st, items, 6, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(items[0]->link->rowid, 1);
    CU_ASSERT_EQUAL(items[2]->link->rowid, 2);
    for (i = 0; i < 6; i++) {
        mtls_item_free(items[i]);
    }
    return st;
}

static void test_write_and_views(void)
{
    const char *path = unit_db("views");
    mtls_store_t *st = populate(path, NULL);
    sqlite3 *db = mtls_store_db(st);
    struct stat sb;

    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM certificates"), 2);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM v_handshakes"), 3);
    CU_ASSERT_EQUAL(scalar(db, "SELECT requests FROM v_handshakes "
                           "WHERE id = 1"), 1);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT path FROM v_requests WHERE "
                                "handshake_id = 2"), "/two");
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT subject_dn FROM v_requests "
                                "WHERE id = 1"), "CN=alice");
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT outcome FROM v_handshakes "
                                "WHERE id = 3"), "rejected");
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT verify_error FROM v_handshakes "
                                "WHERE id = 3"),
                           "unable to get local issuer certificate");
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT tls_version FROM v_handshakes "
                                "WHERE id = 1"), "TLSv1.3");
    CU_ASSERT_EQUAL(scalar(db, "SELECT accepted FROM v_certificates WHERE "
                           "subject_dn = 'CN=alice'"), 2);
    CU_ASSERT_EQUAL(scalar(db, "SELECT rejected FROM v_certificates WHERE "
                           "subject_dn = 'CN=bob'"), 1);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT not_after FROM v_certificates "
                                "WHERE subject_dn = 'CN=bob'"),
                           "2030-01-01T00:00:00Z");
    CU_ASSERT_EQUAL(strlen(text(db, "SELECT time_utc FROM v_handshakes")),
                    24);
    CU_ASSERT_STRING_EQUAL(text(db, "PRAGMA journal_mode"), "wal");
    CU_ASSERT_EQUAL(scalar(db, "PRAGMA user_version"), mtls_schema_version());
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0640);
    mtls_store_close(st);
}

/* The DER copied on the handshake path: a chain whose first certificate is
 * the leaf stores the leaf once; a leaf outside the chain comes first; a
 * chain longer than MTLS_CERTS_KEPT keeps its first ones; the store turns
 * the copies into certificate rows and the chain column. */
static void test_presented_chain(void)
{
    const char *path = unit_db("chain-der");
    const char *subj[] = { "CN", "c0", NULL };
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *x[MTLS_CERTS_KEPT + 6], *other;
    mtls_item_t *items[3];
    mtls_store_t *st;
    char err[256];
    int i, n = MTLS_CERTS_KEPT + 6;

    for (i = 0; i < n; i++) {
        char cn[16];
        const char *sj[] = { "CN", cn, NULL };
        snprintf(cn, sizeof(cn), "c%d", i);
        x[i] = unit_cert(sj, "ec", 100 + i, "20200101000000Z",
                         "20300101000000Z", NULL, NULL);
    }
    other = unit_cert(subj, "ec", 99, "20200101000000Z", "20300101000000Z",
                      NULL, NULL);
    for (i = 0; i < 3; i++) {
        sk_X509_push(chain, x[i]);
    }
    items[0] = unit_handshake(NULL, MTLS_OUT_ACCEPTED);
    CU_ASSERT_EQUAL(mtls_certs_set(items[0], x[0], chain), 0);
    items[0]->u.hs.has_leaf = 1;
    CU_ASSERT_EQUAL(items[0]->u.hs.certs.n, 3);
    CU_ASSERT_EQUAL(items[0]->u.hs.certs.chain_from, 0);
    for (i = 0; i < 3; i++) {
        unsigned char *d = NULL;
        int len = i2d_X509(x[i], &d);
        CU_ASSERT_EQUAL((int)items[0]->u.hs.certs.len[i], len);
        CU_ASSERT(memcmp(mtls_certs_der(&items[0]->u.hs.certs, i), d,
                         (size_t)len) == 0);
        OPENSSL_free(d);
    }
    /* A leaf that is not the chain's first: stored first, chain after. */
    items[1] = unit_handshake(NULL, MTLS_OUT_ACCEPTED);
    CU_ASSERT_EQUAL(mtls_certs_set(items[1], other, chain), 0);
    items[1]->u.hs.has_leaf = 1;
    CU_ASSERT_EQUAL(items[1]->u.hs.certs.n, 4);
    CU_ASSERT_EQUAL(items[1]->u.hs.certs.chain_from, 1);
    /* Too long a chain: the first MTLS_CERTS_KEPT. */
    for (i = 3; i < n; i++) {
        sk_X509_push(chain, x[i]);
    }
    items[2] = unit_handshake(NULL, MTLS_OUT_REJECTED);
    CU_ASSERT_EQUAL(mtls_certs_set(items[2], x[0], chain), 0);
    items[2]->u.hs.has_leaf = 1;
    items[2]->u.hs.chain_length = n;
    CU_ASSERT_EQUAL(items[2]->u.hs.certs.n, MTLS_CERTS_KEPT);

    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_write(st, items, 3, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(st), "SELECT chain FROM "
                                "handshakes WHERE id = 1"), "[1,2,3]");
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT cert_id FROM "
                           "handshakes WHERE id = 1"), 1);
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(st), "SELECT chain FROM "
                                "handshakes WHERE id = 2"), "[1,2,3]");
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(st), "SELECT subject_dn FROM "
                                "certificates c JOIN handshakes h ON "
                                "h.cert_id = c.id WHERE h.id = 2"), "CN=c0");
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT cert_id FROM "
                           "handshakes WHERE id = 2"), 4);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT json_array_length("
                           "chain) FROM handshakes WHERE id = 3"),
                    MTLS_CERTS_KEPT);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT chain_length FROM "
                           "handshakes WHERE id = 3"), n);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT count(*) FROM "
                           "certificates"), MTLS_CERTS_KEPT + 1);
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(st), "SELECT subject_dn FROM "
                                "certificates WHERE sha256 = (SELECT sha256 "
                                "FROM certificates WHERE id = 3)"), "CN=c2");
    mtls_store_close(st);
    for (i = 0; i < 3; i++) {
        mtls_item_free(items[i]);
    }
    sk_X509_free(chain);
    for (i = 0; i < n; i++) {
        X509_free(x[i]);
    }
    X509_free(other);
}

static void test_reopen_and_readonly(void)
{
    const char *path = unit_db("reopen");
    mtls_store_t *st = populate(path, NULL), *ro;
    char err[256];

    mtls_store_close(st);
    CU_ASSERT_EQUAL(mtls_store_open(path, 0, 1000, &st, err, sizeof(err)),
                    SQLITE_OK);
    mtls_store_close(st);
    CU_ASSERT_EQUAL(mtls_store_open(path, MTLS_STORE_READONLY, 1000, &ro,
                                    err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(ro), "SELECT count(*) FROM "
                           "handshakes"), 3);
    mtls_store_close(ro);
}

static void test_refuses_foreign_files(void)
{
    const char *path = unit_db("foreign");
    mtls_store_t *st;
    char err[256];
    sqlite3 *db;
    FILE *f;

    f = fopen(path, "w");
    fputs("this is not a database, just text that is long enough......."
          "..............................................................",
          f);
    fclose(f);
    CU_ASSERT_NOT_EQUAL(mtls_store_open(path, MTLS_STORE_READONLY, 100, &st,
                                        err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_PTR_NULL(st);

    path = unit_db("altered");
    st = populate(path, NULL);
    mtls_store_close(st);
    sqlite3_open(path, &db);
    sqlite3_exec(db, "ALTER TABLE handshakes RENAME COLUMN sni TO sni2",
                 NULL, NULL, NULL);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(mtls_store_open(path, 0, 100, &st, err, sizeof(err)),
                    SQLITE_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "handshakes"));

    path = unit_db("newer");
    sqlite3_open(path, &db);
    sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(mtls_store_open(path, 0, 100, &st, err, sizeof(err)),
                    SQLITE_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "newer"));
}

static void test_locked_write_rolls_back(void)
{
    const char *path = unit_db("locked");
    mtls_store_t *st = populate(path, NULL);
    mtls_item_t *it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    char err[256];
    sqlite3 *other;

    sqlite3_open(path, &other);
    CU_ASSERT_EQUAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL,
                                 NULL), SQLITE_OK);
    CU_ASSERT_NOT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                        SQLITE_OK);
    CU_ASSERT_EQUAL(it->link->rowid, 0);
    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(other);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(it->link->rowid, 4);
    mtls_item_free(it);
    mtls_store_close(st);
}

/* The database and its WAL removed during the commit (from SQLite's commit
 * hook, which runs as COMMIT starts): SQLite commits into the removed file
 * all the same, where nobody will read it. */
static int remove_on_commit(void *arg)
{
    const char *path = arg;
    char p[600];

    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
    return 0;                   /* and let the COMMIT go on */
}

static void test_a_commit_into_a_removed_file_is_not_stored(void)
{
    char path[512], err[256];
    mtls_store_t *st;
    mtls_item_t *it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    FILE *f;

    snprintf(path, sizeof(path), "%s", unit_db("removedcommit"));
    st = populate(path, NULL);
    CU_ASSERT_EQUAL(mtls_store_file_gone(st), MTLS_FILE_IN_PLACE);
    sqlite3_commit_hook(mtls_store_db(st), remove_on_commit, path);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_IOERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "removed or replaced"));
    CU_ASSERT_EQUAL(it->link->rowid, 0);    /* as after a rollback */
    sqlite3_commit_hook(mtls_store_db(st), NULL, NULL);
    CU_ASSERT_EQUAL(mtls_store_file_gone(st), MTLS_FILE_REMOVED);
    /* Another file at the path. */
    f = fopen(path, "w");
    fclose(f);
    CU_ASSERT_EQUAL(mtls_store_file_gone(st), MTLS_FILE_REPLACED);
    CU_ASSERT_NOT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                        SQLITE_OK);
    mtls_item_free(it);
    mtls_store_close(st);
}

static int verify(const char *path, const char *table,
                  const mtls_chain_key_t *key, mtls_chain_result_t *res);

/* Two writers of one file (two processes): one rotates, the other's next
 * write finds the seal inside its transaction and follows it.  Nothing is
 * written after the seal, ids go on, each file's chains verify, the
 * sealed file's SHA-256 is in the next file; a rotation to a name that
 * is taken fails and leaves the file unsealed. */
static void test_rotation_seals_and_writers_follow(void)
{
    char old[512], next[512], taken[512], err[512];
    mtls_store_t *a, *b;
    mtls_item_t *it;
    const mtls_store_sealed_t *sl;
    mtls_chain_result_t res;
    sqlite3 *db;
    int t;

    snprintf(old, sizeof(old), "%s", unit_db("rot-old"));
    snprintf(next, sizeof(next), "%s", unit_db("rot-next"));
    snprintf(taken, sizeof(taken), "%s", unit_db("rot-taken"));
    a = populate(old, NULL);
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(old, 0, 1000, &b, err, sizeof(err)),
                          SQLITE_OK);
    /* A taken name: refused, nothing sealed. */
    fclose(fopen(taken, "w"));
    CU_ASSERT_NOT_EQUAL(mtls_store_rotate(a, taken, err, sizeof(err)),
                        SQLITE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "taken"));
    CU_ASSERT_STRING_EQUAL(mtls_store_path(a), old);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(a), "SELECT count(*) FROM "
                           "chain_cut"), 0);

    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(a, next, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(mtls_store_path(a), next);
    /* Its summaries and hash are the sealer's: wait for them. */
    CU_ASSERT_EQUAL(mtls_store_seal_wait(a, -1, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_FALSE(mtls_store_seal_pending(a));
    sl = mtls_store_last_seal(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sl);
    CU_ASSERT_STRING_EQUAL(sl->file, old);
    CU_ASSERT_EQUAL(strlen(sl->sha256), 64);
    CU_ASSERT_EQUAL(sl->seal, 2);           /* after the one 'start' */

    /* b still holds the old file: its write goes to the next one. */
    it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    CU_ASSERT_EQUAL(mtls_store_write(b, &it, 1, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(mtls_store_path(b), next);
    CU_ASSERT_EQUAL(it->link->rowid, 4);    /* 3 in the old file */
    mtls_item_free(it);
    it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    CU_ASSERT_EQUAL(mtls_store_write(a, &it, 1, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(it->link->rowid, 5);
    mtls_item_free(it);
    /* b rotating now finds nothing to seal twice: it stays. */
    mtls_store_close(a);
    mtls_store_close(b);

    sqlite3_open(old, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM handshakes"), 3);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM chain_cut WHERE side = "
                           "'end'"), 4);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT kind FROM events ORDER BY id "
                                "DESC LIMIT 1"), "seal");
    sqlite3_close(db);
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        CU_ASSERT_EQUAL(verify(old, mtls_anchor_tables[t], NULL, &res),
                        SQLITE_OK);
        CU_ASSERT_EQUAL(res.bad_id, 0);
        CU_ASSERT_EQUAL(verify(next, mtls_anchor_tables[t], NULL, &res),
                        SQLITE_OK);
        CU_ASSERT_EQUAL(res.bad_id, 0);
    }
    sqlite3_open(next, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT min(id) FROM handshakes"), 4);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM certificates"), 2);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT group_concat(kind) FROM (SELECT "
                                "kind FROM events ORDER BY id)"),
                           "rotate,sealed");
    CU_ASSERT_EQUAL(scalar(db, "SELECT min(id) FROM events"), 3);
    {
        /* The sealed file's hash, as recorded. */
        unsigned char buf[1 << 16], md[32];
        char hex[65], *d = text(db, "SELECT json_extract(detail, '$.sha256') "
                                    "FROM events WHERE kind = 'sealed'");
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        FILE *f = fopen(old, "rb");
        size_t n;
        EVP_DigestInit_ex(c, EVP_sha256(), NULL);
        while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0) {
            EVP_DigestUpdate(c, buf, n);
        }
        if (f) fclose(f);
        EVP_DigestFinal_ex(c, md, NULL);
        EVP_MD_CTX_free(c);
        mtls_hex(md, 32, hex);
        CU_ASSERT_STRING_EQUAL(d, hex);
    }
    sqlite3_close(db);
}

/* A seal names the file where writing goes on, and whoever can write the
 * file can name any path there: a write follows it only within the
 * file's directory, and never with MTLS_STORE_NOFOLLOW (the tool). */
static void test_a_seal_elsewhere_is_not_followed(void)
{
    char path[512], away[512], near[512], err[512], *sql;
    mtls_store_t *st;
    mtls_item_t *it;
    sqlite3 *db;

    snprintf(path, sizeof(path), "%s", unit_db("seal-elsewhere"));
    snprintf(away, sizeof(away), "/tmp/mtls-unit-away-%d.db", (int)getpid());
    snprintf(near, sizeof(near), "%s", unit_db("seal-near"));
    unlink(away);
    unlink(near);
    st = populate(path, NULL);
    mtls_store_close(st);
    sqlite3_open(path, &db);
    sql = sqlite3_mprintf("INSERT INTO chain_cut VALUES ('handshakes', "
                          "'end', 3, randomblob(32), 0, %Q)", away);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_READONLY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "outside its directory"));
    CU_ASSERT_NOT_EQUAL(access(away, F_OK), 0);
    mtls_store_close(st);
    /* The same directory: followed, except by the tool. */
    sqlite3_open(path, &db);
    sql = sqlite3_mprintf("UPDATE chain_cut SET other = %Q", near);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, MTLS_STORE_NOFOLLOW, 1000,
                                          &st, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_READONLY);
    CU_ASSERT_NOT_EQUAL(access(near, F_OK), 0);
    mtls_store_close(st);
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(mtls_store_path(st), near);
    mtls_store_close(st);
    mtls_item_free(it);
}

/* A file name with a quote and a backslash: the rotation's events still
 * hold valid JSON that gives the names back. */
static void test_rotation_events_escape_names(void)
{
    char old[512], next[512], err[512], *v;
    mtls_store_t *a;
    sqlite3 *db;

    snprintf(old, sizeof(old), "%s", unit_db("rot-q\"old\\"));
    snprintf(next, sizeof(next), "%s", unit_db("rot-q\"next\\"));
    a = populate(old, NULL);
    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(a, next, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_seal_wait(a, -1, err, sizeof(err)),
                    SQLITE_OK);
    mtls_store_close(a);
    sqlite3_open(old, &db);
    v = text(db, "SELECT json_extract(detail, '$.next') FROM events WHERE "
                 "kind = 'seal' AND json_valid(detail)");
    CU_ASSERT_PTR_NOT_NULL(v);
    if (v) CU_ASSERT_STRING_EQUAL(v, next);
    sqlite3_close(db);
    sqlite3_open(next, &db);
    v = text(db, "SELECT json_extract(detail, '$.previous') FROM events "
                 "WHERE kind = 'rotate' AND json_valid(detail)");
    CU_ASSERT_PTR_NOT_NULL(v);
    if (v) CU_ASSERT_STRING_EQUAL(v, old);
    v = text(db, "SELECT json_extract(detail, '$.file') FROM events "
                 "WHERE kind = 'sealed' AND json_valid(detail)");
    CU_ASSERT_PTR_NOT_NULL(v);
    if (v) CU_ASSERT_STRING_EQUAL(v, old);
    sqlite3_close(db);
}

/* A reader holding the old file's WAL: the seal commits, its hash waits
 * (the sealer tries again), and is recorded once the reader is gone. */
static void test_rotation_hash_waits_for_readers(void)
{
    char old[512], next[512], err[512];
    mtls_store_t *a;
    sqlite3 *reader, *db;
    const mtls_store_sealed_t *sl;

    snprintf(old, sizeof(old), "%s", unit_db("rotr-old"));
    snprintf(next, sizeof(next), "%s", unit_db("rotr-next"));
    a = populate(old, NULL);
    sqlite3_open(old, &reader);
    CU_ASSERT_EQUAL(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM "
                                 "handshakes", NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(a, next, err, sizeof(err)),
                          SQLITE_OK);
    sl = mtls_store_last_seal(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sl);
    CU_ASSERT_STRING_EQUAL(sl->sha256, "");
    /* Past the sealer's first tries (20 of 150 ms): still held. */
    CU_ASSERT_EQUAL(mtls_store_seal_wait(a, 3500, err, sizeof(err)),
                    SQLITE_BUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, old));
    CU_ASSERT_EQUAL(mtls_store_seal_hash(a, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(mtls_store_last_seal(a)->sha256, "");
    /* Held for good, it does not hold rotations back. */
    CU_ASSERT_FALSE(mtls_store_seal_pending(a));
    sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(reader);
    /* A wait has it tried again at once (not in 10 s). */
    CU_ASSERT_EQUAL(mtls_store_seal_wait(a, 2000, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(strlen(mtls_store_last_seal(a)->sha256), 64);
    mtls_store_close(a);
    sqlite3_open(next, &db);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT group_concat(kind) FROM (SELECT "
                                "kind FROM events ORDER BY id)"),
                           "rotate,sealed");
    sqlite3_close(db);
}

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A slow summary fill (MTLS_AUDIT_TEST_SEAL_DELAY_MS) runs on the sealer:
 * the rotation returns at once and writing goes on in the next file; a
 * second rotation records the first seal in the file it seals, before
 * sealing it; a close gives up a fill that takes too long, and the next
 * writer of the successor finishes that file. */
static void test_rotation_sealer_runs_beside_writes(void)
{
    char f1[512], f2[512], f3[512], g1[512], g2[512], err[512];
    mtls_store_t *a, *b;
    mtls_item_t *it;
    sqlite3 *db;
    double t0;

    snprintf(f1, sizeof(f1), "%s", unit_db("rots-1"));
    snprintf(f2, sizeof(f2), "%s", unit_db("rots-2"));
    snprintf(f3, sizeof(f3), "%s", unit_db("rots-3"));
    snprintf(g1, sizeof(g1), "%s", unit_db("rots-g1"));
    snprintf(g2, sizeof(g2), "%s", unit_db("rots-g2"));
    setenv("MTLS_AUDIT_TEST_SEAL_DELAY_MS", "1000", 1);
    a = populate(f1, NULL);
    t0 = mono_s();
    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(a, f2, err, sizeof(err)),
                          SQLITE_OK);
    it = unit_handshake(NULL, MTLS_OUT_NO_CERT);
    CU_ASSERT_EQUAL(mtls_store_write(a, &it, 1, err, sizeof(err)), SQLITE_OK);
    mtls_item_free(it);
    CU_ASSERT(mono_s() - t0 < 0.8);
    CU_ASSERT_TRUE(mtls_store_seal_pending(a));
    CU_ASSERT_FALSE(mtls_store_seal_ready(a));
    CU_ASSERT_EQUAL(mtls_store_seal_hash(a, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(mtls_store_last_seal(a)->sha256, "");
    sqlite3_open(f1, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM summaries"), 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(a), "SELECT count(*) FROM events "
                           "WHERE kind = 'sealed'"), 0);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(a), "SELECT count(*) FROM "
                           "handshakes"), 1);
    /* The next rotation waits for the first seal, records it in f2, then
     * seals f2. */
    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(a, f3, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT(mono_s() - t0 > 0.9);
    sqlite3_open(f2, &db);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT group_concat(kind) FROM (SELECT "
                                "kind FROM events ORDER BY id)"),
                           "rotate,sealed,seal");
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT json_extract(detail, '$.file') "
                                "FROM events WHERE kind = 'sealed'"), f1);
    sqlite3_close(db);
    sqlite3_open(f1, &db);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM summaries") > 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(mtls_store_seal_wait(a, -1, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(a), "SELECT json_extract("
                                "detail, '$.file') FROM events WHERE kind = "
                                "'sealed'"), f2);
    mtls_store_close(a);

    /* A close does not wait for a fill of minutes: 2 s, then the file is
     * left without its summaries and its record. */
    setenv("MTLS_AUDIT_TEST_SEAL_DELAY_MS", "60000", 1);
    b = populate(g1, NULL);
    CU_ASSERT_EQUAL_FATAL(mtls_store_rotate(b, g2, err, sizeof(err)),
                          SQLITE_OK);
    t0 = mono_s();
    mtls_store_close(b);
    CU_ASSERT(mono_s() - t0 < 5);
    unsetenv("MTLS_AUDIT_TEST_SEAL_DELAY_MS");
    sqlite3_open(g1, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM summaries"), 0);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT kind FROM events ORDER BY id "
                                "DESC LIMIT 1"), "seal");
    sqlite3_close(db);
    sqlite3_open(g2, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM events WHERE kind = "
                           "'sealed'"), 0);
    sqlite3_close(db);

    /* The next writer of g2 finishes g1: summaries, hash, record. */
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(g2, 0, 1000, &b, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_finish_previous(b), 1);
    CU_ASSERT_EQUAL(mtls_store_finish_previous(b), 0);      /* settled */
    CU_ASSERT_TRUE(mtls_store_seal_pending(b));
    CU_ASSERT_EQUAL(mtls_store_seal_wait(b, -1, err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_STRING_EQUAL(text(mtls_store_db(b), "SELECT json_extract("
                                "detail, '$.file') FROM events WHERE kind = "
                                "'sealed'"), g1);
    mtls_store_close(b);
    sqlite3_open(g1, &db);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM summaries") > 0);
    sqlite3_close(db);
    /* Recorded: the one after has nothing to do. */
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(g2, 0, 1000, &b, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_finish_previous(b), 0);
    mtls_store_close(b);
    sqlite3_open(g2, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM events WHERE kind = "
                           "'sealed'"), 1);
    sqlite3_close(db);
}

/* Names: strftime, then a sequence number before the extension. */
static void test_rotation_names(void)
{
    char out[512], pat[512];
    apr_int64_t t = (apr_int64_t)1796083200 * 1000000;     /* 2026-12-01 */

    CU_ASSERT_EQUAL(mtls_store_seq_name("/x/audit-2026-12.db", 2, out,
                                        sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "/x/audit-2026-12.2.db");
    CU_ASSERT_EQUAL(mtls_store_seq_name("/x.d/audit", 1, out, sizeof(out)),
                    0);
    CU_ASSERT_STRING_EQUAL(out, "/x.d/audit.1");
    snprintf(pat, sizeof(pat), "%s/seq-%%Y-%%m.db", unit_dir);
    unlink(unit_db("seq-2026-12"));
    unlink(unit_db("seq-2026-12.1"));
    CU_ASSERT_EQUAL(mtls_store_name(pat, t, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/seq-2026-12.db"));
    fclose(fopen(out, "w"));
    CU_ASSERT_EQUAL(mtls_store_name(pat, t, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/seq-2026-12.1.db"));
    /* periods: UTC, weeks from Monday */
    CU_ASSERT_EQUAL(mtls_rotate_period_end(MTLS_ROTATE_MONTHLY, t + 5),
                    (apr_int64_t)1798761600 * 1000000);      /* 2027-01-01 */
    CU_ASSERT_EQUAL(mtls_rotate_period_end(MTLS_ROTATE_DAILY, t),
                    t + (apr_int64_t)86400 * 1000000);
    /* 2026-12-01 is a Tuesday: the week ends on Monday the 7th */
    CU_ASSERT_EQUAL(mtls_rotate_period_end(MTLS_ROTATE_WEEKLY, t),
                    t + (apr_int64_t)6 * 86400 * 1000000);
}

/* --- the chain ---------------------------------------------------- */

static int verify(const char *path, const char *table,
                  const mtls_chain_key_t *key, mtls_chain_result_t *res)
{
    sqlite3 *db;
    int rc;
    sqlite3_open(path, &db);
    rc = mtls_chain_verify(db, "main", table, key, res);
    sqlite3_close(db);
    return rc;
}

static void tamper(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_open(path, &db);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_chain_holds(void)
{
    static const char *const tables[] = {
        "certificates", "handshakes", "requests", "events", NULL
    };
    const char *path = unit_db("chain-ok");
    mtls_store_t *st = populate(path, NULL);
    mtls_chain_result_t res;
    int i;

    mtls_store_close(st);
    for (i = 0; tables[i]; i++) {
        CU_ASSERT_EQUAL(verify(path, tables[i], NULL, &res), SQLITE_OK);
        CU_ASSERT_EQUAL(res.bad_id, 0);
        CU_ASSERT(res.rows > 0);
    }
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.head_id, 3);
}

/* n handshakes with alternating certificates, each with one request
 * "/r<first + i>" (the handshake's client port 40000 + first + i), into
 * items[0..2n). */
static void many_items(mtls_item_t **items, int n, int first, X509 *a,
                       X509 *b)
{
    char path[32];
    int i;

    for (i = 0; i < n; i++) {
        X509 *x = i % 2 ? b : a;
        X509_up_ref(x);
        items[2 * i] = unit_handshake(x, MTLS_OUT_ACCEPTED);
        items[2 * i]->u.hs.client_port = 40000 + first + i;
        snprintf(path, sizeof(path), "/r%d", first + i);
        items[2 * i + 1] = request(items[2 * i]->link, path);
    }
}

/* Handshakes and requests go into SQLite 16, 4 and 1 rows per INSERT:
 * every row keeps its place in the chain and its request its handshake,
 * and a row that fails takes the whole batch with it. */
static void test_rows_in_groups(void)
{
    static const char *const tables[] = { "handshakes", "requests", NULL };
    const char *path = unit_db("groups");
    X509 *a = unit_cert(subj_a, "ec", 1, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    X509 *b = unit_cert(subj_b, "ec", 2, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    mtls_item_t *items[2 * 37], *again[2 * 21];
    mtls_chain_result_t res;
    mtls_store_t *st;
    sqlite3 *db;
    char err[256];
    int i;

    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    db = mtls_store_db(st);
    many_items(items, 37, 0, a, b);             /* 16 + 16 + 4 + 1 */
    CU_ASSERT_EQUAL(mtls_store_write(st, items, 74, err, sizeof(err)),
                    SQLITE_OK);
    for (i = 0; i < 37; i++) {
        CU_ASSERT_EQUAL(items[2 * i]->link->rowid, i + 1);
    }
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM handshakes WHERE id "
                           "BETWEEN 1 AND 37 AND client_port = 39999 + id"),
                    37);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM requests r JOIN "
                           "handshakes h ON h.id = r.handshake_id WHERE "
                           "r.path = '/r' || (h.client_port - 40000) AND "
                           "r.id = h.id"), 37);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(DISTINCT cert_id) FROM "
                           "handshakes"), 2);
    CU_ASSERT_STRING_EQUAL(text(db, "SELECT chain FROM handshakes WHERE id "
                                "= 37"), "");

    /* The 17th request fails: 16 rows went in, then the failure; nothing
     * of the batch stays, no link keeps an id. */
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TRIGGER no_bad BEFORE INSERT "
                                 "ON requests WHEN NEW.path = '/r53' BEGIN "
                                 "SELECT RAISE(ABORT, 'refused'); END",
                                 NULL, NULL, NULL), SQLITE_OK);
    many_items(again, 21, 37, a, b);            /* 16 + 4 + 1 */
    CU_ASSERT_NOT_EQUAL(mtls_store_write(st, again, 42, err, sizeof(err)),
                        SQLITE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "refused"));
    CU_ASSERT_EQUAL(again[0]->link->rowid, 0);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM handshakes"), 37);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM requests"), 37);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "DROP TRIGGER no_bad", NULL, NULL,
                                 NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_store_write(st, again, 42, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(again[41]->link->rowid, 58);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM requests r JOIN "
                           "handshakes h ON h.id = r.handshake_id WHERE "
                           "r.path = '/r' || (h.client_port - 40000)"), 58);
    for (i = 0; i < 74; i++) {
        mtls_item_free(items[i]);
    }
    for (i = 0; i < 42; i++) {
        mtls_item_free(again[i]);
    }
    mtls_store_close(st);
    X509_free(a);
    X509_free(b);
    for (i = 0; tables[i]; i++) {
        CU_ASSERT_EQUAL(verify(path, tables[i], NULL, &res), SQLITE_OK);
        CU_ASSERT_EQUAL(res.bad_id, 0);
        CU_ASSERT_EQUAL(res.rows, 58);
        CU_ASSERT_EQUAL(res.head_id, 58);
    }
}

/* A VFS that is the default one but counts the statement journals SQLite
 * opens as files (it opens none while one stays in memory). */
static sqlite3_vfs *real_vfs, counting_vfs;
static int subjournal_files;

static int counting_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                         int flags, int *out)
{
    (void)vfs;
    if (flags & SQLITE_OPEN_SUBJOURNAL) {
        subjournal_files++;
    }
    return real_vfs->xOpen(real_vfs, name, f, flags, out);
}

/* 16 handshakes in one batch, each with its own certificate, the
 * certificates' rows of handshakes_cert 1,250 apiece (so on 16 leaves and
 * more): the 16-row INSERT changes more than 16 pages, past the 64 KiB at
 * which SQLite would move the statement journal to a file. */
static int write_sixteen_certs(mtls_store_t *st, X509 **certs)
{
    mtls_item_t *items[16];
    char err[256];
    int i, rc;

    for (i = 0; i < 16; i++) {
        X509_up_ref(certs[i]);
        items[i] = unit_handshake(certs[i], MTLS_OUT_ACCEPTED);
    }
    subjournal_files = 0;
    rc = mtls_store_write(st, items, 16, err, sizeof(err));
    for (i = 0; i < 16; i++) {
        mtls_item_free(items[i]);
    }
    return rc;
}

/* The store's multi-row INSERTs keep their statement journal in memory
 * (temp_store=MEMORY), not in a temp file written two pwrite()s a page;
 * the same write with temp_store=FILE opens one, which shows the test
 * reaches the case. */
static void test_statement_journal_in_memory(void)
{
    const char *path = unit_db("subjournal");
    X509 *certs[16];
    mtls_store_t *st;
    sqlite3 *db;
    char err[256], cn[16];
    int i;

    real_vfs = sqlite3_vfs_find(NULL);
    counting_vfs = *real_vfs;
    counting_vfs.zName = "unit-counting";
    counting_vfs.xOpen = counting_open;
    CU_ASSERT_EQUAL_FATAL(sqlite3_vfs_register(&counting_vfs, 1), SQLITE_OK);
    for (i = 0; i < 16; i++) {
        const char *const subj[] = { "CN", cn, NULL };
        snprintf(cn, sizeof(cn), "c%d", i);
        certs[i] = unit_cert(subj, "ec", 100 + i, "20200101000000Z",
                             "20300101000000Z", NULL, NULL);
    }
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    db = mtls_store_db(st);
    CU_ASSERT_EQUAL(write_sixteen_certs(st, certs), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 "
                                 "UNION ALL SELECT i + 1 FROM n WHERE i < "
                                 "20000) INSERT INTO handshakes(time_us, "
                                 "outcome, kind, cert_id, hash) SELECT i, 1, "
                                 "0, 1 + i % 16, randomblob(32) FROM n",
                                 NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(write_sixteen_certs(st, certs), SQLITE_OK);
    CU_ASSERT_EQUAL(subjournal_files, 0);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "PRAGMA temp_store=FILE", NULL, NULL,
                                 NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(write_sixteen_certs(st, certs), SQLITE_OK);
    CU_ASSERT(subjournal_files > 0);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM handshakes"),
                    3 * 16 + 20000);
    mtls_store_close(st);
    for (i = 0; i < 16; i++) {
        X509_free(certs[i]);
    }
    sqlite3_vfs_register(real_vfs, 1);
    sqlite3_vfs_unregister(&counting_vfs);
}

static void expect_break(const char *name, const char *sql, long long at)
{
    const char *path = unit_db(name);
    mtls_store_t *st = populate(path, NULL);
    mtls_chain_result_t res;

    mtls_store_close(st);
    tamper(path, sql);
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, at);
    if (res.bad_id != at) {
        fprintf(stderr, "\n%s: broke at %lld, want %lld (%s)\n", name,
                (long long)res.bad_id, at, res.why);
    }
}

static void test_chain_detects_tampering(void)
{
    expect_break("t-change", "UPDATE handshakes SET outcome = 1 WHERE id = 3",
                 3);
    expect_break("t-change-mid", "UPDATE handshakes SET client_addr = "
                 "'10.0.0.1' WHERE id = 2", 2);
    expect_break("t-delete-mid", "DELETE FROM handshakes WHERE id = 2", 3);
    expect_break("t-insert", "INSERT INTO handshakes(id, time_us, outcome, "
                 "kind, hash) VALUES (10, 1, 1, 0, zeroblob(32))", 10);
    /* Reorder: swap the contents of rows 1 and 2, hashes included. */
    expect_break("t-reorder",
                 "CREATE TEMP TABLE t AS SELECT * FROM handshakes WHERE id "
                 "IN (1, 2); DELETE FROM handshakes WHERE id IN (1, 2); "
                 "INSERT INTO handshakes SELECT CASE id WHEN 1 THEN 2 ELSE 1 "
                 "END, time_us, server_name, sni, client_addr, client_port, "
                 "local_port, tls_version, cipher, resumed, outcome, kind, "
                 "verify_mode, verify_result, verify_error, verify_depth, "
                 "alert, alert_received, cert_id, chain, chain_length, "
                 "handshake_us, verify_us, pid, hash, revocation_method, "
                 "revocation_status FROM t", 1);
    /* The tail cut and writing resumed: the ids show the hole. */
    {
        const char *path = unit_db("t-truncate");
        mtls_store_t *st = populate(path, NULL);
        mtls_item_t *it = unit_handshake(NULL, MTLS_OUT_FAILED);
        mtls_chain_result_t res;
        char err[256];

        tamper(path, "DELETE FROM handshakes WHERE id = 3");
        CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                        SQLITE_OK);
        mtls_item_free(it);
        mtls_store_close(st);
        CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
        CU_ASSERT_EQUAL(res.bad_id, 4);
    }
}

static void test_chain_with_key(void)
{
    unsigned char k[32];
    mtls_chain_key_t key = { k, sizeof(k) };
    mtls_chain_key_t wrong = { (unsigned char *)"another key, 32 bytes long...!!",
                               32 };
    const char *path = unit_db("chain-key");
    mtls_store_t *st;
    mtls_chain_result_t res;

    memset(k, 7, sizeof(k));
    st = populate(path, &key);
    mtls_store_close(st);
    CU_ASSERT_EQUAL(verify(path, "handshakes", &key, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 0);
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 1);
    CU_ASSERT_EQUAL(verify(path, "handshakes", &wrong, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 1);
}

static void test_chain_hash_encoding(void)
{
    unsigned char a[32], b[32], prev[32];
    mtls_val_t v1[2] = { { MTLS_V_TEXT, 0, 0, "ab", 2 },
                         { MTLS_V_TEXT, 0, 0, "c", 1 } };
    mtls_val_t v2[2] = { { MTLS_V_TEXT, 0, 0, "a", 1 },
                         { MTLS_V_TEXT, 0, 0, "bc", 2 } };
    mtls_val_t n1 = { MTLS_V_NULL, 0, 0, NULL, 0 };
    mtls_val_t i0 = { MTLS_V_INT, 0, 0, NULL, 0 };

    memset(prev, 0, sizeof(prev));
    /* Field boundaries, types and table all count. */
    mtls_chain_hash(NULL, "t", prev, v1, 2, a);
    mtls_chain_hash(NULL, "t", prev, v2, 2, b);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, 32), 0);
    mtls_chain_hash(NULL, "t", prev, &n1, 1, a);
    mtls_chain_hash(NULL, "t", prev, &i0, 1, b);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, 32), 0);
    mtls_chain_hash(NULL, "u", prev, &i0, 1, a);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, 32), 0);
    mtls_chain_hash(NULL, "t", prev, &i0, 1, a);
    CU_ASSERT_EQUAL(memcmp(a, b, 32), 0);
}

/* Schema 3 adds handshakes.revocation_method and _status after hash: rows
 * a schema-2 writer stored (hashed over the 24 columns then) still verify
 * once the step is applied, and the new columns of a new row are covered
 * by its hash, as is a value put into an old row's. */
static void test_migration_keeps_old_rows_verifying(void)
{
    const char *path = unit_db("schema2");
    unsigned char prev[MTLS_HASH_LEN], h[MTLS_HASH_LEN];
    mtls_chain_result_t res;
    mtls_store_t *st;
    mtls_item_t *items[2];
    sqlite3_stmt *ins;
    sqlite3 *db;
    char err[256];
    int i, k;

    CU_ASSERT_EQUAL_FATAL(mtls_migrations[1].version, 2);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sqlite3_exec(db, mtls_migrations[i].sql, NULL, NULL,
                                     NULL), SQLITE_OK);
    }
    /* Three rows as the schema-2 writer wrote them. */
    memset(prev, 0, sizeof(prev));
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "INSERT INTO handshakes "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1,
        &ins, NULL), SQLITE_OK);
    for (i = 1; i <= 3; i++) {
        mtls_val_t v[24];
        memset(v, 0, sizeof(v));
        v[0].type = MTLS_V_INT;  v[0].i = i;
        v[1].type = MTLS_V_INT;  v[1].i = 1700000000000000LL + i;
        v[2].type = MTLS_V_TEXT; v[2].p = "old.example"; v[2].len = 11;
        v[10].type = MTLS_V_INT; v[10].i = MTLS_OUT_REJECTED;
        v[11].type = MTLS_V_INT; v[11].i = 0;
        v[12].type = MTLS_V_INT; v[12].i = MTLS_VM_REQUIRE;
        v[13].type = MTLS_V_INT; v[13].i = 23;
        CU_ASSERT_EQUAL(mtls_chain_hash(NULL, "handshakes", prev, v, 24, h),
                        0);
        for (k = 0; k < 24; k++) {
            if (v[k].type == MTLS_V_INT) {
                sqlite3_bind_int64(ins, k + 1, v[k].i);
            }
            else if (v[k].type == MTLS_V_TEXT) {
                sqlite3_bind_text(ins, k + 1, v[k].p, (int)v[k].len,
                                  SQLITE_STATIC);
            }
            else {
                sqlite3_bind_null(ins, k + 1);
            }
        }
        sqlite3_bind_blob(ins, 25, h, MTLS_HASH_LEN, SQLITE_STATIC);
        CU_ASSERT_EQUAL(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
        memcpy(prev, h, MTLS_HASH_LEN);
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 0);
    CU_ASSERT_EQUAL(res.rows, 3);

    /* A reader takes the schema-2 file as it is. */
    CU_ASSERT_EQUAL(mtls_store_open(path, MTLS_STORE_READONLY, 1000, &st,
                                    err, sizeof(err)), SQLITE_OK);
    mtls_store_close(st);

    /* A writer applies step 3; the old rows still verify. */
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 0);
    CU_ASSERT_EQUAL(res.rows, 3);
    items[0] = unit_handshake(NULL, MTLS_OUT_REJECTED);
    items[0]->u.hs.revocation_method = MTLS_REV_OCSP;
    items[0]->u.hs.revocation_status = MTLS_RS_UNREACHABLE;
    items[1] = unit_handshake(NULL, MTLS_OUT_ACCEPTED);
    CU_ASSERT_EQUAL(mtls_store_write(st, items, 2, err, sizeof(err)),
                    SQLITE_OK);
    mtls_item_free(items[0]);
    mtls_item_free(items[1]);
    mtls_store_close(st);
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 0);
    CU_ASSERT_EQUAL(res.rows, 5);
    sqlite3_open(path, &db);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM v_handshakes WHERE "
                          "id = 4 AND revocation_method = 'ocsp' AND "
                          "revocation_status = 'unreachable'"), 1);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM v_handshakes WHERE "
                          "revocation_method IS NULL AND revocation_status "
                          "IS NULL"), 4);
    sqlite3_close(db);

    /* The new columns are covered: of a new row, of an old row. */
    {
        static const struct { const char *set, *undo; int at; } t[] = {
            { "UPDATE handshakes SET revocation_status = 'revoked' WHERE "
              "id = 4", "UPDATE handshakes SET revocation_status = "
              "'unreachable' WHERE id = 4", 4 },
            { "UPDATE handshakes SET revocation_method = NULL WHERE id = 4",
              "UPDATE handshakes SET revocation_method = 'ocsp' WHERE "
              "id = 4", 4 },
            { "UPDATE handshakes SET revocation_status = 'good' WHERE "
              "id = 5", "UPDATE handshakes SET revocation_status = NULL "
              "WHERE id = 5", 5 },
            { "UPDATE handshakes SET revocation_method = 'crl' WHERE id = 2",
              "UPDATE handshakes SET revocation_method = NULL WHERE id = 2",
              2 },
        };
        for (i = 0; i < (int)(sizeof(t) / sizeof(t[0])); i++) {
            tamper(path, t[i].set);
            CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res),
                            SQLITE_OK);
            CU_ASSERT_EQUAL(res.bad_id, t[i].at);
            tamper(path, t[i].undo);
            CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res),
                            SQLITE_OK);
            CU_ASSERT_EQUAL(res.bad_id, 0);
        }
    }
}

static void test_key_file(void)
{
    char path[512];
    mtls_chain_key_t key;
    const char *err;
    FILE *f;

    snprintf(path, sizeof(path), "%s/short.key", unit_dir);
    f = fopen(path, "w");
    fputs("too short", f);
    fclose(f);
    CU_ASSERT_EQUAL(mtls_chain_key_load(path, &key, &err), -1);
    snprintf(path, sizeof(path), "%s/good.key", unit_dir);
    f = fopen(path, "w");
    fputs("0123456789abcdef0123456789abcdef", f);
    fclose(f);
    CU_ASSERT_EQUAL(mtls_chain_key_load(path, &key, &err), 0);
    CU_ASSERT_EQUAL(key.len, 32);
    mtls_chain_key_clear(&key);
    CU_ASSERT_PTR_NULL(key.key);
    CU_ASSERT_EQUAL(mtls_chain_key_load("/nonexistent/key", &key, &err), -1);
}

static void test_anchor_roundtrip(void)
{
    const char *path = unit_db("anchor");
    mtls_store_t *st = populate(path, NULL);
    mtls_anchor_t a, b;
    char line[1024], got_path[512];

    CU_ASSERT_EQUAL(mtls_anchor_read(mtls_store_db(st), &a), SQLITE_OK);
    CU_ASSERT_EQUAL(a.id[1], 3);            /* handshakes */
    CU_ASSERT_EQUAL(a.id[2], 2);            /* requests */
    mtls_anchor_format(path, &a, line, sizeof(line));
    CU_ASSERT_EQUAL(mtls_anchor_parse(line, got_path, sizeof(got_path), &b),
                    0);
    CU_ASSERT_STRING_EQUAL(got_path, path);
    CU_ASSERT_EQUAL(memcmp(&a, &b, sizeof(a)), 0);
    CU_ASSERT_EQUAL(mtls_anchor_parse("mtls_audit: nothing here", got_path,
                                      sizeof(got_path), &b), -1);
    mtls_store_close(st);
}


/* ---- the schema as the migrations make it (mtls_schema_check) ---- */

/* Run sql on path with a plain connection; returns the check of path's
 * schema afterwards (-1 on error), its message in why. */
static int altered(const char *path, const char *sql, char *why, size_t len)
{
    sqlite3 *db;
    int n = -1;

    sqlite3_open(path, &db);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    if (mtls_schema_check(db, "main", &n, why, len) != SQLITE_OK) {
        n = -1;
    }
    sqlite3_close(db);
    return n;
}

static void test_schema_check(void)
{
    const char *path;
    mtls_store_t *st;
    char why[1024], err[256];
    int n;
    sqlite3 *db;

    /* A file as the module writes it matches; so does one at an older
     * version (every migration up to it, no more). */
    path = unit_db("schema-ok");
    st = populate(path, NULL);
    CU_ASSERT_EQUAL(mtls_schema_check(mtls_store_db(st), "main", &n, why,
                                      sizeof(why)), SQLITE_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "objects as schema version"));
    mtls_store_close(st);
    path = unit_db("schema-v1");
    sqlite3_open(path, &db);
    CU_ASSERT_EQUAL(sqlite3_exec(db, mtls_migrations[0].sql, NULL, NULL,
                                 NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_schema_check(db, "main", &n, why, sizeof(why)),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(n, 0);
    sqlite3_close(db);
    if (MTLS_MIGRATION_COUNT > 1) {
        /* The next version's table in a file that says it is older. */
        CU_ASSERT_EQUAL(altered(path, mtls_migrations[1].sql, why,
                                sizeof(why)), 0);
        CU_ASSERT_EQUAL(altered(path, "PRAGMA user_version = 1", why,
                                sizeof(why)), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "table chain_cut foreign"));
    }

    /* The same view written otherwise (case, white space, comments)
     * means the same: not a finding.  Changed, it is. */
    path = unit_db("schema-view");
    mtls_store_close(populate(path, NULL));
    CU_ASSERT_EQUAL(altered(path, "DROP VIEW v_events; CREATE VIEW v_events "
        "AS   select ID, STRFTIME('%Y-%m-%dT%H:%M:%fZ', time_us / 1000000.0,"
        " 'unixepoch') as time_utc, /* a comment */ kind, pid, "
        "server_version, module_version, openssl_version, lost,\n"
        "strftime('%Y-%m-%dT%H:%M:%fZ', gap_start_us / 1000000.0, "
        "'unixepoch') AS gap_start, -- another\n strftime("
        "'%Y-%m-%dT%H:%M:%fZ', gap_end_us / 1000000.0, 'unixepoch') "
        "AS gap_end, detail FROM events", why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(altered(path, "DROP VIEW v_events; CREATE VIEW v_events "
        "AS SELECT id, strftime('%Y-%m-%dT%H:%M:%fZ', time_us / 1000000.0, "
        "'unixepoch') AS time_utc, kind, pid, server_version, module_version,"
        " openssl_version, lost, strftime('%Y-%m-%dT%H:%M:%fZ', gap_start_us"
        " / 1000000.0, 'unixepoch') AS gap_start, strftime('%Y-%m-%dT%H:%M:"
        "%fZ', gap_end_us / 1000000.0, 'unixepoch') AS gap_end, detail FROM "
        "events WHERE kind <> 'access'", why, sizeof(why)), 1);
    CU_ASSERT_STRING_EQUAL(why, "view v_events altered");
    /* Only the text inside quotes keeps its case. */
    path = unit_db("schema-quote");
    mtls_store_close(populate(path, NULL));
    CU_ASSERT_EQUAL(altered(path, "DROP VIEW v_events; CREATE VIEW v_events "
        "AS SELECT id, strftime('%Y-%m-%dT%H:%M:%FZ', time_us / 1000000.0, "
        "'unixepoch') AS time_utc, kind, pid, server_version, module_version,"
        " openssl_version, lost, strftime('%Y-%m-%dT%H:%M:%fZ', gap_start_us"
        " / 1000000.0, 'unixepoch') AS gap_start, strftime('%Y-%m-%dT%H:%M:"
        "%fZ', gap_end_us / 1000000.0, 'unixepoch') AS gap_end, detail FROM "
        "events", why, sizeof(why)), 1);

    /* Foreign, missing, altered, each named; SQLite's statistics too. */
    path = unit_db("schema-bad");
    mtls_store_close(populate(path, NULL));
    CU_ASSERT_EQUAL(altered(path, "CREATE TRIGGER t1 AFTER INSERT ON events "
                            "BEGIN SELECT 1; END", why, sizeof(why)), 1);
    CU_ASSERT_STRING_EQUAL(why, "trigger t1 foreign (on events)");
    CU_ASSERT_EQUAL(altered(path, "DROP INDEX requests_handshake", why,
                            sizeof(why)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "index requests_handshake missing"));
    CU_ASSERT_EQUAL(altered(path, "ALTER TABLE events ADD COLUMN x", why,
                            sizeof(why)), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "table events altered"));
    CU_ASSERT_EQUAL(altered(path, "ANALYZE", why, sizeof(why)), 4);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "table sqlite_stat1 foreign"));
    /* A view where a table was: altered, and what it was said. */
    path = unit_db("schema-swap");
    mtls_store_close(populate(path, NULL));
    CU_ASSERT_EQUAL(altered(path, "DROP TABLE chain_cut; CREATE VIEW "
                            "chain_cut AS SELECT 1", why, sizeof(why)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "view chain_cut altered (was a "
                                  "table)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "index sqlite_autoindex_chain_cut_1 "
                                  "missing"));
    (void)err;
}

/* The tool's views are the migrations', whatever the file's say; with
 * several files attached each reads its own. */
static void test_schema_temp_views(void)
{
    const char *p1 = strdup(unit_db("views-1")), *p2;
    mtls_store_t *st;
    char err[256], *sql;
    sqlite3 *db;

    mtls_store_close(populate(p1, NULL));
    p2 = strdup(unit_db("views-2"));
    mtls_store_close(populate(p2, NULL));
    sqlite3_open(p1, &db);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "DELETE FROM requests WHERE "
                                 "handshake_id = 2; DELETE FROM handshakes "
                                 "WHERE id = 2; "
                                 "DROP VIEW v_handshakes; CREATE VIEW "
                                 "v_handshakes AS SELECT 1 AS id, 'accepted' "
                                 "AS outcome", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    /* The store's connection: v_handshakes is TEMP's. */
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(p1, MTLS_STORE_READONLY, 1000, &st,
                                          err, sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT count(*) FROM "
                           "v_handshakes WHERE outcome = 'rejected'"), 1);
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "SELECT count(*) FROM "
                           "main.v_handshakes"), 1);   /* the file's lie */
    CU_ASSERT_EQUAL(scalar(mtls_store_db(st), "PRAGMA trusted_schema"), 0);
    CU_ASSERT_NOT_EQUAL(sqlite3_exec(mtls_store_db(st), "PRAGMA "
                                     "writable_schema = ON; UPDATE "
                                     "sqlite_master SET sql = 'x'", NULL,
                                     NULL, NULL), SQLITE_OK);
    mtls_store_close(st);
    /* Two files attached: dbI_v_handshakes reads file I. */
    sqlite3_open(":memory:", &db);
    CU_ASSERT_EQUAL(mtls_db_harden(db), SQLITE_OK);
    sql = sqlite3_mprintf("ATTACH %Q AS db0; ATTACH %Q AS db1", p1, p2);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    CU_ASSERT_EQUAL(mtls_schema_temp_views(db, "db0",
                                           mtls_schema_user_version(db, "db0"),
                                           "db0_", err,
                                           sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(mtls_schema_temp_views(db, "db1",
                                           mtls_schema_user_version(db, "db1"),
                                           "db1_", err,
                                           sizeof(err)), SQLITE_OK);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db0_v_handshakes"), 2);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db1_v_handshakes"), 3);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db1_v_handshakes "
                           "WHERE outcome = 'rejected' AND requests = 0 AND "
                           "cert_sha256 IS NOT NULL"), 1);
    CU_ASSERT_EQUAL(scalar(db, "SELECT sum(requests) FROM db0_v_handshakes"),
                    1);
    CU_ASSERT_EQUAL(scalar(db, "SELECT sum(requests) FROM db1_v_handshakes"),
                    2);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db0_v_requests"), 1);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db1_v_certificates"), 2);
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM db1_v_events"), 1);
    /* As many columns as the migrations' view. */
    CU_ASSERT_EQUAL(scalar(db, "SELECT count(*) FROM pragma_table_info("
                           "'db0_v_handshakes')"),
                    scalar(db, "SELECT count(*) FROM pragma_table_info("
                           "'v_handshakes', 'db1')"));
    sqlite3_close(db);
    free((void *)p1);
    free((void *)p2);
}


/* Ids are the file's: one below 1, or at the edge of 64 bits (a row or a
 * cut), is named, never an overflow. */
static void test_chain_forged_ids(void)
{
    const char *path = unit_db("chain-ids");
    mtls_chain_result_t res;

    mtls_store_close(populate(path, NULL));
    tamper(path, "UPDATE requests SET handshake_id = -7 WHERE "
                 "handshake_id = 3; UPDATE handshakes SET id = -7 WHERE "
                 "id = 3");
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, -7);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.why, "never writes"));
    path = unit_db("chain-ids-max");
    mtls_store_close(populate(path, NULL));
    tamper(path, "UPDATE handshakes SET id = 9223372036854775807 WHERE "
                 "id = 2");
    CU_ASSERT_EQUAL(verify(path, "handshakes", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 3);             /* after 1, 3: a jump */
    tamper(path, "INSERT INTO chain_cut VALUES ('requests', 'base', "
                 "9223372036854775807, zeroblob(32), 0, NULL)");
    CU_ASSERT_EQUAL(verify(path, "requests", NULL, &res), SQLITE_OK);
    CU_ASSERT_EQUAL(res.bad_id, 1);             /* "should be archived" */
}

void add_store_tests(void)
{
    CU_pSuite s = CU_add_suite("store", NULL, NULL);
    CU_add_test(s, "write, views, modes", test_write_and_views);
    CU_add_test(s, "reopen and read-only", test_reopen_and_readonly);
    CU_add_test(s, "presented chains: copied once, capped, stored",
                test_presented_chain);
    CU_add_test(s, "refuses foreign, altered, newer files",
                test_refuses_foreign_files);
    CU_add_test(s, "a commit into a file removed meanwhile is not stored",
                test_a_commit_into_a_removed_file_is_not_stored);
    CU_add_test(s, "rotation seals the file, writers follow the seal",
                test_rotation_seals_and_writers_follow);
    CU_add_test(s, "rotation: names and periods", test_rotation_names);
    CU_add_test(s, "a seal naming a file elsewhere is not followed",
                test_a_seal_elsewhere_is_not_followed);
    CU_add_test(s, "rotation: events escape the file names",
                test_rotation_events_escape_names);
    CU_add_test(s, "rotation: the hash of a file readers hold comes later",
                test_rotation_hash_waits_for_readers);
    CU_add_test(s, "rotation: a slow fill runs beside the writes",
                test_rotation_sealer_runs_beside_writes);
    CU_add_test(s, "a locked write rolls back cleanly",
                test_locked_write_rolls_back);
    CU_add_test(s, "multi-row INSERTs keep the statement journal in "
                "memory", test_statement_journal_in_memory);
    CU_add_test(s, "the schema is compared with the migrations'",
                test_schema_check);
    CU_add_test(s, "the tool reads the migrations' views, not the file's",
                test_schema_temp_views);
}

void add_chain_tests(void)
{
    CU_pSuite s = CU_add_suite("chain", NULL, NULL);
    CU_add_test(s, "an untouched database verifies", test_chain_holds);
    CU_add_test(s, "rows go in by 16, 4 and 1, in chain order",
                test_rows_in_groups);
    CU_add_test(s, "change, delete, insert, reorder, truncate are found",
                test_chain_detects_tampering);
    CU_add_test(s, "HMAC key", test_chain_with_key);
    CU_add_test(s, "ids below 1 or at the edge of 64 bits are named",
                test_chain_forged_ids);
    CU_add_test(s, "encoding separates fields, types, tables",
                test_chain_hash_encoding);
    CU_add_test(s, "key file", test_key_file);
    CU_add_test(s, "schema 3 keeps rows of schema 2 verifying, covers its "
                "columns", test_migration_keeps_old_rows_verifying);
    CU_add_test(s, "anchors: format and parse",
                test_anchor_roundtrip);
}
