/*
 * mtls_cert.c -- certificate to text, for the store and the tool.
 *
 * Every function here takes whatever a client sent: names may hold any
 * bytes, a SAN list may be long, dates may be absurd.  Nothing is trusted;
 * text is built in memory BIOs and copied out whole, never truncated into
 * fixed buffers except the short, OpenSSL-named fields (key type, sig alg).
 */
#include "mtls_cert.h"
#include "mtls_core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

/* Take the contents of a memory BIO as a malloc'd string and free the BIO. */
static char *bio_take(BIO *bio)
{
    char *data, *out;
    long len;

    len = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)len + 1);
    if (out) {
        if (len > 0 && data) {          /* an empty BIO has no data at all */
            memcpy(out, data, (size_t)len);
        }
        else {
            len = 0;
        }
        out[len] = '\0';
    }
    BIO_free(bio);
    return out;
}

void mtls_hex(const unsigned char *in, apr_size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    apr_size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
}

char *mtls_name_rfc2253(const X509_NAME *name)
{
    BIO *bio;

    if (!name || !(bio = BIO_new(BIO_s_mem()))) {
        return NULL;
    }
    /* mod_ssl's SSL_CLIENT_S_DN: RFC 2253, UTF-8 left as UTF-8. */
    if (X509_NAME_print_ex(bio, name, 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
        BIO_free(bio);
        return NULL;
    }
    return bio_take(bio);
}

apr_int64_t mtls_asn1_time_epoch(const ASN1_TIME *t)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (!t || !ASN1_TIME_to_tm(t, &tm)) {
        return 0;
    }
    return (apr_int64_t)timegm(&tm);
}

static char *serial_hex(const X509 *x)
{
    const ASN1_INTEGER *ai = X509_get0_serialNumber(x);
    BIGNUM *bn;
    char *hex, *out = NULL;

    if (!ai || !(bn = ASN1_INTEGER_to_BN(ai, NULL))) {
        return NULL;
    }
    hex = BN_bn2hex(bn);        /* upper case, as mod_ssl's M_SERIAL */
    if (hex) {
        out = strdup(hex);
        OPENSSL_free(hex);
    }
    BN_free(bn);
    return out;
}

static void print_ip(BIO *bio, const ASN1_OCTET_STRING *ip)
{
    const unsigned char *p = ASN1_STRING_get0_data(ip);
    int len = ASN1_STRING_length(ip), i;

    if (len == 4) {
        BIO_printf(bio, "%d.%d.%d.%d", p[0], p[1], p[2], p[3]);
    }
    else if (len == 16) {
        for (i = 0; i < 16; i += 2) {
            BIO_printf(bio, "%s%X", i ? ":" : "", (p[i] << 8) | p[i + 1]);
        }
    }
    else {
        BIO_puts(bio, "<invalid>");
    }
}

static void print_ia5(BIO *bio, const ASN1_STRING *s)
{
    BIO_write(bio, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
}

/* "DNS:a, DNS:b, IP:1.2.3.4, email:x, URI:u, DirName:..., othername" */
static char *san_text(X509 *x)
{
    GENERAL_NAMES *names;
    BIO *bio;
    int i, n;

    names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!names) {
        return NULL;
    }
    if (!(bio = BIO_new(BIO_s_mem()))) {
        GENERAL_NAMES_free(names);
        return NULL;
    }
    n = sk_GENERAL_NAME_num(names);
    for (i = 0; i < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char *dn;

        if (i) {
            BIO_puts(bio, ", ");
        }
        switch (g->type) {
        case GEN_DNS:
            BIO_puts(bio, "DNS:");
            print_ia5(bio, g->d.dNSName);
            break;
        case GEN_EMAIL:
            BIO_puts(bio, "email:");
            print_ia5(bio, g->d.rfc822Name);
            break;
        case GEN_URI:
            BIO_puts(bio, "URI:");
            print_ia5(bio, g->d.uniformResourceIdentifier);
            break;
        case GEN_IPADD:
            BIO_puts(bio, "IP:");
            print_ip(bio, g->d.iPAddress);
            break;
        case GEN_DIRNAME:
            dn = mtls_name_rfc2253(g->d.directoryName);
            BIO_printf(bio, "DirName:%s", dn ? dn : "");
            free(dn);
            break;
        case GEN_RID:
            BIO_puts(bio, "RID:");
            i2a_ASN1_OBJECT(bio, g->d.registeredID);
            break;
        default:
            BIO_puts(bio, "othername:<unsupported>");
            break;
        }
    }
    GENERAL_NAMES_free(names);
    return bio_take(bio);
}

