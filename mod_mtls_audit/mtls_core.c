/*
 * mtls_core.c -- small shared pieces of the core: logging through a
 * callback, the names of the codes we store, clocks, links and items.
 */
#include "mtls_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include <apr_atomic.h>

static mtls_log_fn *log_fn;
static void        *log_baton;

void mtls_log_set(mtls_log_fn *fn, void *baton)
{
    log_fn = fn;
    log_baton = baton;
}

void mtls_log(int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (log_fn) {
        log_fn(log_baton, level, buf);
    }
    else {
        fprintf(stderr, "%s %s\n", MTLS_LOG_TAG, buf);
    }
}

const char *mtls_outcome_name(int outcome)
{
    switch (outcome) {
    case MTLS_OUT_ACCEPTED: return "accepted";
    case MTLS_OUT_REJECTED: return "rejected";
    case MTLS_OUT_NO_CERT:  return "no_certificate";
    case MTLS_OUT_FAILED:   return "failed";
    case MTLS_OUT_ABORTED:  return "aborted";
    default:                return "unknown";
    }
}

const char *mtls_rev_method_name(int method)
{
    switch (method) {
    case MTLS_REV_CRL:  return "crl";
    case MTLS_REV_OCSP: return "ocsp";
    default:            return NULL;
    }
}

const char *mtls_rev_status_name(int status)
{
    switch (status) {
    case MTLS_RS_GOOD:         return "good";
    case MTLS_RS_REVOKED:      return "revoked";
    case MTLS_RS_UNKNOWN:      return "unknown";
    case MTLS_RS_UNREACHABLE:  return "unreachable";
    case MTLS_RS_BAD_RESPONSE: return "bad_response";
    case MTLS_RS_ERROR:        return "error";
    default:                   return NULL;
    }
}

const char *mtls_verify_mode_name(int mode)
{
    switch (mode) {
    case MTLS_VM_NONE:           return "none";
    case MTLS_VM_REQUIRE:        return "require";
    case MTLS_VM_OPTIONAL:       return "optional";
    case MTLS_VM_OPTIONAL_NO_CA: return "optional_no_ca";
    default:                     return "unknown";
    }
}

const char *mtls_tls_version_name(int version)
{
    switch (version) {
    case 0x0304: return "TLSv1.3";
    case 0x0303: return "TLSv1.2";
    case 0x0302: return "TLSv1.1";
    case 0x0301: return "TLSv1";
    case 0x0300: return "SSLv3";
    default:     return NULL;
    }
}

/* Our own table: OpenSSL 3.0 prints 116 (certificate_required) as
 * "unknown", so we never ask it. */
const char *mtls_alert_name(int alert)
{
    switch (alert) {
    case 0:   return "close_notify";
    case 10:  return "unexpected_message";
    case 20:  return "bad_record_mac";
    case 22:  return "record_overflow";
    case 40:  return "handshake_failure";
    case 42:  return "bad_certificate";
    case 43:  return "unsupported_certificate";
    case 44:  return "certificate_revoked";
    case 45:  return "certificate_expired";
    case 46:  return "certificate_unknown";
    case 47:  return "illegal_parameter";
    case 48:  return "unknown_ca";
    case 49:  return "access_denied";
    case 50:  return "decode_error";
    case 51:  return "decrypt_error";
    case 70:  return "protocol_version";
    case 71:  return "insufficient_security";
    case 80:  return "internal_error";
    case 86:  return "inappropriate_fallback";
    case 90:  return "user_canceled";
    case 109: return "missing_extension";
    case 110: return "unsupported_extension";
    case 112: return "unrecognized_name";
    case 116: return "certificate_required";
    case 120: return "no_application_protocol";
    default:  return NULL;
    }
}

apr_int64_t mtls_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

apr_int64_t mtls_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

mtls_link_t *mtls_link_init(mtls_link_t *l)
{
    l->refs = 1;
    l->rowid = 0;
    l->next = NULL;
    return l;
}

mtls_link_t *mtls_link_new(void)
{
    mtls_link_t *l = malloc(sizeof(*l));
    return l ? mtls_link_init(l) : NULL;
}

mtls_link_t *mtls_link_ref(mtls_link_t *l)
{
    if (l) {
        apr_atomic_inc32(&l->refs);
    }
    return l;
}

int mtls_link_drop(mtls_link_t *l)
{
    return l && apr_atomic_dec32(&l->refs) == 0;
}

void mtls_link_unref(mtls_link_t *l)
{
    if (mtls_link_drop(l)) {
        free(l);
    }
}

