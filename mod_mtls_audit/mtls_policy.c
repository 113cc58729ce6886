/*
 * mtls_policy.c -- the TLS policy of a virtual host as audit evidence
 * (see mtls_policy.h).
 */
#include "mtls_policy.h"
#include "mtls_cert.h"
#include "mtls_core.h"
#include "mtls_json.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_lib.h>
#include <openssl/err.h>

#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

/* ------------------------------------------------------------------ */
/* Small JSON writers on sqlite3_str                                    */

static void key(sqlite3_str *o, int *first, const char *name)
{
    if (!*first) sqlite3_str_appendchar(o, 1, ',');
    *first = 0;
    mtls_json_str(o, name, -1);
    sqlite3_str_appendchar(o, 1, ':');
}

static void str_or_null(sqlite3_str *o, const char *s)
{
    if (s) mtls_json_str(o, s, -1);
    else sqlite3_str_appendall(o, "null");
}

static void kv_str(sqlite3_str *o, int *first, const char *k, const char *v)
{
    key(o, first, k);
    str_or_null(o, v);
}

static void kv_int(sqlite3_str *o, int *first, const char *k, apr_int64_t v)
{
    key(o, first, k);
    sqlite3_str_appendf(o, "%lld", (long long)v);
}

static void kv_bool(sqlite3_str *o, int *first, const char *k, int v)
{
    key(o, first, k);
    sqlite3_str_appendall(o, v ? "true" : "false");
}

static void kv_raw(sqlite3_str *o, int *first, const char *k, const char *v)
{
    key(o, first, k);
    sqlite3_str_appendall(o, v && *v ? v : "[]");
}

/* ------------------------------------------------------------------ */
/* The verification store                                               */

typedef struct {
    mtls_cert_info_t info;
} ca_t;

static int ca_cmp(const void *a, const void *b)
{
    const ca_t *x = a, *y = b;
    int c = strcmp(x->info.subject_dn ? x->info.subject_dn : "",
                   y->info.subject_dn ? y->info.subject_dn : "");
    return c ? c : strcmp(x->info.sha256_hex, y->info.sha256_hex);
}

typedef struct {
    char        *issuer;
    apr_int64_t  last_update;
    apr_int64_t  next_update;       /* 0: none */
    int          entries;
    char         sha256[65];
} crl_t;

static int crl_cmp(const void *a, const void *b)
{
    const crl_t *x = a, *y = b;
    int c = strcmp(x->issuer ? x->issuer : "", y->issuer ? y->issuer : "");
    return c ? c : strcmp(x->sha256, y->sha256);
}

/* The files of a hashed directory that OpenSSL's lookup would read
 * (SSLCACertificatePath, SSLCARevocationPath: HASH.N certificates,
 * HASH.rN CRLs), loaded into a store of their own; NULL if none. */
static X509_STORE *dir_store(const char *const *dirs)
{
    X509_STORE *st = NULL;
    X509_LOOKUP *lu = NULL;
    int d;

    for (d = 0; dirs && dirs[d]; d++) {
        DIR *dh = opendir(dirs[d]);
        struct dirent *de;
        while (dh && (de = readdir(dh))) {
            const char *n = de->d_name;
            char path[4096];
            int i;
            for (i = 0; i < 8 && apr_isxdigit(n[i]); i++) {
            }
            if (i != 8 || n[8] != '.') continue;
            i = 9 + (n[9] == 'r');
            if (!n[i]) continue;
            for (; n[i] && apr_isdigit(n[i]); i++) {
            }
            if (n[i]) continue;
            if (!st && (!(st = X509_STORE_new())
                        || !(lu = X509_STORE_add_lookup(st,
                                                       X509_LOOKUP_file())))) {
                break;
            }
            snprintf(path, sizeof(path), "%s/%s", dirs[d], n);
            X509_load_cert_crl_file(lu, path, X509_FILETYPE_PEM);
            ERR_clear_error();
        }
        if (dh) closedir(dh);
    }
    return st;
}

