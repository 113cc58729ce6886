/*
 * report.c -- `mtls-audit report`: compliance evidence for PCI DSS v4.0.1,
 * the HIPAA Security Rule, or a summary.
 *
 * DESIGN
 * A report is a cover (period, scope, records, integrity, the SHA-256 of
 * each file read, the tool version), an overview (handshakes per day by
 * outcome, failures by reason, certificate expiry, protocol and suite
 * breakdown) and a list of checks.  Each check is computed once into a
 * check_t -- id, title, status, the metric behind the status, the rule
 * that gave it, and the evidence rows -- and then written in the chosen
 * format (text, json, csv, html).  The rules are those of COMPLIANCE.md;
 * each check function states its rule in `rule` so the reader never has
 * to guess.  HIPAA checks reuse the PCI computations they share.
 * Every value that comes from a certificate or a client is escaped for
 * the output format.  Exit 1 when any check FAILs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/evp.h>

#include "tool.h"
#include "scan.h"
#include "policy.h"
#include "mtls_cert.h"
#include "mtls_store.h"

#define TEXT_ROWS      10       /* rows shown per check on a terminal */
#define HTML_ROWS      50
#define RETAIN_DAYS    365      /* 10.5.1 */

typedef enum { ST_PASS, ST_FAIL, ST_ATTENTION, ST_MANUAL, ST_NA } status_e;
static const char *const status_name[] = {
    "PASS", "FAIL", "ATTENTION", "MANUAL", "N/A"
};
/* Worse first: FAIL, ATTENTION, MANUAL, PASS, N/A. */
static const int severity[] = { 3, 5, 4, 2, 1 };

typedef struct {
    char        id[48];
    char        title[160];
    int         status;
    char        metric[1024];
    char        rule[1024];
    evidence_t  ev;
    /* Checks that read the recorded TLS policy beside the traffic: */
    char        basis[96];      /* what gave the status: "traffic",
                                   "configuration", "traffic and
                                   configuration"; empty for other checks */
    char        policy[1024];   /* what the policy says, in words */
    evidence_t  pev;            /* the policy rows behind it (pol_cols) */
} check_t;

typedef struct {
    char        path[1024];
    char        sha256[65];
    int         broken;
    int         anchored;       /* 1: anchors hold, -1: one does not */
    int         schema_bad;     /* objects foreign, missing or altered */
    char        integrity[2048];
    file_meta_t *meta;          /* what parse_opts found (common.c) */
    int         by_hash;        /* sealed: its SHA-256 against its
                                 * successor's record, no walk */
} file_info_t;

typedef struct {
    dataset_t    ds;
    char       **files;
    int          nfiles;
    file_info_t *fi;
    const char  *standard;
    apr_int64_t  since, until, now;
    mtls_chain_key_t key;
    int          no_verify;
    const char  *anchor;        /* --anchor FILE, or NULL */
    const file_meta_t **skipped;    /* files given but outside the period */
    unsigned char *no_walk;     /* per file read: checked by its hash */
    int          nskipped;
    check_t     *checks;
    int          nchecks;
    scan_t       s;             /* the period, read once (scan.c) */
    /* overview: tables borrowed from s */
    evidence_t   per_day, reasons, versions, expiry, scope;
    apr_int64_t  n_hs, n_rq, n_ev, n_fail;
    policy_set_t pol;           /* the recorded TLS policy (policy.c) */
    int          have_policy;   /* some policy in force in the period */
    evidence_t   pol_in_force;  /* at the end of the period */
    evidence_t   pol_changes;   /* in the period */
    sqlite3     *on;            /* set: scalar() reads one file, there */
} report_t;

/* ------------------------------------------------------------------ */
/* SQL helpers: every query sees :since, :until, :now bound.            */

/* Where a query runs: the views across the files (r->ds.db), or the
 * connection of one file (r->on: see scalar_file). */
static sqlite3 *qdb(report_t *r)
{
    return r->on ? r->on : r->ds.db;
}

static sqlite3_stmt *prep(report_t *r, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int i;

    if (sqlite3_prepare_v2(qdb(r), sql, -1, &st, NULL) != SQLITE_OK) {
        fail("internal query failed: %s", sqlite3_errmsg(qdb(r)));
        return NULL;
    }
    if ((i = sqlite3_bind_parameter_index(st, ":since"))) {
        sqlite3_bind_int64(st, i, r->since);
    }
    if ((i = sqlite3_bind_parameter_index(st, ":until"))) {
        sqlite3_bind_int64(st, i, r->until);
    }
    if ((i = sqlite3_bind_parameter_index(st, ":now"))) {
        sqlite3_bind_int64(st, i, r->now);
    }
    return st;
}

static int db_error;
static int timing = -1;         /* MTLS_AUDIT_TIMING=1: time each query */

static void time_query(const char *sql, double t0)
{
    struct timespec ts;
    if (timing < 0) {
        timing = getenv("MTLS_AUDIT_TIMING") != NULL;
    }
    if (!timing) return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(stderr, "%8.3f s  %.110s\n",
            (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - t0, sql);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static apr_int64_t scalar(report_t *r, const char *sql)
{
    double t0 = mono();
    sqlite3_stmt *st = prep(r, sql);
    apr_int64_t v = 0;
    int rc;

    if (!st) {
        db_error = 1;
        return 0;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    else if (rc != SQLITE_DONE) {
        fail("reading the databases: %s", sqlite3_errmsg(qdb(r)));
        db_error = 1;
    }
    sqlite3_finalize(st);
    time_query(sql, t0);
    return v;
}

/* scalar() of a statement on file i's tables (schema dbI). */
static apr_int64_t scalar_file(report_t *r, int i, const char *sql)
{
    apr_int64_t v;

    r->on = ds_db(&r->ds, i);
    v = scalar(r, sql);
    r->on = NULL;
    return v;
}

/* Evidence from a (small) query over the events. */
static void evidence(report_t *r, evidence_t *ev, const char *sql)
{
    double t0 = mono();
    sqlite3_stmt *st = prep(r, sql);
    const char *cols[16], *vals[16];
    int i, n, rc;

    memset(ev, 0, sizeof(*ev));
    if (!st) {
        db_error = 1;
        return;
    }
    n = sqlite3_column_count(st);
    if (n > 15) n = 15;
    for (i = 0; i < n; i++) {
        cols[i] = sqlite3_column_name(st, i);
    }
    cols[n] = NULL;
    ev_init(ev, cols);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (i = 0; i < n; i++) {
            vals[i] = (const char *)sqlite3_column_text(st, i);
        }
        ev_add(ev, vals);
    }
    if (rc != SQLITE_DONE) {
        fail("reading the databases: %s", sqlite3_errmsg(qdb(r)));
        db_error = 1;
    }
    sqlite3_finalize(st);
    time_query(sql, t0);
}

static check_t *add_check(report_t *r, const char *id, const char *title)
{
    check_t *c = &r->checks[r->nchecks++];
    memset(c, 0, sizeof(*c));
    mtls_strlcpy(c->id, id, sizeof(c->id));
    mtls_strlcpy(c->title, title, sizeof(c->title));
    c->status = ST_NA;
    return c;
}

static void say(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}
#define METRIC(c, ...) say((c)->metric, sizeof((c)->metric), __VA_ARGS__)
#define RULE(c, ...)   say((c)->rule, sizeof((c)->rule), __VA_ARGS__)

/* Period and common filters. */
#define P_HS " time_us >= :since AND time_us < :until "
#define ISO(col) "strftime('%Y-%m-%dT%H:%M:%SZ', " col " / 1000000, 'unixepoch')"

/* ------------------------------------------------------------------ */
/* Checks shared by the standards                                       */

/* Copy a table of the scan as a check's evidence. */
static void take(check_t *c, evidence_t *ev)
{
    evidence_t copy;
    long r;

    ev_init(&copy, (const char *const *)ev->cols);
    for (r = 0; r < ev->nrows; r++) {
        ev_add(&copy, (const char *const *)ev->rows[r]);
    }
    copy.total = ev->total;
    c->ev = copy;
}

/* Handshakes of the period whose revocation check (schema 3) said a
 * status from lo to hi (mtls_rev_status_e), both methods. */
static apr_int64_t rev_count(const scan_t *s, int lo, int hi)
{
    apr_int64_t n = 0;
    int m, k;
    for (m = 0; m < 2; m++) {
        for (k = lo; k <= hi; k++) n += s->rev[m][k];
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* The recorded TLS policy beside the traffic                           */
/*
 * The module records, at every start and reload, the policy of each
 * audited vhost (policy.c reads it as a time line).  The checks that
 * touch it judge both: the traffic (what was accepted) as before, and
 * the configuration in force at any time of the period (what would have
 * been accepted).  Each such check says which of the two gave its status
 * (basis), what the policy says (policy) and the policy rows behind it
 * (pev), changes of the period included with their time.  With no policy
 * in force in the period (a database written before the module recorded
 * it), the traffic alone gives the status, as before, and the check says
 * the policy evidence is missing.
 */

static const char *const pol_cols[] = { "source", "vhost", "item", "value",
                                        "finding", "time_utc", NULL };

#define SEC_US 1000000LL

static int worse(int a, int b)
{
    return severity[b] > severity[a] ? b : a;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Add a row to c->pev unless the same finding of the same vhost is
 * there already (a policy in force over several reloads).  Returns 1
 * when added. */
static int pol_row(check_t *c, const policy_row_t *p, const char *item,
                   const char *value, const char *finding, apr_int64_t t)
{
    const char *row[6];
    char tb[32];
    long i;

    if (!c->pev.ncols) {
        ev_init(&c->pev, pol_cols);
    }
    for (i = 0; i < c->pev.nrows; i++) {
        char **o = c->pev.rows[i];
        if (same(o[0], p->source) && same(o[1], p->vhost)
            && same(o[2], item) && same(o[3], value) && same(o[4], finding)) {
            return 0;
        }
    }
    row[0] = p->source;
    row[1] = p->vhost;
    row[2] = item;
    row[3] = value;
    row[4] = finding;
    row[5] = format_time(t, tb);
    ev_add(&c->pev, row);
    return 1;
}

/* The span of policy row p inside the period, or 0 when it was not in
 * force in it. */
static int pol_span(const report_t *r, const policy_row_t *p,
                    apr_int64_t *from, apr_int64_t *to)
{
    if (!p->policy || !POLICY_OVERLAPS(p, r->since, r->until)) return 0;
    *from = p->time_us > r->since ? p->time_us : r->since;
    *to = p->end_us < r->until ? p->end_us : r->until;
    return 1;
}

static sqlite3_stmt *pol_query(report_t *r, const char *sql,
                               const policy_row_t *p)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->ds.db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail("internal query failed: %s", sqlite3_errmsg(r->ds.db));
        db_error = 1;
        return NULL;
    }
    sqlite3_bind_text(st, 1, p->policy, -1, SQLITE_STATIC);
    return st;
}

#define COL(st, i) ((const char *)sqlite3_column_text((st), (i)))

/* The changes of the period whose description names one of labels
 * (policy_diff's words), as rows of c->pev. */
static void pol_changes_for(report_t *r, check_t *c,
                            const char *const *labels)
{
    size_t i;
    int k;

    for (i = 0; i < r->pol.n; i++) {
        const policy_row_t *p = &r->pol.rows[i];
        if (!p->what || p->time_us < r->since || p->time_us >= r->until) {
            continue;
        }
        for (k = 0; labels[k]; k++) {
            if (strstr(p->what, labels[k])) {
                pol_row(c, p, "change", p->what, p->weakened
                        ? "changed in the period: weakened"
                        : "changed in the period", p->time_us);
                break;
            }
        }
    }
}

/* The status of a check from its traffic status t and policy status p,
 * and which of them gave it. */
static void pol_combine(check_t *c, int t, int p)
{
    c->status = t == ST_NA ? p : worse(t, p);
    mtls_strlcpy(c->basis, t == ST_NA || severity[p] > severity[t]
                 ? "configuration" : severity[t] > severity[p] ? "traffic"
                 : "traffic and configuration", sizeof(c->basis));
}

static void pol_missing(check_t *c, int t)
{
    c->status = t;
    mtls_strlcpy(c->basis, "traffic", sizeof(c->basis));
    say(c->policy, sizeof(c->policy), "policy evidence missing: no TLS "
        "policy recorded for the period (a database written before the "
        "module recorded its policy); the status comes from the traffic "
        "alone");
}

/* Protocol names as the policy and the scan write them, to versions. */
static int proto_code(const char *n)
{
    if (!n) return 0;
    if (!strcmp(n, "SSLv2")) return 0x0002;
    if (!strcmp(n, "SSLv3")) return 0x0300;
    if (!strcmp(n, "TLSv1") || !strcmp(n, "TLSv1.0")) return 0x0301;
    if (!strcmp(n, "TLSv1.1")) return 0x0302;
    if (!strcmp(n, "TLSv1.2")) return 0x0303;
    if (!strcmp(n, "TLSv1.3")) return 0x0304;
    return 0;
}

/* Accepted handshakes of the period with this version (code, or 0 for
 * any) and this suite (or NULL for any), from the scan's suite table. */
static apr_int64_t used(report_t *r, int version, const char *cipher)
{
    const evidence_t *ev = &r->s.suites;
    apr_int64_t n = 0;
    long i;

    for (i = 0; i < ev->nrows; i++) {
        if ((!version || proto_code(ev->rows[i][0]) == version)
            && (!cipher || same(ev->rows[i][1], cipher))) {
            n += atoll(ev->rows[i][3] ? ev->rows[i][3] : "0");
        }
    }
    return n;
}

/* Protocols and suites enabled, graded as the traffic is (grade_suite),
 * each with its use in the period.  Counts into *bad, *weak, *unused. */
static int pol_protocols(report_t *r, check_t *c, int *bad, int *weak,
                         int *unused)
{
    size_t i;
    int status = ST_PASS;

    *bad = *weak = *unused = 0;
    for (i = 0; i < r->pol.n; i++) {
        const policy_row_t *p = &r->pol.rows[i];
        apr_int64_t from, to;
        sqlite3_stmt *st;
        int has12 = 0, has13 = 0;

        if (!pol_span(r, p, &from, &to)) continue;
        if (!(st = pol_query(r, "SELECT value FROM json_each(?1, "
                             "'$.protocols.enabled')", p))) return status;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int v = proto_code(COL(st, 0));
            if (v == 0x0304) has13 = 1;
            else if (v) has12 = 1;
        }
        sqlite3_finalize(st);
        if (!(st = pol_query(r, "SELECT 'protocol', value FROM json_each(?1, "
                             "'$.protocols.enabled') UNION ALL SELECT "
                             "'TLS 1.2 suite', value FROM json_each(?1, "
                             "'$.ciphers.tls12') UNION ALL SELECT 'TLS 1.3 "
                             "suite', value FROM json_each(?1, "
                             "'$.ciphers.tls13')", p))) return status;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *item = COL(st, 0), *name = COL(st, 1), *why;
            char finding[256];
            apr_int64_t n;
            int grade;

            if (!item || !name) continue;
            if (item[0] == 'p') {
                /* The version alone: graded with an approved suite. */
                int v = proto_code(name);
                grade = v ? grade_suite(v, "ECDHE-ECDSA-AES128-GCM-SHA256",
                                        &why) : 0;
                if (!v) why = "unknown protocol name";
                n = v ? used(r, v, NULL) : 0;
            }
            else if (item[4] == '2') {
                if (!has12) continue;   /* no protocol of TLS 1.2 or below */
                grade = grade_suite(0x0303, name, &why);
                n = used(r, 0, name);
            }
            else {
                if (!has13) continue;
                grade = grade_suite(0x0304, name, &why);
                n = used(r, 0, name);
            }
            if (n) {
                snprintf(finding, sizeof(finding), "%s (%s): enabled, used "
                         "in %lld accepted handshakes", grade == 2
                         ? "prohibited" : grade == 1 ? "deprecated"
                         : "approved", why, (long long)n);
            }
            else {
                snprintf(finding, sizeof(finding), "%s (%s): enabled, never "
                         "used", grade == 2 ? "prohibited" : grade == 1
                         ? "deprecated" : "approved", why);
            }
            if (pol_row(c, p, item, name, finding, from)) {
                if (grade == 2) (*bad)++;
                if (grade == 1) (*weak)++;
                if (!n) (*unused)++;
            }
            if (grade == 2) status = ST_FAIL;
            else if (grade == 1) status = worse(status, ST_ATTENTION);
        }
        sqlite3_finalize(st);
    }
    return status;
}

/* Revocation checking configured: a CRL within its next update, or
 * OCSP.  A CRL past its next update while in force: FAIL from then
 * (mod_ssl refuses every client certificate it covers).  *expired_from
 * gets the earliest such time. */
static int pol_revocation(report_t *r, check_t *c, int *expired,
                          int *unchecked, apr_int64_t *expired_from)
{
    size_t i;
    int status = ST_PASS;

    *expired = *unchecked = 0;
    *expired_from = 0;
    for (i = 0; i < r->pol.n; i++) {
        const policy_row_t *p = &r->pol.rows[i];
        apr_int64_t from, to;
        sqlite3_stmt *st;
        int crl_on = 0, ocsp = 0, ncrl = 0;
        char value[512], finding[512], tb[32];

        if (!pol_span(r, p, &from, &to)) continue;
        if (!(st = pol_query(r, "SELECT json_extract(?1, "
                             "'$.revocation.crl_check'), json_type(?1, "
                             "'$.revocation.ocsp.enabled') = 'true', "
                             "json_extract(?1, '$.revocation.ocsp.responder')",
                             p))) return status;
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *chk = COL(st, 0);
            crl_on = chk && (!strcmp(chk, "leaf") || !strcmp(chk, "chain"));
            ocsp = sqlite3_column_int(st, 1);
            if (ocsp) {
                snprintf(value, sizeof(value), "responder %s", COL(st, 2)
                         ? COL(st, 2) : "named in the certificates");
                pol_row(c, p, "OCSP", value, "enabled: revocation checked by "
                        "configuration", from);
            }
        }
        sqlite3_finalize(st);
        if (crl_on) {
            if (!(st = pol_query(r, "SELECT json_extract(value, '$.issuer'), "
                                 "json_extract(value, '$.next_update'), "
                                 "json_extract(value, '$.entries') FROM "
                                 "json_each(?1, '$.revocation.crls')", p))) {
                return status;
            }
            while (sqlite3_step(st) == SQLITE_ROW) {
                apr_int64_t nu = sqlite3_column_int64(st, 1) * SEC_US;
                ncrl++;
                snprintf(value, sizeof(value), "CRL of %s (%lld entries, "
                         "next update %s)", COL(st, 0) ? COL(st, 0) : "?",
                         (long long)sqlite3_column_int64(st, 2),
                         format_time(nu, tb));
                if (sqlite3_column_type(st, 1) != SQLITE_NULL && nu < to) {
                    apr_int64_t when = nu > from ? nu : from;
                    snprintf(finding, sizeof(finding), "past its next update "
                             "from %s: mod_ssl refuses every client "
                             "certificate it covers from then",
                             format_time(when, tb));
                    if (pol_row(c, p, "CRL", value, finding, when)) {
                        (*expired)++;
                    }
                    if (!*expired_from || when < *expired_from) {
                        *expired_from = when;
                    }
                    status = ST_FAIL;
                }
                else {
                    pol_row(c, p, "CRL", value, "within its next update: "
                            "revocation checked by configuration", from);
                }
            }
            sqlite3_finalize(st);
            if (!ncrl) {
                pol_row(c, p, "CRL", "none loaded", "CRL checking on, but no "
                        "CRL loaded", from);
                status = worse(status, ST_ATTENTION);
                (*unchecked)++;
            }
        }
        if (!crl_on && !ocsp) {
            if (pol_row(c, p, "revocation", "CRL check none; OCSP off",
                        "no revocation checking configured", from)) {
                (*unchecked)++;
            }
            status = worse(status, ST_ATTENTION);
        }
    }
    return status;
}