static void key_info(X509 *x, mtls_cert_info_t *out)
{
    EVP_PKEY *pk = X509_get0_pubkey(x);
    const char *type;

    if (!pk) {
        return;
    }
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:     type = "RSA"; break;
    case EVP_PKEY_RSA_PSS: type = "RSA-PSS"; break;
    case EVP_PKEY_EC:      type = "EC"; break;
    case EVP_PKEY_ED25519: type = "ED25519"; break;
    case EVP_PKEY_ED448:   type = "ED448"; break;
    case EVP_PKEY_DSA:     type = "DSA"; break;
    default:               type = "other"; break;
    }
    mtls_strlcpy(out->key_type, type, sizeof(out->key_type));
    out->key_bits = EVP_PKEY_get_bits(pk);
}

static void sig_alg(X509 *x, mtls_cert_info_t *out)
{
    int nid = X509_get_signature_nid(x);
    const X509_ALGOR *alg;
    const ASN1_OBJECT *obj;

    if (nid != NID_undef) {
        mtls_strlcpy(out->sig_alg, OBJ_nid2ln(nid), sizeof(out->sig_alg));
        return;
    }
    X509_get0_signature(NULL, &alg, x);
    if (alg) {
        X509_ALGOR_get0(&obj, NULL, NULL, alg);
        OBJ_obj2txt(out->sig_alg, sizeof(out->sig_alg), obj, 1);
    }
}

int mtls_cert_info(X509 *x, mtls_cert_info_t *out)
{
    unsigned char *der = NULL;
    int len;

    memset(out, 0, sizeof(*out));
    if (!x || (len = i2d_X509(x, &der)) <= 0) {
        return -1;
    }
    out->der = malloc((size_t)len);
    if (!out->der) {
        OPENSSL_free(der);
        return -1;
    }
    memcpy(out->der, der, (size_t)len);
    out->der_len = len;
    OPENSSL_free(der);

    if (!EVP_Digest(out->der, (size_t)len, out->sha256, NULL, EVP_sha256(),
                    NULL)) {
        mtls_cert_info_clear(out);
        return -1;
    }
    mtls_hex(out->sha256, 32, out->sha256_hex);
    out->subject_dn = mtls_name_rfc2253(X509_get_subject_name(x));
    out->issuer_dn = mtls_name_rfc2253(X509_get_issuer_name(x));
    out->serial = serial_hex(x);
    out->san = san_text(x);
    out->not_before = mtls_asn1_time_epoch(X509_get0_notBefore(x));
    out->not_after = mtls_asn1_time_epoch(X509_get0_notAfter(x));
    key_info(x, out);
    sig_alg(x, out);
    return 0;
}

int mtls_cert_info_der(const unsigned char *der, long len,
                       mtls_cert_info_t *out)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, len);
    int rv;

    memset(out, 0, sizeof(*out));
    if (!x) {
        return -1;
    }
    rv = mtls_cert_info(x, out);
    X509_free(x);
    return rv;
}

void mtls_cert_info_clear(mtls_cert_info_t *info)
{
    free(info->subject_dn);
    free(info->issuer_dn);
    free(info->serial);
    free(info->san);
    free(info->der);
    memset(info, 0, sizeof(*info));
}