static void store_json(sqlite3_str *o, int *first, X509_STORE *store,
                       X509_STORE *more)
{
    STACK_OF(X509_OBJECT) *objs = store ? X509_STORE_get0_objects(store)
                                        : NULL;
    STACK_OF(X509_OBJECT) *objs2 = more ? X509_STORE_get0_objects(more)
                                        : NULL;
    int n1 = objs ? sk_X509_OBJECT_num(objs) : 0;
    int n = n1 + (objs2 ? sk_X509_OBJECT_num(objs2) : 0);
    int i, j, ncas = 0, ncrls = 0;
    ca_t *cas = calloc((size_t)n + 1, sizeof(*cas));
    crl_t *crls = calloc((size_t)n + 1, sizeof(*crls));
    unsigned long flags = store
        ? X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(store)) : 0;
    int f;

    for (i = 0; cas && crls && i < n; i++) {
        X509_OBJECT *obj = i < n1 ? sk_X509_OBJECT_value(objs, i)
                                  : sk_X509_OBJECT_value(objs2, i - n1);
        X509 *x = X509_OBJECT_get0_X509(obj);
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(obj);
        if (x) {
            if (mtls_cert_info(x, &cas[ncas].info) != 0) continue;
            for (j = 0; j < ncas && strcmp(cas[j].info.sha256_hex,
                                           cas[ncas].info.sha256_hex); j++) {
            }
            if (j < ncas) mtls_cert_info_clear(&cas[ncas].info);
            else ncas++;
        }
        else if (crl) {
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned int mdlen = 0;
            STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
            const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
            crl_t *c = &crls[ncrls];
            if (!X509_CRL_digest(crl, EVP_sha256(), md, &mdlen)
                || mdlen != 32) {
                continue;
            }
            mtls_hex(md, 32, c->sha256);
            for (j = 0; j < ncrls && strcmp(crls[j].sha256, c->sha256); j++) {
            }
            if (j < ncrls) continue;
            c->issuer = mtls_name_rfc2253(X509_CRL_get_issuer(crl));
            c->last_update =
                mtls_asn1_time_epoch(X509_CRL_get0_lastUpdate(crl));
            c->next_update = nu ? mtls_asn1_time_epoch(nu) : 0;
            c->entries = rev ? sk_X509_REVOKED_num(rev) : 0;
            ncrls++;
        }
    }
    if (ncas > 1) qsort(cas, (size_t)ncas, sizeof(*cas), ca_cmp);
    if (ncrls > 1) qsort(crls, (size_t)ncrls, sizeof(*crls), crl_cmp);

    key(o, first, "cas");
    sqlite3_str_appendchar(o, 1, '[');
    for (i = 0; i < ncas; i++) {
        mtls_cert_info_t *ci = &cas[i].info;
        f = 1;
        sqlite3_str_appendall(o, i ? ",{" : "{");
        kv_str(o, &f, "subject", ci->subject_dn);
        kv_str(o, &f, "issuer", ci->issuer_dn);
        kv_str(o, &f, "serial", ci->serial);
        kv_str(o, &f, "sha256", ci->sha256_hex);
        kv_str(o, &f, "key_type", ci->key_type[0] ? ci->key_type : NULL);
        kv_int(o, &f, "key_bits", ci->key_bits);
        kv_str(o, &f, "sig_alg", ci->sig_alg[0] ? ci->sig_alg : NULL);
        kv_int(o, &f, "not_after", ci->not_after);
        sqlite3_str_appendchar(o, 1, '}');
    }
    sqlite3_str_appendchar(o, 1, ']');
    /* revocation is written by the caller around this: the CRLs only */
    sqlite3_str_appendall(o, ",\"revocation\":{");
    f = 1;
    kv_str(o, &f, "crl_check", (flags & X509_V_FLAG_CRL_CHECK_ALL) ? "chain"
                               : (flags & X509_V_FLAG_CRL_CHECK) ? "leaf"
                               : "none");
    key(o, &f, "crls");
    sqlite3_str_appendchar(o, 1, '[');
    for (i = 0; i < ncrls; i++) {
        int g = 1;
        sqlite3_str_appendall(o, i ? ",{" : "{");
        kv_str(o, &g, "issuer", crls[i].issuer);
        kv_int(o, &g, "last_update", crls[i].last_update);
        key(o, &g, "next_update");
        if (crls[i].next_update) {
            sqlite3_str_appendf(o, "%lld", (long long)crls[i].next_update);
        }
        else {
            sqlite3_str_appendall(o, "null");
        }
        kv_int(o, &g, "entries", crls[i].entries);
        kv_str(o, &g, "sha256", crls[i].sha256);
        sqlite3_str_appendchar(o, 1, '}');
    }
    sqlite3_str_appendchar(o, 1, ']');
    /* the caller closes "revocation" after adding "ocsp" */
    for (i = 0; cas && i < ncas; i++) mtls_cert_info_clear(&cas[i].info);
    for (i = 0; crls && i < ncrls; i++) free(crls[i].issuer);
    free(cas);
    free(crls);
}