/* The trusted CAs in force in the period: expired while trusted or weak
 * (FAIL), expiring within EXPIRY_DAYS of the period's end (ATTENTION). */
static int pol_cas(report_t *r, check_t *c, int *nbad, int *nsoon, int *n)
{
    size_t i;
    int status = ST_PASS;

    *nbad = *nsoon = *n = 0;
    for (i = 0; i < r->pol.n; i++) {
        const policy_row_t *p = &r->pol.rows[i];
        apr_int64_t from, to;
        sqlite3_stmt *st;

        if (!pol_span(r, p, &from, &to)) continue;
        if (!(st = pol_query(r, "SELECT json_extract(value, '$.subject'), "
                             "json_extract(value, '$.key_type'), "
                             "json_extract(value, '$.key_bits'), "
                             "json_extract(value, '$.sig_alg'), "
                             "json_extract(value, '$.not_after'), "
                             "json_extract(value, '$.sha256') FROM "
                             "json_each(?1, '$.cas')", p))) return status;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *kt = COL(st, 1), *sig = COL(st, 3);
            int bits = sqlite3_column_int(st, 2), weak, grade;
            apr_int64_t na = sqlite3_column_int64(st, 4) * SEC_US;
            char value[768], finding[256], tb[32];

            /* The inventory's rule for weak keys (scan.c). */
            weak = (kt && (!strcmp(kt, "RSA") || !strcmp(kt, "RSA-PSS"))
                    && bits < 2048)
                   || (kt && !strcmp(kt, "EC") && bits < 224)
                   || (kt && !strcmp(kt, "DSA"))
                   || (sig && (strcasestr(sig, "sha1")
                               || strcasestr(sig, "md5")));
            snprintf(value, sizeof(value), "%s (%s %d, %s, not after %s, "
                     "sha256 %.16s)", COL(st, 0) ? COL(st, 0) : "?",
                     kt ? kt : "?", bits, sig ? sig : "?",
                     format_time(na, tb), COL(st, 5) ? COL(st, 5) : "?");
            if (weak) {
                grade = ST_FAIL;
                snprintf(finding, sizeof(finding), "trusted CA with a weak "
                         "key or a SHA-1/MD5 signature");
            }
            else if (na < to) {
                grade = ST_FAIL;
                snprintf(finding, sizeof(finding), "trusted after its expiry "
                         "(from %s)", format_time(na > from ? na : from, tb));
            }
            else if (na <= r->until + EXPIRY_DAYS * DAY_US) {
                grade = ST_ATTENTION;
                snprintf(finding, sizeof(finding), "trusted CA expiring "
                         "within %d days of the period's end (%lld days)",
                         EXPIRY_DAYS, (long long)((na - r->until + DAY_US
                                                   - 1) / DAY_US));
            }
            else {
                grade = ST_PASS;
                snprintf(finding, sizeof(finding), "trusted CA");
            }
            if (pol_row(c, p, "trusted CA", value, finding, from)) {
                (*n)++;
                if (grade == ST_FAIL) (*nbad)++;
                if (grade == ST_ATTENTION) (*nsoon)++;
            }
            status = worse(status, grade);
        }
        sqlite3_finalize(st);
    }
    return status;
}

/* Verification modes that let a request through without a verified
 * certificate (optional, optional_no_ca, none), by vhost and location. */
static int pol_modes(report_t *r, check_t *c, int *open)
{
    size_t i;
    int status = ST_PASS;

    *open = 0;
    for (i = 0; i < r->pol.n; i++) {
        const policy_row_t *p = &r->pol.rows[i];
        apr_int64_t from, to;
        sqlite3_stmt *st;

        if (!pol_span(r, p, &from, &to)) continue;
        if (!(st = pol_query(r, "SELECT 'vhost', '', json_extract(?1, "
                             "'$.verify.mode') UNION ALL SELECT 'location', "
                             "json_extract(value, '$.where'), "
                             "json_extract(value, '$.mode') FROM "
                             "json_each(?1, '$.verify.locations')", p))) {
            return status;
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *mode = COL(st, 2);
            char value[512];
            int let = !mode || strcmp(mode, "require");

            snprintf(value, sizeof(value), "%s%s%s mode %s", COL(st, 0),
                     *COL(st, 1) ? " " : "", COL(st, 1),
                     mode ? mode : "(not recorded)");
            if (pol_row(c, p, "verify", value, let ? "lets a request "
                        "through without a verified certificate"
                        : "a verified certificate is required", from)
                && let) {
                (*open)++;
            }
            if (let) status = worse(status, ST_ATTENTION);
        }
        sqlite3_finalize(st);
    }
    return status;
}

static const char *const lbl_revocation[] = { "CRL check", "OCSP", "CRLs:",
                                              NULL };
static const char *const lbl_crypto[] = { "protocol", "suites:",
                                          "CRL check", "OCSP", "CRLs:",
                                          NULL };
static const char *const lbl_suites[] = { "protocol", "suites:", NULL };
static const char *const lbl_cas[] = { "trusted CAs:", "CA names sent:",
                                       NULL };
static const char *const lbl_verify[] = { "verify", "locations:", NULL };

/* PCI 4.2.1, HIPAA 164.312(e): revocation of the client certificates,
 * as the module recorded each check (handshakes.revocation_method and
 * _status): what said good or revoked, and, apart, the checks that
 * themselves failed (responder unreachable, a bad answer, a certificate
 * the responder or the CRLs do not know). */
