/* Certificates to text: fingerprint, RFC 2253 names, serial, SAN, key,
 * signature algorithm, validity. */
#include <CUnit/CUnit.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "unit.h"

X509 *unit_cert(const char *const *subject, const char *key_kind,
                long serial, const char *not_before, const char *not_after,
                const char *sans, EVP_PKEY **key_out)
{
    EVP_PKEY *key;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    int i;

    if (!strcmp(key_kind, "rsa")) {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    }
    else {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    for (i = 0; subject[i]; i += 2) {
        X509_NAME_add_entry_by_txt(name, subject[i], MBSTRING_UTF8,
                                   (const unsigned char *)subject[i + 1], -1,
                                   -1, 0);
    }
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, name);
    X509_NAME_free(name);
    ASN1_TIME_set_string(X509_getm_notBefore(x), not_before);
    ASN1_TIME_set_string(X509_getm_notAfter(x), not_after);
    X509_set_pubkey(x, key);
    if (sans) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL,
                                                  NID_subject_alt_name,
                                                  sans);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    X509_sign(x, key, EVP_sha256());
    if (key_out) {
        *key_out = key;
    }
    else {
        EVP_PKEY_free(key);
    }
    return x;
}

static const char *const plain_subject[] = {
    "O", "Example", "CN", "client-1", NULL
};

static void test_fingerprint_and_fields(void)
{
    X509 *x = unit_cert(plain_subject, "ec", 0x1A2B3CL, "20200101000000Z",
                        "20300101120000Z", NULL, NULL);
    unsigned char md[32];
    unsigned int mdlen;
    char hex[65];
    mtls_cert_info_t ci;

    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(x, &ci), 0);
    X509_digest(x, EVP_sha256(), md, &mdlen);
    mtls_hex(md, mdlen, hex);
    CU_ASSERT_STRING_EQUAL(ci.sha256_hex, hex);
    CU_ASSERT_STRING_EQUAL(ci.subject_dn, "CN=client-1,O=Example");
    CU_ASSERT_STRING_EQUAL(ci.issuer_dn, "CN=client-1,O=Example");
    CU_ASSERT_STRING_EQUAL(ci.serial, "1A2B3C");
    CU_ASSERT_EQUAL(ci.not_before, 1577836800);     /* 2020-01-01T00:00Z */
    CU_ASSERT_EQUAL(ci.not_after, 1893499200);      /* 2030-01-01T12:00Z */
    CU_ASSERT_STRING_EQUAL(ci.key_type, "EC");
    CU_ASSERT_EQUAL(ci.key_bits, 256);
    CU_ASSERT_STRING_EQUAL(ci.sig_alg, "ecdsa-with-SHA256");
    CU_ASSERT_PTR_NULL(ci.san);
    CU_ASSERT(ci.der_len > 100);
    mtls_cert_info_clear(&ci);
    X509_free(x);
}

static void test_rsa_key(void)
{
    X509 *x = unit_cert(plain_subject, "rsa", 7, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    mtls_cert_info_t ci;

    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(x, &ci), 0);
    CU_ASSERT_STRING_EQUAL(ci.key_type, "RSA");
    CU_ASSERT_EQUAL(ci.key_bits, 2048);
    CU_ASSERT_STRING_EQUAL(ci.sig_alg, "sha256WithRSAEncryption");
    CU_ASSERT_STRING_EQUAL(ci.serial, "07");
    mtls_cert_info_clear(&ci);
    X509_free(x);
}

static void test_hostile_names(void)
{
    static const char *const subject[] = {
        "O", "Zo\xc3\xab & S\xc3\xb8ren \xe6\x97\xa5\xe6\x9c\xac",
        "CN", "<script>\"x\"</script>;,+= 'q'", NULL
    };
    X509 *x = unit_cert(subject, "ec", 1, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    mtls_cert_info_t ci;

    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(x, &ci), 0);
    /* RFC 2253: specials escaped ("=" needs none), UTF-8 kept, as mod_ssl
     * shows it. */
    CU_ASSERT_STRING_EQUAL(ci.subject_dn,
        "CN=\\<script\\>\\\"x\\\"\\</script\\>\\;\\,\\+= 'q',"
        "O=Zo\xc3\xab & S\xc3\xb8ren \xe6\x97\xa5\xe6\x9c\xac");
    mtls_cert_info_clear(&ci);
    X509_free(x);
}

