/*
 * mtls_policy.h -- the TLS policy of a virtual host as audit evidence.
 *
 * DESIGN
 * At every start and reload the parent writes, for each audited virtual
 * host, one chained row of events with kind 'policy' whose detail is a
 * JSON object (README "Policy events"): what the vhost's SSL_CTX, as
 * mod_ssl built it, enforces (verification store, CRLs and their check
 * flags, CA names, protocol bounds, suites, tickets, server
 * certificates), plus what only the configuration tree knows (passed in
 * mtls_policy_conf_t by mod_mtls_audit.c: per-directory SSLVerifyClient,
 * SSLVerifyDepth, OCSP, SSLSessionCache).  Everything here is a function
 * of the SSL_CTX and those texts, so it runs in the parent, off the
 * handshake path, and the unit tests can run it on a CTX of their own.
 *
 * Digest: SHA-256 of the full object without digest / changed / previous
 * / unchanged_since (the "canonical" text, keys always in one order).  A
 * vhost whose digest equals that of its last policy row gets the short
 * form {"vhost","addresses","digest","unchanged_since"}; else the full
 * form, with "changed" (the top-level keys that differ) and "previous"
 * when there was an earlier row.
 */
#ifndef MTLS_POLICY_H
#define MTLS_POLICY_H

#include <apr.h>
#include <openssl/ssl.h>
#include <sqlite3.h>

typedef struct {
    const char *vhost;          /* ServerName */
    const char *addresses;      /* JSON array text: ["127.0.0.1:8443"] */
    const char *config;         /* "file:line" of its <VirtualHost>, or
                                   NULL (the main server) */
    const char *verify_mode;    /* require | optional | optional_no_ca |
                                   none */
    int         verify_depth;   /* SSLVerifyDepth (mod_ssl checks it in its
                                   callback, not on the SSL_CTX) */
    const char *locations;      /* JSON array text of the per-directory
                                   SSLVerifyClient: [{"where":..,
                                   "mode":..,"config":..}] */
    int         ocsp_enabled;
    const char *ocsp_responder; /* SSLOCSPDefaultResponder or NULL */
    int         ocsp_override;  /* SSLOCSPOverrideResponder on */
    const char *session_cache;  /* SSLSessionCache's type, or "none" */
    const char *const *dirs;    /* NULL-terminated, or NULL: the
                                   SSLCACertificatePath and
                                   SSLCARevocationPath directories, whose
                                   certificates and CRLs OpenSSL reads
                                   only when a verification needs them */
    int         srp;            /* SSLSRPVerifierFile is set: SRP suites
                                   can be agreed on */
} mtls_policy_conf_t;

/* The canonical JSON text (no digest) of the policy of ctx and pc,
 * sqlite3_malloc'd; NULL when out of memory. */
char *mtls_policy_canonical(SSL_CTX *ctx, const mtls_policy_conf_t *pc);

/* The detail to store for canonical, given the events of db: the short or
 * the full form (see DESIGN above), sqlite3_malloc'd into *detail.
 * Returns SQLITE_OK or an SQLite error (message in err). */
int mtls_policy_detail(sqlite3 *db, const char *canonical, char **detail,
                       char *err, apr_size_t errlen);

#endif /* MTLS_POLICY_H */
