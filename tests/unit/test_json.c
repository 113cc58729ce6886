/*
 * Unit tests of the renderings (mtls_json.c): native, ECS and OCSF lines of
 * rows given by real SQLite statements whose columns are named as the
 * views' are (the renderings find the columns by name).
 */
#include <CUnit/Basic.h>
#include <string.h>

#include "mtls_json.h"
#include "unit.h"

/* The line format renders for the one row of sql (view v); sqlite3_free
 * it. */
static char *render(const char *sql, int format, int v)
{
    sqlite3 *db;
    sqlite3_stmt *stmt;
    sqlite3_str *out;
    char *line = NULL;

    CU_ASSERT_FATAL(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
                    == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_step(stmt) == SQLITE_ROW);
    out = sqlite3_str_new(db);
    mtls_json_doc(out, stmt, format, v, "/var/lib/a.db");
    line = sqlite3_str_finish(out);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return line;
}

static int starts(const char *s, const char *prefix)
{
    return s && !strncmp(s, prefix, strlen(prefix));
}

#define HANDSHAKE(outcome, cert, san) \
    "SELECT 7 AS id, '2026-11-28T10:00:00.123Z' AS time_utc, " \
    "'api.example' AS server_name, 'api.example' AS sni, " \
    "'192.0.2.1' AS client_addr, 40000 AS client_port, 443 AS local_port, " \
    "'TLSv1.2' AS tls_version, 'ECDHE-ECDSA-AES128-GCM-SHA256' AS cipher, " \
    "1 AS resumed, '" outcome "' AS outcome, 'initial' AS kind, " \
    "'require' AS verify_mode, NULL AS verify_result, NULL AS verify_error, " \
    "NULL AS verify_depth, NULL AS alert, NULL AS alert_name, " \
    "NULL AS alert_received, " cert " AS cert_sha256, " \
    "'CN=a \"b\", O=<x>' AS subject_dn, 'CN=ca' AS issuer_dn, " \
    "'0A' AS serial, '2025-01-01T00:00:00Z' AS not_before, " \
    "'2000-02-29T23:59:59Z' AS not_after, " san " AS san, " \
    "'EC' AS key_type, 256 AS key_bits, 'ecdsa-with-SHA256' AS sig_alg, " \
    "2 AS chain_length, 'aa bb' AS chain_sha256, 1500 AS handshake_us, " \
    "80 AS verify_us, 0 AS requests, 99 AS pid, " \
    "'ocsp' AS revocation_method, 'good' AS revocation_status"

static void test_formats_by_name(void)
{
    CU_ASSERT_EQUAL(mtls_json_format("native"), MTLS_JSON_NATIVE);
    CU_ASSERT_EQUAL(mtls_json_format("ecs"), MTLS_JSON_ECS);
    CU_ASSERT_EQUAL(mtls_json_format("ocsf"), MTLS_JSON_OCSF);
    CU_ASSERT_EQUAL(mtls_json_format("xml"), -1);
    CU_ASSERT_EQUAL(mtls_json_format("ECS"), -1);
    CU_ASSERT_EQUAL(mtls_json_format(NULL), -1);
}

static void test_ecs_handshake_nests_and_maps(void)
{
    char *l = render(HANDSHAKE("accepted", "'ab12'",
                               "'DNS:a.example, IP:192.0.2.9'"),
                     MTLS_JSON_ECS, 0);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT(starts(l, "{\"@timestamp\":\"2026-11-28T10:00:00.123Z\","
                       "\"destination\":{\"domain\":\"api.example\","
                       "\"port\":443},\"ecs\":{\"version\":\"9.4.0\"},"
                       "\"event\":{"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"category\":[\"authentication\","
                                  "\"network\"]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"outcome\":\"success\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"duration\":1500000,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"tls\":{\"cipher\":\"ECDHE-ECDSA-"
                                  "AES128-GCM-SHA256\",\"client\":{\"hash\":"
                                  "{\"sha256\":\"ab12\"},"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"alternative_names\":[\"a.example\","
                                  "\"192.0.2.9\"]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"subject\":{\"distinguished_name\":"
                                  "\"CN=a \\\"b\\\", O=\\u003cx\\u003e\"}}},"
                                  "\"established\":true,\"resumed\":true,"
                                  "\"version\":\"1.2\",\"version_protocol\":"
                                  "\"tls\"}}\n"));
    /* our own columns, under one namespace, NULLs left out */
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"mtls_audit\":{\"id\":7,\"outcome\":"
                                  "\"accepted\",\"kind\":\"initial\","
                                  "\"verify_mode\":\"require\","
                                  "\"chain_length\":2,\"chain_sha256\":"
                                  "[\"aa\",\"bb\"],\"verify_us\":80,"
                                  "\"requests\":0,\"revocation_method\":"
                                  "\"ocsp\",\"revocation_status\":\"good\","
                                  "\"type\":\"handshake\",\"source\":"
                                  "\"/var/lib/a.db\"},"));
    CU_ASSERT_PTR_NULL(strstr(l, "null"));
    CU_ASSERT_PTR_NULL(strstr(l, "verify_result"));
    sqlite3_free(l);
}