static void chk_revocation(report_t *r, const char *id, const char *title)
{
    static const char *const cols[] = { "method", "status", "handshakes",
                                        "meaning", NULL };
    static const char *const meaning[] = { "", "not revoked", "revoked",
        "check failed: the certificate is unknown to the responder or CRLs",
        "check failed: the responder could not be reached",
        "check failed: the answer (or CRL) did not pass its checks",
        "check failed: cause not logged (see the module's README)" };
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;
    apr_int64_t good = rev_count(s, MTLS_RS_GOOD, MTLS_RS_GOOD);
    apr_int64_t revoked = rev_count(s, MTLS_RS_REVOKED, MTLS_RS_REVOKED);
    apr_int64_t failed = rev_count(s, MTLS_RS_UNKNOWN, MTLS_RS_ERROR);
    char num[32];
    int m, k, t;

    RULE(c, "FAIL: a handshake was accepted although its revocation check "
         "failed, or (policy) a CRL in force was past its next update "
         "(from then on). ATTENTION: a revocation check failed (the "
         "certificate could be neither accepted nor refused on its "
         "revocation status), or no revocation check was recorded in the "
         "period (SSLCARevocationCheck or SSLOCSPEnable) and, with a "
         "policy recorded, a vhost checks no revocation by configuration. "
         "PASS: revocation was checked (with a policy recorded: by "
         "configuration, a CRL within its next update or OCSP) and no "
         "check failed. N/A: no handshake in the period and no policy.");
    METRIC(c, "%lld handshakes with a revocation check: OCSP good %lld, "
           "revoked %lld, unknown %lld, unreachable %lld, bad response "
           "%lld, error %lld; CRL good %lld, revoked %lld, unknown %lld, "
           "bad CRL %lld; the revocation check itself failed: %lld (%lld "
           "accepted)", (long long)(good + revoked + failed),
           (long long)s->rev[1][MTLS_RS_GOOD],
           (long long)s->rev[1][MTLS_RS_REVOKED],
           (long long)s->rev[1][MTLS_RS_UNKNOWN],
           (long long)s->rev[1][MTLS_RS_UNREACHABLE],
           (long long)s->rev[1][MTLS_RS_BAD_RESPONSE],
           (long long)s->rev[1][MTLS_RS_ERROR],
           (long long)s->rev[0][MTLS_RS_GOOD],
           (long long)s->rev[0][MTLS_RS_REVOKED],
           (long long)s->rev[0][MTLS_RS_UNKNOWN],
           (long long)(s->rev[0][MTLS_RS_BAD_RESPONSE]
                       + s->rev[0][MTLS_RS_UNREACHABLE]
                       + s->rev[0][MTLS_RS_ERROR]),
           (long long)failed, (long long)s->rev_fail_accepted);
    /* With a policy recorded, the configuration says whether revocation
     * is checked; the traffic says how the checks went. */
    t = !s->n_hs ? ST_NA : s->rev_fail_accepted ? ST_FAIL
      : (failed || (!(good + revoked) && !r->have_policy)) ? ST_ATTENTION
      : ST_PASS;
    if (r->have_policy) {
        int expired, unchecked;
        apr_int64_t from;
        char tb[32];
        int p = pol_revocation(r, c, &expired, &unchecked, &from);
        pol_changes_for(r, c, lbl_revocation);
        pol_combine(c, t, p);
        if (expired) {
            say(c->policy, sizeof(c->policy), "%d CRL%s past %s next update "
                "while in force, from %s; %d vhost policies without "
                "revocation checking", expired, expired > 1 ? "s" : "",
                expired > 1 ? "their" : "its", format_time(from, tb),
                unchecked);
        }
        else {
            say(c->policy, sizeof(c->policy), "%s", unchecked
                ? "revocation checking is not configured on every vhost "
                  "(no CRL within its next update, no OCSP)"
                : "revocation checked by configuration on every vhost (a "
                  "CRL within its next update, or OCSP)");
        }
    }
    else {
        pol_missing(c, t);
    }
    ev_init(&c->ev, cols);
    for (m = 1; m >= 0; m--) {
        for (k = MTLS_RS_GOOD; k <= MTLS_RS_ERROR; k++) {
            const char *row[4];
            if (!s->rev[m][k]) continue;
            snprintf(num, sizeof(num), "%lld", (long long)s->rev[m][k]);
            row[0] = m ? "ocsp" : "crl";
            row[1] = mtls_rev_status_name(k);
            row[2] = num;
            row[3] = meaning[k];
            ev_add(&c->ev, row);
        }
    }
    if (failed) {
        const char *row[4] = { "any", "check_failed", num,
                               "the revocation check itself failed" };
        snprintf(num, sizeof(num), "%lld", (long long)failed);
        ev_add(&c->ev, row);
    }
}

/* PCI 4.2.1, HIPAA 164.312(e): protocol, suite and certificate of every
 * accepted handshake. */
static void chk_crypto(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;
    int t;

    RULE(c, "FAIL: an accepted handshake used SSLv3/TLS 1.0, a NULL, EXPORT, "
         "RC4, DES/3DES or anonymous suite, or a certificate that did not "
         "verify (untrusted, expired, revoked); or (policy) such a protocol "
         "or suite was enabled, used or not, or a CRL in force was past its "
         "next update. ATTENTION: TLS 1.1, CBC, static-RSA or ChaCha20 "
         "suites accepted or (policy) enabled, or no sign of revocation "
         "checking (without a policy: no CRL/OCSP result recorded in the "
         "period; with one: a vhost checks no revocation by "
         "configuration). PASS: every accepted handshake TLS 1.2/1.3 with "
         "an ECDHE/DHE AES-GCM/CCM suite and a verified certificate (and, "
         "with a policy, only such protocols and suites enabled and "
         "revocation checked by configuration). N/A: nothing accepted in "
         "the period and no policy.");
    METRIC(c, "%lld accepted handshakes: %lld with a prohibited protocol or "
           "suite, %lld deprecated, %lld with an unverified certificate; "
           "revocation-check evidence: %s", (long long)s->accepted,
           (long long)s->bad_suite, (long long)s->weak_suite,
           (long long)s->unverified,
           s->revocation || rev_count(s, MTLS_RS_GOOD, MTLS_RS_ERROR)
           ? "yes" : "none");
    if (!s->accepted) t = ST_NA;
    else if (s->bad_suite || s->unverified) t = ST_FAIL;
    else if (s->weak_suite
             || (!(s->revocation || rev_count(s, MTLS_RS_GOOD, MTLS_RS_ERROR))
                 && !r->have_policy))
        t = ST_ATTENTION;
    else t = ST_PASS;
    take(c, &s->crypto);
    if (r->have_policy) {
        /* The configuration: protocols and suites enabled, revocation. */
        int bad, weak, unused, expired, unchecked;
        apr_int64_t from;
        char tb[32];
        int p = pol_protocols(r, c, &bad, &weak, &unused);
        p = worse(p, pol_revocation(r, c, &expired, &unchecked, &from));
        pol_changes_for(r, c, lbl_crypto);
        pol_combine(c, t, p);
        say(c->policy, sizeof(c->policy), "enabled: %d prohibited and %d "
            "deprecated protocols or suites, %d enabled, never used; "
            "revocation: %s%s", bad, weak, unused, expired
            ? "a CRL past its next update from " : unchecked
            ? "not checked by configuration on every vhost"
            : "checked by configuration", expired ? format_time(from, tb)
                                                  : "");
    }
    else {
        pol_missing(c, t);
    }
}

static void chk_inventory(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;
    int t;

    RULE(c, "FAIL: a certificate with an RSA key under 2048 bits, an EC key "
         "under 224 bits, a DSA key or a SHA-1/MD5 signature was accepted, "
         "or a certificate was accepted outside its validity; or (policy) a "
         "trusted CA has such a key or signature, or was trusted after its "
         "expiry. ATTENTION: an accepted certificate or (policy) a trusted "
         "CA expires within %d days, or an issuer was first seen in the "
         "period. PASS otherwise. N/A: no certificate accepted and no "
         "policy.", EXPIRY_DAYS);
    METRIC(c, "%lld certificates accepted: %lld weak, %lld handshakes "
           "accepted outside validity, %lld expiring within %d days, %lld new "
           "issuers", (long long)s->certs_accepted, (long long)s->certs_weak,
           (long long)s->outside_validity, (long long)s->certs_expiring,
           EXPIRY_DAYS, (long long)s->new_issuers);
    if (!s->certs_accepted) t = ST_NA;
    else if (s->certs_weak || s->outside_validity) t = ST_FAIL;
    else if (s->certs_expiring || s->new_issuers) t = ST_ATTENTION;
    else t = ST_PASS;
    take(c, &s->inventory);
    if (r->have_policy) {
        int bad, soon, n;
        int p = pol_cas(r, c, &bad, &soon, &n);
        pol_changes_for(r, c, lbl_cas);
        pol_combine(c, t, p);
        say(c->policy, sizeof(c->policy), "%d trusted CAs in force: %d "
            "weak or trusted after expiry, %d expiring within %d days", n,
            bad, soon, EXPIRY_DAYS);
    }
    else {
        pol_missing(c, t);
    }
}

static void chk_protocols(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    int t;

    RULE(c, "FAIL: a prohibited protocol or suite was accepted, or (policy) "
         "enabled. ATTENTION: a deprecated one was. PASS: all approved "
         "(graded as 4.2.1); with a policy, the protocols and suites "
         "enabled are listed against those used, \"enabled, never used\" "
         "being the ones to switch off. N/A: nothing accepted and no "
         "policy.");
    METRIC(c, "%lld accepted: %lld prohibited, %lld deprecated",
           (long long)s->accepted, (long long)s->bad_suite,
           (long long)s->weak_suite);
    t = !s->accepted ? ST_NA : s->bad_suite ? ST_FAIL
      : s->weak_suite ? ST_ATTENTION : ST_PASS;
    take(c, &s->suites_sni);
    if (r->have_policy) {
        int bad, weak, unused;
        int p = pol_protocols(r, c, &bad, &weak, &unused);
        pol_changes_for(r, c, lbl_suites);
        pol_combine(c, t, p);
        say(c->policy, sizeof(c->policy), "%ld protocols and suites "
            "enabled: %d prohibited, %d deprecated, %d enabled, never used",
            c->pev.total, bad, weak, unused);
    }
    else {
        pol_missing(c, t);
    }
}

/* The verification modes in force beside the traffic status t (PCI
 * 8.2.1, HIPAA 164.312(a) and (d)). */
static void pol_verify(report_t *r, check_t *c, int t)
{
    int open;

    if (!r->have_policy) {
        pol_missing(c, t);
        return;
    }
    pol_combine(c, t, pol_modes(r, c, &open));
    pol_changes_for(r, c, lbl_verify);
    say(c->policy, sizeof(c->policy), "%d vhosts or locations whose "
        "verification mode lets a request through without a verified "
        "certificate", open);
}

/* PCI 10.2.1.7 / 10.2.2, HIPAA 164.312(b): changes of the TLS policy are
 * security-relevant changes: each recorded with its time, what changed
 * and whether it weakened the policy.  Only with a policy recorded. */
static void chk_policy_changes(report_t *r, const char *id,
                               const char *title)
{
    check_t *c;
    long i, weakened = 0;

    if (!r->have_policy) return;
    c = add_check(r, id, title);
    RULE(c, "PASS: the TLS policy of each audited vhost is recorded at every "
         "start and reload, and each change (what was added and removed) "
         "with its time. ATTENTION: a change in the period weakened the "
         "policy (a weaker verification mode, a CA, protocol or suite "
         "added, revocation checking removed): confirm it was approved.");
    take(c, &r->pol_changes);
    for (i = 0; i < c->ev.nrows; i++) {
        weakened += c->ev.rows[i][7] && !strcmp(c->ev.rows[i][7], "yes");
    }
    METRIC(c, "%ld policy changes recorded in the period (first records "
           "included), %ld weakening the policy", c->ev.total, weakened);
    c->status = weakened ? ST_ATTENTION : ST_PASS;
    mtls_strlcpy(c->basis, "configuration", sizeof(c->basis));
}

/* PCI 8.2.1, HIPAA 164.312(a): requests served without a verified
 * certificate. */
static void chk_identity(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "FAIL: a request was answered (status below 400) on a connection "
         "without a verified client certificate. ATTENTION (policy): a vhost "
         "or location's verification mode lets a request through without a "
         "verified certificate (optional, optional_no_ca, none). PASS: "
         "none. N/A: no handshake in the period and no policy.");
    METRIC(c, "%lld requests answered, %lld of them without a verified "
           "certificate", (long long)s->answered,
           (long long)s->unauthenticated);
    take(c, &s->unauth_ev);
    pol_verify(r, c, !s->n_hs ? ST_NA : s->unauthenticated ? ST_FAIL
                                                           : ST_PASS);
}

static void chk_sharing(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "ATTENTION: one certificate was accepted from more than %d "
         "client addresses within one clock hour (a shared or copied "
         "credential, or clients behind changing NAT). PASS: none. N/A: no "
         "certificate accepted.", SHARE_ADDRS);
    METRIC(c, "%ld certificate-hours above %d addresses", s->shared.total,
           SHARE_ADDRS);
    c->status = !s->with_cert ? ST_NA : s->shared.total ? ST_ATTENTION
                                                        : ST_PASS;
    take(c, &s->shared);
}

static void chk_inactive(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "ATTENTION: a certificate still valid at the end of the period "
         "was last accepted more than %d days before it (an inactive "
         "identity to disable). PASS: none. N/A: no certificate accepted in "
         "the period or the %d days before it.", INACTIVE_DAYS,
         INACTIVE_DAYS);
    METRIC(c, "%lld valid certificates unused for more than %d days",
           (long long)s->inactive, INACTIVE_DAYS);
    c->status = (!s->with_cert && !s->inactive) ? ST_NA
              : s->inactive ? ST_ATTENTION : ST_PASS;
    take(c, &s->inactive_ev);
}

