/*
 * policy.h -- the TLS policy the module records (events of kind
 * `policy`, one per audited vhost at every start and reload), read back
 * as a time line: `mtls-audit policy` and the reports.
 *
 * DESIGN
 * A policy row is an event whose detail is one JSON object (the format
 * of README.md, "What is recorded"): the full policy, or a short "unchanged
 * since event N" row.  policy_load() reads every policy row of a data set
 * in file and id order, resolves each short row to the full policy it
 * repeats, and gives each row the span in which it was in force: from its
 * time until the next start, reload or stop of the same file (whose own
 * policy rows then take over), or without end.  What changed between two
 * policies of one vhost is worked out from the JSON itself (SQLite's JSON
 * functions), not from the "changed" list alone, so it can say what was
 * added and removed.  Nothing here judges a policy: report.c does.
 */
#ifndef MTLS_POLICY_H
#define MTLS_POLICY_H

#include "tool.h"
#include "scan.h"

#define POLICY_FOREVER INT64_MAX

typedef struct {
    const char  *source;        /* the file (the data set's string) */
    apr_int64_t  id, time_us;   /* the event */
    apr_int64_t  end_us;        /* in force until (the next start, reload
                                   or stop of its file), or POLICY_FOREVER */
    apr_int64_t  set_id, set_us;/* the full row it repeats (itself when
                                   full): when this policy was set */
    char        *vhost;
    char        *addresses;     /* "127.0.0.1:8443 [::1]:8443" */
    char        *policy;        /* the full policy JSON (resolved) */
    char        *changed;       /* the row's "changed" keys, "cas verify",
                                   or NULL */
    char        *what;          /* what changed since the vhost's previous
                                   policy in its file, or NULL (none, or a
                                   first row) */
    int          full;          /* 1: a full row, 0: "unchanged since" */
    int          first;         /* the vhost's first row in its file */
    int          weakened;      /* the change weakened the policy */
    int          carried;       /* a full row a rotation carried into its
                                   file: the policy going on, no change */
} policy_row_t;

typedef struct {
    policy_row_t *rows;         /* in file, then id order */
    size_t        n;
} policy_set_t;

/* Read every policy row of the data set (the `ev` view).  Returns
 * EXIT_OK (possibly with no rows) or EXIT_DB (reported). */
int  policy_load(sqlite3 *db, const dataset_t *ds, policy_set_t *ps);
void policy_free(policy_set_t *ps);

/* What changed from policy a to b (JSON texts), in words:
 * "verify require -> optional; cas +CN=New CA -CN=Old CA".  Sets
 * *weakened when the change lets in more than before (a weaker verify
 * mode, a CA, protocol or suite added, revocation checking removed).
 * Returns a malloc'd string, or NULL when nothing differs. */
char *policy_diff(sqlite3 *db, const char *a, const char *b, int *weakened);

/* One of the summaries of a policy JSON: "verify", "protocols",
 * "tls12", "tls13", "cas", "revocation", "resumption", "server_certs",
 * "config", "digest".  malloc'd, or NULL. */
char *policy_field(sqlite3 *db, const char *policy, const char *field);

/* Is row r in force at some time of [from, to)? */
#define POLICY_OVERLAPS(r, from, to) \
    ((r)->time_us < (to) && (r)->end_us > (from))

/* The policy in force at `at` per vhost, one row each, as evidence
 * (columns: source, vhost, addresses, in_force_since, recorded, verify,
 * protocols, tls12_suites, tls13_suites, trusted_cas, revocation,
 * resumption, server_certs, config, digest). */
void policy_in_force(sqlite3 *db, const policy_set_t *ps, apr_int64_t at,
                     evidence_t *ev);

/* Every change of policy in [from, to): the first row of each vhost and
 * every full row after it (columns: time_utc, source, vhost, addresses,
 * event, changed, what, weakened). */
void policy_changes(const policy_set_t *ps, apr_int64_t from, apr_int64_t to,
                    evidence_t *ev);

#endif /* MTLS_POLICY_H */