/* ------------------------------------------------------------------ */
/* Protocols and suites                                                 */

static const struct { int v; long op; const char *name; } versions[] = {
    { SSL3_VERSION,   SSL_OP_NO_SSLv3,   "SSLv3" },
    { TLS1_VERSION,   SSL_OP_NO_TLSv1,   "TLSv1" },
    { TLS1_1_VERSION, SSL_OP_NO_TLSv1_1, "TLSv1.1" },
    { TLS1_2_VERSION, SSL_OP_NO_TLSv1_2, "TLSv1.2" },
    { TLS1_3_VERSION, SSL_OP_NO_TLSv1_3, "TLSv1.3" },
};
#define N_VERSIONS ((int)(sizeof(versions) / sizeof(versions[0])))

/* Can a handshake below TLS 1.2 complete?  Its server signs with SHA-1
 * (ECDSA, DSA) or MD5+SHA-1 (RSA), which OpenSSL's security levels of 1
 * and above refuse (64 bits): OpenSSL 3 then finds no certificate it may
 * use for it and fails the handshake (internal_error), even for RSA key
 * transport, where nothing is signed (the integration tests try both). */
static int legacy_usable(SSL *ssl,
                         int (*sec)(const SSL *, const SSL_CTX *, int, int,
                                    int, void *, void *))
{
    return !sec || sec(ssl, NULL, SSL_SECOP_SIGALG_SUPPORTED, 64, NID_sha1,
                       NULL, SSL_get0_security_ex_data(ssl));
}

/* "configured": what SSLProtocol leaves on (the SSL_CTX's bounds and
 * SSL_OP_NO_* options); "enabled": those of them OpenSSL will complete a
 * handshake in at the CTX's security level. */