/* PCI 8.3.4, HIPAA 164.308(a)(5)(ii)(C): bursts of failures. */
static void chk_bursts(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "ATTENTION: more than %d rejected or certificate-less attempts "
         "from one client address, or with one certificate, within a "
         "30-minute window. PASS: none. N/A: no handshake in the period.",
         FAIL_BURST);
    METRIC(c, "%lld failed attempts; %ld bursts above %d per 30 minutes",
           (long long)s->failures, s->bursts.total, FAIL_BURST);
    c->status = !s->n_hs ? ST_NA : s->bursts.total ? ST_ATTENTION : ST_PASS;
    take(c, &s->bursts);
}

static void chk_logging(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "ATTENTION: handshakes were accepted but no request was recorded "
         "(MTLSAuditRequests Off: individual access is not captured). PASS: "
         "handshakes and requests are recorded. N/A: no handshake.");
    METRIC(c, "%lld handshakes (%lld accepted) and %lld requests recorded",
           (long long)s->n_hs, (long long)s->accepted, (long long)s->n_rq);
    c->status = !s->n_hs ? ST_NA
              : (s->accepted && !s->n_rq) ? ST_ATTENTION : ST_PASS;
    take(c, &s->scope);
}

static void chk_invalid_logged(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;
    int long_window = s->until - s->since >= 30 * DAY_US;

    RULE(c, "PASS: failed attempts are recorded with reason, client and SNI. "
         "ATTENTION: not one failed attempt over a window of 30 days or more "
         "(is the module auditing the right hosts?). N/A: no handshake.");
    METRIC(c, "%lld failed attempts recorded over %lld days",
           (long long)s->n_fail,
           (long long)((s->until - s->since) / DAY_US));
    c->status = !s->n_hs ? ST_NA
              : (!s->n_fail && long_window) ? ST_ATTENTION : ST_PASS;
    take(c, &s->invalid);
}

static void chk_credential_changes(report_t *r, const char *id,
                                   const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "Informational: certificates first seen in the period for a "
         "subject already known with another certificate (a renewal or a "
         "new key) are listed. PASS when they are recorded; N/A with no "
         "handshake.");
    METRIC(c, "%lld credential changes recorded",
           (long long)s->credential_changes);
    c->status = s->n_hs ? ST_PASS : ST_NA;
    take(c, &s->changes);
}

static void chk_log_access(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    apr_int64_t n = scalar(r, "SELECT count(*) FROM ev WHERE kind = 'access'");
    int i;

    for (i = 0; i < r->nskipped; i++) {         /* files outside the period */
        n += file_events(r->skipped[i]->path, "access", INT64_MAX);
    }

    RULE(c, "PASS: reads of the audit database by mtls-audit are recorded "
         "(access events). ATTENTION: none recorded (the tool could not "
         "write the database, or it is read by other means only).");
    METRIC(c, "%lld recorded reads", (long long)n);
    c->status = n ? ST_PASS : ST_ATTENTION;
    evidence(r, &c->ev, "SELECT " ISO("time_us") " AS time_utc, source, "
             "detail FROM ev WHERE kind = 'access' AND" P_HS
             "ORDER BY time_us DESC");
}

static void chk_lifecycle(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    apr_int64_t starts = scalar(r, "SELECT count(*) FROM ev WHERE kind = "
                                "'start' AND time_us < :until");
    int i;

    for (i = 0; i < r->nskipped; i++) {         /* files outside the period */
        starts += file_events(r->skipped[i]->path, "start", r->until);
    }

    RULE(c, "PASS: the starts, reloads and stops of auditing are recorded "
         "(with server, module and OpenSSL versions). ATTENTION: no start "
         "recorded.");
    evidence(r, &c->ev, "SELECT " ISO("time_us") " AS time_utc, source, kind, "
             "server_version, module_version, openssl_version FROM ev WHERE "
             "kind IN ('start', 'reload', 'stop') AND" P_HS
             "ORDER BY time_us");
    METRIC(c, "%lld starts recorded; %ld lifecycle events in the period",
           (long long)starts, c->ev.total);
    c->status = starts ? ST_PASS : ST_ATTENTION;
}

static void chk_fields(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "PASS: every handshake row has when, origin (client address), "
         "resource (server), outcome and, when accepted, who (certificate). "
         "ATTENTION: below 100%%. N/A: no handshake.");
    METRIC(c, "%lld of %lld rows complete (%.2f%%)", (long long)s->complete,
           (long long)s->n_hs, s->n_hs ? 100.0 * (double)s->complete
           / (double)s->n_hs : 100.0);
    c->status = !s->n_hs ? ST_NA
              : s->complete == s->n_hs ? ST_PASS : ST_ATTENTION;
    take(c, &s->incomplete);
}

/* One evidence row per file. */
static void file_row(evidence_t *ev, const char *a, const char *b,
                     const char *c3, const char *d)
{
    const char *row[4] = { a, b, c3, d };
    ev_add(ev, row);
}

static void chk_permissions(report_t *r, const char *id, const char *title)
{
    static const char *const cols[] = { "path", "owner", "mode", "finding",
                                        NULL };
    static const char *const suffix[] = { "", "-wal", "-shm", "(dir)" };
    check_t *c = add_check(r, id, title);
    int i, k, bad = 0;

    ev_init(&c->ev, cols);
    for (i = 0; i < r->nfiles; i++) {
        for (k = 0; k < 4; k++) {
            char path[1100], mode[16], owner[96];
            struct stat sb;
            struct passwd *pw;
            struct group *gr;
            const char *finding = "";

            if (k == 3) {
                char *slash;
                snprintf(path, sizeof(path), "%s", r->files[i]);
                slash = strrchr(path, '/');
                if (slash) *slash = '\0'; else strcpy(path, ".");
            }
            else {
                snprintf(path, sizeof(path), "%s%s", r->files[i], suffix[k]);
            }
            if (stat(path, &sb) != 0) {
                continue;
            }
            if (k == 3 ? (sb.st_mode & 0002) != 0 : (sb.st_mode & 0006) != 0) {
                finding = k == 3 ? "world-writable directory"
                                 : "readable or writable by others";
                bad++;
            }
            pw = getpwuid(sb.st_uid);
            gr = getgrgid(sb.st_gid);
            snprintf(owner, sizeof(owner), "%s:%s", pw ? pw->pw_name : "?",
                     gr ? gr->gr_name : "?");
            snprintf(mode, sizeof(mode), "%04o", (unsigned)(sb.st_mode & 07777));
            file_row(&c->ev, path, owner, mode, finding);
        }
    }
    RULE(c, "FAIL: a database file (or its WAL) can be read or written by "
         "others, or its directory written by others. PASS otherwise (only "
         "the run user and its group reach the log).");
    METRIC(c, "%d findings over %d files", bad, r->nfiles);
    c->status = bad ? ST_FAIL : ST_PASS;
}

static void chk_integrity(report_t *r, const char *id, const char *title)
{
    static const char *const cols[] = { "database", "sha256", "integrity",
                                        NULL };
    check_t *c = add_check(r, id, title);
    int i, broken = 0, altered = 0;

    ev_init(&c->ev, cols);
    for (i = 0; i < r->nfiles; i++) {
        const char *row[3] = { r->fi[i].path, r->fi[i].sha256,
                               r->fi[i].integrity };
        ev_add(&c->ev, row);
        broken += r->fi[i].broken;
        altered += r->fi[i].schema_bad > 0;
    }
    RULE(c, "FAIL: a hash chain is broken (a row changed, removed, inserted "
         "or moved), ids jump, an anchor kept outside the database (the "
         "chain heads the module writes to its error log) does not hold, "
         "or a database's schema is not the one its version defines (a "
         "table, view, index or trigger foreign, missing or altered; "
         "checked also with --no-verify). "
         "PASS: the chains hold and every database's anchors (--anchor) "
         "hold. ATTENTION: the chains hold but were not compared with an "
         "anchor. MANUAL: not verified (--no-verify).");
    if (altered) {
        METRIC(c, "%d of %d databases with an altered schema; %d with a "
               "broken chain", altered, r->nfiles, broken);
        c->status = ST_FAIL;
    }
    else if (r->no_verify) {
        METRIC(c, "not verified (--no-verify)");
        c->status = ST_MANUAL;
    }
    else {
        int anchored = 0, anchor_bad = 0;
        for (i = 0; i < r->nfiles; i++) {
            anchored += r->fi[i].anchored == 1;
            anchor_bad += r->fi[i].anchored == -1;
        }
        METRIC(c, "%d of %d databases with a broken chain; %d anchored, %d "
               "with an anchor that does not hold", broken, r->nfiles,
               anchored, anchor_bad);
        c->status = (broken || anchor_bad) ? ST_FAIL
                  : anchored == r->nfiles ? ST_PASS : ST_ATTENTION;
    }
}

static void chk_retention(report_t *r, const char *id, const char *title)
{
    static const char *const cols[] = { "source", "first_id", "oldest",
        "newest", "span_days", "days_without_data_of_last_90", NULL };
    check_t *c = add_check(r, id, title);
    apr_int64_t first = 0, last = 0, pruned = 0, archived = 0, span;
    apr_int64_t *base, *end;
    int i;

    ev_init(&c->ev, cols);
    /* Where an archive cut each file's handshakes (schema 002). */
    base = calloc((size_t)r->ds.n * 2 + 1, sizeof(apr_int64_t));
    end = base ? base + r->ds.n : NULL;
    for (i = 0; base && i < r->ds.n; i++) {
        unsigned char h[MTLS_HASH_LEN];
        char schema[16];
        snprintf(schema, sizeof(schema), "db%d", i);
        mtls_chain_cut(ds_db(&r->ds, i), schema, "handshakes", "base",
                       &base[i], h, NULL);
        mtls_chain_cut(ds_db(&r->ds, i), schema, "handshakes", "end",
                       &end[i], h, NULL);
    }
    for (i = 0; i < r->ds.n; i++) {
        char sql[256], a[32], b[32], n1[24], n2[24], n3[24];
        apr_int64_t f, l, m;
        const char *row[6];
        snprintf(sql, sizeof(sql), "SELECT min(time_us) FROM db%d.handshakes",
                 i);
        f = scalar_file(r, i, sql);
        snprintf(sql, sizeof(sql), "SELECT max(time_us) FROM db%d.handshakes",
                 i);
        l = scalar_file(r, i, sql);
        snprintf(sql, sizeof(sql), "SELECT min(id) FROM db%d.handshakes", i);
        m = scalar_file(r, i, sql);
        if (!f) continue;
        if (!first || f < first) first = f;
        if (l > last) last = l;
        if (m > 1) {
            /* Moved by `archive` to a file read here too, to one not read,
             * or simply gone. */
            int j, joined = 0;
            for (j = 0; base && j < r->ds.n; j++) {
                joined |= j != i && base[i] && end[j] == base[i];
            }
            if (!base || !base[i] || base[i] == INT64_MAX
                || m != base[i] + 1) pruned++;
            else if (!joined) archived++;
        }
        row[0] = r->files[i];
        snprintf(n1, sizeof(n1), "%lld", (long long)m);
        row[1] = n1;
        row[2] = format_time(f, a);
        row[3] = format_time(l, b);
        snprintf(n2, sizeof(n2), "%lld", (long long)((l - f) / DAY_US));
        row[4] = n2;
        snprintf(n3, sizeof(n3), "%lld", (long long)r->s.empty_days[i]);
        row[5] = n3;
        ev_add(&c->ev, row);
    }
    free(base);
    /* Files given but not read, their records outside the period: their
     * time ranges (seal or index) still count, and what they hold was
     * not removed. */
    for (i = 0; i < r->nskipped; i++) {
        const file_meta_t *m = r->skipped[i];
        char a[32], b[32], n2[24];
        const char *row[6];
        if (!m->hs_first) continue;
        if (!first || m->hs_first < first) first = m->hs_first;
        if (m->hs_last > last) last = m->hs_last;
        row[0] = m->path;
        row[1] = "-";
        row[2] = format_time(m->hs_first, a);
        row[3] = format_time(m->hs_last, b);
        snprintf(n2, sizeof(n2), "%lld",
                 (long long)((m->hs_last - m->hs_first) / DAY_US));
        row[4] = n2;
        row[5] = "-";
        ev_add(&c->ev, row);
    }
    if (r->nskipped && archived) {
        /* The first file read goes on from one given but not read. */
        for (i = 0; i < r->nfiles; i++) {
            const file_meta_t *m = r->fi[i].meta;
            if (m && m->pred >= 0 && !files_set()->f[m->pred].selected
                && archived > 0) {
                archived--;
            }
        }
    }
    span = first && last ? (last - first) / DAY_US : 0;
    RULE(c, "PASS: the records span %d days or more. FAIL: shorter, and the "
         "oldest rows were removed (first id above 1, not moved by "
         "`mtls-audit archive`). ATTENTION: shorter, and nothing removed (a "
         "younger log), or the oldest rows were archived to a file not read "
         "here (give it too). N/A: no records.", RETAIN_DAYS);
    METRIC(c, "%lld days from the oldest to the newest record; %s",
           (long long)span, pruned ? "older rows were removed"
           : archived ? "older rows are in an archive not read here"
           : "nothing removed from the start");
    c->status = !first ? ST_NA : span >= RETAIN_DAYS ? ST_PASS
              : pruned ? ST_FAIL : ST_ATTENTION;
}

