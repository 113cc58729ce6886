/*
 * The policy of an SSL_CTX as JSON, its digest, and the short and changed
 * forms against the rows already stored (mtls_policy.h), on a CTX built
 * here and a real database.
 */
#include <CUnit/CUnit.h>
#include <string.h>

#include <openssl/ssl.h>

#include "unit.h"
#include "mtls_policy.h"

static const char *const subj_ca1[] = { "CN", "Unit CA one", NULL };
static const char *const subj_ca2[] = { "CN", "Unit CA two", NULL };

static SSL_CTX *ctx_with(X509 *ca, X509 *ca2)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);

    CU_ASSERT_FATAL(ctx != NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER
                       | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    X509_STORE_add_cert(st, ca);
    if (ca2) X509_STORE_add_cert(st, ca2);
    return ctx;
}

/* One value of the JSON text j, by SQLite's json_extract. */
static char *jget(sqlite3 *db, const char *j, const char *path)
{
    sqlite3_stmt *s;
    char *out = NULL;

    if (sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &s, NULL)
        != SQLITE_OK) {
        return NULL;
    }
    sqlite3_bind_text(s, 1, j, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0)) {
        out = sqlite3_mprintf("%s", sqlite3_column_text(s, 0));
    }
    sqlite3_finalize(s);
    return out;
}

static int jis(sqlite3 *db, const char *j, const char *path, const char *want)
{
    char *v = jget(db, j, path);
    int ok = v && !strcmp(v, want);
    if (!ok) fprintf(stderr, "\n%s: %s, want %s\n", path, v ? v : "NULL",
                     want);
    sqlite3_free(v);
    return ok;
}

static apr_int64_t store_event(mtls_store_t *st, const char *detail)
{
    mtls_item_t *it = mtls_item_new(MTLS_ITEM_EVENT);
    apr_int64_t first = 0, last = 0;
    char err[256];

    it->u.ev.time_us = mtls_now_us();
    strcpy(it->u.ev.kind, "policy");
    it->u.ev.detail = strdup(detail);
    CU_ASSERT_EQUAL(mtls_store_write(st, &it, 1, err, sizeof(err)),
                    SQLITE_OK);
    mtls_item_free(it);
    mtls_store_written(st, 2, &first, &last);
    return last;
}

static void test_forms(void)
{
    X509 *ca1 = unit_cert(subj_ca1, "ec", 11, "20200101000000Z",
                          "20400101000000Z", NULL, NULL);
    X509 *ca2 = unit_cert(subj_ca2, "rsa", 12, "20200101000000Z",
                          "20400101000000Z", NULL, NULL);
    mtls_cert_info_t i1;
    /* A hostile name: the text that separates the keys, inside a string. */
    mtls_policy_conf_t pc = {
        "evil\",\"verify\":{\"config\":\"x", "[\"127.0.0.1:443\"]",
        "/etc/x.conf:3", "require", 1, "[]", 0, NULL, 0, "shmcb", NULL, 0
    };
    SSL_CTX *a = ctx_with(ca1, NULL), *b = ctx_with(ca1, ca2);
    char *c1 = mtls_policy_canonical(a, &pc), *c2;
    char *d1 = NULL, *d2 = NULL, *d3 = NULL, *d4 = NULL, err[256];
    const char *path = unit_db("policy");
    mtls_store_t *st;
    sqlite3 *db;
    apr_int64_t id1, id2;

    CU_ASSERT_FATAL(c1 != NULL);
    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(ca1, &i1), 0);
    CU_ASSERT_EQUAL_FATAL(mtls_store_open(path, 0, 1000, &st, err,
                                          sizeof(err)), SQLITE_OK);
    db = mtls_store_db(st);
    CU_ASSERT(jis(db, c1, "$.vhost", pc.vhost));
    CU_ASSERT(jis(db, c1, "$.cas[0].sha256", i1.sha256_hex));
    CU_ASSERT(jis(db, c1, "$.cas[0].key_type", "EC"));
    CU_ASSERT(jis(db, c1, "$.verify.mode", "require"));
    CU_ASSERT(jis(db, c1, "$.protocols.configured",
                  "[\"TLSv1.2\",\"TLSv1.3\"]"));
    CU_ASSERT(jis(db, c1, "$.revocation.crl_check", "none"));
    CU_ASSERT(jis(db, c1, "$.ciphers.tls13[0]", "TLS_AES_256_GCM_SHA384"));

    /* First: the full form, its digest, nothing changed. */
    CU_ASSERT_EQUAL_FATAL(mtls_policy_detail(db, c1, &d1, err, sizeof(err)),
                          SQLITE_OK);
    CU_ASSERT(jis(db, d1, "$.vhost", pc.vhost));
    CU_ASSERT(jis(db, d1, "$.verify.mode", "require"));
    CU_ASSERT_PTR_NULL(strstr(d1, "\"changed\":"));
    CU_ASSERT_PTR_NULL(strstr(d1, "\"previous\":"));
    /* A row that is not JSON is passed over. */
    store_event(st, "{not json");
    id1 = store_event(st, d1);

    /* The same again: the short form naming the full row. */
    CU_ASSERT_EQUAL(mtls_policy_detail(db, c1, &d2, err, sizeof(err)),
                    SQLITE_OK);
    {
        char *dg = jget(db, d1, "$.digest");
        char *want = sqlite3_mprintf("{\"vhost\":\"evil\\\",\\\"verify\\\":"
                                     "{\\\"config\\\":\\\"x\","
                                     "\"addresses\":[\"127.0.0.1:443\"],"
                                     "\"digest\":\"%s\","
                                     "\"unchanged_since\":%lld}", dg,
                                     (long long)id1);
        CU_ASSERT_STRING_EQUAL(d2, want);
        sqlite3_free(dg);
        sqlite3_free(want);
    }
    id2 = store_event(st, d2);
    CU_ASSERT(id2 > id1);

    /* A CA added: changed ["cas"], previous the full row (not the short
     * one after it). */
    c2 = mtls_policy_canonical(b, &pc);
    CU_ASSERT_EQUAL(mtls_policy_detail(db, c2, &d3, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT(jis(db, d3, "$.changed", "[\"cas\"]"));
    {
        char *prev = sqlite3_mprintf("%lld", (long long)id1);
        CU_ASSERT(jis(db, d3, "$.previous", prev));
        sqlite3_free(prev);
    }
    CU_ASSERT(jis(db, d3, "$.cas[1].key_type", "RSA"));
    store_event(st, d3);

    /* Another vhost of the same name on other addresses: its own row. */
    pc.addresses = "[\"127.0.0.1:8443\"]";
    sqlite3_free(c1);
    c1 = mtls_policy_canonical(a, &pc);
    CU_ASSERT_EQUAL(mtls_policy_detail(db, c1, &d4, err, sizeof(err)),
                    SQLITE_OK);
    CU_ASSERT_PTR_NULL(strstr(d4, "\"changed\":"));
    CU_ASSERT_PTR_NULL(strstr(d4, "\"unchanged_since\":"));

    sqlite3_free(c1);
    sqlite3_free(c2);
    sqlite3_free(d1);
    sqlite3_free(d2);
    sqlite3_free(d3);
    sqlite3_free(d4);
    mtls_cert_info_clear(&i1);
    mtls_store_close(st);
    SSL_CTX_free(a);
    SSL_CTX_free(b);
    X509_free(ca1);
    X509_free(ca2);
}

void add_policy_tests(void)
{
    CU_pSuite s = CU_add_suite("policy", NULL, NULL);
    CU_add_test(s, "policy: full, short and changed forms", test_forms);
}
