/*
 * scan.h -- the report's data: one streaming pass over the handshakes and
 * one over the requests of each database, aggregated in C.
 *
 * DESIGN
 * A report over ten million rows cannot afford a query per check: each
 * full scan costs seconds.  scan_period() reads each table once, in row-id
 * order, and feeds every accumulator the checks need: counts, small maps
 * (suite, reason, server), per-certificate figures, and sliding windows
 * for bursts and shared certificates (two windows kept at a time, so
 * memory stays bounded whatever the row count).  When the report verifies,
 * the same decoding of each row also feeds the hash chain, so the whole
 * file is read once.  Tables are cut by id into pieces read by two worker
 * threads (scan.c, "The engine"); what depends on row order is joined in
 * id order afterwards.  Evidence comes out as evidence_t tables of text,
 * capped at EVIDENCE_MAX rows with the full count beside them.
 */
#ifndef MTLS_SCAN_H
#define MTLS_SCAN_H

#include <apr.h>
#include "tool.h"

#define EVIDENCE_MAX   200      /* rows kept per table */
#define SHARE_ADDRS    3        /* 8.3.11: addresses per certificate per hour */
#define FAIL_BURST     10       /* 8.3.4: failures per 30 minutes */
#define INACTIVE_DAYS  90       /* 8.2.6 */
#define EXPIRY_DAYS    30       /* 4.2.1.1 */
#define DAY_US         86400000000LL
#define SCAN_COUNTS    36       /* the row counts of scan_t */
/* rev[method][status] of scan_t: method 0 CRL, 1 OCSP; status as
 * mtls_rev_status_e (1 good ... 6 error; 0 unused). */
#define SCAN_REV_STATUSES 8
#define SCAN_EVIDENCE  19       /* its evidence tables */

typedef struct {
    int     ncols;
    char  **cols;
    long    nrows;              /* kept, at most EVIDENCE_MAX */
    long    total;              /* found */
    char ***rows;               /* NULL cell: SQL NULL */
    const int *least;           /* or NULL: keep the EVIDENCE_MAX rows that
                                   come first by these columns (nleast),
                                   not the first added */
    int     nleast;
    long    worst;              /* with least, full: the kept row that
                                   comes last (valid when worst_ok) */
    int     worst_ok;
} evidence_t;

void ev_init(evidence_t *ev, const char *const *cols);
/* Add a row of ncols strings (NULL allowed); counts it even when full. */
void ev_add(evidence_t *ev, const char *const *vals);
/* Sort the kept rows by column col as numbers (desc) or text. */
void ev_sort(evidence_t *ev, int col, int numeric, int desc);
void evidence_free(evidence_t *ev);

typedef struct {
    apr_int64_t since, until, now;
    apr_int64_t *empty_days;    /* per database: days of the last 90 without
                                   a handshake */
    int          verify;        /* walk the hash chains on the way */
    const unsigned char *no_walk;   /* per database, or NULL: 1 when its
                                   integrity comes from elsewhere (a sealed
                                   file's SHA-256): its chains not walked,
                                   and its summaries read instead of its
                                   rows (scan.c, "Sealed files") */
    const mtls_chain_key_t *key;
    mtls_chain_result_t *chain; /* [database * MTLS_ANCHOR_TABLES + table]
                                   when verify: the chains' results */
    /* Counted row by row (and added up across the pieces of a table). */
    union {
        struct {
            /* over the period's handshakes */
            apr_int64_t n_hs, n_fail, accepted, bad_suite, weak_suite,
                        unverified, with_cert, verified, aead, complete,
                        not_yet_valid, revocation, failures,
                        outside_validity, backwards;
            /* over its requests */
            apr_int64_t n_rq, answered, unauthenticated, pan;
            /* over the period's handshakes: the revocation check (schema
             * 3) by method and status; accepted ones whose check failed */
            apr_int64_t rev[2][SCAN_REV_STATUSES], rev_fail_accepted;
        };
        apr_int64_t counts[SCAN_COUNTS];
    };
    /* certificates accepted in the period */
    apr_int64_t certs_accepted, certs_weak, certs_expiring, new_issuers,
                credential_changes, inactive;
    /* certificates seen in the period, by expiry (see scan.c) */
    apr_int64_t expiry_n[4];
    /* evidence */
    evidence_t  per_day, suites, suites_sni, reasons, invalid, scope,
                crypto, incomplete, backwards_ev, bursts, shared,
                inventory, expiry, inactive_ev, changes, unauth_ev, pan_ev,
                non_aead, not_verified;
} scan_t;

/* Fill s from the data set over [since, until), and when s->verify the
 * chain results in s->chain (from the same decoding of each row).
 * Returns EXIT_OK or EXIT_DB (reported). */
int  scan_period(dataset_t *ds, scan_t *s);
void scan_free(scan_t *s);

#endif /* MTLS_SCAN_H */