static void chk_clock(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "ATTENTION: time went backwards by more than 1 s between rows of "
         "one httpd child, or certificates were refused as 'not yet valid' "
         "(a sign of a client or server clock off). MANUAL otherwise: the "
         "database cannot prove the clocks are synchronised (check NTP).");
    METRIC(c, "%lld backward steps, %lld 'not yet valid' refusals",
           (long long)s->backwards, (long long)s->not_yet_valid);
    c->status = (s->backwards || s->not_yet_valid) ? ST_ATTENTION : ST_MANUAL;
    take(c, &s->backwards_ev);
}

static void chk_gaps(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    apr_int64_t lost;
    int i, broken = 0;

    lost = scalar(r, "SELECT coalesce(sum(lost), 0) FROM ev WHERE kind = "
                  "'gap' AND" P_HS);
    for (i = 0; i < r->nfiles; i++) {
        broken += r->fi[i].broken;
    }
    evidence(r, &c->ev, "SELECT source, kind, " ISO("coalesce(gap_start_us, "
             "time_us)") " AS start, " ISO("coalesce(gap_end_us, time_us)")
             " AS end, lost, detail AS cause FROM ev WHERE kind IN ('gap', "
             "'reopen') AND" P_HS "ORDER BY time_us");
    RULE(c, "FAIL: records are missing without explanation (a broken chain "
         "or a jump in ids). ATTENTION: the module recorded gaps (records it "
         "could not write, with their cause) or found its database file "
         "removed or replaced. PASS: none.");
    METRIC(c, "%ld gap or reopen events, %lld records lost; %d databases "
           "with unexplained missing rows", c->ev.total, (long long)lost,
           broken);
    c->status = broken ? ST_FAIL : c->ev.total ? ST_ATTENTION : ST_PASS;
}

static void chk_pan(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);
    scan_t *s = &r->s;

    RULE(c, "FAIL: a recorded request path holds a Luhn-valid run of 13-19 "
         "digits (a card number stored in the audit log). PASS: none. N/A: "
         "no request recorded. (Query strings are never recorded.)");
    METRIC(c, "%lld of %lld recorded paths hold a card number",
           (long long)s->pan, (long long)s->n_rq);
    c->status = !s->n_rq ? ST_NA : s->pan ? ST_FAIL : ST_PASS;
    take(c, &s->pan_ev);
}

/* A check whose status is the share of accepted connections that meet
 * a bar: PASS at 100%, `below` under it, N/A with none accepted. */
static void share_check(check_t *c, apr_int64_t part, apr_int64_t whole,
                        const char *what, int below)
{
    METRIC(c, "%lld of %lld accepted connections %s (%.2f%%)",
           (long long)part, (long long)whole, what,
           whole ? 100.0 * (double)part / (double)whole : 100.0);
    c->status = !whole ? ST_NA : part == whole ? ST_PASS : below;
}

static void chk_aead(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);

    RULE(c, "PASS: every accepted connection used an AEAD suite (GCM, CCM, "
         "ChaCha20-Poly1305), which protects integrity. ATTENTION: some did "
         "not. N/A: nothing accepted.");
    share_check(c, r->s.aead, r->s.accepted, "AEAD", ST_ATTENTION);
    take(c, &r->s.non_aead);
}

static void chk_authn(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);

    RULE(c, "PASS: every accepted connection authenticated the client with a "
         "verified certificate. FAIL: some did not (no certificate, or one "
         "that did not verify). ATTENTION (policy): a vhost or location's "
         "verification mode lets a request through without a verified "
         "certificate (optional, optional_no_ca, none). Failures by reason "
         "are listed. N/A: nothing accepted and no policy.");
    share_check(c, r->s.verified, r->s.accepted, "with a verified "
                "certificate", ST_FAIL);
    take(c, &r->s.not_verified);
    pol_verify(r, c, c->status);
}

static void chk_review(report_t *r, const char *id, const char *title)
{
    check_t *c = add_check(r, id, title);

    RULE(c, "PASS: reports were run on this data in the period (a recorded "
         "review). ATTENTION: none before this one.");
    evidence(r, &c->ev, "SELECT " ISO("time_us") " AS time_utc, source, "
             "detail FROM ev WHERE kind = 'access' AND detail LIKE '%report%' "
             "AND" P_HS "ORDER BY time_us DESC");
    METRIC(c, "%ld earlier reports in the period", c->ev.total);
    c->status = c->ev.total ? ST_PASS : ST_ATTENTION;
}

static void chk_manual(report_t *r, const char *id, const char *title,
                       const char *rule)
{
    check_t *c = add_check(r, id, title);
    RULE(c, "%s", rule);
    METRIC(c, "not provable from the audit database");
    c->status = ST_MANUAL;
}

/* Two checks' worst status under one citation. */
static void merge_last_two(report_t *r, const char *id, const char *title)
{
    check_t *a = &r->checks[r->nchecks - 2], *b = &r->checks[r->nchecks - 1];
    char metric[sizeof(a->metric)], rule[sizeof(a->rule)];

    snprintf(metric, sizeof(metric), "%.300s; %.300s", a->metric, b->metric);
    snprintf(rule, sizeof(rule), "The worse of: (%s) %.280s / (%s) %.280s",
             a->id, a->rule, b->id, b->rule);
    if (severity[b->status] > severity[a->status]) {
        a->status = b->status;
    }
    if (a->ev.nrows == 0 && b->ev.nrows) {
        evidence_t t = a->ev;
        a->ev = b->ev;
        b->ev = t;
    }
    mtls_strlcpy(a->id, id, sizeof(a->id));
    mtls_strlcpy(a->title, title, sizeof(a->title));
    mtls_strlcpy(a->metric, metric, sizeof(a->metric));
    mtls_strlcpy(a->rule, rule, sizeof(a->rule));
    evidence_free(&b->ev);
    evidence_free(&b->pev);
    r->nchecks--;
}

static void run_pci(report_t *r)
{
    chk_crypto(r, "4.2.1", "Strong cryptography and trusted, valid "
               "certificates in transit");
    chk_revocation(r, "4.2.1 revocation", "Revocation of client "
                   "certificates is checked (CRL, OCSP)");
    chk_inventory(r, "4.2.1.1", "Inventory of trusted keys and certificates");
    chk_protocols(r, "12.3.3", "Protocols and cipher suites in use");
    chk_identity(r, "8.2.1", "Unique identity before access");
    chk_sharing(r, "8.3.11", "Authentication factors are not shared");
    chk_inactive(r, "8.2.6", "Inactive identities (90 days)");
    chk_bursts(r, "8.3.4", "Repeated failed authentication attempts");
    chk_logging(r, "10.2.1", "Audit logs enabled and capturing individual "
                "access (10.2.1.1, 10.2.1.2)");
    chk_invalid_logged(r, "10.2.1.4", "Invalid logical access attempts are "
                       "logged");
    chk_credential_changes(r, "10.2.1.5", "Changes of identification "
                           "credentials are logged");
    chk_log_access(r, "10.2.1.3", "Access to the audit logs is logged");
    chk_lifecycle(r, "10.2.1.6", "Starting and stopping of audit logging is "
                  "logged");
    chk_policy_changes(r, "10.2.1.7", "Security-relevant changes of the TLS "
                       "policy are logged, each with what changed and when "
                       "(10.2.1.7, 10.2.2)");
    chk_fields(r, "10.2.2", "Each entry: who, what, when, outcome, origin, "
               "resource");
    chk_permissions(r, "10.3.1-10.3.2", "Audit logs readable only by those "
                    "who need them, protected from change");
    chk_integrity(r, "10.3.4", "Changes to audit logs are detected");
    chk_retention(r, "10.5.1", "Audit log history retained for 12 months");
    chk_clock(r, "10.6", "Time synchronisation (10.6.1-10.6.3)");
    chk_gaps(r, "10.7.2", "Failures of critical security controls, audit "
             "logging included, are detected");
    chk_pan(r, "3.5.1", "Card numbers are unreadable wherever stored, logs "
            "included");
}

static void run_hipaa(report_t *r)
{
    chk_identity(r, "164.312(a)(1), (a)(2)(i)", "Access control: unique user "
                 "identification");
    chk_fields(r, "tmp1", "");
    chk_integrity(r, "tmp2", "");
    merge_last_two(r, "164.312(b)", "Audit controls: activity is recorded "
                   "and examinable");
    chk_policy_changes(r, "164.312(b) policy", "Audit controls: changes of "
                       "the TLS policy are recorded and examinable");
    chk_aead(r, "164.312(c)(1), (c)(2)", "Integrity of ePHI in transit "
             "(addressable)");
    chk_authn(r, "164.312(d)", "Person or entity authentication");
    chk_crypto(r, "164.312(e)(1), (e)(2)(i), (e)(2)(ii)", "Transmission "
               "security: integrity controls and encryption (addressable), "
               "graded against NIST SP 800-52r2");
    chk_revocation(r, "164.312(e) revocation", "Transmission security: "
                   "revocation of client certificates is checked (CRL, "
                   "OCSP)");
    chk_review(r, "164.308(a)(1)(ii)(D)", "Information system activity "
               "review");
    chk_bursts(r, "164.308(a)(5)(ii)(C)", "Log-in monitoring (addressable)");
    chk_manual(r, "164.316(b)(2)(i)", "Retain documentation for 6 years",
               "MANUAL: keep this report (signed, with the SHA-256 of the "
               "databases on its cover) for six years. The HIPAA Security "
               "Rule sets no retention period for the audit log itself.");
}

static void run_summary(report_t *r)
{
    chk_integrity(r, "integrity", "The audit databases are intact");
    chk_gaps(r, "completeness", "No record lost without trace");
    chk_identity(r, "identity", "Every request had a verified client "
                 "certificate");
    chk_crypto(r, "transport", "Protocols, suites and certificates accepted");
    chk_revocation(r, "revocation", "Revocation of client certificates is "
                   "checked");
    chk_inventory(r, "certificates", "Client certificates: strength and "
                  "expiry");
    chk_policy_changes(r, "policy", "Changes of the TLS policy are "
                       "recorded");
}

/* ------------------------------------------------------------------ */
/* Cover data                                                           */

static int file_sha256(const char *path, char out[65])
{
    size_t size = 1 << 20;              /* few system calls: see readahead.c */
    unsigned char *buf = malloc(size), md[32];
    unsigned int mdlen;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;
    ssize_t n;

    if (fd >= 0 && ctx && buf
        && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        while ((n = read(fd, buf, size)) > 0
               && EVP_DigestUpdate(ctx, buf, (size_t)n))
            ;
        if (n == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen)) {
            mtls_hex(md, 32, out);
            rc = 0;
        }
    }
    if (fd >= 0) close(fd);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

/* The SHA-256 of every file for the cover, on a thread of its own while
 * the chains are walked and the period scanned (reading gigabytes takes
 * seconds). */
typedef struct {
    report_t *r;
    int       bad;              /* 1 + index of a file that failed */
    int       err;              /* its errno */
} hash_job_t;

static void *hash_files(void *arg)
{
    hash_job_t *job = arg;
    int i;

    for (i = 0; i < job->r->nfiles; i++) {
        if (file_sha256(job->r->files[i], job->r->fi[i].sha256) != 0) {
            job->bad = i + 1;
            job->err = errno;
            break;
        }
    }
    return NULL;
}

/* Compare each file's schema with its version's (mtls_schema_check),
 * also with --no-verify: it reads the schema, not the rows.  Appends
 * "; schema ALTERED: ..." to the integrity text.  Returns EXIT_OK or
 * EXIT_DB (reported). */
static int check_schemas(report_t *r)
{
    int i;

    for (i = 0; i < r->nfiles; i++) {
        file_info_t *fi = &r->fi[i];
        char schema[16], msg[1024];
        size_t l = strlen(fi->integrity);

        snprintf(schema, sizeof(schema), "db%d", i);
        if (mtls_schema_check(ds_db(&r->ds, i), schema, &fi->schema_bad,
                              msg, sizeof(msg)) != SQLITE_OK) {
            fail("%s: %s", r->files[i], msg);
            return EXIT_DB;
        }
        if (fi->schema_bad) {
            snprintf(fi->integrity + l, sizeof(fi->integrity) - l,
                     "%sschema ALTERED: %s", l ? "; " : "", msg);
        }
    }
    return EXIT_OK;
}

/* A sealed file checked by its hash: the SHA-256 the hashing thread
 * computed for the cover against the one its successor recorded; before
 * what verify_files and check_schemas wrote. */
