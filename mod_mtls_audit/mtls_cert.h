/*
 * mtls_cert.h -- turn an X.509 certificate into the text we store.
 *
 * DESIGN
 * Everything here is a pure function of the certificate's DER, so the
 * writer can run it off the handshake path and the tool (and the fuzzer)
 * can run it on any bytes.  The formats are those of mod_ssl, so a row can
 * be compared with what mod_ssl puts in SSL_CLIENT_S_DN and friends:
 * subject and issuer as RFC 2253 (X509_NAME_print_ex, XN_FLAG_RFC2253
 * without escaping UTF-8),
 * serial as upper-case hex, the signature algorithm by OpenSSL's long name.
 */
#ifndef MTLS_CERT_H
#define MTLS_CERT_H

#include <apr.h>
#include <openssl/x509.h>

typedef struct {
    unsigned char sha256[32];       /* SHA-256 of the DER */
    char          sha256_hex[65];   /* the same, lower-case hex */
    char         *subject_dn;       /* malloc'd, RFC 2253 */
    char         *issuer_dn;        /* malloc'd, RFC 2253 */
    char         *serial;           /* malloc'd, upper-case hex */
    char         *san;              /* malloc'd, "DNS:a, IP:b", NULL if none */
    apr_int64_t   not_before;       /* seconds since the epoch */
    apr_int64_t   not_after;
    char          key_type[16];     /* RSA, EC, ED25519, ... or "" */
    int           key_bits;         /* 0 when unknown */
    char          sig_alg[64];      /* e.g. sha256WithRSAEncryption */
    unsigned char *der;             /* malloc'd DER */
    int           der_len;
} mtls_cert_info_t;

/* Fill *out from x.  Returns 0, or -1 (with *out cleared) when x cannot be
 * encoded.  Fields that a hostile certificate leaves out stay NULL/0. */
int  mtls_cert_info(X509 *x, mtls_cert_info_t *out);

/* Parse a DER certificate and fill *out; -1 if it does not parse. */
int  mtls_cert_info_der(const unsigned char *der, long len,
                        mtls_cert_info_t *out);

void mtls_cert_info_clear(mtls_cert_info_t *info);

/* RFC 2253 text of a name, malloc'd; NULL on failure. */
char *mtls_name_rfc2253(const X509_NAME *name);

/* An ASN1_TIME as seconds since the epoch; 0 on failure. */
apr_int64_t mtls_asn1_time_epoch(const ASN1_TIME *t);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void mtls_hex(const unsigned char *in, apr_size_t len, char *out);

#endif /* MTLS_CERT_H */