static void protocols_json(sqlite3_str *o, int *first, SSL_CTX *ctx,
                           int *v_lo, int *v_hi)
{
    long lo = SSL_CTX_get_min_proto_version(ctx);
    long hi = SSL_CTX_get_max_proto_version(ctx);
    unsigned long opts = (unsigned long)SSL_CTX_get_options(ctx);
    const char *min = NULL, *max = NULL;
    int i, f = 1, n = 0, nc = 0, legacy = -1;
    sqlite3_str *en = sqlite3_str_new(NULL), *cf = sqlite3_str_new(NULL);
    /* OpenSSL asks the security callback about each version it may
     * negotiate; that needs an SSL (made for no connection). */
    SSL *ssl = SSL_new(ctx);
    int (*sec)(const SSL *, const SSL_CTX *, int, int, int, void *, void *)
        = ssl ? SSL_get_security_callback(ssl) : NULL;

    for (i = 0; i < N_VERSIONS; i++) {
        if ((lo && versions[i].v < lo) || (hi && versions[i].v > hi)
            || (opts & (unsigned long)versions[i].op)) {
            continue;
        }
        if (nc++) sqlite3_str_appendchar(cf, 1, ',');
        mtls_json_str(cf, versions[i].name, -1);
        if (sec && !sec(ssl, NULL, SSL_SECOP_VERSION, 0, versions[i].v,
                        NULL, SSL_get0_security_ex_data(ssl))) {
            continue;
        }
        if (versions[i].v < TLS1_2_VERSION) {
            if (legacy < 0) legacy = legacy_usable(ssl, sec);
            if (!legacy) continue;
        }
        if (n++) sqlite3_str_appendchar(en, 1, ',');
        mtls_json_str(en, versions[i].name, -1);
        if (!min) min = versions[i].name, *v_lo = versions[i].v;
        max = versions[i].name;
        *v_hi = versions[i].v;
    }
    key(o, first, "protocols");
    sqlite3_str_appendchar(o, 1, '{');
    kv_str(o, &f, "min", min);
    kv_str(o, &f, "max", max);
    key(o, &f, "enabled");
    sqlite3_str_appendchar(o, 1, '[');
    if (sqlite3_str_length(en)) {
        sqlite3_str_appendall(o, sqlite3_str_value(en));
    }
    sqlite3_str_appendchar(o, 1, ']');
    key(o, &f, "configured");
    sqlite3_str_appendchar(o, 1, '[');
    if (sqlite3_str_length(cf)) {
        sqlite3_str_appendall(o, sqlite3_str_value(cf));
    }
    sqlite3_str_appendchar(o, 1, ']');
    kv_int(o, &f, "security_level", SSL_CTX_get_security_level(ctx));
    sqlite3_str_appendchar(o, 1, '}');
    sqlite3_free(sqlite3_str_finish(en));
    sqlite3_free(sqlite3_str_finish(cf));
    SSL_free(ssl);
}

/* The key types of the CTX's server certificates (KEY_*); the current
 * certificate is put back as it was. */
#define KEY_RSA 1
#define KEY_EC  2               /* ECDSA, EdDSA: auth ecdsa */
#define KEY_DSA 4
static int server_keys(SSL_CTX *ctx)
{
    X509 *current = SSL_CTX_get0_certificate(ctx);
    int kinds = 0, ok;

    for (ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST); ok;
         ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT)) {
        X509 *x = SSL_CTX_get0_certificate(ctx);
        EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
        switch (k ? EVP_PKEY_get_base_id(k) : 0) {
        case EVP_PKEY_RSA: case EVP_PKEY_RSA_PSS: kinds |= KEY_RSA; break;
        case EVP_PKEY_EC: case EVP_PKEY_ED25519: case EVP_PKEY_ED448:
            kinds |= KEY_EC; break;
        case EVP_PKEY_DSA: kinds |= KEY_DSA; break;
        default: break;
        }
    }
    for (ok = current ? SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST)
                      : 0;
         ok && SSL_CTX_get0_certificate(ctx) != current;
         ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT)) {
    }
    return kinds;
}

static int version_of(const char *name)
{
    int i;
    for (i = 0; i < N_VERSIONS; i++) {
        if (!strcmp(name, versions[i].name)) return versions[i].v;
    }
    return !strcmp(name, "TLSv1.0") ? TLS1_VERSION : 0;
}

/* The suites of the CTX's list, in its order, that a handshake can
 * agree on: within the enabled versions (v_lo..v_hi), allowed by the
 * security level, with a server certificate of the type the suite
 * authenticates with, and no key exchange this server cannot do (PSK,
 * which mod_ssl does not configure; SRP without SSLSRPVerifierFile). */