void mtls_item_init(mtls_item_t *item, int type)
{
    void *mem = item->mem;
    apr_size_t cap = item->mem_cap;
    mtls_handshake_t *hs = &item->u.hs;

    memset(item, 0, offsetof(mtls_item_t, u));
    item->mem = mem;
    item->mem_cap = cap;
    item->type = type;
    switch (type) {
    case MTLS_ITEM_HANDSHAKE:
        memset(hs, 0, offsetof(mtls_handshake_t, server_name));
        hs->server_name[0] = hs->sni[0] = hs->client_addr[0] = '\0';
        hs->cipher[0] = '\0';
        memset(&hs->certs, 0, offsetof(mtls_certs_t, len));
        hs->verify_result = -1;
        hs->verify_depth = -1;
        hs->alert = -1;
        hs->alert_received = -1;
        hs->handshake_us = -1;
        hs->verify_us = -1;
        hs->certs.chain_from = -1;
        break;
    case MTLS_ITEM_REQUEST:
        memset(&item->u.rq, 0, sizeof(item->u.rq));
        break;
    default:
        memset(&item->u.ev, 0, sizeof(item->u.ev));
        break;
    }
}

mtls_item_t *mtls_item_new(int type)
{
    mtls_item_t *item = calloc(1, sizeof(*item));
    if (item) {
        mtls_item_init(item, type);
    }
    return item;
}

void *mtls_item_mem(mtls_item_t *item, apr_size_t n)
{
    if (n > item->mem_cap) {
        free(item->mem);
        item->mem_cap = 0;
        if (!(item->mem = malloc(n))) {
            return NULL;
        }
        item->mem_cap = n;
    }
    return item->mem;
}

void mtls_item_release(mtls_item_t *item)
{
    mtls_certs_t *c;

    switch (item->type) {
    case MTLS_ITEM_HANDSHAKE:
        c = &item->u.hs.certs;
        if (c->der != item->mem) {
            free(c->der);
        }
        c->der = NULL;
        c->n = 0;
        break;
    case MTLS_ITEM_REQUEST:
        if (item->u.rq.path != item->mem) {
            free(item->u.rq.path);
        }
        item->u.rq.path = NULL;
        break;
    case MTLS_ITEM_EVENT:
        free(item->u.ev.server_version);
        free(item->u.ev.detail);
        item->u.ev.server_version = item->u.ev.detail = NULL;
        break;
    }
    mtls_link_unref(item->link);
    item->link = NULL;
    if (item->mem_cap > MTLS_ITEM_MEM_KEPT) {
        free(item->mem);
        item->mem = NULL;
        item->mem_cap = 0;
    }
}

void mtls_item_free(mtls_item_t *item)
{
    if (item) {
        mtls_item_release(item);
        free(item->mem);
        free(item);
    }
}

int mtls_certs_set(mtls_item_t *item, X509 *leaf, STACK_OF(X509) *chain)
{
    mtls_certs_t *c = &item->u.hs.certs;
    X509 *x[MTLS_CERTS_KEPT + 1];
    int i, n = 0, m = chain ? sk_X509_num(chain) : 0, lead;
    size_t total = 0;
    unsigned char *p;

    if (c->der != item->mem) {
        free(c->der);
    }
    c->der = NULL;
    c->n = 0;
    c->leaf = 0;
    c->chain_from = -1;
    lead = leaf && (m == 0 || sk_X509_value(chain, 0) != leaf);
    if (lead) {
        x[n++] = leaf;
    }
    for (i = 0; i < m && i < MTLS_CERTS_KEPT; i++) {
        x[n++] = sk_X509_value(chain, i);
    }
    for (i = 0; i < n; i++) {
        int len = i2d_X509(x[i], NULL);
        c->len[i] = len > 0 ? (apr_uint32_t)len : 0;
        total += c->len[i];
    }
    if (n && !(c->der = mtls_item_mem(item, total ? total : 1))) {
        return -1;
    }
    for (i = 0, p = c->der; i < n; i++) {
        unsigned char *q = p;
        if (c->len[i] && i2d_X509(x[i], &q) != (int)c->len[i]) {
            c->len[i] = 0;      /* not as long as it said: none */
        }
        p += c->len[i];
    }
    c->n = n;
    c->leaf = leaf != NULL;
    c->chain_from = m ? (lead ? 1 : 0) : -1;
    return 0;
}

const unsigned char *mtls_certs_der(const mtls_certs_t *c, int i)
{
    const unsigned char *p = c->der;
    int k;

    for (k = 0; k < i; k++) {
        p += c->len[k];
    }
    return p;
}

void mtls_strlcpy(char *dst, const char *src, apr_size_t size)
{
    apr_size_t n;

    if (size == 0) {
        return;
    }
    if (!src) {
        dst[0] = '\0';
        return;
    }
    n = strlen(src);
    if (n >= size) {
        n = size - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}