static void sealed_files(report_t *r)
{
    int i;

    for (i = 0; i < r->nfiles; i++) {
        file_info_t *fi = &r->fi[i];
        const file_meta_t *m = fi->meta;
        char msg[2048], rest[2048];

        if (!fi->by_hash || !m) continue;
        if (strcasecmp(fi->sha256, m->sealed_sha256) != 0) {
            fi->broken = 1;
            snprintf(msg, sizeof(msg), "sealed file CHANGED: its SHA-256 is "
                     "not %s as %s recorded when it was sealed (event %lld)",
                     m->sealed_sha256, files_set()->f[m->succ].path,
                     (long long)m->sealed_event);
        }
        else {
            const file_meta_t *next = &files_set()->f[m->succ];
            char why[1200];
            int log;
            snprintf(msg, sizeof(msg), "sealed: SHA-256 matches the one %s "
                     "recorded (event %lld); rows not walked", next->path,
                     (long long)m->sealed_event);
            /* The record is as sound as the file holding it: one outside
             * the period is not checked in this run; the error log's line
             * for the seal is a record kept outside the files. */
            log = r->anchor ? sealed_in_log(r->anchor, m, fi->sha256, why,
                                            sizeof(why)) : -1;
            if (log == 1 && fi->anchored >= 0) {
                fi->anchored = 1;
            }
            else if (log == 0) {
                fi->anchored = -1;
            }
            if (log >= 0) {
                size_t l = strlen(msg);
                snprintf(msg + l, sizeof(msg) - l, "; %s%s", log ? ""
                         : "ANCHOR BROKEN: ", why);
            }
            else if (!next->selected) {
                size_t l = strlen(msg);
                /* The module logs a rotation's seal; an archive's is
                 * only in the live file's events. */
                snprintf(msg + l, sizeof(msg) - l, " (%s, outside the "
                         "period, was not checked in this run: %s)",
                         next->path, m->seal_id ? "give --anchor with the "
                         "error log that holds the seal's line"
                         : "mtls-audit verify checks both");
                if (fi->anchored == 1) fi->anchored = 0;
            }
        }
        snprintf(rest, sizeof(rest), "%s", fi->integrity);
        {
            sqlite3_str *o = sqlite3_str_new(NULL);
            char *v;
            sqlite3_str_appendf(o, "%s%s%s", msg, rest[0]
                                && strncmp(rest, "; ", 2) ? "; " : "", rest);
            v = sqlite3_str_finish(o);
            mtls_strlcpy(fi->integrity, v ? v : msg, sizeof(fi->integrity));
            sqlite3_free(v);
        }
    }
}

static int verify_files(report_t *r)
{
    anchor_info_t *anchors = NULL;
    int i, t;

    /* The anchors over the files as one set (an archive holds rows the
     * live file's anchors name). */
    if (r->anchor && !r->no_verify) {
        char err[1024];
        if (!(anchors = calloc((size_t)r->nfiles, sizeof(*anchors)))) {
            fail("out of memory");
            return EXIT_DB;
        }
        if (check_anchor_files(r->anchor, r->files, r->nfiles, anchors, err,
                               sizeof(err)) != 0) {
            fail("%s", err);
            free(anchors);
            return EXIT_DB;
        }
    }

    for (i = 0; i < r->nfiles; i++) {
        file_info_t *fi = &r->fi[i];
        const mtls_chain_result_t *res;
        size_t off = 0;

        if (r->no_verify) {
            snprintf(fi->integrity, sizeof(fi->integrity), "not verified");
            continue;
        }
        if (fi->meta) {
            fi->meta->how = fi->by_hash ? HOW_SHA256 : HOW_WALKED;
        }
        if (fi->by_hash) {
            /* Its hash, once the hashing thread is done (sealed_files). */
            fi->integrity[0] = '\0';
            off = 0;
            goto anchors;
        }
        res = r->s.chain + (size_t)i * MTLS_ANCHOR_TABLES;    /* scan.c */
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            if (res[t].bad_id) {
                fi->broken = 1;
                off += (size_t)snprintf(fi->integrity + off,
                                        sizeof(fi->integrity) - off,
                                        "%s%s broken at id %lld",
                                        off ? "; " : "", mtls_anchor_tables[t],
                                        (long long)res[t].bad_id);
            }
            if (off >= sizeof(fi->integrity)) {
                off = sizeof(fi->integrity) - 1;
            }
        }
        if (!fi->broken) {
            snprintf(fi->integrity, sizeof(fi->integrity),
                     "hash chains verified");
        }
    anchors:
        if (anchors) {
            const anchor_info_t *a = &anchors[i];
            size_t l = strlen(fi->integrity);
            fi->anchored = a->anchored;
            snprintf(fi->integrity + l, sizeof(fi->integrity) - l, "; %s%s",
                     a->rc ? "ANCHOR BROKEN: " : "", a->msg);
            if (fi->meta && a->anchored == 1 && !fi->by_hash) {
                fi->meta->how = HOW_ANCHORS;
            }
        }
        if (fi->meta && fi->meta->missing[0]) {
            /* A file missing before it: rows of the chain no file holds. */
            size_t l = strlen(fi->integrity);
            fi->broken = 1;
            snprintf(fi->integrity + l, sizeof(fi->integrity) - l,
                     "; MISSING: %s", fi->meta->missing);
        }
    }
    free(anchors);
    return EXIT_OK;
}


static void overview(report_t *r)
{
    scan_t *s = &r->s;

    r->n_hs = s->n_hs;
    r->n_fail = s->n_fail;
    r->n_rq = s->n_rq;
    r->n_ev = scalar(r, "SELECT count(*) FROM ev WHERE" P_HS);
    r->per_day = s->per_day;
    r->reasons = s->reasons;
    r->versions = s->suites;
    r->expiry = s->expiry;
    r->scope = s->scope;
}

/* ------------------------------------------------------------------ */
/* Writers                                                              */

static const char *cell(const char *s)
{
    return s ? s : "";
}

static void text_table(FILE *f, const evidence_t *ev, long max)
{
    int i, *w;
    long r;

    if (!ev->nrows) {
        fputs("    (no rows)\n", f);
        return;
    }
    w = calloc((size_t)ev->ncols, sizeof(int));
    for (i = 0; i < ev->ncols; i++) {
        w[i] = (int)strlen(ev->cols[i]);
        for (r = 0; r < ev->nrows && r < max; r++) {
            int l = (int)strlen(cell(ev->rows[r][i]));
            if (l > w[i]) w[i] = l > 48 ? 48 : l;
        }
    }
    fputs("   ", f);
    for (i = 0; i < ev->ncols; i++) fprintf(f, " %-*s", w[i], ev->cols[i]);
    fputc('\n', f);
    for (r = 0; r < ev->nrows && r < max; r++) {
        fputs("   ", f);
        for (i = 0; i < ev->ncols; i++) {
            const char *v = cell(ev->rows[r][i]);
            int k;
            fputc(' ', f);
            /* One line per row; control characters become '?'. */
            for (k = 0; k < w[i] && v[k]; k++) {
                fputc((unsigned char)v[k] < 0x20 ? '?' : v[k], f);
            }
            if (i < ev->ncols - 1) {
                for (; k < w[i]; k++) fputc(' ', f);
            }
        }
        fputc('\n', f);
    }
    if (ev->total > r) {
        fprintf(f, "    ... %ld more rows (--format json, csv or html has up "
                "to %d)\n", ev->total - r, EVIDENCE_MAX);
    }
    free(w);
}

static const char *standard_title(const char *s)
{
    if (!strcmp(s, "pci-dss")) return "PCI DSS v4.0.1 (requirement numbers of v4.0.1)";
    if (!strcmp(s, "hipaa")) return "HIPAA Security Rule (45 CFR Part 164, Subpart C)";
    return "Summary";
}

static const char hipaa_note[] =
    "Readiness note, not a status: the HIPAA Security Rule NPRM of January "
    "2025 (all specifications required; encryption, MFA and an asset "
    "inventory) was not final when this tool was written. A client "
    "certificate is one factor: mTLS alone is not MFA.";

/* How a file's integrity was established, for the cover. */
static const char *established(const report_t *r, const file_info_t *fi)
{
    how_e how = fi->meta ? fi->meta->how : r->no_verify ? HOW_NONE
                                                        : HOW_WALKED;
    return how == HOW_SHA256 ? "sha256" : how == HOW_ANCHORS ? "anchors"
         : how == HOW_WALKED ? "walked" : "none";
}

static const char *established_text(const report_t *r,
                                     const file_info_t *fi)
{
    const char *e = established(r, fi);
    return !strcmp(e, "sha256") ? "its SHA-256 against the record of its "
                                  "seal (no row walked)"
         : !strcmp(e, "anchors") ? "walked (every row's hash recomputed) "
                                   "and anchors of the error log"
         : !strcmp(e, "walked") ? "walked (every row's hash recomputed)"
         : "not established (--no-verify)";
}

/* Why a file given was not read: its records lie outside the period. */
static const char *skipped_why(const file_meta_t *m, char *buf, size_t len)
{
    char a[32], b[32];
    snprintf(buf, len, "not read: its records (%s to %s, from its %s) lie "
             "outside the period", format_time(m->first_us, a),
             format_time(m->last_us, b), !strcmp(m->range_from, "seal")
             ? "seal event" : "first and last rows");
    return buf;
}

static void write_text(FILE *f, report_t *r)
{
    char a[32], b[32], c[32];
    int i, counts[5] = { 0 };

    fprintf(f, "mod_mtls_audit report: %s\n", standard_title(r->standard));
    fprintf(f, "  period:    %s to %s (UTC)\n", format_time(r->since, a),
            format_time(r->until, b));
    fprintf(f, "  generated: %s by mtls-audit %s\n", format_time(r->now, c),
            MTLS_VERSION);
    fprintf(f, "  records:   %lld handshakes (%lld failed), %lld requests, "
            "%lld events\n", (long long)r->n_hs, (long long)r->n_fail,
            (long long)r->n_rq, (long long)r->n_ev);
    for (i = 0; i < r->nfiles; i++) {
        fprintf(f, "  database:  %s\n             sha256 %s\n             %s\n"
                "             established: %s\n", r->fi[i].path,
                r->fi[i].sha256, r->fi[i].integrity,
                established_text(r, &r->fi[i]));
    }
    for (i = 0; i < r->nskipped; i++) {
        char why[256];
        fprintf(f, "  database:  %s\n             %s\n", r->skipped[i]->path,
                skipped_why(r->skipped[i], why, sizeof(why)));
    }
    fprintf(f, "  policy:    %s\n", r->have_policy
            ? "the TLS policy recorded by the module is judged beside the "
              "traffic (below: in force at the end of the period, changes)"
            : "policy evidence missing: no TLS policy recorded for the "
              "period; statuses come from the traffic alone");
    fputs("  scope:\n", f);
    text_table(f, &r->scope, 50);
    for (i = 0; i < r->nchecks; i++) counts[r->checks[i].status]++;
    fprintf(f, "\nstatuses: %d PASS, %d FAIL, %d ATTENTION, %d MANUAL, %d N/A\n",
            counts[ST_PASS], counts[ST_FAIL], counts[ST_ATTENTION],
            counts[ST_MANUAL], counts[ST_NA]);
    fputs("\nfailures by reason:\n", f);
    text_table(f, &r->reasons, 20);
    fputs("\nprotocols and suites:\n", f);
    text_table(f, &r->versions, 20);
    fputs("\ncertificates by expiry:\n", f);
    text_table(f, &r->expiry, 10);
    if (r->have_policy) {
        fputs("\npolicy in force at the end of the period:\n", f);
        text_table(f, &r->pol_in_force, 20);
        fputs("\npolicy changes in the period:\n", f);
        text_table(f, &r->pol_changes, 20);
    }
    for (i = 0; i < r->nchecks; i++) {
        check_t *k = &r->checks[i];
        fprintf(f, "\n[%s] %s  %s\n", status_name[k->status], k->id,
                k->title);
        fprintf(f, "  metric: %s\n  rule:   %s\n", k->metric, k->rule);
        if (k->basis[0]) {
            fprintf(f, "  status from: %s\n", k->basis);
        }
        if (k->policy[0]) {
            fprintf(f, "  policy: %s\n", k->policy);
        }
        if (k->ev.ncols) {
            fprintf(f, "  evidence (%ld rows):\n", k->ev.total);
            text_table(f, &k->ev, TEXT_ROWS);
        }
        if (k->pev.ncols) {
            fprintf(f, "  policy evidence (%ld rows):\n", k->pev.total);
            text_table(f, &k->pev, TEXT_ROWS);
        }
    }
    if (!strcmp(r->standard, "hipaa")) {
        fprintf(f, "\n%s\n", hipaa_note);
    }
}

static void json_evidence(FILE *f, const evidence_t *ev)
{
    long r;
    int i;

    fputs("[", f);
    for (r = 0; r < ev->nrows; r++) {
        fputs(r ? ",\n      {" : "\n      {", f);
        for (i = 0; i < ev->ncols; i++) {
            if (i) fputs(", ", f);
            json_str(f, ev->cols[i]);
            fputs(": ", f);
            if (ev->rows[r][i]) json_str(f, ev->rows[r][i]);
            else fputs("null", f);
        }
        fputs("}", f);
    }
    fputs(ev->nrows ? "\n    ]" : "]", f);
}