static void ciphers_json(sqlite3_str *o, int *first, SSL_CTX *ctx,
                         int v_lo, int v_hi, int srp)
{
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
    int n = sk ? sk_SSL_CIPHER_num(sk) : 0, i, pass, f = 1;
    int keys = server_keys(ctx);
    SSL *ssl = SSL_new(ctx);
    int (*sec)(const SSL *, const SSL_CTX *, int, int, int, void *, void *)
        = ssl ? SSL_get_security_callback(ssl) : NULL;

    key(o, first, "ciphers");
    sqlite3_str_appendchar(o, 1, '{');
    for (pass = 0; pass < 2; pass++) {
        int k = 0;
        key(o, &f, pass ? "tls13" : "tls12");
        sqlite3_str_appendchar(o, 1, '[');
        for (i = 0; i < n; i++) {
            const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
            int min = version_of(SSL_CIPHER_get_version(c));
            int is13 = min == TLS1_3_VERSION;
            int kx = SSL_CIPHER_get_kx_nid(c), au = SSL_CIPHER_get_auth_nid(c);
            if (is13 != pass) continue;
            if (!v_hi || (is13 ? v_hi < TLS1_3_VERSION
                               : v_lo >= TLS1_3_VERSION || min > v_hi
                                 || min > TLS1_2_VERSION)) {
                continue;
            }
            if (kx == NID_kx_psk || kx == NID_kx_rsa_psk
                || kx == NID_kx_dhe_psk || kx == NID_kx_ecdhe_psk
                || (kx == NID_kx_srp && !srp)
                || (au == NID_auth_rsa && !(keys & KEY_RSA))
                || (au == NID_auth_ecdsa && !(keys & KEY_EC))
                || (au == NID_auth_dss && !(keys & KEY_DSA))
                || au == NID_auth_gost01 || au == NID_auth_gost12) {
                continue;
            }
            if (sec && !sec(ssl, NULL, SSL_SECOP_CIPHER_SUPPORTED,
                            SSL_CIPHER_get_bits(c, NULL), 0, (void *)c,
                            SSL_get0_security_ex_data(ssl))) {
                continue;
            }
            if (k++) sqlite3_str_appendchar(o, 1, ',');
            mtls_json_str(o, SSL_CIPHER_get_name(c), -1);
        }
        sqlite3_str_appendchar(o, 1, ']');
    }
    sqlite3_str_appendchar(o, 1, '}');
    SSL_free(ssl);
}

/* The server certificates, each slot of the CTX (RSA, EC, ...); the
 * current one is put back as it was. */
static void server_certs_json(sqlite3_str *o, int *first, SSL_CTX *ctx)
{
    X509 *current = SSL_CTX_get0_certificate(ctx);
    int n = 0, ok;

    key(o, first, "server_certs");
    sqlite3_str_appendchar(o, 1, '[');
    for (ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST); ok;
         ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT)) {
        X509 *x = SSL_CTX_get0_certificate(ctx);
        mtls_cert_info_t ci;
        int f = 1;
        if (!x || mtls_cert_info(x, &ci) != 0) continue;
        sqlite3_str_appendall(o, n++ ? ",{" : "{");
        kv_str(o, &f, "subject", ci.subject_dn);
        kv_str(o, &f, "sha256", ci.sha256_hex);
        kv_str(o, &f, "key_type", ci.key_type[0] ? ci.key_type : NULL);
        kv_int(o, &f, "key_bits", ci.key_bits);
        kv_int(o, &f, "not_after", ci.not_after);
        sqlite3_str_appendchar(o, 1, '}');
        mtls_cert_info_clear(&ci);
    }
    sqlite3_str_appendchar(o, 1, ']');
    if (current) {
        for (ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST);
             ok && SSL_CTX_get0_certificate(ctx) != current;
             ok = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT)) {
        }
    }
}