static void test_ocsf_handshake_without_certificate(void)
{
    char *l = render(HANDSHAKE("no_certificate", "NULL", "NULL"),
                     MTLS_JSON_OCSF, 0);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT(starts(l, "{\"activity_id\":1,\"activity_name\":\"Logon\","
                       "\"category_name\":\"Identity \\u0026 Access "
                       "Management\",\"category_uid\":3,\"class_name\":"
                       "\"Authentication\",\"class_uid\":3002,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"time\":1795860000123,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"type_uid\":300201,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"status\":\"Failure\",\"status_code\":"
                                  "\"no_certificate\",\"status_id\":2,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"user\":{\"name\":\"unknown\","
                                  "\"type\":\"Unknown\",\"type_id\":0}}\n"));
    /* what OCSF has no attribute for, under our own name */
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"resumed\":1,\"key_type\":\"EC\","
                                  "\"key_bits\":256,\"sig_alg\":"
                                  "\"ecdsa-with-SHA256\",\"pid\":99,"));
    /* no certificate: no certificate object at all */
    CU_ASSERT_PTR_NULL(strstr(l, "\"certificate\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"unmapped\":{\"mtls_audit\":{"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"tls\":{\"cipher\":\"ECDHE-ECDSA-"
                                  "AES128-GCM-SHA256\",\"handshake_dur\":1,"
                                  "\"sni\":\"api.example\",\"version\":"
                                  "\"1.2\"}}"));
    sqlite3_free(l);
}

static void test_ocsf_certificate_times_and_sans(void)
{
    char *l = render(HANDSHAKE("accepted", "'ab12'",
                               "'DNS:a.example, URI:u:x'"),
                     MTLS_JSON_OCSF, 0);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"certificate\":{\"created_time\":"
                                  "1735689600000,\"expiration_time\":"
                                  "951868799000,\"fingerprints\":[{"
                                  "\"algorithm\":\"SHA-256\",\"algorithm_id\""
                                  ":3,\"value\":\"ab12\"}],\"issuer\":"
                                  "\"CN=ca\",\"sans\":[{\"name\":"
                                  "\"a.example\",\"type\":\"DNS\"},{\"name\":"
                                  "\"u:x\",\"type\":\"URI\"}],"
                                  "\"serial_number\":\"0A\","));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"user\":{\"name\":"));
    sqlite3_free(l);
}

static void test_requests_and_events(void)
{
    static const char req[] =
        "SELECT 3 AS id, 7 AS handshake_id, '1970-01-01T00:00:00.5Z' AS "
        "time_utc, '%s' AS method, '/x' AS path, %d AS status, 10 AS "
        "bytes_sent, 2500 AS duration_us, %s AS cert_sha256, 'CN=a' AS "
        "subject_dn";
    char sql[400], *l;

    snprintf(sql, sizeof(sql), req, "POST", 403, "'ab'");
    l = render(sql, MTLS_JSON_OCSF, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT(starts(l, "{\"activity_id\":6,\"activity_name\":\"Post\","));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"time\":500,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"type_uid\":400206,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"actor\":{\"user\":{\"name\":\"CN=a\","
                                  "\"uid\":\"ab\"}},\"duration\":2,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"http_response\":{\"code\":403,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"profiles\":[\"host\"]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"status_id\":2,"));
    sqlite3_free(l);

    /* a method OCSF has no activity for: Other, and no http_method */
    snprintf(sql, sizeof(sql), req, "PROPFIND", 207, "NULL");
    l = render(sql, MTLS_JSON_OCSF, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT(starts(l, "{\"activity_id\":99,\"activity_name\":\"Other\","));
    CU_ASSERT_PTR_NULL(strstr(l, "http_method"));
    CU_ASSERT_PTR_NULL(strstr(l, "actor"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"method\":\"PROPFIND\"}}}\n"));
    sqlite3_free(l);

    snprintf(sql, sizeof(sql), req, "GET", 200, "'ab'");
    l = render(sql, MTLS_JSON_ECS, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"http\":{\"request\":{\"method\":"
                                  "\"GET\"},\"response\":{\"bytes\":10,"
                                  "\"status_code\":200}}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"url\":{\"path\":\"/x\"}}\n"));
    sqlite3_free(l);

    l = render("SELECT 4 AS id, '2026-11-28T10:00:00.000Z' AS time_utc, "
               "'gap' AS kind, 12 AS pid, NULL AS server_version, NULL AS "
               "module_version, NULL AS openssl_version, 5 AS lost, "
               "'2026-11-28T09:00:00.000Z' AS gap_start, "
               "'2026-11-28T09:30:00.000Z' AS gap_end, 'queue full' AS "
               "detail", MTLS_JSON_OCSF, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT(starts(l, "{\"activity_id\":99,\"activity_name\":\"gap\","
                       "\"category_name\":\"Uncategorized\",\"category_uid\""
                       ":0,\"class_name\":\"Base Event\",\"class_uid\":0,"
                       "\"severity\":\"Medium\",\"severity_id\":3,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, "\"end_time\":1795858200000,"
                                  "\"message\":\"queue full\","));
    sqlite3_free(l);
}

void add_json_tests(void)
{
    CU_pSuite s = CU_add_suite("json", NULL, NULL);
    CU_add_test(s, "formats by name", test_formats_by_name);
    CU_add_test(s, "ECS handshake: nested, mapped, NULLs left out",
                test_ecs_handshake_nests_and_maps);
    CU_add_test(s, "OCSF handshake without a certificate",
                test_ocsf_handshake_without_certificate);
    CU_add_test(s, "OCSF certificate: times in ms, SANs as objects",
                test_ocsf_certificate_times_and_sans);
    CU_add_test(s, "requests and events in ECS and OCSF",
                test_requests_and_events);
}