static void write_json(FILE *f, report_t *r)
{
    char a[32];
    int i;

    fputs("{\n  \"report\": {\n    \"standard\": ", f);
    json_str(f, r->standard);
    fputs(",\n    \"title\": ", f);
    json_str(f, standard_title(r->standard));
    fprintf(f, ",\n    \"since\": \"%s\"", format_time(r->since, a));
    fprintf(f, ",\n    \"until\": \"%s\"", format_time(r->until, a));
    fprintf(f, ",\n    \"generated\": \"%s\"", format_time(r->now, a));
    fprintf(f, ",\n    \"tool_version\": \"%s\"", MTLS_VERSION);
    fprintf(f, ",\n    \"records\": {\"handshakes\": %lld, \"failed\": %lld, "
            "\"requests\": %lld, \"events\": %lld}", (long long)r->n_hs,
            (long long)r->n_fail, (long long)r->n_rq, (long long)r->n_ev);
    fputs(",\n    \"databases\": [", f);
    for (i = 0; i < r->nfiles; i++) {
        fputs(i ? ", {\"path\": " : "{\"path\": ", f);
        json_str(f, r->fi[i].path);
        fprintf(f, ", \"sha256\": \"%s\", \"integrity\": ", r->fi[i].sha256);
        json_str(f, r->fi[i].integrity);
        fprintf(f, ", \"chain_broken\": %s, \"read\": true, \"established\": "
                "\"%s\"}", r->fi[i].broken ? "true" : "false",
                established(r, &r->fi[i]));
    }
    for (i = 0; i < r->nskipped; i++) {
        char why[256];
        fputs(r->nfiles || i ? ", {\"path\": " : "{\"path\": ", f);
        json_str(f, r->skipped[i]->path);
        fputs(", \"read\": false, \"established\": \"none\", "
              "\"integrity\": ", f);
        json_str(f, skipped_why(r->skipped[i], why, sizeof(why)));
        fputs("}", f);
    }
    fputs("],\n    \"scope\": ", f);
    json_evidence(f, &r->scope);
    fputs(",\n    \"per_day\": ", f);
    json_evidence(f, &r->per_day);
    fputs(",\n    \"failures_by_reason\": ", f);
    json_evidence(f, &r->reasons);
    fputs(",\n    \"protocols_and_suites\": ", f);
    json_evidence(f, &r->versions);
    fputs(",\n    \"certificate_expiry\": ", f);
    json_evidence(f, &r->expiry);
    fprintf(f, ",\n    \"policy_recorded\": %s", r->have_policy ? "true"
                                                              : "false");
    if (r->have_policy) {
        fputs(",\n    \"policy_in_force\": ", f);
        json_evidence(f, &r->pol_in_force);
        fputs(",\n    \"policy_changes\": ", f);
        json_evidence(f, &r->pol_changes);
    }
    if (!strcmp(r->standard, "hipaa")) {
        fputs(",\n    \"note\": ", f);
        json_str(f, hipaa_note);
    }
    fputs("\n  },\n  \"checks\": [", f);
    for (i = 0; i < r->nchecks; i++) {
        check_t *k = &r->checks[i];
        fputs(i ? ",\n  {" : "\n  {", f);
        fputs("\"id\": ", f);
        json_str(f, k->id);
        fputs(", \"title\": ", f);
        json_str(f, k->title);
        fprintf(f, ", \"status\": \"%s\", \"metric\": ", status_name[k->status]);
        json_str(f, k->metric);
        fputs(", \"rule\": ", f);
        json_str(f, k->rule);
        fprintf(f, ",\n    \"evidence_total\": %ld, \"evidence\": ",
                k->ev.total);
        json_evidence(f, &k->ev);
        if (k->basis[0]) {
            fputs(",\n    \"status_from\": ", f);
            json_str(f, k->basis);
        }
        if (k->policy[0]) {
            fputs(", \"policy\": ", f);
            json_str(f, k->policy);
        }
        if (k->pev.ncols) {
            fprintf(f, ",\n    \"policy_evidence_total\": %ld, "
                    "\"policy_evidence\": ", k->pev.total);
            json_evidence(f, &k->pev);
        }
        fputs("}", f);
    }
    fputs("\n  ]\n}\n", f);
}

static void write_csv(FILE *f, report_t *r)
{
    int i;
    fputs("\"id\",\"title\",\"status\",\"metric\",\"rule\",\"evidence_rows\"\r\n",
          f);
    for (i = 0; i < r->nchecks; i++) {
        check_t *k = &r->checks[i];
        csv_cell(f, k->id);
        fputc(',', f);
        csv_cell(f, k->title);
        fputc(',', f);
        csv_cell(f, status_name[k->status]);
        fputc(',', f);
        csv_cell(f, k->metric);
        fputc(',', f);
        csv_cell(f, k->rule);
        fprintf(f, ",%ld\r\n", k->ev.total);
    }
}

static void html_table(FILE *f, const evidence_t *ev, long max)
{
    long r;
    int i;

    if (!ev->nrows) {
        fputs("<p class=\"none\">No rows.</p>\n", f);
        return;
    }
    fputs("<table><thead><tr>", f);
    for (i = 0; i < ev->ncols; i++) {
        fputs("<th>", f);
        html_text(f, ev->cols[i]);
        fputs("</th>", f);
    }
    fputs("</tr></thead><tbody>\n", f);
    for (r = 0; r < ev->nrows && r < max; r++) {
        fputs("<tr>", f);
        for (i = 0; i < ev->ncols; i++) {
            fputs("<td>", f);
            html_text(f, cell(ev->rows[r][i]));
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
    if (ev->total > r) {
        fprintf(f, "<p class=\"more\">%ld more rows not shown (the JSON "
                "format carries up to %d).</p>\n", ev->total - r,
                EVIDENCE_MAX);
    }
}

/* Handshakes per day by outcome, as stacked bars of inline SVG. */
static void html_chart(FILE *f, const evidence_t *d)
{
    static const char *const colour[] = {
        "#2e7d32", "#c62828", "#ef6c00", "#6a1b9a", "#546e7a"
    };
    static const char *const label[] = {
        "accepted", "rejected", "no_certificate", "failed", "aborted"
    };
    const int W = 900, H = 220, left = 50, bottom = 30;
    double max = 1, bw;
    long r;
    int k;

    for (r = 0; r < d->nrows; r++) {
        double s = 0;
        for (k = 1; k <= 5; k++) s += atof(cell(d->rows[r][k]));
        if (s > max) max = s;
    }
    bw = d->nrows ? (double)(W - left - 10) / (double)d->nrows : 0;
    fprintf(f, "<svg class=\"chart\" viewBox=\"0 0 %d %d\" role=\"img\" "
            "aria-label=\"Handshakes per day by outcome\" "
            "xmlns=\"http://www.w3.org/2000/svg\">\n", W, H + 40);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
            "\n", left, H - bottom, W - 10, H - bottom);
    fprintf(f, "<text x=\"%d\" y=\"12\" font-size=\"11\" text-anchor=\"end\">"
            "%.0f</text>\n", left - 4, max);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">"
            "0</text>\n", left - 4, H - bottom);
    for (r = 0; r < d->nrows; r++) {
        double y = H - bottom, x = left + bw * (double)r;
        for (k = 1; k <= 5; k++) {
            double v = atof(cell(d->rows[r][k]));
            double h = v / max * (double)(H - bottom - 10);
            if (v <= 0) continue;
            y -= h;
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                    "height=\"%.1f\" fill=\"%s\"><title>", x + bw * 0.1, y,
                    bw * 0.8 > 1 ? bw * 0.8 : 1, h, colour[k - 1]);
            html_text(f, cell(d->rows[r][0]));
            fprintf(f, " %s: %.0f</title></rect>\n", label[k - 1], v);
        }
        if (d->nrows <= 31 || r % (d->nrows / 12 + 1) == 0) {
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"9\" "
                    "text-anchor=\"middle\">", x + bw / 2, H - bottom + 12);
            html_text(f, cell(d->rows[r][0]) + 5);
            fputs("</text>\n", f);
        }
    }
    for (k = 0; k < 5; k++) {
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" "
                "fill=\"%s\"/><text x=\"%d\" y=\"%d\" font-size=\"11\">%s"
                "</text>\n", left + k * 150, H + 8, colour[k],
                left + k * 150 + 14, H + 17, label[k]);
    }
    fputs("</svg>\n", f);
}

static const char html_style[] =
"body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;"
"color:#1b1f23;margin:0 auto;max-width:1100px;padding:24px}"
"h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;"
"border-bottom:1px solid #d0d7de;padding-bottom:4px}"
"h3{font-size:15px;margin:18px 0 4px}"
"table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:12px}"
"th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;"
"vertical-align:top;word-break:break-word}th{background:#f6f8fa}"
".cover td:first-child{width:150px;font-weight:600}"
".st{display:inline-block;min-width:78px;text-align:center;border-radius:3px;"
"padding:1px 6px;font-weight:700;font-size:12px;color:#fff}"
".PASS{background:#2e7d32}.FAIL{background:#c62828}"
".ATTENTION{background:#ef6c00}.MANUAL{background:#1565c0}"
".NA{background:#757575}.check{border:1px solid #d0d7de;border-radius:6px;"
"padding:8px 12px;margin:12px 0;page-break-inside:avoid}"
".metric{font-weight:600}.rule{color:#57606a;font-size:12px}"
".none,.more{color:#57606a;font-size:12px}.chart{width:100%;height:auto}"
".summary td{text-align:center;font-size:16px}code{font-size:12px}"
"@media print{body{max-width:none;padding:0;font-size:11px}"
"h2{page-break-after:avoid}.check{page-break-inside:avoid}"
"a{color:inherit;text-decoration:none}}";

static void write_html(FILE *f, report_t *r)
{
    char a[32], b[32], c[32];
    int i, counts[5] = { 0 };

    for (i = 0; i < r->nchecks; i++) counts[r->checks[i].status]++;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width\">"
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
          "'none'; style-src 'unsafe-inline'; img-src data:\">"
          "<title>mTLS audit report: ", f);
    html_text(f, standard_title(r->standard));
    fprintf(f, "</title><style>%s</style></head><body>\n", html_style);
    fputs("<header id=\"cover\"><h1>mTLS audit report</h1><p>", f);
    html_text(f, standard_title(r->standard));
    fputs("</p><table class=\"cover\">", f);
    fprintf(f, "<tr><td>Period</td><td>%s to %s (UTC)</td></tr>",
            format_time(r->since, a), format_time(r->until, b));
    fprintf(f, "<tr><td>Generated</td><td>%s by mtls-audit %s</td></tr>",
            format_time(r->now, c), MTLS_VERSION);
    fprintf(f, "<tr><td>Records</td><td>%lld handshakes (%lld failed), %lld "
            "requests, %lld events</td></tr>", (long long)r->n_hs,
            (long long)r->n_fail, (long long)r->n_rq, (long long)r->n_ev);
    for (i = 0; i < r->nfiles; i++) {
        fputs("<tr><td>Database</td><td><code>", f);
        html_text(f, r->fi[i].path);
        fprintf(f, "</code><br>SHA-256 <code>%s</code><br>", r->fi[i].sha256);
        html_text(f, r->fi[i].integrity);
        fputs("<br>Established: ", f);
        html_text(f, established_text(r, &r->fi[i]));
        fputs("</td></tr>", f);
    }
    for (i = 0; i < r->nskipped; i++) {
        char why[256];
        fputs("<tr><td>Database</td><td><code>", f);
        html_text(f, r->skipped[i]->path);
        fputs("</code><br>", f);
        html_text(f, skipped_why(r->skipped[i], why, sizeof(why)));
        fputs("</td></tr>", f);
    }
    fputs("<tr><td>Policy</td><td>", f);
    html_text(f, r->have_policy ? "The TLS policy recorded by the module is "
              "judged beside the traffic (see Policy in force)."
              : "Policy evidence missing: no TLS policy recorded for the "
              "period; statuses come from the traffic alone.");
    fputs("</td></tr>", f);
    fputs("</table><h3>Scope: servers seen</h3>\n", f);
    html_table(f, &r->scope, HTML_ROWS);
    fputs("</header>\n<section id=\"summary\"><h2>Summary of statuses</h2>"
          "<table class=\"summary\"><tr>", f);
    for (i = 0; i < 5; i++) {
        fprintf(f, "<td><span class=\"st %s\">%s</span><br>%d</td>",
                i == ST_NA ? "NA" : status_name[i], status_name[i], counts[i]);
    }
    fputs("</tr></table><table><thead><tr><th>Requirement</th><th>Status</th>"
          "<th>Metric</th></tr></thead><tbody>", f);
    for (i = 0; i < r->nchecks; i++) {
        check_t *k = &r->checks[i];
        fprintf(f, "<tr><td><a href=\"#c%d\">", i);
        html_text(f, k->id);
        fputs(" ", f);
        html_text(f, k->title);
        fprintf(f, "</a></td><td><span class=\"st %s\">%s</span></td><td>",
                k->status == ST_NA ? "NA" : status_name[k->status],
                status_name[k->status]);
        html_text(f, k->metric);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table></section>\n<section id=\"per-day\"><h2>"
          "Handshakes per day by outcome</h2>\n", f);
    html_chart(f, &r->per_day);
    fputs("</section>\n<section id=\"failures\"><h2>Failures by reason</h2>\n",
          f);
    html_table(f, &r->reasons, HTML_ROWS);
    fputs("</section>\n<section id=\"certificates\"><h2>Certificate inventory"
          "</h2><h3>By expiry</h3>\n", f);
    html_table(f, &r->expiry, HTML_ROWS);
    for (i = 0; i < r->nchecks; i++) {
        if (!strcmp(r->checks[i].id, "4.2.1.1")
            || !strcmp(r->checks[i].id, "certificates")) {
            fputs("<h3>Certificates accepted in the period</h3>\n", f);
            html_table(f, &r->checks[i].ev, HTML_ROWS);
        }
    }
    fputs("</section>\n<section id=\"protocols\"><h2>TLS versions and cipher "
          "suites</h2>\n", f);
    html_table(f, &r->versions, HTML_ROWS);
    fputs("</section>\n<section id=\"policy\"><h2>Policy in force</h2>\n",
          f);
    if (r->have_policy) {
        fputs("<p class=\"more\">At the end of the period, per audited "
              "vhost, as the module recorded it at the last start or "
              "reload.</p>\n", f);
        html_table(f, &r->pol_in_force, HTML_ROWS);
        fputs("<h3>Policy changes in the period</h3>\n", f);
        html_table(f, &r->pol_changes, HTML_ROWS);
    }
    else {
        fputs("<p class=\"none\">Policy evidence missing: no TLS policy "
              "recorded for the period (a database written before the "
              "module recorded its policy).</p>\n", f);
    }
    fputs("</section>\n<section id=\"requirements\"><h2>Requirements</h2>\n",
          f);
    for (i = 0; i < r->nchecks; i++) {
        check_t *k = &r->checks[i];
        fprintf(f, "<div class=\"check\" id=\"c%d\"><h3><span class=\"st %s\">"
                "%s</span> ", i, k->status == ST_NA ? "NA"
                : status_name[k->status], status_name[k->status]);
        html_text(f, k->id);
        fputs(" &mdash; ", f);
        html_text(f, k->title);
        fputs("</h3><p class=\"metric\">", f);
        html_text(f, k->metric);
        fputs("</p><p class=\"rule\">Rule: ", f);
        html_text(f, k->rule);
        fputs("</p>\n", f);
        if (k->basis[0]) {
            fputs("<p class=\"rule\">Status from: ", f);
            html_text(f, k->basis);
            if (k->policy[0]) {
                fputs(". Policy: ", f);
                html_text(f, k->policy);
            }
            fputs("</p>\n", f);
        }
        if (k->ev.ncols) {
            fprintf(f, "<p class=\"more\">Evidence: %ld rows.</p>\n",
                    k->ev.total);
            html_table(f, &k->ev, HTML_ROWS);
        }
        if (k->pev.ncols) {
            fprintf(f, "<p class=\"more\">Policy evidence: %ld rows.</p>\n",
                    k->pev.total);
            html_table(f, &k->pev, HTML_ROWS);
        }
        fputs("</div>\n", f);
    }
    fputs("</section>\n", f);
    if (!strcmp(r->standard, "hipaa")) {
        fputs("<section id=\"notes\"><h2>Notes</h2><p>", f);
        html_text(f, hipaa_note);
        fputs("</p></section>\n", f);
    }
    fputs("<footer><p class=\"more\">Statuses: PASS, FAIL, ATTENTION (a "
          "finding to look at), MANUAL (the database cannot prove it), N/A "
          "(nothing to judge). Produced by mtls-audit from the mod_mtls_audit "
          "database(s) above.</p></footer>\n</body></html>\n", f);
}