char *mtls_policy_canonical(SSL_CTX *ctx, const mtls_policy_conf_t *pc)
{
    sqlite3_str *o = sqlite3_str_new(NULL);
    STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(ctx);
    X509_STORE *more;
    int first = 1, f, i, v_lo = 0, v_hi = 0;

    sqlite3_str_appendchar(o, 1, '{');
    kv_str(o, &first, "vhost", pc->vhost ? pc->vhost : "");
    kv_raw(o, &first, "addresses", pc->addresses);
    kv_str(o, &first, "config", pc->config);

    key(o, &first, "verify");
    sqlite3_str_appendchar(o, 1, '{');
    f = 1;
    kv_str(o, &f, "mode", pc->verify_mode);
    kv_int(o, &f, "depth", pc->verify_depth);
    kv_raw(o, &f, "locations", pc->locations);
    sqlite3_str_appendchar(o, 1, '}');

    more = dir_store(pc->dirs);
    store_json(o, &first, SSL_CTX_get_cert_store(ctx), more);
    X509_STORE_free(more);
    f = 0;                              /* inside "revocation" */
    key(o, &f, "ocsp");
    sqlite3_str_appendchar(o, 1, '{');
    f = 1;
    kv_bool(o, &f, "enabled", pc->ocsp_enabled);
    kv_str(o, &f, "responder", pc->ocsp_responder);
    kv_bool(o, &f, "override", pc->ocsp_override);
    sqlite3_str_appendall(o, "}}");

    key(o, &first, "ca_names");
    sqlite3_str_appendchar(o, 1, '[');
    for (i = 0; names && i < sk_X509_NAME_num(names); i++) {
        char *dn = mtls_name_rfc2253(sk_X509_NAME_value(names, i));
        if (i) sqlite3_str_appendchar(o, 1, ',');
        str_or_null(o, dn);
        free(dn);
    }
    sqlite3_str_appendchar(o, 1, ']');

    protocols_json(o, &first, ctx, &v_lo, &v_hi);
    ciphers_json(o, &first, ctx, v_lo, v_hi, pc->srp);

    key(o, &first, "resumption");
    sqlite3_str_appendchar(o, 1, '{');
    f = 1;
    kv_bool(o, &f, "tickets",
            !(SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET));
    kv_str(o, &f, "cache",
           (SSL_CTX_get_session_cache_mode(ctx) & SSL_SESS_CACHE_SERVER)
           && pc->session_cache ? pc->session_cache : "none");
    sqlite3_str_appendchar(o, 1, '}');

    server_certs_json(o, &first, ctx);
    sqlite3_str_appendchar(o, 1, '}');

    if (sqlite3_str_errcode(o) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(o));
        return NULL;
    }
    return sqlite3_str_finish(o);
}

/* ------------------------------------------------------------------ */
/* Digest, and what changed since the vhost's last policy row           */

/* Where the unquoted key name starts in s (its ',' before): the first
 * occurrence of ,"name": is the key, since inside a JSON string every
 * '"' follows a backslash. */
static const char *find_key(const char *s, const char *name)
{
    char pat[40];
    snprintf(pat, sizeof(pat), ",\"%s\":", name);
    return strstr(s, pat);
}

static int seterr(sqlite3 *db, int rc, char *err, apr_size_t errlen)
{
    snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return rc;
}

/* The vhost's last policy row that holds a full policy: its id (0 none)
 * and digest (malloc'd). */