static void test_san_list(void)
{
    char sans[4096] = "";
    mtls_cert_info_t ci;
    X509 *x;
    int i;

    for (i = 0; i < 110; i++) {
        char one[64];
        snprintf(one, sizeof(one), "%sDNS:h%d.example", i ? "," : "", i);
        strcat(sans, one);
    }
    strcat(sans, ",IP:192.0.2.7,IP:2001:db8::1,email:a@b.example,"
                 "URI:https://x.example/p");
    x = unit_cert(plain_subject, "ec", 2, "20200101000000Z",
                  "20300101000000Z", sans, NULL);
    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(x, &ci), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ci.san);
    CU_ASSERT(strncmp(ci.san, "DNS:h0.example, DNS:h1.example, ", 32) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ci.san, "DNS:h109.example, IP:192.0.2.7, "
                                  "IP:2001:DB8:0:0:0:0:0:1, "
                                  "email:a@b.example, "
                                  "URI:https://x.example/p"));
    mtls_cert_info_clear(&ci);
    X509_free(x);
}

static void test_der_roundtrip_and_garbage(void)
{
    X509 *x = unit_cert(plain_subject, "ec", 3, "20200101000000Z",
                        "20300101000000Z", NULL, NULL);
    mtls_cert_info_t a, b;
    unsigned char junk[64];

    CU_ASSERT_EQUAL_FATAL(mtls_cert_info(x, &a), 0);
    CU_ASSERT_EQUAL_FATAL(mtls_cert_info_der(a.der, a.der_len, &b), 0);
    CU_ASSERT_STRING_EQUAL(a.sha256_hex, b.sha256_hex);
    CU_ASSERT_STRING_EQUAL(a.subject_dn, b.subject_dn);
    memset(junk, 0x30, sizeof(junk));
    mtls_cert_info_clear(&b);
    CU_ASSERT_EQUAL(mtls_cert_info_der(junk, sizeof(junk), &b), -1);
    CU_ASSERT_EQUAL(mtls_cert_info_der(a.der, a.der_len / 2, &b), -1);
    CU_ASSERT_EQUAL(mtls_cert_info(NULL, &b), -1);
    mtls_cert_info_clear(&a);
    X509_free(x);
}

static void test_names_of_codes(void)
{
    CU_ASSERT_STRING_EQUAL(mtls_alert_name(116), "certificate_required");
    CU_ASSERT_STRING_EQUAL(mtls_alert_name(48), "unknown_ca");
    CU_ASSERT_PTR_NULL(mtls_alert_name(255));
    CU_ASSERT_STRING_EQUAL(mtls_tls_version_name(0x0304), "TLSv1.3");
    CU_ASSERT_PTR_NULL(mtls_tls_version_name(0x10000));
    CU_ASSERT_STRING_EQUAL(mtls_outcome_name(MTLS_OUT_NO_CERT),
                           "no_certificate");
    CU_ASSERT_STRING_EQUAL(mtls_verify_mode_name(MTLS_VM_OPTIONAL_NO_CA),
                           "optional_no_ca");
}

static void test_times(void)
{
    ASN1_TIME *t = ASN1_TIME_new();
    apr_int64_t a, b;

    ASN1_TIME_set_string(t, "19991231235959Z");
    CU_ASSERT_EQUAL(mtls_asn1_time_epoch(t), 946684799);
    ASN1_TIME_set_string(t, "20500101000000Z");     /* GeneralizedTime */
    CU_ASSERT_EQUAL(mtls_asn1_time_epoch(t), 2524608000LL);
    CU_ASSERT_EQUAL(mtls_asn1_time_epoch(NULL), 0);
    ASN1_TIME_free(t);
    a = mtls_mono_us();
    b = mtls_mono_us();
    CU_ASSERT(b >= a);
    CU_ASSERT(mtls_now_us() > 1700000000LL * 1000000);
}

void add_cert_tests(void)
{
    CU_pSuite s = CU_add_suite("cert", NULL, NULL);
    CU_add_test(s, "fingerprint and fields", test_fingerprint_and_fields);
    CU_add_test(s, "RSA key", test_rsa_key);
    CU_add_test(s, "hostile names as RFC 2253", test_hostile_names);
    CU_add_test(s, "110 SANs of four kinds", test_san_list);
    CU_add_test(s, "DER round trip, garbage refused",
                test_der_roundtrip_and_garbage);
    CU_add_test(s, "names of stored codes", test_names_of_codes);
    CU_add_test(s, "times", test_times);
}