/* ------------------------------------------------------------------ */

static const char report_help[] =
"usage: mtls-audit report --standard pci-dss|hipaa|summary [--since D]\n"
"                         [--until D] [--format text|json|csv|html]\n"
"                         [-o FILE] [--key FILE] [--anchor FILE]\n"
"                         [--no-verify] DB...\n"
"\n"
"Compliance evidence over the period [--since, --until) (default: the 30\n"
"days up to now, UTC).  The cover states the period, the servers seen, the\n"
"number of records, the integrity of each database and its SHA-256, and\n"
"the tool version; then, for each requirement, a status (PASS, FAIL,\n"
"ATTENTION, MANUAL, N/A), the metric behind it, the rule that gave it and\n"
"the rows that prove it.\n"
"\n"
"DB: files or directories (every *.db in them), in any order: they are\n"
"read in the order of their chains.  Only the files whose time range meets\n"
"the period (or the 90 days before its end) are read; the cover names the\n"
"others, and says of each file read how its integrity was established:\n"
"walked, a sealed file's SHA-256 against the one its successor recorded\n"
"(no walk; with --anchor also against the module's 'sealed' line in the\n"
"error log), anchors.  A file missing between two given FAILs 10.3.4.\n"
"\n"
"  --standard S     pci-dss (PCI DSS v4.0.1), hipaa (45 CFR 164), summary\n"
"  --since D        start of the period: a date or an ISO time, UTC\n"
"  --until D        end of the period (excluded)\n"
"  --format F       text (default), json, csv (one row per check) or html\n"
"                   (one self-contained file; prints as a clean PDF)\n"
"  -o FILE          write to FILE instead of standard output\n"
"  --key FILE       the MTLSAuditChainKey file, to verify HMAC chains\n"
"  --anchor FILE    the server's error log: check the chain heads it holds\n"
"                   (10.3.4 can PASS only with anchors)\n"
"  --no-verify      skip the hash-chain walk (10.3.4 becomes MANUAL)\n"
"\n"
"Exit: 0 no FAIL, 1 a check FAILs, 2 usage, 3 database or I/O error.\n";

int cmd_report(int argc, char **argv)
{
    const char *standard = NULL, *since = NULL, *until = NULL, *format = NULL;
    const char *outfile = NULL, *keyfile = NULL, *kerr, *anchor = NULL;
    int no_verify = 0;
    const opt_t opts[] = {
        { "--standard", 1, &standard, NULL }, { "--since", 1, &since, NULL },
        { "--until", 1, &until, NULL }, { "--format", 1, &format, NULL },
        { "-o", 1, &outfile, NULL }, { "--output", 1, &outfile, NULL },
        { "--key", 1, &keyfile, NULL }, { "--anchor", 1, &anchor, NULL },
        { "--no-verify", 0, NULL, &no_verify }, { NULL, 0, NULL, NULL }
    };
    report_t r;
    fmt_e fmt = FMT_TEXT;
    FILE *out = stdout;
    char **files, detail[600];
    int nfiles, rc, i, any_fail = 0;

    memset(&r, 0, sizeof(r));
    rc = parse_opts(argc, argv, opts, report_help, "report", &files, &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    rc = EXIT_USAGE;
    if (!standard) {
        fail("--standard is required: pci-dss, hipaa or summary");
        goto out;
    }
    if (strcmp(standard, "pci-dss") && strcmp(standard, "hipaa")
        && strcmp(standard, "summary")) {
        fail("unknown standard '%s': use pci-dss, hipaa or summary",
             standard);
        goto out;
    }
    r.standard = standard;
    r.now = mtls_now_us();
    r.until = r.now;
    if (until && parse_time(until, &r.until) != 0) {
        fail("--until '%s' is not a date (YYYY-MM-DD) or an ISO time", until);
        goto out;
    }
    r.since = r.until - 30 * DAY_US;
    if (since && parse_time(since, &r.since) != 0) {
        fail("--since '%s' is not a date (YYYY-MM-DD) or an ISO time", since);
        goto out;
    }
    if (r.since >= r.until) {
        fail("the period is empty: --since must come before --until");
        goto out;
    }
    if (format && parse_format(format, "|text|json|csv|html|", &fmt) != 0) {
        goto out;
    }
    if (!nfiles) {
        fail("no database given; see 'mtls-audit report --help'");
        goto out;
    }
    if (keyfile && mtls_chain_key_load(keyfile, &r.key, &kerr) != 0) {
        fail("%s: %s", keyfile, kerr);
        rc = EXIT_DB;
        goto out;
    }
    /* Only the files whose time range meets the period (and the 90 days
     * before its end, which 8.2.6 reads); the others are named on the
     * cover. */
    {
        const fileset_t *set = files_set();
        apr_int64_t from = r.until - 90 * DAY_US < r.since
                           ? r.until - 90 * DAY_US : r.since;
        select_period(files, &nfiles, from, r.until);
        r.skipped = calloc((size_t)set->n + 1, sizeof(*r.skipped));
        for (i = 0; r.skipped && i < set->n; i++) {
            if (!set->f[i].selected) r.skipped[r.nskipped++] = &set->f[i];
        }
    }
    r.files = files;
    r.nfiles = nfiles;
    r.no_verify = no_verify;
    r.anchor = anchor;
    if ((rc = open_dataset(&r.ds, files, nfiles)) != EXIT_OK) {
        goto out;
    }
    r.fi = calloc((size_t)nfiles, sizeof(file_info_t));
    r.checks = calloc(40, sizeof(check_t));
    if (!r.fi || !r.checks) {
        fail("out of memory");
        rc = EXIT_DB;
        goto out;
    }
    if (!(r.no_walk = calloc((size_t)nfiles + 1, 1))) {
        fail("out of memory");
        rc = EXIT_DB;
        goto out;
    }
    for (i = 0; i < nfiles; i++) {
        file_info_t *fi = &r.fi[i];
        char wal[1100];
        struct stat sb;
        mtls_strlcpy(fi->path, files[i], sizeof(fi->path));
        fi->meta = file_meta(files[i]);
        /* A sealed file whose successor (given) recorded its SHA-256, with
         * no write-ahead log beside it (rows there are not in the hash):
         * checked by its hash, not walked. */
        snprintf(wal, sizeof(wal), "%s-wal", files[i]);
        fi->by_hash = !no_verify && fi->meta && fi->meta->sealed_sha256[0]
                      && fi->meta->succ >= 0
                      && !(stat(wal, &sb) == 0 && sb.st_size > 0);
        r.no_walk[i] = (unsigned char)fi->by_hash;
    }
    {
        hash_job_t job = { &r, 0, 0 };
        pthread_t th;
        int threaded = pthread_create(&th, NULL, hash_files, &job) == 0;

        /* One pass: the chains walked and the period counted from the
         * same rows (scan.c). */
        db_error = 0;
        r.s.since = r.since;
        r.s.until = r.until;
        r.s.now = r.now;
        r.s.verify = !r.no_verify;
        r.s.no_walk = r.no_walk;
        r.s.key = &r.key;
        rc = scan_period(&r.ds, &r.s);
        if (rc == EXIT_OK) {
            rc = verify_files(&r);
        }
        if (rc == EXIT_OK) {
            rc = check_schemas(&r);
        }
        if (threaded) {
            pthread_join(th, NULL);
        }
        else {
            hash_files(&job);
        }
        if (rc == EXIT_OK && job.bad) {
            fail("%s: %s", files[job.bad - 1], strerror(job.err));
            rc = EXIT_DB;
        }
        if (rc == EXIT_OK) {
            sealed_files(&r);
        }
        if (rc != EXIT_OK) {
            goto out;
        }
    }
    overview(&r);
    /* The recorded policy (policy.c), judged beside the traffic. */
    if ((rc = policy_load(r.ds.db, &r.ds, &r.pol)) != EXIT_OK) {
        goto out;
    }
    for (i = 0; i < (int)r.pol.n; i++) {
        r.have_policy |= r.pol.rows[i].policy
                         && POLICY_OVERLAPS(&r.pol.rows[i], r.since, r.until);
    }
    if (r.have_policy) {
        policy_in_force(r.ds.db, &r.pol, r.until - 1, &r.pol_in_force);
        policy_changes(&r.pol, r.since, r.until, &r.pol_changes);
    }
    if (!strcmp(standard, "pci-dss")) run_pci(&r);
    else if (!strcmp(standard, "hipaa")) run_hipaa(&r);
    else run_summary(&r);
    if (db_error) {
        rc = EXIT_DB;
        goto out;
    }
    if (outfile && !(out = fopen(outfile, "w"))) {
        fail("cannot write %s: %s", outfile, strerror(errno));
        rc = EXIT_DB;
        goto out;
    }
    switch (fmt) {
    case FMT_JSON: write_json(out, &r); break;
    case FMT_CSV:  write_csv(out, &r); break;
    case FMT_HTML: write_html(out, &r); break;
    default:       write_text(out, &r); break;
    }
    for (i = 0; i < r.nchecks; i++) {
        any_fail |= r.checks[i].status == ST_FAIL;
    }
    rc = finish_output(out, any_fail ? EXIT_FINDING : EXIT_OK);
    if (out != stdout && fclose(out) != 0) {
        fail("cannot write %s: %s", outfile, strerror(errno));
        rc = EXIT_DB;
    }
    out = stdout;
    if (rc != EXIT_DB) {
        close_dataset(&r.ds);
        snprintf(detail, sizeof(detail), "report --standard %s "
                 "(%d checks, exit %d)", standard, r.nchecks, rc);
        record_access(files, nfiles, detail, &r.key);
    }
out:
    if (r.ds.db) {
        close_dataset(&r.ds);
    }
    if (r.checks) {
        for (i = 0; i < r.nchecks; i++) {
            evidence_free(&r.checks[i].ev);
            evidence_free(&r.checks[i].pev);
        }
    }
    policy_free(&r.pol);
    evidence_free(&r.pol_in_force);
    evidence_free(&r.pol_changes);
    scan_free(&r.s);
    free(r.checks);
    free(r.fi);
    free(r.skipped);
    free(r.no_walk);
    mtls_chain_key_clear(&r.key);
    free(files);
    return rc;
}