static int last_policy(sqlite3 *db, const char *canonical, apr_int64_t *id,
                       char **digest)
{
    static const char *const sql[2] = {
        "SELECT id, CASE WHEN json_valid(detail) THEN"
        " coalesce(json_extract(detail, '$.unchanged_since'), id) END"
        "  FROM events WHERE kind = 'policy' AND CASE WHEN json_valid(detail)"
        " THEN json_extract(detail, '$.vhost') IS json_extract(?1, '$.vhost')"
        " AND json_extract(detail, '$.addresses')"
        " IS json_extract(?1, '$.addresses') ELSE 0 END"
        " ORDER BY id DESC LIMIT 1",
        "SELECT CASE WHEN json_valid(detail) THEN"
        " json_extract(detail, '$.digest') END"
        "  FROM events WHERE id = ?1 AND kind = 'policy'"
    };
    sqlite3_stmt *st = NULL;
    apr_int64_t full = 0;
    int rc;

    *id = 0;
    *digest = NULL;
    if ((rc = sqlite3_prepare_v2(db, sql[0], -1, &st, NULL)) != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(st, 1, canonical, -1, SQLITE_STATIC);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        full = sqlite3_column_int64(st, 1);
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;
    if (!full) return SQLITE_OK;
    if ((rc = sqlite3_prepare_v2(db, sql[1], -1, &st, NULL)) != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, full);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(st, 0);
        if (d) {
            *id = full;
            *digest = strdup(d);
        }
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The top-level keys whose values differ between canonical and the
 * policy of row id, as a JSON array (sqlite3_malloc'd). */
static int changed_keys(sqlite3 *db, const char *canonical, apr_int64_t id,
                        char **out)
{
    static const char sql[] =
        "WITH p(detail) AS (SELECT detail FROM events WHERE id = ?2),"
        " n AS (SELECT key, type, value, id AS ord FROM json_each(?1)"
        "        WHERE key NOT IN ('digest', 'changed', 'previous',"
        "                          'unchanged_since', 'carried', 'since_us')),"
        " o AS (SELECT key, type, value, json_each.id AS ord"
        "         FROM p, json_each(p.detail)"
        "        WHERE key NOT IN ('digest', 'changed', 'previous',"
        "                          'unchanged_since', 'carried', 'since_us'))"
        " SELECT json_group_array(key) FROM ("
        "  SELECT n.key, 0 AS side, n.ord FROM n WHERE NOT EXISTS"
        "   (SELECT 1 FROM o WHERE o.key = n.key AND o.type = n.type"
        "       AND o.value IS n.value)"
        "  UNION ALL"
        "  SELECT o.key, 1, o.ord FROM o WHERE NOT EXISTS"
        "   (SELECT 1 FROM n WHERE n.key = o.key)"
        "  ORDER BY 2, 3)";
    sqlite3_stmt *st = NULL;
    int rc;

    *out = NULL;
    if ((rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_text(st, 1, canonical, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        *out = sqlite3_mprintf("%s", t ? t : "[]");
        rc = *out ? SQLITE_OK : SQLITE_NOMEM;
    }
    else if (rc == SQLITE_DONE) {
        *out = sqlite3_mprintf("[]");
        rc = *out ? SQLITE_OK : SQLITE_NOMEM;
    }
    sqlite3_finalize(st);
    return rc;
}

int mtls_policy_detail(sqlite3 *db, const char *canonical, char **detail,
                       char *err, apr_size_t errlen)
{
    unsigned char md[32];
    char hex[65], *prev_digest = NULL, *changed = NULL;
    const char *body, *cfg;
    apr_int64_t prev = 0;
    size_t len = strlen(canonical);
    int rc;

    *detail = NULL;
    body = find_key(canonical, "verify");
    cfg = find_key(canonical, "config");
    if (!body || !cfg || cfg > body || len < 2) {
        snprintf(err, errlen, "policy: malformed canonical text");
        return SQLITE_MISUSE;
    }
    SHA256((const unsigned char *)canonical, len, md);
    mtls_hex(md, sizeof(md), hex);
    if ((rc = last_policy(db, canonical, &prev, &prev_digest)) != SQLITE_OK) {
        return seterr(db, rc, err, errlen);
    }
    if (prev && !strcmp(prev_digest, hex)) {
        *detail = sqlite3_mprintf("%.*s,\"digest\":\"%s\","
                                  "\"unchanged_since\":%lld}",
                                  (int)(cfg - canonical), canonical, hex,
                                  (long long)prev);
    }
    else if (prev) {
        if ((rc = changed_keys(db, canonical, prev, &changed)) != SQLITE_OK) {
            free(prev_digest);
            return seterr(db, rc, err, errlen);
        }
        *detail = sqlite3_mprintf("%.*s,\"digest\":\"%s\"%.*s,"
                                  "\"changed\":%s,\"previous\":%lld}",
                                  (int)(body - canonical), canonical, hex,
                                  (int)(len - 1 - (size_t)(body - canonical)),
                                  body, changed, (long long)prev);
        sqlite3_free(changed);
    }
    else {
        *detail = sqlite3_mprintf("%.*s,\"digest\":\"%s\"%s",
                                  (int)(body - canonical), canonical, hex,
                                  body);
    }
    free(prev_digest);
    if (!*detail) {
        snprintf(err, errlen, "out of memory");
        return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}
