/*
 * scan.c -- the report's one pass over each database's tables; see
 * scan.h.
 *
 * The tables are cut by id into pieces that two worker threads read,
 * each on its own connection (see "The engine" below).  Without the chain
 * walk, only the id range that covers the period is read (found through
 * the time index, widened by a margin because ids follow the time only
 * roughly: children write their batches in turn), and rows are filtered
 * by time here.  Certificates are loaded once per database into an array
 * indexed by id.  Maps are open-addressing hash tables over binary keys
 * (the fields of a group one after another); a map that would pass its
 * limit counts what it had to drop instead of growing without bound, and
 * the report says how many groups it could not list.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scan.h"
#include "mtls_core.h"
#include "mtls_chain.h"
#include "mtls_store.h"
#include "readahead.h"

#define ID_MARGIN   200000      /* ids around the period also read */
#define MAP_LIMIT   2000000     /* entries a map may hold */

/* ------------------------------------------------------------------ */
/* Evidence tables                                                      */

void ev_init(evidence_t *ev, const char *const *cols)
{
    int i;
    memset(ev, 0, sizeof(*ev));
    for (ev->ncols = 0; cols[ev->ncols]; ev->ncols++)
        ;
    ev->cols = calloc((size_t)ev->ncols + 1, sizeof(char *));   /* NULL-ended */
    for (i = 0; i < ev->ncols; i++) {
        ev->cols[i] = strdup(cols[i]);
    }
}

/* Rows a and b of ev by its least columns, then by every column. */
static int least_cmp(const evidence_t *ev, char *const *a, char *const *b)
{
    int k, c;
    for (k = 0; k < ev->nleast + ev->ncols; k++) {
        int col = k < ev->nleast ? ev->least[k] : k - ev->nleast;
        c = strcmp(a[col] ? a[col] : "", b[col] ? b[col] : "");
        if (c) return c;
    }
    return 0;
}

/* The kept row of a full ev with least columns that comes last: found
 * again only after it was replaced (or the rows moved), so that a row
 * that comes after it, as most do in a year's reading, costs one
 * comparison. */
static long ev_worst(evidence_t *ev)
{
    long r;

    if (!ev->worst_ok) {
        ev->worst = 0;
        for (r = 1; r < ev->nrows; r++) {
            if (least_cmp(ev, ev->rows[r], ev->rows[ev->worst]) > 0) {
                ev->worst = r;
            }
        }
        ev->worst_ok = 1;
    }
    return ev->worst;
}

/* A full ev with least columns: row (owned) replaces its last row when it
 * comes before it, else is freed.  The rows kept are then the same
 * whatever the order they came in: a report's sample of bursts or shared
 * certificates does not depend on how the tables were read. */
static void ev_keep_least(evidence_t *ev, char **row)
{
    long worst = ev_worst(ev);
    int i;

    if (least_cmp(ev, row, ev->rows[worst]) < 0) {
        char **old = ev->rows[worst];
        ev->rows[worst] = row;
        row = old;
        ev->worst_ok = 0;
    }
    for (i = 0; i < ev->ncols; i++) free(row[i]);
    free(row);
}

void ev_add(evidence_t *ev, const char *const *vals)
{
    char **row, ***nr;
    int i;

    ev->total++;
    if (ev->nrows >= EVIDENCE_MAX && ev->least && ev->nrows > 0) {
        /* Most rows come after every kept one: compared, not copied. */
        if (least_cmp(ev, (char *const *)vals, ev->rows[ev_worst(ev)]) >= 0) {
            return;
        }
        if (!(row = calloc((size_t)ev->ncols, sizeof(char *)))) return;
        for (i = 0; i < ev->ncols; i++) {
            row[i] = vals[i] ? strdup(vals[i]) : NULL;
        }
        ev_keep_least(ev, row);
        return;
    }
    if (ev->nrows >= EVIDENCE_MAX) {
        return;
    }
    row = calloc((size_t)ev->ncols, sizeof(char *));
    nr = realloc(ev->rows, sizeof(char **) * (size_t)(ev->nrows + 1));
    if (!row || !nr) {
        free(row);
        if (nr) ev->rows = nr;
        return;
    }
    ev->rows = nr;
    for (i = 0; i < ev->ncols; i++) {
        row[i] = vals[i] ? strdup(vals[i]) : NULL;
    }
    ev->rows[ev->nrows++] = row;
    ev->worst_ok = 0;
}

/* A row that would not be kept: counted only. */
static int ev_full(evidence_t *ev)
{
    if (ev->nrows < EVIDENCE_MAX) return 0;
    ev->total++;
    return 1;
}

static int sort_col, sort_num, sort_desc;

static int row_cmp(const void *a, const void *b)
{
    const char *x = (*(char **const *)a)[sort_col];
    const char *y = (*(char **const *)b)[sort_col];
    int c;

    x = x ? x : "";
    y = y ? y : "";
    if (sort_num) {
        double dx = atof(x), dy = atof(y);
        c = dx < dy ? -1 : dx > dy;
    }
    else {
        c = strcmp(x, y);
    }
    return sort_desc ? -c : c;
}

/* An evidence table with least columns in that order (then by every
 * column): kept rows whose order does not depend on the reading. */
static const evidence_t *least_ev;

static int least_row_cmp(const void *a, const void *b)
{
    return least_cmp(least_ev, *(char **const *)a, *(char **const *)b);
}

static void ev_sort_least(evidence_t *ev)
{
    least_ev = ev;
    if (ev->least && ev->nrows > 1) {
        qsort(ev->rows, (size_t)ev->nrows, sizeof(char **), least_row_cmp);
    }
    ev->worst_ok = 0;
}

void ev_sort(evidence_t *ev, int col, int numeric, int desc)
{
    sort_col = col;
    sort_num = numeric;
    sort_desc = desc;
    if (ev->nrows > 1) {
        qsort(ev->rows, (size_t)ev->nrows, sizeof(char **), row_cmp);
    }
    ev->worst_ok = 0;
}

void evidence_free(evidence_t *ev)
{
    long r;
    int i;
    for (r = 0; r < ev->nrows; r++) {
        for (i = 0; i < ev->ncols; i++) free(ev->rows[r][i]);
        free(ev->rows[r]);
    }
    for (i = 0; i < ev->ncols; i++) free(ev->cols[i]);
    free(ev->rows);
    free(ev->cols);
    memset(ev, 0, sizeof(*ev));
}

/* Move src's rows to the end of dst (both of the same columns); src is
 * left empty.  Totals add up; kept rows stay within EVIDENCE_MAX. */
static void ev_take(evidence_t *dst, evidence_t *src)
{
    long r, keep = EVIDENCE_MAX - dst->nrows;
    char ***nr;
    int i;

    if (dst->least) {
        /* Each row kept or not by its order. */
        for (r = 0; r < src->nrows; r++) {
            char ***nr2;
            if (dst->nrows >= EVIDENCE_MAX && dst->nrows > 0) {
                ev_keep_least(dst, src->rows[r]);
            }
            else if ((nr2 = realloc(dst->rows, sizeof(char **)
                                    * (size_t)(dst->nrows + 1)))) {
                dst->rows = nr2;
                dst->rows[dst->nrows++] = src->rows[r];
                dst->worst_ok = 0;
            }
            else {
                for (i = 0; i < src->ncols; i++) free(src->rows[r][i]);
                free(src->rows[r]);
            }
        }
        dst->total += src->total;
        free(src->rows);
        src->rows = NULL;
        src->nrows = src->total = 0;
        return;
    }
    if (keep > src->nrows) keep = src->nrows;
    if (keep > 0 && (nr = realloc(dst->rows, sizeof(char **)
                                  * (size_t)(dst->nrows + keep)))) {
        dst->rows = nr;
        memcpy(dst->rows + dst->nrows, src->rows, sizeof(char **)
               * (size_t)keep);
        dst->nrows += keep;
    }
    else {
        keep = 0;
    }
    for (r = keep; r < src->nrows; r++) {
        for (i = 0; i < src->ncols; i++) free(src->rows[r][i]);
        free(src->rows[r]);
    }
    dst->total += src->total;
    free(src->rows);
    src->rows = NULL;
    src->nrows = src->total = 0;
}

/* ------------------------------------------------------------------ */
/* Maps                                                                 */

/* Keys live in chunks owned by their map, freed with it: a year's scan
 * makes millions of short-lived window entries, and one malloc each
 * cost a tenth of the scan. */
typedef struct chunk_s {
    struct chunk_s *next;
    size_t          used, cap;
    char            b[];
} chunk_t;

#define CHUNK_SIZE 65536

typedef struct {
    const char  *key;           /* NULL: empty slot */
    size_t       klen;
    apr_uint64_t h;
    apr_int64_t  v[5];
} ment_t;

typedef struct {
    ment_t  *t;
    size_t   cap, n;
    long     dropped;
    chunk_t *chunks;
    ment_t  *last;              /* the entry found last: rows repeat it */
} map_t;

/* Entries a map may hold (MTLS_AUDIT_MAP_LIMIT for the tests), and the
 * groups the maps could not hold over the whole scan (added up as maps
 * are freed, by any thread). */
static size_t map_limit = MAP_LIMIT;
static long maps_dropped;

/* A key: fields one after another, each a kind byte and its value --
 * 'i' and 8 bytes, 's' and a 2-byte length and up to 400 bytes, 'n' for
 * a NULL string -- so a key is binary and needs no escaping. */
typedef struct {
    char   b[1536];
    size_t n;
} key_t_;

static void kb_reset(key_t_ *k) { k->n = 0; }

static void kb_str(key_t_ *k, const char *s)
{
    size_t l = s ? strlen(s) : 0;
    if (l > 400) l = 400;
    if (k->n + l + 3 > sizeof(k->b)) return;
    if (!s) {
        k->b[k->n++] = 'n';
        return;
    }
    k->b[k->n++] = 's';
    k->b[k->n++] = (char)(l >> 8);
    k->b[k->n++] = (char)l;
    memcpy(k->b + k->n, s, l);
    k->n += l;
}

static void kb_int(key_t_ *k, apr_int64_t v)
{
    if (k->n + 9 > sizeof(k->b)) return;
    k->b[k->n++] = 'i';
    memcpy(k->b + k->n, &v, 8);
    k->n += 8;
}

/* Split an entry's key back into its fields as text (n at most). */
static int key_fields(const ment_t *e, char fields[][404], int n)
{
    size_t i = 0;
    int f = 0;

    while (i < e->klen && f < n) {
        char kind = e->key[i++];
        if (kind == 'i') {
            apr_int64_t v;
            memcpy(&v, e->key + i, 8);
            snprintf(fields[f], 404, "%lld", (long long)v);
            i += 8;
        }
        else if (kind == 's') {
            size_t l = ((size_t)(unsigned char)e->key[i] << 8)
                       | (unsigned char)e->key[i + 1];
            memcpy(fields[f], e->key + i + 2, l);
            fields[f][l] = '\0';
            i += 2 + l;
        }
        else {
            fields[f][0] = '\0';
        }
        f++;
    }
    return f;
}

/* A multiply-and-fold hash over 8 bytes at a time. */
static apr_uint64_t khash(const char *p, size_t n)
{
    apr_uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;

    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}

static char *map_alloc(map_t *m, size_t n)
{
    chunk_t *c = m->chunks;

    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        if (!(c = malloc(sizeof(*c) + cap))) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = m->chunks;
        m->chunks = c;
    }
    c->used += n;
    return c->b + c->used - n;
}

static int map_grow(map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64, i;
    ment_t *t = calloc(cap, sizeof(ment_t));

    if (!t) return -1;
    for (i = 0; i < m->cap; i++) {
        if (m->t[i].key) {
            size_t j = m->t[i].h & (cap - 1);
            while (t[j].key) j = (j + 1) & (cap - 1);
            t[j] = m->t[i];
        }
    }
    free(m->t);
    m->t = t;
    m->cap = cap;
    m->last = NULL;
    return 0;
}

static ment_t *map_find(map_t *m, const char *key, size_t klen,
                        apr_uint64_t h, size_t *slot)
{
    size_t i;

    for (i = h & (m->cap - 1); m->cap && m->t[i].key;
         i = (i + 1) & (m->cap - 1)) {
        if (m->t[i].h == h && m->t[i].klen == klen
            && !memcmp(m->t[i].key, key, klen)) {
            return &m->t[i];
        }
    }
    *slot = i;
    return NULL;
}

/* The entry for key, created zeroed; NULL (counted) when the map is
 * full. */
static ment_t *map_key(map_t *m, const char *key, size_t klen)
{
    apr_uint64_t h;
    ment_t *e;
    size_t i = 0;
    char *copy;

    if (m->last && m->last->klen == klen && !memcmp(m->last->key, key, klen)) {
        return m->last;
    }
    h = khash(key, klen);
    if ((e = map_find(m, key, klen, h, &i))) {
        return m->last = e;
    }
    if (!m->cap || (m->n + 1) * 4 > m->cap * 3) {
        if (m->n >= map_limit || map_grow(m) != 0) {
            m->dropped++;
            return NULL;
        }
        map_find(m, key, klen, h, &i);
    }
    if (!(copy = map_alloc(m, klen ? klen : 1))) {
        m->dropped++;
        return NULL;
    }
    memcpy(copy, key, klen);
    e = &m->t[i];
    e->key = copy;
    e->klen = klen;
    e->h = h;
    m->n++;
    return m->last = e;
}

static ment_t *map_get(map_t *m, const key_t_ *k)
{
    return map_key(m, k->b, k->n);
}


static void map_free(map_t *m)
{
    chunk_t *c, *next;

    if (m->dropped) {
        __atomic_fetch_add(&maps_dropped, m->dropped, __ATOMIC_RELAXED);
    }
    for (c = m->chunks; c; c = next) {
        next = c->next;
        free(c);
    }
    free(m->t);
    memset(m, 0, sizeof(*m));
}

/* How two entries of one key become one. */
typedef void combine_fn(map_t *dst, ment_t *d, const ment_t *s);

/* Counts add up; v[3] is the earliest non-zero time, v[4] the latest. */
static void combine_sum(map_t *dst, ment_t *d, const ment_t *s)
{
    (void)dst;
    d->v[0] += s->v[0];
    d->v[1] += s->v[1];
    d->v[2] += s->v[2];
    if (s->v[3] && (!d->v[3] || s->v[3] < d->v[3])) d->v[3] = s->v[3];
    if (s->v[4] > d->v[4]) d->v[4] = s->v[4];
}

static void map_merge(map_t *dst, const map_t *src, combine_fn *fn)
{
    size_t i;
    ment_t *d;

    for (i = 0; i < src->cap; i++) {
        const ment_t *s = &src->t[i];
        if (s->key && (d = map_key(dst, s->key, s->klen))) {
            fn(dst, d, s);
        }
    }
}

/* Every evidence table of a scan_t, in one order, with its columns. */
static const char *const c_day[] = { "day", "accepted", "rejected",
    "no_certificate", "failed", "aborted", NULL };
static const char *const c_suite[] = { "tls_version", "cipher",
    "handshakes", "accepted", NULL };
static const char *const c_sni[] = { "tls_version", "cipher", "sni",
    "handshakes", "first_seen", "last_seen", NULL };
static const char *const c_reason[] = { "outcome", "reason", "alert",
    "attempts", NULL };
static const char *const c_invalid[] = { "outcome", "verify_error",
    "alert", "client_addr", "sni", "attempts", NULL };
static const char *const c_scope[] = { "source", "server_name",
    "handshakes", "accepted", NULL };
static const char *const c_crypto[] = { "tls_version", "cipher", "grade",
    "why", "accepted", "unverified", NULL };
static const char *const c_incomplete[] = { "id", "source", "time_utc",
    "client_addr", "server_name", "outcome", NULL };
static const char *const c_back[] = { "source", "pid", "id", "time_utc",
    "previous", NULL };
static const char *const c_burst[] = { "who", "window_start", "failures",
    NULL };
static const char *const c_shared[] = { "cert_sha256", "subject_dn",
    "hour", "addresses", "from_addresses", NULL };
static const char *const c_inv[] = { "subject_dn", "issuer_dn", "serial",
    "cert_sha256", "key_type", "key_bits", "sig_alg", "not_after",
    "days_left", "first_seen", "last_seen", "accepted", "finding", NULL };
static const char *const c_exp[] = { "expiry", "certificates", NULL };
static const char *const c_inact[] = { "subject_dn", "cert_sha256",
    "last_accepted", "not_after", NULL };
static const char *const c_changes[] = { "subject_dn", "cert_sha256",
    "issuer_dn", "first_seen", NULL };
static const char *const c_unauth[] = { "time_utc", "source",
    "server_name", "client_addr", "method", "path", "status",
    "subject_dn", "verify_result", NULL };
static const char *const c_pan[] = { "source", "id", "time_utc",
    "path_masked", NULL };
static const char *const c_aead[] = { "tls_version", "cipher", "accepted",
    NULL };
static const char *const c_nv[] = { "outcome", "reason", "handshakes",
    NULL };

static const char *const *const ev_columns[SCAN_EVIDENCE] = {
    c_day, c_suite, c_sni, c_reason, c_invalid, c_scope, c_crypto,
    c_incomplete, c_back, c_burst, c_shared, c_inv, c_exp, c_inact,
    c_changes, c_unauth, c_pan, c_aead, c_nv
};

static void scan_evidence(scan_t *s, evidence_t **all)
{
    evidence_t *const list[SCAN_EVIDENCE] = {
        &s->per_day, &s->suites, &s->suites_sni, &s->reasons, &s->invalid,
        &s->scope, &s->crypto, &s->incomplete, &s->backwards_ev, &s->bursts,
        &s->shared, &s->inventory, &s->expiry, &s->inactive_ev, &s->changes,
        &s->unauth_ev, &s->pan_ev, &s->non_aead, &s->not_verified
    };
    memcpy(all, list, sizeof(list));
}

static void scan_init_evidence(scan_t *s)
{
    evidence_t *all[SCAN_EVIDENCE];
    int k;

    static const int burst_order[] = { 1, 0 };     /* window, who */
    static const int shared_order[] = { 2, 0 };    /* hour, certificate */

    scan_evidence(s, all);
    for (k = 0; k < SCAN_EVIDENCE; k++) ev_init(all[k], ev_columns[k]);
    s->bursts.least = burst_order;
    s->bursts.nleast = 2;
    s->shared.least = shared_order;
    s->shared.nleast = 2;
}

/* ------------------------------------------------------------------ */
/* Formatting                                                           */

static const char *iso_s(apr_int64_t secs, char *buf)
{
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

static const char *iso_us(apr_int64_t us, char *buf)
{
    return iso_s(us / 1000000, buf);
}

static const char *num(apr_int64_t v, char *buf)
{
    snprintf(buf, 24, "%lld", (long long)v);
    return buf;
}

static const char *outcome_name(int o)
{
    return mtls_outcome_name(o);
}

/* ------------------------------------------------------------------ */
/* Certificates of one database                                         */

/* A certificate's figures: acceptances, rejections, handshakes, first
 * and last acceptance in the period; last acceptance in the scan window
 * (the period and the 90 days before its end). */
typedef struct {
    apr_int64_t acc, rej, seen, first, last, last_acc;
} cstat_t;

static void cstat_add(cstat_t *to, const cstat_t *from)
{
    to->acc += from->acc;
    to->rej += from->rej;
    to->seen += from->seen;
    if (from->first && (!to->first || from->first < to->first)) {
        to->first = from->first;
    }
    if (from->last > to->last) to->last = from->last;
    if (from->last_acc > to->last_acc) to->last_acc = from->last_acc;
}

typedef struct {
    int          present;
    char         hex[65];
    char        *subject, *issuer, *serial, *sig_alg, *key_type;
    apr_int64_t  nb, na, first_seen;
    int          key_bits, weak;
    cstat_t      st;
    int          dup;           /* counted in the same certificate of an
                                   earlier database (merge_certs) */
} cinfo_t;

typedef struct {
    cinfo_t     *c;
    apr_int64_t  n;             /* ids 0..n-1 */
} ctab_t;

static char *dupn(const unsigned char *s)
{
    return s ? strdup((const char *)s) : NULL;
}

static int load_certs(dataset_t *ds, int i, ctab_t *ct)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("SELECT max(id) FROM db%d.certificates", i);
    int rc = sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL);

    sqlite3_free(sql);
    memset(ct, 0, sizeof(*ct));
    if (rc != SQLITE_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        /* Any id a file holds (INT64_MAX too): compared, never
         * incremented, before it is known to be small. */
        apr_int64_t max = sqlite3_column_int64(st, 0);
        ct->n = max >= 1 && max < 100000000 ? max + 1 : 1;
    }
    sqlite3_finalize(st);
    ct->c = calloc((size_t)ct->n, sizeof(cinfo_t));
    if (!ct->c) return SQLITE_NOMEM;
    sql = sqlite3_mprintf("SELECT id, lower(hex(sha256)), subject_dn, "
                          "issuer_dn, serial, not_before, not_after, key_type, "
                          "key_bits, sig_alg, first_seen_us FROM "
                          "db%d.certificates", i);
    rc = sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t id = sqlite3_column_int64(st, 0);
        cinfo_t *c;
        const char *sig;
        if (id < 1 || id >= ct->n) continue;
        c = &ct->c[id];
        c->present = 1;
        mtls_strlcpy(c->hex, (const char *)sqlite3_column_text(st, 1),
                     sizeof(c->hex));
        c->subject = dupn(sqlite3_column_text(st, 2));
        c->issuer = dupn(sqlite3_column_text(st, 3));
        c->serial = dupn(sqlite3_column_text(st, 4));
        c->nb = sqlite3_column_int64(st, 5);
        c->na = sqlite3_column_int64(st, 6);
        c->key_type = dupn(sqlite3_column_text(st, 7));
        c->key_bits = sqlite3_column_int(st, 8);
        c->sig_alg = dupn(sqlite3_column_text(st, 9));
        c->first_seen = sqlite3_column_int64(st, 10);
        sig = c->sig_alg ? c->sig_alg : "";
        c->weak = (c->key_type && (!strcmp(c->key_type, "RSA")
                                   || !strcmp(c->key_type, "RSA-PSS"))
                   && c->key_bits < 2048)
                  || (c->key_type && !strcmp(c->key_type, "EC")
                      && c->key_bits < 224)
                  || (c->key_type && !strcmp(c->key_type, "DSA"))
                  || strcasestr(sig, "sha1") || strcasestr(sig, "md5");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void free_certs(ctab_t *ct)
{
    apr_int64_t i;
    for (i = 0; i < ct->n; i++) {
        free(ct->c[i].subject);
        free(ct->c[i].issuer);
        free(ct->c[i].serial);
        free(ct->c[i].sig_alg);
        free(ct->c[i].key_type);
    }
    free(ct->c);
}

/* ------------------------------------------------------------------ */
/* Sliding windows (bursts per 30 minutes, sharing per hour)            */

/* A piece of the table (see the engine below) cannot tell whether the
 * slots at its edges are complete: the rows of its first slots and of
 * its last two may lie in the pieces on either side.  Those maps are
 * held, and joined with the other pieces' maps of the same slot before
 * they are judged. */
#define HOLD_MAX 6

typedef struct {
    map_t       m;
    apr_int64_t slot;
} held_t;

typedef struct {
    map_t       cur, prev;
    apr_int64_t slot;           /* slot of cur; prev is slot - 1 */
    apr_int64_t first;          /* the piece's first slot */
    int         started;
    held_t      held[HOLD_MAX];
    int         nheld;
} window_t;

typedef void emit_fn(scan_t *s, const ment_t *e, apr_int64_t slot,
                     ctab_t *cts);

static void window_emit(scan_t *s, map_t *m, apr_int64_t slot, emit_fn *fn,
                        ctab_t *cts)
{
    size_t i;
    for (i = 0; i < m->cap; i++) {
        if (m->t[i].key) fn(s, &m->t[i], slot, cts);
    }
    map_free(m);
}

/* A map leaving the window: judged now, or held when it may be part of
 * a slot shared with another piece (or when final, at the piece's end). */
static void window_out(scan_t *s, window_t *w, map_t *m, apr_int64_t slot,
                       emit_fn *fn, ctab_t *cts, int final)
{
    if (!m->n) {
        map_free(m);
        return;
    }
    if ((final || slot <= w->first + 1) && w->nheld < HOLD_MAX) {
        w->held[w->nheld].m = *m;
        w->held[w->nheld++].slot = slot;
        memset(m, 0, sizeof(*m));
        return;
    }
    window_emit(s, m, slot, fn, cts);
}

/* The map for slot, advancing the window (and judging what leaves it). */
static map_t *window_for(scan_t *s, window_t *w, apr_int64_t slot,
                         emit_fn *fn, ctab_t *cts)
{
    if (!w->started) {
        w->started = 1;
        w->slot = w->first = slot;
    }
    if (slot > w->slot) {
        window_out(s, w, &w->prev, w->slot - 1, fn, cts, 0);
        if (slot == w->slot + 1) {
            w->prev = w->cur;
        }
        else {
            window_out(s, w, &w->cur, w->slot, fn, cts, 0);
        }
        memset(&w->cur, 0, sizeof(w->cur));
        w->slot = slot;
    }
    return slot == w->slot ? &w->cur : &w->prev;   /* late rows: prev */
}

/* At the end of a piece: both maps held. */
static void window_close(scan_t *s, window_t *w, emit_fn *fn, ctab_t *cts)
{
    window_out(s, w, &w->prev, w->slot - 1, fn, cts, 1);
    window_out(s, w, &w->cur, w->slot, fn, cts, 1);
}

static void window_free(window_t *w)
{
    int k;
    map_free(&w->cur);
    map_free(&w->prev);
    for (k = 0; k < w->nheld; k++) map_free(&w->held[k].m);
    w->nheld = 0;
}

static void emit_burst(scan_t *s, const ment_t *e, apr_int64_t slot,
                       ctab_t *cts)
{
    char f[3][404], who[520], when[32], n[24];
    const char *row[3];

    if (e->v[0] <= FAIL_BURST) return;
    key_fields(e, f, 3);
    if (!strcmp(f[0], "client")) {
        snprintf(who, sizeof(who), "client %s", f[1]);
    }
    else {
        int src = atoi(f[1]);
        apr_int64_t id = atoll(f[2]);
        cinfo_t *c = id > 0 && id < cts[src].n ? &cts[src].c[id] : NULL;
        snprintf(who, sizeof(who), "certificate %s",
                 c && c->subject ? c->subject : (c ? c->hex : "?"));
    }
    row[0] = who;
    row[1] = iso_s(slot * 1800, when);
    row[2] = num(e->v[0], n);
    ev_add(&s->bursts, row);
}

/* Shared certificates: v[0] distinct addresses, v[1..] the first
 * SHARE_ADDRS + 1 of them (strings in the map's chunks). */
static void shared_add(map_t *m, ment_t *e, const char *addr)
{
    size_t l;
    char *copy;
    int k;

    if (e->v[0] > SHARE_ADDRS) return;
    for (k = 0; k < e->v[0]; k++) {
        if (!strcmp((const char *)(intptr_t)e->v[1 + k], addr)) return;
    }
    l = strlen(addr) + 1;
    if (!(copy = map_alloc(m, l))) return;
    memcpy(copy, addr, l);
    e->v[1 + e->v[0]++] = (apr_int64_t)(intptr_t)copy;
}

static void combine_shared(map_t *dst, ment_t *d, const ment_t *s)
{
    int k;
    for (k = 0; k < s->v[0]; k++) {
        shared_add(dst, d, (const char *)(intptr_t)s->v[1 + k]);
    }
}

static void combine_count(map_t *dst, ment_t *d, const ment_t *s)
{
    (void)dst;
    d->v[0] += s->v[0];
}

static void emit_shared(scan_t *s, const ment_t *e, apr_int64_t slot,
                        ctab_t *cts)
{
    char f[2][404], when[32], n[24], list[(SHARE_ADDRS + 1) * 404];
    const char *row[5];
    size_t off = 0;
    cinfo_t *c;
    int src, k;
    apr_int64_t id;

    if (e->v[0] <= SHARE_ADDRS) return;
    key_fields(e, f, 2);
    src = atoi(f[0]);
    id = atoll(f[1]);
    c = id > 0 && id < cts[src].n ? &cts[src].c[id] : NULL;
    list[0] = '\0';
    for (k = 0; k < e->v[0] && off < sizeof(list); k++) {
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                k ? "," : "",
                                (const char *)(intptr_t)e->v[1 + k]);
    }
    row[0] = c ? c->hex : "";
    row[1] = c ? c->subject : NULL;
    row[2] = iso_s(slot * 3600, when);
    row[3] = num(e->v[0], n);
    row[4] = list;
    ev_add(&s->shared, row);
}

/* The held maps of every piece, joined by slot and judged. */
static int by_slot(const void *x, const void *y)
{
    const held_t *a = *(held_t *const *)x, *b = *(held_t *const *)y;
    return (a->slot > b->slot) - (a->slot < b->slot);
}

static void windows_join(scan_t *s, window_t **ws, int n, emit_fn *fn,
                         combine_fn *how, ctab_t *cts)
{
    held_t **all;
    int k, j, total = 0;

    for (k = 0; k < n; k++) total += ws[k]->nheld;
    if (!total || !(all = malloc(sizeof(*all) * (size_t)total))) return;
    for (k = 0, total = 0; k < n; k++) {
        for (j = 0; j < ws[k]->nheld; j++) all[total++] = &ws[k]->held[j];
    }
    qsort(all, (size_t)total, sizeof(*all), by_slot);
    for (k = 0; k < total; k = j) {
        map_t joined;
        memset(&joined, 0, sizeof(joined));
        for (j = k; j < total && all[j]->slot == all[k]->slot; j++) {
            map_merge(&joined, &all[j]->m, how);
        }
        window_emit(s, &joined, all[k]->slot, fn, cts);
    }
    free(all);
}

/* ------------------------------------------------------------------ */
/* Where the period lies                                                */

static apr_int64_t first_id(dataset_t *ds, int i, const char *table,
                            apr_int64_t t, int last)
{
    sqlite3_stmt *st;
    apr_int64_t id = 0;
    char *sql = sqlite3_mprintf(last
        ? "SELECT id FROM db%d.%s WHERE time_us < ?1 ORDER BY time_us DESC "
          "LIMIT 1"
        : "SELECT id FROM db%d.%s WHERE time_us >= ?1 ORDER BY time_us "
          "LIMIT 1", i, table);
    if (sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, t);
        if (sqlite3_step(st) == SQLITE_ROW) {
            id = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return id;
}

/* Requests: ids found by bisection on time (no time index on requests),
 * widened by the margin. */
static apr_int64_t bisect_requests(dataset_t *ds, int i, apr_int64_t t)
{
    sqlite3_stmt *mx, *at;
    apr_int64_t lo = 1, hi = 0, mid;
    char *sql = sqlite3_mprintf("SELECT max(id) FROM db%d.requests", i);

    if (sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &mx, NULL) == SQLITE_OK) {
        if (sqlite3_step(mx) == SQLITE_ROW) hi = sqlite3_column_int64(mx, 0);
        sqlite3_finalize(mx);
    }
    sqlite3_free(sql);
    sql = sqlite3_mprintf("SELECT time_us FROM db%d.requests WHERE id >= ?1 "
                          "ORDER BY id LIMIT 1", i);
    if (sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &at, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return 1;
    }
    sqlite3_free(sql);
    while (lo < hi) {
        apr_int64_t tm = 0;
        mid = lo + (hi - lo) / 2;
        sqlite3_bind_int64(at, 1, mid);
        if (sqlite3_step(at) == SQLITE_ROW) tm = sqlite3_column_int64(at, 0);
        sqlite3_reset(at);
        if (tm < t) lo = mid + 1; else hi = mid;
    }
    sqlite3_finalize(at);
    return lo;
}

static char *mask_digits(const char *s);

/* ------------------------------------------------------------------ */
/* The engine: pieces of the tables, read by two workers                */

/* Each table of each database is cut by id into pieces; two threads,
 * each with its own connection, take the pieces in turn.  A piece's rows
 * are decoded once: the hash chain is checked from them (when the report
 * verifies) and the period's figures counted.  What depends on the order
 * of rows (evidence, sliding windows, a child's clock) is kept per piece
 * and joined in id order afterwards; what does not (counts by suite,
 * reason, day, certificate) is kept per worker and added up. */

enum { T_CERTS, T_HS, T_RQ, T_EVENTS };     /* mtls_anchor_tables order */

#define PIECE_ROWS 1250000      /* rows per piece at most (or exactly
                                   MTLS_AUDIT_SCAN_PIECE) */
#define PIECE_MIN  50000        /* and at least */
#define PIECES_MAX 256          /* pieces a table of one file at most:
                                   ids the file forged far apart make
                                   wider pieces, not more */
#define AUTH_IDS_MAX (1LL << 30)   /* handshake ids the bitmap of
                                      verified ones covers at most (128
                                      MiB); past that, each request's
                                      handshake row is read instead */
#define WORKERS    2

typedef struct {
    int          db, table;
    apr_int64_t  lo, hi;        /* ids */
    int          verify, count; /* walk the chain; count the figures */
    int          summ;          /* read the file's summaries (schema 5),
                                   not its rows (see "Sealed files") */
    mtls_chain_result_t res;
    scan_t       s;             /* counts and evidence of these rows */
    window_t     bursts, shared;
    map_t        pids;          /* per child: v0 last time, v2 first time,
                                   v3 first id */
    apr_int64_t  need_h;        /* requests: the handshake pieces up to
                                   this handshake id come first */
    apr_int64_t  auth_lo, auth_upto;    /* requests: the bits of these
                                   handshakes are final when it starts */
    int          taken;         /* by a worker (under run_t.mu) */
    int          done;          /* set (release) when finished */
    int          rc;
    char         err[256];
} part_t;

/* Failed attempts by (outcome, reason, alert, client, SNI): nearly one
 * group per attempt when clients vary, too many for a map that a row in
 * five probes at random (measured: a third of a year's scan).  Each
 * attempt is appended as the 64-bit hash of its group and its row; the
 * runs are counted after one sort, and only the top groups' rows read
 * back.  (Groups that differ in one 8-byte word of their key cannot share
 * a hash: each step of khash is a bijection.) */
typedef struct {
    apr_uint64_t h;
    apr_uint64_t ref;           /* database << 56 | row id */
} fref_t;

typedef struct {
    map_t        suites, suites_sni, reasons, scope, not_verified;
    fref_t      *fails;         /* failed attempts by client (see above) */
    size_t       nfails, capfails;
    int          fails_oom;
    apr_int64_t (*per_day)[5];
    unsigned char (*seen90)[INACTIVE_DAYS];     /* per database */
    cstat_t    **cs;                            /* per database, by cert id */
    sqlite3     *db;            /* the file cur attached, alone */
    int          cur;
    sqlite3_stmt **hs_by_id;                    /* per database */
} worker_t;

typedef struct {
    dataset_t   *ds;
    scan_t      *s;
    ctab_t      *cts;
    const mtls_chain_key_t *key;
    part_t      *parts;
    int          nparts, next;
    pthread_mutex_t mu;
    pthread_cond_t  cv;         /* a piece finished */
    worker_t     w[WORKERS];
    apr_int64_t  days;
    unsigned char **auth;       /* per database: handshake ids whose
                                   certificate verified, a bit each */
    apr_int64_t *auth_n;        /* bits in auth[i] */
    unsigned char *summ;        /* per database: its summaries are read */
} run_t;

/* Columns the passes read, found by name in whichever SELECT runs. */
static const char *const hs_cols[] = { "id", "time_us", "client_addr",
    "server_name", "sni", "tls_version", "cipher", "outcome",
    "verify_result", "verify_error", "alert", "cert_id", "pid", NULL };
/* Then those a file of schema 3 has, -1 in col[] when it has not. */
static const char *const hs_opt_cols[] = { "revocation_method",
    "revocation_status", NULL };
enum { H_ID, H_TIME, H_CLIENT, H_SERVER, H_SNI, H_VER, H_CIPHER, H_OUT,
       H_VR, H_VERR, H_ALERT, H_CERT, H_PID, H_RM, H_RS, H_N };
static const char *const rq_cols[] = { "id", "time_us", "method", "path",
    "status", "handshake_id", NULL };
enum { R_ID, R_TIME, R_METHOD, R_PATH, R_STATUS, R_HS, R_N };

static int col_index(sqlite3_stmt *st, const char *const *names, int *idx)
{
    int k, c, n = sqlite3_column_count(st);
    for (k = 0; names[k]; k++) {
        for (idx[k] = -1, c = 0; c < n; c++) {
            if (!strcmp(sqlite3_column_name(st, c), names[k])) idx[k] = c;
        }
        if (idx[k] < 0) return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

/* The same for columns that may be missing: -1 for those. */
static void col_index_opt(sqlite3_stmt *st, const char *const *names,
                          int *idx)
{
    int k, c, n = sqlite3_column_count(st);
    for (k = 0; names[k]; k++) {
        for (idx[k] = -1, c = 0; c < n; c++) {
            if (!strcmp(sqlite3_column_name(st, c), names[k])) idx[k] = c;
        }
    }
}

/* "crl" 0, "ocsp" 1, else -1; a status's mtls_rev_status_e, else 0. */
static int rev_method(const char *m)
{
    return !m ? -1 : !strcmp(m, "crl") ? 0 : !strcmp(m, "ocsp") ? 1 : -1;
}

static int rev_status(const char *st)
{
    static const char *const names[] = { "", "good", "revoked", "unknown",
        "unreachable", "bad_response", "error" };
    int k;
    for (k = 1; st && k < (int)(sizeof(names) / sizeof(names[0])); k++) {
        if (!strcmp(st, names[k])) return k;
    }
    return 0;
}

static int valid_result(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL
           ? -1 : sqlite3_column_int(st, col);
}

static void fail_add(worker_t *w, apr_uint64_t h, int db, apr_int64_t id)
{
    if (w->fails_oom) return;
    if (w->nfails == w->capfails) {
        size_t cap = w->capfails ? w->capfails * 2 : 4096;
        fref_t *nf = realloc(w->fails, cap * sizeof(*nf));
        if (!nf) {
            w->fails_oom = 1;       /* the report fails at the end */
            return;
        }
        w->fails = nf;
        w->capfails = cap;
    }
    w->fails[w->nfails].h = h;
    /* An id that does not fit in 56 bits (only a forged row has one)
     * still counts in its group, which is shown from another row. */
    if (id < 0 || id >= (apr_int64_t)(1ULL << 56) - 1) {
        id = (apr_int64_t)(1ULL << 56) - 1;
    }
    w->fails[w->nfails++].ref = (apr_uint64_t)db << 56 | (apr_uint64_t)id;
}

/* Values of a decoded row (mtls_chain_row_values) by column. */
#define V_INT(c)  (v[col[c]].i)
#define V_TEXT(c) (v[col[c]].type == MTLS_V_TEXT ? (const char *)v[col[c]].p \
                                                 : NULL)
#define V_NULL(c) (v[col[c]].type == MTLS_V_NULL)
#define V_RESULT(c) (V_NULL(c) ? -1 : (int)V_INT(c))

static void hs_row(run_t *r, worker_t *w, part_t *p, const mtls_val_t *v,
                   const int *col)
{
    scan_t *s = &p->s;
    int i = p->db;
    ctab_t *ct = &r->cts[i];
    apr_int64_t id = V_INT(H_ID);
    apr_int64_t t = V_INT(H_TIME);
    int out = (int)V_INT(H_OUT);
    int vr = V_RESULT(H_VR);
    apr_int64_t cid = V_INT(H_CERT);
    cinfo_t *c = cid > 0 && cid < ct->n && ct->c[cid].present
                 ? &ct->c[cid] : NULL;
    cstat_t *cs = c ? &w->cs[i][cid] : NULL;
    apr_int64_t lo = s->since < s->until - INACTIVE_DAYS * DAY_US
                     ? s->since : s->until - INACTIVE_DAYS * DAY_US;
    apr_int64_t d90 = s->until - INACTIVE_DAYS * DAY_US;
    const char *client, *server, *sni, *cipher, *verr;
    int ver, alert, pid, verified;
    char buf[4][32];
    key_t_ k;
    ment_t *e;

    if (c && vr == 0 && id > 0 && id < r->auth_n[i]) {
        __atomic_fetch_or(&r->auth[i][id >> 3], (unsigned char)(1 << (id & 7)),
                          __ATOMIC_RELAXED);
    }
    if (t < lo || t >= s->until) return;
    if (out == 1 && cs && t > cs->last_acc) cs->last_acc = t;
    if (t >= d90) w->seen90[i][(t - d90) / DAY_US] = 1;
    if (t < s->since) return;

    client = V_TEXT(H_CLIENT);
    server = V_TEXT(H_SERVER);
    sni = V_TEXT(H_SNI);
    ver = (int)V_INT(H_VER);
    cipher = V_TEXT(H_CIPHER);
    verr = V_TEXT(H_VERR);
    alert = V_RESULT(H_ALERT);
    pid = (int)V_INT(H_PID);

    s->n_hs++;
    if (col[H_RM] >= 0 && col[H_RS] >= 0) {
        int m = rev_method(V_TEXT(H_RM)), rs = rev_status(V_TEXT(H_RS));
        if (m >= 0 && rs > 0) {
            s->rev[m][rs]++;
            if (out == 1 && rs >= MTLS_RS_UNKNOWN) s->rev_fail_accepted++;
        }
    }
    verified = out == 1 && c && vr == 0;
    if (out != 1) s->n_fail++;
    if (out == 2 || out == 3) s->failures++;
    if (vr == 9) s->not_yet_valid++;
    if (vr == 3 || vr == 8 || (vr >= 11 && vr <= 16) || vr == 23
        || (vr >= 33 && vr <= 36) || (vr >= 39 && vr <= 42) || vr == 44) {
        s->revocation++;
    }
    /* By suite; the entry keeps the suite's grade (v3, plus one) and
     * whether it is AEAD (v4, plus one), worked out once. */
    kb_reset(&k);
    kb_int(&k, ver);
    kb_str(&k, cipher);
    if ((e = map_get(&w->suites, &k))) {
        if (!e->v[3]) {
            const char *why;
            e->v[3] = 1 + grade_suite(ver, cipher, &why);
            e->v[4] = 1 + cipher_is_aead(cipher);
        }
        e->v[0]++;
        if (out == 1) e->v[1]++;
        if (out == 1 && c && vr != 0) e->v[2]++;
    }
    if (out == 1) {
        int grade, aead;
        if (e) {
            grade = (int)e->v[3] - 1;
            aead = (int)e->v[4] - 1;
        }
        else {
            const char *why;
            grade = grade_suite(ver, cipher, &why);
            aead = cipher_is_aead(cipher);
        }
        s->accepted++;
        if (grade == 2) s->bad_suite++;
        if (grade == 1) s->weak_suite++;
        if (c) s->with_cert++;
        if (c && vr != 0) s->unverified++;
        if (verified) s->verified++;
        if (aead) s->aead++;
        if (c && (t / 1000000 > c->na || t / 1000000 < c->nb)) {
            s->outside_validity++;
        }
        kb_str(&k, sni);
        if ((e = map_get(&w->suites_sni, &k))) {
            e->v[0]++;
            if (!e->v[3] || t < e->v[3]) e->v[3] = t;
            if (t > e->v[4]) e->v[4] = t;
        }
    }
    if (client && server && (out != 1 || c)) {
        s->complete++;
    }
    else {
        const char *row[6];
        row[0] = num(id, buf[0]);
        row[1] = r->ds->files[i];
        row[2] = iso_us(t, buf[1]);
        row[3] = client;
        row[4] = server;
        row[5] = outcome_name(out);
        ev_add(&s->incomplete, row);
    }
    if (cs) {
        cs->seen++;
        if (out == 1) {
            cs->acc++;
            if (!cs->first || t < cs->first) cs->first = t;
            if (t > cs->last) cs->last = t;
        }
        else if (out == 2) {
            cs->rej++;
        }
    }
    {
        apr_int64_t d = (t - s->since) / DAY_US;
        if (d >= 0 && d < r->days && out >= 1 && out <= 5) {
            w->per_day[d][out - 1]++;
        }
    }
    kb_reset(&k);
    kb_str(&k, r->ds->files[i]);
    kb_str(&k, server);
    if ((e = map_get(&w->scope, &k))) {
        e->v[0]++;
        if (out == 1) e->v[1]++;
    }
    if (!verified) {
        kb_reset(&k);
        kb_int(&k, out);
        kb_str(&k, verr ? verr : "no certificate");
        if ((e = map_get(&w->not_verified, &k))) e->v[0]++;
    }
    if (out != 1) {
        kb_reset(&k);
        kb_int(&k, out);
        kb_str(&k, verr);
        kb_int(&k, alert);
        if ((e = map_get(&w->reasons, &k))) e->v[0]++;
        kb_str(&k, client);
        kb_str(&k, sni);
        fail_add(w, khash(k.b, k.n), i, id);
    }
    if (out == 2 || out == 3) {
        map_t *m = window_for(s, &p->bursts, t / 1800000000, emit_burst,
                              r->cts);
        kb_reset(&k);
        kb_str(&k, "client");
        kb_str(&k, client);
        if ((e = map_get(m, &k))) e->v[0]++;
        if (out == 2 && c) {
            kb_reset(&k);
            kb_str(&k, "cert");
            kb_int(&k, i);
            kb_int(&k, cid);
            if ((e = map_get(m, &k))) e->v[0]++;
        }
    }
    if (out == 1 && c && client) {
        map_t *m = window_for(s, &p->shared, t / 3600000000, emit_shared,
                              r->cts);
        kb_reset(&k);
        kb_int(&k, i);
        kb_int(&k, cid);
        if ((e = map_get(m, &k))) shared_add(m, e, client);
    }
    /* Time going backwards between rows of one child. */
    kb_reset(&k);
    kb_int(&k, pid);
    if ((e = map_get(&p->pids, &k))) {
        if (e->v[1] && t < e->v[0] - 1000000) {
            const char *row[5];
            s->backwards++;
            row[0] = r->ds->files[i];
            row[1] = num(pid, buf[0]);
            row[2] = num(id, buf[1]);
            row[3] = iso_us(t, buf[2]);
            row[4] = iso_us(e->v[0], buf[3]);
            ev_add(&s->backwards_ev, row);
        }
        if (!e->v[1]) {
            e->v[2] = t;
            e->v[3] = id;
        }
        e->v[0] = t;
        e->v[1] = 1;
    }
}

static void rq_row(run_t *r, worker_t *w, part_t *p, const mtls_val_t *v,
                   const int *col)
{
    scan_t *s = &p->s;
    int i = p->db;
    ctab_t *ct = &r->cts[i];
    apr_int64_t t = V_INT(R_TIME);
    const char *path = V_TEXT(R_PATH);
    int status = (int)V_INT(R_STATUS);
    apr_int64_t h = V_INT(R_HS);
    char buf[4][32];

    if (t < s->since || t >= s->until) return;
    s->n_rq++;
    if (status < 400) {
        /* Whether the handshake was authenticated, from the bits its
         * piece left, else (-1) from its row. */
        int ok = h <= 0 ? 0 : h >= p->auth_lo && h <= p->auth_upto
                 ? (r->auth[i][h >> 3] >> (h & 7)) & 1 : -1;
        s->answered++;
        if (ok != 1) {
            /* Unauthenticated (or not known yet): the handshake's row. */
            sqlite3_stmt *q = w->hs_by_id[i];
            const char *row[9];
            cinfo_t *c = NULL;
            int vr = -1, found = 0;

            if (q && h > 0) {
                sqlite3_bind_int64(q, 1, h);
                if (sqlite3_step(q) == SQLITE_ROW) {
                    apr_int64_t cid = sqlite3_column_type(q, 0) == SQLITE_NULL
                                      ? 0 : sqlite3_column_int64(q, 0);
                    found = 1;
                    c = cid > 0 && cid < ct->n && ct->c[cid].present
                        ? &ct->c[cid] : NULL;
                    vr = valid_result(q, 1);
                }
            }
            if (!c || vr != 0) {
                s->unauthenticated++;
                row[0] = iso_us(t, buf[0]);
                row[1] = r->ds->files[i];
                row[2] = found ? (const char *)sqlite3_column_text(q, 2)
                               : NULL;
                row[3] = found ? (const char *)sqlite3_column_text(q, 3)
                               : NULL;
                row[4] = V_TEXT(R_METHOD);
                row[5] = path;
                row[6] = num(status, buf[1]);
                row[7] = c ? c->subject : "";
                row[8] = vr < 0 ? NULL : num(vr, buf[2]);
                ev_add(&s->unauth_ev, row);
            }
            if (q) sqlite3_reset(q);
        }
    }
    if (path && has_pan(path)) {
        const char *row[4];
        char *masked = mask_digits(path);
        s->pan++;
        row[0] = r->ds->files[i];
        row[1] = num(V_INT(R_ID), buf[0]);
        row[2] = iso_us(t, buf[1]);
        row[3] = masked;
        ev_add(&s->pan_ev, row);
        free(masked);
    }
}

/* ------------------------------------------------------------------ */
/* Sealed files: the summaries instead of the rows                      */

/* A sealed file (one with an archive's end or a rotation's seal: closed
 * for writing) carries the counts of its rows by hour in `summaries`
 * (schema/005_summaries.sql, filled by mtls_summary_fill when it was
 * sealed).  When its rows need not be walked for the chain, its pieces
 * are two: one reads the handshakes, one the requests, and they feed the
 * same accumulators as hs_row and rq_row: the whole days that lie wholly
 * inside or outside the period (so every hour, and every day of the
 * per-certificate rows, does) from the summaries, with each group's
 * count; the days the period starts or ends within from their rows,
 * through hs_row and rq_row themselves (see stretches()).
 * Only the rows the summaries point to are read: the incomplete
 * handshakes of an hour that has any, and every request of an hour with
 * an unauthenticated request or a card number (through rq_row itself).
 * A file with a child's clock going backwards anywhere is read row by
 * row: which row the report compares with depends on the period.  The
 * summaries are used only when they count as many handshakes and
 * requests as the file holds. */

#define HOUR_US 3600000000LL

static int summarizable(dataset_t *ds, int i, const scan_t *s)
{
    sqlite3_stmt *st;
    char *sql;
    int ok = 0;

    if ((s->verify && !(s->no_walk && s->no_walk[i]))
        || getenv("MTLS_AUDIT_NO_SUMMARIES")
        || ds->version[i] < 5) {
        return 0;
    }
    sql = sqlite3_mprintf(
        "SELECT EXISTS (SELECT 1 FROM db%d.chain_cut WHERE side = 'end') "
        "AND NOT EXISTS (SELECT 1 FROM db%d.summaries WHERE kind = "
        "'backwards') AND (SELECT coalesce(sum(n), 0) FROM db%d.summaries "
        "WHERE kind = 'handshakes') = (SELECT count(*) FROM db%d.handshakes) "
        "AND (SELECT coalesce(sum(n), 0) FROM db%d.summaries WHERE kind = "
        "'requests') = (SELECT count(*) FROM db%d.requests)",
        i, i, i, i, i, i);
    if (sql && sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL)
        == SQLITE_OK) {
        ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return ok;
}

static const char *col_text(sqlite3_stmt *st, int c)
{
    return sqlite3_column_type(st, c) == SQLITE_TEXT
           ? (const char *)sqlite3_column_text(st, c) : NULL;
}

static int col_result(sqlite3_stmt *st, int c)
{
    return sqlite3_column_type(st, c) == SQLITE_NULL
           ? -1 : sqlite3_column_int(st, c);
}

static sqlite3_stmt *summ_prepare(worker_t *w, const char *fmt, int db)
{
    sqlite3_stmt *st = NULL;
    char *sql = sqlite3_mprintf(fmt, db);
    if (!sql || sqlite3_prepare_v2(w->db, sql, -1, &st, NULL) != SQLITE_OK) {
        st = NULL;
    }
    sqlite3_free(sql);
    return st;
}

/* The incomplete handshakes of hour h, as hs_row lists them. */
static int summ_incomplete(run_t *r, worker_t *w, part_t *p, apr_int64_t h)
{
    sqlite3_stmt *st = summ_prepare(w,
        "SELECT h.id, h.time_us, h.client_addr, h.server_name, h.outcome, "
        "h.cert_id FROM db%d.handshakes h WHERE h.time_us >= ?1 AND "
        "h.time_us < ?2 ORDER BY h.id", p->db);
    ctab_t *ct = &r->cts[p->db];
    char buf[2][32];
    int rc;

    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, h * HOUR_US);
    sqlite3_bind_int64(st, 2, (h + 1) * HOUR_US);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *client = col_text(st, 2), *server = col_text(st, 3);
        int out = sqlite3_column_int(st, 4);
        apr_int64_t cid = sqlite3_column_int64(st, 5);
        int c = cid > 0 && cid < ct->n && ct->c[cid].present;
        const char *row[6];

        if (client && server && (out != 1 || c)) continue;
        row[0] = num(sqlite3_column_int64(st, 0), buf[0]);
        row[1] = r->ds->files[p->db];
        row[2] = iso_us(sqlite3_column_int64(st, 1), buf[1]);
        row[3] = client;
        row[4] = server;
        row[5] = outcome_name(out);
        ev_add(&p->s.incomplete, row);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The handshakes of hours a_h to b_h (whole days), from the summaries. */
static int summ_days_hs(run_t *r, worker_t *w, part_t *p, apr_int64_t a_h,
                        apr_int64_t b_h)
{
    scan_t *s = &p->s;
    int i = p->db, rc;
    ctab_t *ct = &r->cts[i];
    apr_int64_t d90 = s->until - INACTIVE_DAYS * DAY_US;
    apr_int64_t since_h = s->since / HOUR_US;
    apr_int64_t from_h = since_h > a_h ? since_h : a_h;
    sqlite3_stmt *st;
    key_t_ k;
    ment_t *e;

    /* The handshakes, by hour. */
    st = summ_prepare(w, "SELECT hour, server_name, sni, tls_version, "
                      "cipher, outcome, verify_result, verify_error, alert, "
                      "cert_id, revocation_method, revocation_status, n, "
                      "complete, outside, first_us, last_us FROM "
                      "db%d.summaries WHERE kind = 'handshakes' AND hour >= "
                      "?1 AND hour < ?2 ORDER BY hour", i);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, a_h);
    sqlite3_bind_int64(st, 2, b_h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t h = sqlite3_column_int64(st, 0), t = h * HOUR_US;
        const char *server = col_text(st, 1), *sni = col_text(st, 2);
        int ver = sqlite3_column_int(st, 3);
        const char *cipher = col_text(st, 4);
        int out = sqlite3_column_int(st, 5), vr = col_result(st, 6);
        const char *verr = col_text(st, 7);
        int alert = col_result(st, 8), c = sqlite3_column_int(st, 9);
        apr_int64_t n = sqlite3_column_int64(st, 12);
        apr_int64_t complete = sqlite3_column_int64(st, 13);
        apr_int64_t first = sqlite3_column_int64(st, 15);
        apr_int64_t last = sqlite3_column_int64(st, 16);
        int verified = out == 1 && c && vr == 0;

        if (t >= d90) w->seen90[i][(t - d90) / DAY_US] = 1;
        if (h < since_h) continue;
        s->n_hs += n;
        if (r->ds->version[i] >= 3) {
            int m = rev_method(col_text(st, 10));
            int rs = rev_status(col_text(st, 11));
            if (m >= 0 && rs > 0) {
                s->rev[m][rs] += n;
                if (out == 1 && rs >= MTLS_RS_UNKNOWN) {
                    s->rev_fail_accepted += n;
                }
            }
        }
        if (out != 1) s->n_fail += n;
        if (out == 2 || out == 3) s->failures += n;
        if (vr == 9) s->not_yet_valid += n;
        if (vr == 3 || vr == 8 || (vr >= 11 && vr <= 16) || vr == 23
            || (vr >= 33 && vr <= 36) || (vr >= 39 && vr <= 42)
            || vr == 44) {
            s->revocation += n;
        }
        kb_reset(&k);
        kb_int(&k, ver);
        kb_str(&k, cipher);
        if ((e = map_get(&w->suites, &k))) {
            if (!e->v[3]) {
                const char *why;
                e->v[3] = 1 + grade_suite(ver, cipher, &why);
                e->v[4] = 1 + cipher_is_aead(cipher);
            }
            e->v[0] += n;
            if (out == 1) e->v[1] += n;
            if (out == 1 && c && vr != 0) e->v[2] += n;
        }
        if (out == 1) {
            int grade, aead;
            const char *why;
            grade = e ? (int)e->v[3] - 1 : grade_suite(ver, cipher, &why);
            aead = e ? (int)e->v[4] - 1 : cipher_is_aead(cipher);
            s->accepted += n;
            if (grade == 2) s->bad_suite += n;
            if (grade == 1) s->weak_suite += n;
            if (c) s->with_cert += n;
            if (c && vr != 0) s->unverified += n;
            if (verified) s->verified += n;
            if (aead) s->aead += n;
            s->outside_validity += sqlite3_column_int64(st, 14);
            kb_str(&k, sni);
            if ((e = map_get(&w->suites_sni, &k))) {
                e->v[0] += n;
                if (!e->v[3] || first < e->v[3]) e->v[3] = first;
                if (last > e->v[4]) e->v[4] = last;
            }
        }
        s->complete += complete;
        {
            apr_int64_t d = (t - s->since) / DAY_US;
            if (d >= 0 && d < r->days && out >= 1 && out <= 5) {
                w->per_day[d][out - 1] += n;
            }
        }
        kb_reset(&k);
        kb_str(&k, r->ds->files[i]);
        kb_str(&k, server);
        if ((e = map_get(&w->scope, &k))) {
            e->v[0] += n;
            if (out == 1) e->v[1] += n;
        }
        if (!verified) {
            kb_reset(&k);
            kb_int(&k, out);
            kb_str(&k, verr ? verr : "no certificate");
            if ((e = map_get(&w->not_verified, &k))) e->v[0] += n;
        }
        if (out != 1) {
            kb_reset(&k);
            kb_int(&k, out);
            kb_str(&k, verr);
            kb_int(&k, alert);
            if ((e = map_get(&w->reasons, &k))) e->v[0] += n;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;

    /* The incomplete rows themselves, hour by hour. */
    st = summ_prepare(w, "SELECT hour FROM db%d.summaries WHERE kind = "
                      "'handshakes' AND hour >= ?1 AND hour < ?2 GROUP BY "
                      "hour HAVING sum(n) > sum(complete) ORDER BY hour", i);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, from_h);
    sqlite3_bind_int64(st, 2, b_h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((rc = summ_incomplete(r, w, p, sqlite3_column_int64(st, 0)))
            != SQLITE_OK) {
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK) return rc;

    /* Per certificate, by day. */
    st = summ_prepare(w, "SELECT hour, cert_id, outcome, n, first_us, "
                      "last_us FROM db%d.summaries WHERE kind = "
                      "'certificate' AND hour >= ?1 AND hour < ?2", i);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, a_h);
    sqlite3_bind_int64(st, 2, b_h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t h = sqlite3_column_int64(st, 0);
        apr_int64_t cid = sqlite3_column_int64(st, 1);
        int out = sqlite3_column_int(st, 2);
        apr_int64_t n = sqlite3_column_int64(st, 3);
        apr_int64_t first = sqlite3_column_int64(st, 4);
        apr_int64_t last = sqlite3_column_int64(st, 5);
        cstat_t *cs;

        if (!(cid > 0 && cid < ct->n && ct->c[cid].present)) continue;
        cs = &w->cs[i][cid];
        if (out == 1 && last > cs->last_acc) cs->last_acc = last;
        if (h < since_h) continue;
        cs->seen += n;
        if (out == 1) {
            cs->acc += n;
            if (!cs->first || first < cs->first) cs->first = first;
            if (last > cs->last) cs->last = last;
        }
        else if (out == 2) {
            cs->rej += n;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;

    /* Failures: by client (each attempt counted, the group shown from its
     * first row) and in bursts, by half hour in order. */
    st = summ_prepare(w, "SELECT hour, slot, outcome, verify_error, alert, "
                      "client_addr, sni, cert_id, n, first_id FROM "
                      "db%d.summaries WHERE kind = 'failure' AND hour >= ?1 "
                      "AND hour < ?2 ORDER BY hour, slot", i);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, from_h);
    sqlite3_bind_int64(st, 2, b_h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t h = sqlite3_column_int64(st, 0);
        int slot = sqlite3_column_int(st, 1), out = sqlite3_column_int(st, 2);
        const char *client = col_text(st, 5);
        apr_int64_t cid = sqlite3_column_int64(st, 7);
        apr_int64_t n = sqlite3_column_int64(st, 8), j;
        int c = cid > 0 && cid < ct->n && ct->c[cid].present;
        apr_uint64_t hash;

        kb_reset(&k);
        kb_int(&k, out);
        kb_str(&k, col_text(st, 3));
        kb_int(&k, col_result(st, 4));
        kb_str(&k, client);
        kb_str(&k, col_text(st, 6));
        hash = khash(k.b, k.n);
        for (j = 0; j < n; j++) {
            fail_add(w, hash, i, sqlite3_column_int64(st, 9));
        }
        if (out == 2 || out == 3) {
            map_t *m = window_for(s, &p->bursts, h * 2 + slot, emit_burst,
                                  r->cts);
            kb_reset(&k);
            kb_str(&k, "client");
            kb_str(&k, client);
            if ((e = map_get(m, &k))) e->v[0] += n;
            if (out == 2 && c) {
                kb_reset(&k);
                kb_str(&k, "cert");
                kb_int(&k, i);
                kb_int(&k, cid);
                if ((e = map_get(m, &k))) e->v[0] += n;
            }
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;

    /* Certificates shared by more than SHARE_ADDRS addresses in an hour:
     * as emit_shared shows them (it stops counting at SHARE_ADDRS + 1). */
    st = summ_prepare(w, "SELECT hour, cert_id, client_addr FROM "
                      "db%d.summaries WHERE kind = 'shared' AND hour >= ?1 "
                      "AND hour < ?2 ORDER BY hour", i);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, from_h);
    sqlite3_bind_int64(st, 2, b_h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t cid = sqlite3_column_int64(st, 1);
        cinfo_t *c = cid > 0 && cid < ct->n && ct->c[cid].present
                     ? &ct->c[cid] : NULL;
        char when[32], nb[24];
        const char *row[5];

        row[0] = c ? c->hex : "";
        row[1] = c ? c->subject : NULL;
        row[2] = iso_s(sqlite3_column_int64(st, 0) * 3600, when);
        row[3] = num(SHARE_ADDRS + 1, nb);
        row[4] = col_text(st, 2);
        ev_add(&s->shared, row);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The handshakes of [a, b) from their rows, through hs_row. */
static int summ_rows_hs(run_t *r, worker_t *w, part_t *p, apr_int64_t a,
                        apr_int64_t b)
{
    sqlite3_stmt *st = summ_prepare(w,
        "SELECT id, time_us, client_addr, server_name, sni, tls_version, "
        "cipher, outcome, verify_result, verify_error, alert, cert_id, pid, "
        "revocation_method, revocation_status FROM db%d.handshakes WHERE "
        "time_us >= ?1 AND time_us < ?2 ORDER BY id", p->db);
    int col[H_N], k, rc;

    if (!st) return sqlite3_errcode(w->db);
    for (k = 0; k < H_N; k++) col[k] = k;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        mtls_val_t vals[MTLS_MAX_COLUMNS];
        mtls_chain_row_values(st, vals, MTLS_MAX_COLUMNS);
        hs_row(r, w, p, vals, col);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* [lo, until) in stretches, in time order: the whole days that lie wholly
 * before `cut` or wholly after it (summ 1), and the rest (summ 0: the
 * partial days at the ends and the day that holds cut), for fn. */
typedef int stretch_fn(run_t *r, worker_t *w, part_t *p, int summ,
                       apr_int64_t a, apr_int64_t b);

static int stretches(run_t *r, worker_t *w, part_t *p, apr_int64_t lo,
                     apr_int64_t until, apr_int64_t cut, stretch_fn *fn)
{
    apr_int64_t d, a = lo;
    int cur = -1, rc = SQLITE_OK;

    if (lo >= until) return SQLITE_OK;
    for (d = lo - ((lo % DAY_US) + DAY_US) % DAY_US; d < until
         && rc == SQLITE_OK; d += DAY_US) {
        apr_int64_t x = d > lo ? d : lo;
        int whole = d >= lo && d + DAY_US <= until
                    && (d + DAY_US <= cut || d >= cut);
        if (cur >= 0 && whole != cur) {
            rc = fn(r, w, p, cur, a, x);
            a = x;
        }
        cur = whole;
    }
    if (cur >= 0 && rc == SQLITE_OK) rc = fn(r, w, p, cur, a, until);
    return rc;
}

static int hs_stretch(run_t *r, worker_t *w, part_t *p, int summ,
                      apr_int64_t a, apr_int64_t b)
{
    return summ ? summ_days_hs(r, w, p, a / HOUR_US, b / HOUR_US)
                : summ_rows_hs(r, w, p, a, b);
}

static int summ_hs(run_t *r, worker_t *w, part_t *p)
{
    scan_t *s = &p->s;
    apr_int64_t lo = s->since < s->until - INACTIVE_DAYS * DAY_US
                     ? s->since : s->until - INACTIVE_DAYS * DAY_US;
    return stretches(r, w, p, lo, s->until, s->since, hs_stretch);
}

/* First request id at or after time t, by bisection on this worker's
 * connection (as bisect_requests). */
static apr_int64_t summ_bisect(worker_t *w, int i, apr_int64_t t,
                               apr_int64_t hi)
{
    sqlite3_stmt *at = summ_prepare(w, "SELECT time_us FROM db%d.requests "
                                    "WHERE id >= ?1 ORDER BY id LIMIT 1", i);
    apr_int64_t lo = 1, mid;

    if (!at) return 1;
    while (lo < hi) {
        apr_int64_t tm = 0;
        mid = lo + (hi - lo) / 2;
        sqlite3_bind_int64(at, 1, mid);
        if (sqlite3_step(at) == SQLITE_ROW) tm = sqlite3_column_int64(at, 0);
        sqlite3_reset(at);
        if (tm < t) lo = mid + 1; else hi = mid;
    }
    sqlite3_finalize(at);
    return lo;
}

/* The requests of [a, b) from their rows (ids found by bisection on
 * time, widened by the margin), through rq_row. */
static int summ_rows_rq(run_t *r, worker_t *w, part_t *p, apr_int64_t ta,
                        apr_int64_t tb)
{
    int i = p->db, rc, col[R_N], k;
    sqlite3_stmt *rows, *mx;
    apr_int64_t max = 0, a, b;

    for (k = 0; k < R_N; k++) col[k] = k;
    if ((mx = summ_prepare(w, "SELECT coalesce(max(id), 0) FROM "
                           "db%d.requests", i))) {
        if (sqlite3_step(mx) == SQLITE_ROW) max = sqlite3_column_int64(mx, 0);
        sqlite3_finalize(mx);
    }
    rows = summ_prepare(w, "SELECT id, time_us, method, path, status, "
                        "handshake_id FROM db%d.requests WHERE id BETWEEN ?1 "
                        "AND ?2 ORDER BY id", i);
    if (!rows) return sqlite3_errcode(w->db);
    a = summ_bisect(w, i, ta, max);
    b = summ_bisect(w, i, tb, max);
    a = a > ID_MARGIN ? a - ID_MARGIN : 1;
    b = b < INT64_MAX - ID_MARGIN ? b + ID_MARGIN : INT64_MAX;
    sqlite3_bind_int64(rows, 1, a);
    sqlite3_bind_int64(rows, 2, b);
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
        mtls_val_t vals[MTLS_MAX_COLUMNS];
        apr_int64_t t = sqlite3_column_int64(rows, 1);
        if (t < ta || t >= tb) continue;
        mtls_chain_row_values(rows, vals, MTLS_MAX_COLUMNS);
        rq_row(r, w, p, vals, col);
    }
    sqlite3_finalize(rows);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The requests of whole days [a, b) from the summaries; an hour with an
 * unauthenticated request or a card number from its rows. */
static int summ_days_rq(run_t *r, worker_t *w, part_t *p, apr_int64_t a,
                        apr_int64_t b)
{
    scan_t *s = &p->s;
    sqlite3_stmt *st;
    int rc;

    st = summ_prepare(w, "SELECT hour, sum(n), sum(CASE WHEN status < 400 "
                      "THEN n ELSE 0 END), sum(CASE WHEN status < 400 THEN "
                      "unauth ELSE 0 END) + sum(pan) FROM db%d.summaries "
                      "WHERE kind = 'requests' AND hour >= ?1 AND hour < ?2 "
                      "GROUP BY hour ORDER BY hour", p->db);
    if (!st) return sqlite3_errcode(w->db);
    sqlite3_bind_int64(st, 1, a / HOUR_US);
    sqlite3_bind_int64(st, 2, b / HOUR_US);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t h = sqlite3_column_int64(st, 0);
        int row_rc;

        if (!sqlite3_column_int64(st, 3)) {
            s->n_rq += sqlite3_column_int64(st, 1);
            s->answered += sqlite3_column_int64(st, 2);
            continue;
        }
        if ((row_rc = summ_rows_rq(r, w, p, h * HOUR_US, (h + 1) * HOUR_US))
            != SQLITE_OK) {
            rc = row_rc;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int rq_stretch(run_t *r, worker_t *w, part_t *p, int summ,
                      apr_int64_t a, apr_int64_t b)
{
    return summ ? summ_days_rq(r, w, p, a, b) : summ_rows_rq(r, w, p, a, b);
}

static int summ_rq(run_t *r, worker_t *w, part_t *p)
{
    /* rq_row reads each request's handshake row: no bits here. */
    p->auth_lo = 1;
    p->auth_upto = 0;
    return stretches(r, w, p, p->s.since, p->s.until, p->s.since,
                     rq_stretch);
}

/* Read one piece on worker w's connection. */
static int part_run(run_t *r, worker_t *w, part_t *p)
{
    static const char *const tables[] = { "certificates", "handshakes",
                                          "requests", "events" };
    mtls_chain_walk_t walk;
    sqlite3_stmt *st = NULL;
    char schema[16], *sql;
    int col[H_N], rc = SQLITE_OK, hcol;

    snprintf(schema, sizeof(schema), "db%d", p->db);
    if (p->summ) {
        rc = p->table == T_HS ? summ_hs(r, w, p) : summ_rq(r, w, p);
        window_close(&p->s, &p->bursts, emit_burst, r->cts);
        window_close(&p->s, &p->shared, emit_shared, r->cts);
        return rc;
    }
    if (p->verify) {
        rc = mtls_chain_walk_begin(&walk, w->db, schema, tables[p->table],
                                   r->key, p->lo, &p->res);
    }
    if (rc != SQLITE_OK) return rc;
    /* Every column when the chain is checked (its hash covers them all),
     * else only those counted. */
    if (p->verify) {
        sql = sqlite3_mprintf("SELECT * FROM %s.%s WHERE id BETWEEN ?1 AND "
                              "?2 ORDER BY id", schema, tables[p->table]);
    }
    else if (p->table == T_HS) {
        sql = sqlite3_mprintf("SELECT id, time_us, client_addr, server_name, "
                              "sni, tls_version, cipher, outcome, "
                              "verify_result, verify_error, alert, cert_id, "
                              "pid%s FROM %s.handshakes WHERE id BETWEEN ?1 "
                              "AND ?2 ORDER BY id", r->ds->version[p->db] >= 3
                              ? ", revocation_method, revocation_status" : "",
                              schema);
    }
    else {
        sql = sqlite3_mprintf("SELECT id, time_us, method, path, status, "
                              "handshake_id FROM %s.requests WHERE id BETWEEN "
                              "?1 AND ?2 ORDER BY id", schema);
    }
    rc = sql ? sqlite3_prepare_v2(w->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc == SQLITE_OK && p->count) {
        rc = col_index(st, p->table == T_HS ? hs_cols : rq_cols, col);
        if (p->table == T_HS) col_index_opt(st, hs_opt_cols, col + H_RM);
    }
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_bind_int64(st, 1, p->lo);
    sqlite3_bind_int64(st, 2, p->hi);
    hcol = mtls_chain_hash_column(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        mtls_val_t vals[MTLS_MAX_COLUMNS];
        int n = mtls_chain_row_values(st, vals, MTLS_MAX_COLUMNS);
        if (p->verify && mtls_chain_walk_vals(&walk, vals, n, hcol) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        if (p->count) {
            if (p->table == T_HS) hs_row(r, w, p, vals, col);
            else rq_row(r, w, p, vals, col);
        }
    }
    sqlite3_finalize(st);
    if (p->verify) mtls_chain_walk_end(&walk, p->hi);
    window_close(&p->s, &p->bursts, emit_burst, r->cts);
    window_close(&p->s, &p->shared, emit_shared, r->cts);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Close the worker's connection (and its statements). */
static void worker_close(worker_t *w)
{
    if (w->db && w->hs_by_id[w->cur]) {
        sqlite3_finalize(w->hs_by_id[w->cur]);
        w->hs_by_id[w->cur] = NULL;
    }
    sqlite3_close(w->db);
    w->db = NULL;
}

/* w->db: a connection with file i attached (as dbI), and no other (a
 * connection attaches at most SQLITE_MAX_ATTACHED files, and a data set
 * has any number); kept while the worker's pieces are of that file. */
static int worker_use(run_t *r, worker_t *w, int i)
{
    char *sql;
    int rc;

    if (w->db && w->cur == i) return SQLITE_OK;
    worker_close(w);
    w->cur = i;
    /* One connection per thread, no mutexes, reading through the
     * read-ahead VFS (readahead.c).  (Mapping the files was measured
     * slower here: page faults cost more than the copies.) */
    rc = sqlite3_open_v2(":memory:", &w->db, SQLITE_OPEN_READWRITE
                         | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) return rc;
    /* Before the ATTACH, which reads the file's schema (see
     * open_dataset). */
    sqlite3_busy_timeout(w->db, 5000);
    rc = mtls_db_harden(w->db);
    if (rc != SQLITE_OK) return rc;
    sql = sqlite3_mprintf("ATTACH 'file:%q?mode=ro%s' AS db%d",
                          r->ds->files[i], mtls_readahead_register()
                          == SQLITE_OK ? "&vfs=" MTLS_RA_VFS : "", i);
    rc = sql ? sqlite3_exec(w->db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc == SQLITE_OK) {
        sql = sqlite3_mprintf("SELECT cert_id, verify_result, "
                              "server_name, client_addr FROM "
                              "db%d.handshakes WHERE id = ?1", i);
        rc = sql ? sqlite3_prepare_v2(w->db, sql, -1, &w->hs_by_id[i],
                                      NULL) : SQLITE_NOMEM;
        sqlite3_free(sql);
    }
    return rc;
}

/* Whether piece p may start: a request piece reads the bits of the
 * handshake pieces it refers to, so waits for them to finish. */
static int runnable(const run_t *r, const part_t *p)
{
    int k;

    if (p->table != T_RQ) return 1;
    for (k = 0; k < r->nparts; k++) {
        const part_t *q = &r->parts[k];
        if (q->db == p->db && q->table == T_HS && q->lo <= p->need_h
            && !q->done) {
            return 0;
        }
    }
    return 1;
}

/* The handshake ids of p's database whose pieces have all finished (their
 * bits are final): auth_lo to auth_upto. */
static void auth_final(const run_t *r, part_t *p)
{
    apr_int64_t lo = -1, upto = -1;
    int k;

    for (k = 0; k < r->nparts; k++) {
        const part_t *q = &r->parts[k];
        if (q->db != p->db || q->table != T_HS) continue;
        if (!q->done || q->rc != SQLITE_OK || (lo >= 0 && q->lo > upto + 1)) {
            break;
        }
        if (lo < 0) lo = q->lo;
        upto = q->hi;
    }
    p->auth_lo = lo < 0 ? 1 : lo;
    p->auth_upto = upto < r->auth_n[p->db] ? upto : r->auth_n[p->db] - 1;
}

/* The next piece for a worker, in order among those that may start;
 * -1 when none is left. */
static int pick(run_t *r)
{
    int k, left;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        for (k = r->next, left = 0; k < r->nparts; k++) {
            part_t *p = &r->parts[k];
            if (p->taken) continue;
            left = 1;
            if (runnable(r, p)) {
                p->taken = 1;
                auth_final(r, p);
                while (r->next < r->nparts && r->parts[r->next].taken) {
                    r->next++;
                }
                pthread_mutex_unlock(&r->mu);
                return k;
            }
        }
        if (!left) break;
        pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return -1;
}

static void *worker_main(void *arg)
{
    run_t *r = ((void **)arg)[0];
    worker_t *w = ((void **)arg)[1];
    int rc, k;

    while ((k = pick(r)) >= 0) {
        part_t *p = &r->parts[k];
        if ((rc = worker_use(r, w, p->db)) != SQLITE_OK) {
            p->rc = rc;
            snprintf(p->err, sizeof(p->err), "%s", w->db
                     ? sqlite3_errmsg(w->db) : sqlite3_errstr(rc));
            worker_close(w);
        }
        else if ((p->rc = part_run(r, w, p)) != SQLITE_OK) {
            snprintf(p->err, sizeof(p->err), "%s", sqlite3_errmsg(w->db));
        }
        pthread_mutex_lock(&r->mu);
        __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    worker_close(w);
    mtls_chain_thread_done();
    return NULL;
}

/* Each run of 13-19 digits (single spaces or dashes allowed between them,
 * as has_pan reads them) keeps its last four digits only. */
static char *mask_digits(const char *s)
{
    size_t i, n = strlen(s), start = 0, digits = 0;
    char *out = strdup(s);

    if (!out) return NULL;
    for (i = 0; i <= n; i++) {
        int d = i < n && s[i] >= '0' && s[i] <= '9';
        int sep = i < n && digits && (s[i] == ' ' || s[i] == '-')
                  && s[i + 1] >= '0' && s[i + 1] <= '9';
        if (d) {
            if (!digits) start = i;
            digits++;
            continue;
        }
        if (sep) continue;
        if (digits >= 13 && digits <= 19) {
            size_t k, seen = 0;
            for (k = start; k < i; k++) {
                if (s[k] >= '0' && s[k] <= '9' && seen++ < digits - 4) {
                    out[k] = '*';
                }
            }
        }
        digits = 0;
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* After the passes: tables from the maps and the certificates          */

/* A map's entries, largest v[col] first, ties in key order: the
 * evidence keeps the top EVIDENCE_MAX rows, the same ones every run. */
static int by_value(const void *x, const void *y, void *col)
{
    const ment_t *a = *(const ment_t *const *)x, *b = *(const ment_t *const *)y;
    int k = *(const int *)col, c;

    if (a->v[k] != b->v[k]) return a->v[k] < b->v[k] ? 1 : -1;
    c = memcmp(a->key, b->key, a->klen < b->klen ? a->klen : b->klen);
    return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

static ment_t **map_sorted(const map_t *m, int col, size_t *n)
{
    ment_t **all = malloc(sizeof(*all) * (m->n ? m->n : 1));
    size_t i;

    *n = 0;
    if (!all) return NULL;
    for (i = 0; i < m->cap; i++) {
        if (m->t[i].key) all[(*n)++] = &m->t[i];
    }
    qsort_r(all, *n, sizeof(*all), by_value, &col);
    return all;
}

static void maps_to_evidence(scan_t *s, worker_t *a, apr_int64_t days)
{
    static const char *const vnames[] = { "SSLv3", "TLSv1", "TLSv1.1",
                                          "TLSv1.2", "TLSv1.3" };
    char f[6][404], b[6][32];
    ment_t **es;
    size_t i, n;
    int pass;

#define VERSION_NAME(v) ((v) >= 0x300 && (v) <= 0x304 ? vnames[(v) - 0x300] \
                                                      : NULL)
    /* Suites by handshakes; then, by acceptances, the crypto grading and
     * the non-AEAD suites. */
    for (pass = 0; pass < 2; pass++) {
        es = map_sorted(&a->suites, pass, &n);
        for (i = 0; es && i < n; i++) {
            ment_t *e = es[i];
            const char *why, *row[6];
            int ver, grade;

            key_fields(e, f, 2);
            ver = atoi(f[0]);
            row[0] = VERSION_NAME(ver);
            row[1] = f[1];
            row[2] = num(e->v[0], b[0]);
            row[3] = num(e->v[1], b[1]);
            if (pass == 0) {
                ev_add(&s->suites, row);
                continue;
            }
            if (!e->v[1]) continue;
            grade = grade_suite(ver, f[1], &why);
            row[2] = grade == 0 ? "approved" : grade == 1 ? "deprecated"
                                                          : "prohibited";
            row[3] = why;
            row[4] = b[1];
            row[5] = num(e->v[2], b[2]);
            ev_add(&s->crypto, row);
            if (!cipher_is_aead(f[1])) {
                const char *r3[3] = { row[0], f[1], b[1] };
                ev_add(&s->non_aead, r3);
            }
        }
        free(es);
    }
    es = map_sorted(&a->suites_sni, 0, &n);
    for (i = 0; es && i < n; i++) {
        if (ev_full(&s->suites_sni)) continue;
        const char *row[6];
        int ver;
        key_fields(es[i], f, 3);
        ver = atoi(f[0]);
        row[0] = VERSION_NAME(ver);
        row[1] = f[1];
        row[2] = f[2];
        row[3] = num(es[i]->v[0], b[0]);
        row[4] = iso_us(es[i]->v[3], b[1]);
        row[5] = iso_us(es[i]->v[4], b[2]);
        ev_add(&s->suites_sni, row);
    }
    free(es);
#undef VERSION_NAME
    es = map_sorted(&a->reasons, 0, &n);
    for (i = 0; es && i < n; i++) {
        if (ev_full(&s->reasons)) continue;
        const char *row[4];
        key_fields(es[i], f, 3);
        row[0] = outcome_name(atoi(f[0]));
        row[1] = f[1];
        row[2] = atoi(f[2]) >= 0 ? (mtls_alert_name(atoi(f[2]))
                                    ? mtls_alert_name(atoi(f[2])) : f[2]) : "";
        row[3] = num(es[i]->v[0], b[0]);
        ev_add(&s->reasons, row);
    }
    free(es);
    es = map_sorted(&a->scope, 0, &n);
    for (i = 0; es && i < n; i++) {
        const char *row[4];
        key_fields(es[i], f, 2);
        row[0] = f[0];
        row[1] = f[1];
        row[2] = num(es[i]->v[0], b[0]);
        row[3] = num(es[i]->v[1], b[1]);
        ev_add(&s->scope, row);
    }
    free(es);
    ev_sort(&s->scope, 1, 0, 0);
    ev_sort(&s->scope, 0, 0, 0);
    es = map_sorted(&a->not_verified, 0, &n);
    for (i = 0; es && i < n; i++) {
        if (ev_full(&s->not_verified)) continue;
        const char *row[3];
        key_fields(es[i], f, 2);
        row[0] = outcome_name(atoi(f[0]));
        row[1] = f[1];
        row[2] = num(es[i]->v[0], b[0]);
        ev_add(&s->not_verified, row);
    }
    free(es);
    for (i = 0; i < (size_t)days; i++) {
        char day[32];
        const char *row[6];
        int k;
        iso_us(s->since + (apr_int64_t)i * DAY_US, day);
        day[10] = '\0';
        if (!(a->per_day[i][0] | a->per_day[i][1] | a->per_day[i][2]
              | a->per_day[i][3] | a->per_day[i][4])) {
            continue;
        }
        row[0] = day;
        for (k = 0; k < 5; k++) row[k + 1] = num(a->per_day[i][k], b[k]);
        ev_add(&s->per_day, row);
    }
}

typedef struct { cinfo_t *c; int db; apr_int64_t id; } cref_t;

static int by_hex(const void *x, const void *y)
{
    const cref_t *a = x, *b = y;
    int c = strcmp(a->c->hex, b->c->hex);
    return c ? c : a->db != b->db ? a->db - b->db : (a->id > b->id)
                                                    - (a->id < b->id);
}

/* One certificate seen by several databases (servers, or an archive and
 * the live file) is one certificate: fold its figures into its entry in
 * the first database that holds it. */
static int merge_certs(ctab_t *cts, int n)
{
    size_t total = 0, k = 0, j;
    cinfo_t *head;
    cref_t *all;
    apr_int64_t id;
    int i;

    for (i = 0; i < n; i++) total += (size_t)cts[i].n;
    if (n < 2 || !total) return SQLITE_OK;
    if (!(all = malloc(total * sizeof(*all)))) return SQLITE_NOMEM;
    for (i = 0; i < n; i++) {
        for (id = 1; id < cts[i].n; id++) {
            if (!cts[i].c[id].present) continue;
            all[k].c = &cts[i].c[id];
            all[k].db = i;
            all[k++].id = id;
        }
    }
    qsort(all, k, sizeof(*all), by_hex);
    for (j = 1, head = k ? all[0].c : NULL; j < k; j++) {
        cinfo_t *c = all[j].c;
        if (strcmp(c->hex, head->hex)) {
            head = c;
            continue;
        }
        cstat_add(&head->st, &c->st);
        if (c->first_seen < head->first_seen) {
            head->first_seen = c->first_seen;
        }
        c->dup = 1;
    }
    free(all);
    return SQLITE_OK;
}


/* Whole days from now_s to na (seconds), rounded towards the past; a
 * hostile not_after far outside any calendar is held to +-2^40 s first,
 * so that nothing overflows. */
static apr_int64_t days_left(apr_int64_t na, apr_int64_t now_s)
{
    const apr_int64_t lim = (apr_int64_t)1 << 40;
    apr_int64_t d;

    na = na < -lim ? -lim : na > lim ? lim : na;
    now_s = now_s < -lim ? -lim : now_s > lim ? lim : now_s;
    d = na - now_s;
    return d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
}
static int cert_tables(dataset_t *ds, int i, scan_t *s, ctab_t *ct)
{
    apr_int64_t id, now_s = s->now / 1000000;
    char b[8][32];

    for (id = 1; id < ct->n; id++) {
        cinfo_t *c = &ct->c[id];
        if (!c->present || c->dup) continue;
        if (c->st.seen) {
            s->expiry_n[c->na < now_s ? 0 : c->na < now_s + 30 * 86400 ? 1
                        : c->na < now_s + 90 * 86400 ? 2 : 3]++;
        }
        if (c->st.acc) {
            const char *finding = c->weak ? "weak"
                : c->st.last / 1000000 > c->na ? "accepted expired"
                : c->na < now_s + EXPIRY_DAYS * 86400 ? "expiring" : "";
            const char *row[13];
            s->certs_accepted++;
            if (c->weak) s->certs_weak++;
            if (c->na >= now_s && c->na < now_s + EXPIRY_DAYS * 86400) {
                s->certs_expiring++;
            }
            row[0] = c->subject;
            row[1] = c->issuer;
            row[2] = c->serial;
            row[3] = c->hex;
            row[4] = c->key_type;
            row[5] = num(c->key_bits, b[0]);
            row[6] = c->sig_alg;
            row[7] = iso_s(c->na, b[1]);
            row[8] = num(days_left(c->na, now_s), b[2]);
            row[9] = iso_us(c->st.first, b[3]);
            row[10] = iso_us(c->st.last, b[4]);
            row[11] = num(c->st.acc, b[5]);
            row[12] = finding;
            ev_add(&s->inventory, row);
        }
        /* Valid at the end of the period, and no accepted use in its last
         * 90 days, but one before. */
        if (c->na > s->until / 1000000 && c->first_seen
            < s->until - INACTIVE_DAYS * DAY_US
            && c->st.last_acc < s->until - INACTIVE_DAYS * DAY_US) {
            apr_int64_t last = c->st.last_acc;
            if (!last) {
                sqlite3_stmt *st;
                char *sql = sqlite3_mprintf("SELECT time_us FROM "
                    "db%d.handshakes WHERE cert_id = ?1 AND outcome = 1 "
                    "ORDER BY id DESC LIMIT 1", i);
                if (sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL)
                    == SQLITE_OK) {
                    sqlite3_bind_int64(st, 1, id);
                    if (sqlite3_step(st) == SQLITE_ROW) {
                        last = sqlite3_column_int64(st, 0);
                    }
                    sqlite3_finalize(st);
                }
                sqlite3_free(sql);
            }
            if (last && last < s->until - INACTIVE_DAYS * DAY_US) {
                const char *row[4];
                s->inactive++;
                row[0] = c->subject;
                row[1] = c->hex;
                row[2] = iso_us(last, b[6]);
                row[3] = iso_s(c->na, b[7]);
                ev_add(&s->inactive_ev, row);
            }
        }
    }
    return SQLITE_OK;
}

/* The expiry buckets as a table. */
static void bucket_expiry(scan_t *s)
{
    static const char *const names[] = {
        "expired", "within 30 days", "31-90 days", "more than 90 days"
    };
    char b[24];
    int k;

    for (k = 0; k < 4; k++) {
        if (s->expiry_n[k]) {
            const char *row[2] = { names[k], num(s->expiry_n[k], b) };
            ev_add(&s->expiry, row);
        }
    }
}

static int small_queries(dataset_t *ds, scan_t *s)
{
    sqlite3_stmt *st;
    int rc;
    /* certs reads the files in turn and takes no index (open_dataset):
     * materialized, SQLite indexes it for the subquery. */
    static const char changes[] =
        "WITH cs AS MATERIALIZED (SELECT subject_dn, sha256, cert_sha256, "
        "issuer_dn, first_seen_us FROM certs) "
        "SELECT c.subject_dn, c.cert_sha256, c.issuer_dn, "
        "strftime('%Y-%m-%dT%H:%M:%SZ', c.first_seen_us / 1000000, "
        "'unixepoch') AS first_seen FROM cs c WHERE c.first_seen_us >= ?1 "
        "AND c.first_seen_us < ?2 AND EXISTS (SELECT 1 FROM cs o WHERE "
        "o.subject_dn = c.subject_dn AND o.sha256 != c.sha256 AND "
        "o.first_seen_us < c.first_seen_us) ORDER BY c.first_seen_us";

    if ((rc = sqlite3_prepare_v2(ds->db, changes, -1, &st, NULL))
        != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, s->since);
    sqlite3_bind_int64(st, 2, s->until);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row[4];
        int k;
        for (k = 0; k < 4; k++) row[k] = (const char *)sqlite3_column_text(st, k);
        ev_add(&s->changes, row);
        s->credential_changes++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return rc;
    rc = sqlite3_prepare_v2(ds->db, "SELECT count(*) FROM (SELECT issuer_dn, "
                            "min(first_seen_us) AS f FROM certs GROUP BY "
                            "issuer_dn) WHERE f >= ?1 AND f < ?2 AND (SELECT "
                            "min(first_seen_us) FROM certs) < ?1", -1, &st,
                            NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, s->since);
    sqlite3_bind_int64(st, 2, s->until);
    if (sqlite3_step(st) == SQLITE_ROW) {
        s->new_issuers = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return SQLITE_OK;
}

/* ------------------------------------------------------------------ */
/* Planning the pieces, and joining what they found                     */

static apr_int64_t max_id(dataset_t *ds, int i, const char *table)
{
    sqlite3_stmt *st;
    apr_int64_t id = 0;
    char *sql = sqlite3_mprintf("SELECT coalesce(max(id), 0) FROM db%d.%s",
                                i, table);
    if (sql && sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL)
        == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return id;
}

/* The handshake of the last request up to id hi (the requests of a
 * piece refer to handshakes up to about there). */
static apr_int64_t last_handshake(dataset_t *ds, int i, apr_int64_t hi)
{
    sqlite3_stmt *st;
    apr_int64_t h = INT64_MAX;
    char *sql = sqlite3_mprintf("SELECT handshake_id FROM db%d.requests "
                                "WHERE id <= ?1 ORDER BY id DESC LIMIT 1", i);
    if (sql && sqlite3_prepare_v2(ds_db(ds, i), sql, -1, &st, NULL)
        == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, hi);
        if (sqlite3_step(st) == SQLITE_ROW) h = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return h;
}

static int plan_piece = PIECE_ROWS, plan_fixed;

/* The pieces of ids lo..hi of a table (its highest id max); the last
 * piece runs to hi. */
static int add_parts(run_t *r, int db, int table, apr_int64_t lo,
                     apr_int64_t hi, apr_int64_t max, int verify, int count)
{
    /* In 128 bits: the ids are the file's, anywhere in 64. */
    __int128 top = hi < max ? hi : max, rows = top - lo + 1, piece = plan_piece;
    apr_int64_t n, k;
    part_t *np;

    /* At least eight pieces for a big table, so both workers stay busy
     * to the end (and request pieces do not wait long). */
    if (!plan_fixed && rows / 8 < piece) {
        piece = rows / 8 > PIECE_MIN ? rows / 8 : PIECE_MIN;
    }
    n = rows > piece ? (apr_int64_t)((rows + piece - 1) / piece) : 1;
    if (n > PIECES_MAX) {
        n = PIECES_MAX;
    }
    if (!(np = realloc(r->parts, sizeof(part_t) * (size_t)(r->nparts + n)))) {
        return SQLITE_NOMEM;
    }
    r->parts = np;
    for (k = 0; k < n; k++) {
        part_t *p = &r->parts[r->nparts++];
        memset(p, 0, sizeof(*p));
        p->db = db;
        p->table = table;
        p->lo = (apr_int64_t)(lo + rows * k / n);
        p->hi = k == n - 1 ? hi : (apr_int64_t)(lo + rows * (k + 1) / n - 1);
        p->verify = verify;
        p->count = count;
        p->s.since = r->s->since;
        p->s.until = r->s->until;
        p->s.now = r->s->now;
        scan_init_evidence(&p->s);
        if (table == T_RQ) {
            p->need_h = last_handshake(r->ds, db, p->hi);
        }
    }
    /* The chain is walked from the lowest id there is: a row below 1 is
     * forged, and must not stay out of sight. */
    if (verify && lo <= 0) {
        r->parts[r->nparts - n].lo = INT64_MIN;
    }
    return SQLITE_OK;
}

static int plan(run_t *r)
{
    dataset_t *ds = r->ds;
    scan_t *s = r->s;
    int i, t, rc = SQLITE_OK, verify_all = s->verify, verify;
    const char *env = getenv("MTLS_AUDIT_SCAN_PIECE");

    if (env && atoi(env) > 0) {
        plan_piece = atoi(env);
        plan_fixed = 1;
    }
    if ((env = getenv("MTLS_AUDIT_MAP_LIMIT")) && atoi(env) > 0) {
        map_limit = (size_t)atoi(env);
    }
    for (i = 0; i < ds->n; i++) {
        r->summ[i] = (unsigned char)summarizable(ds, i, s);
    }
    /* The small tables first (only their chains), then the handshakes
     * (the requests' pass reads the bits they leave), then requests. */
    for (t = 0; t < 4 && rc == SQLITE_OK; t++) {
        static const int order[] = { T_CERTS, T_EVENTS, T_HS, T_RQ };
        int tb = order[t];
        for (i = 0; i < ds->n && rc == SQLITE_OK; i++) {
            apr_int64_t lo = 0, hi = INT64_MAX, max;
            verify = verify_all && !(s->no_walk && s->no_walk[i]);
            if (r->summ[i] && (tb == T_HS || tb == T_RQ)) {
                part_t *np = realloc(r->parts, sizeof(part_t)
                                     * (size_t)(r->nparts + 1));
                part_t *p;
                if (!np) return SQLITE_NOMEM;
                r->parts = np;
                p = &r->parts[r->nparts++];
                memset(p, 0, sizeof(*p));
                p->db = i;
                p->table = tb;
                p->summ = p->count = 1;
                p->need_h = -1;
                p->s.since = s->since;
                p->s.until = s->until;
                p->s.now = s->now;
                scan_init_evidence(&p->s);
                continue;
            }
            if (tb == T_CERTS || tb == T_EVENTS) {
                if (verify) {
                    rc = add_parts(r, i, tb, 0, INT64_MAX, 0, 1, 0);
                }
                continue;
            }
            max = max_id(ds, i, tb == T_HS ? "handshakes" : "requests");
            if (tb == T_HS && max >= 0 && max < AUTH_IDS_MAX) {
                r->auth_n[i] = max + 1;
                r->auth[i] = calloc((size_t)(max / 8 + 1), 1);
                if (!r->auth[i]) return SQLITE_NOMEM;
            }
            else if (tb == T_HS) {
                r->auth_n[i] = 0;       /* no bits: rows are read */
            }
            if (!verify) {
                /* Only the ids around the period. */
                if (tb == T_HS) {
                    apr_int64_t since = s->since < s->until - INACTIVE_DAYS
                        * DAY_US ? s->since : s->until - INACTIVE_DAYS * DAY_US;
                    lo = first_id(ds, i, "handshakes", since, 0);
                    hi = first_id(ds, i, "handshakes", s->until, 1);
                    if (!lo || !hi) continue;       /* nothing in it */
                }
                else {
                    lo = bisect_requests(ds, i, s->since);
                    hi = bisect_requests(ds, i, s->until);
                }
                lo = lo > ID_MARGIN ? lo - ID_MARGIN : 1;
                hi = hi < INT64_MAX - ID_MARGIN ? hi + ID_MARGIN : INT64_MAX;
            }
            rc = add_parts(r, i, tb, lo, hi, max, verify, 1);
        }
    }
    return rc;
}

/* A piece's counts and evidence, added to s. */
static void scan_take(scan_t *s, scan_t *from)
{
    evidence_t *to[SCAN_EVIDENCE], *src[SCAN_EVIDENCE];
    int k;

    for (k = 0; k < SCAN_COUNTS; k++) s->counts[k] += from->counts[k];
    scan_evidence(s, to);
    scan_evidence(from, src);
    for (k = 0; k < SCAN_EVIDENCE; k++) ev_take(to[k], src[k]);
}

/* A child's clock going backwards across the cut between two pieces. */
static void pids_join(run_t *r)
{
    map_t last;
    int i, k;
    char buf[4][32];

    for (i = 0; i < r->ds->n; i++) {
        memset(&last, 0, sizeof(last));
        for (k = 0; k < r->nparts; k++) {
            part_t *p = &r->parts[k];
            size_t j;
            if (p->db != i || p->table != T_HS) continue;
            for (j = 0; j < p->pids.cap; j++) {
                const ment_t *e = &p->pids.t[j];
                ment_t *g;
                if (!e->key || !(g = map_key(&last, e->key, e->klen))) {
                    continue;
                }
                if (g->v[1] && e->v[2] < g->v[0] - 1000000) {
                    char f[1][404];
                    const char *row[5];
                    key_fields(e, f, 1);
                    r->s->backwards++;
                    row[0] = r->ds->files[i];
                    row[1] = f[0];
                    row[2] = num(e->v[3], buf[1]);
                    row[3] = iso_us(e->v[2], buf[2]);
                    row[4] = iso_us(g->v[0], buf[3]);
                    ev_add(&r->s->backwards_ev, row);
                }
                g->v[0] = e->v[0];
                g->v[1] = 1;
            }
        }
        map_free(&last);
    }
    ev_sort(&r->s->backwards_ev, 2, 1, 0);
}

static int worker_init(run_t *r, worker_t *w)
{
    int i;

    memset(w, 0, sizeof(*w));
    w->per_day = calloc((size_t)r->days + 1, sizeof(*w->per_day));
    w->seen90 = calloc((size_t)r->ds->n, sizeof(*w->seen90));
    w->cs = calloc((size_t)r->ds->n, sizeof(*w->cs));
    w->hs_by_id = calloc((size_t)r->ds->n, sizeof(*w->hs_by_id));
    if (!w->per_day || !w->seen90 || !w->cs || !w->hs_by_id) return -1;
    for (i = 0; i < r->ds->n; i++) {
        if (!(w->cs[i] = calloc((size_t)r->cts[i].n, sizeof(cstat_t)))) {
            return -1;
        }
    }
    return 0;
}

static void worker_free(run_t *r, worker_t *w)
{
    int i;

    map_free(&w->suites);
    map_free(&w->suites_sni);
    map_free(&w->reasons);
    free(w->fails);
    map_free(&w->scope);
    map_free(&w->not_verified);
    for (i = 0; w->cs && i < r->ds->n; i++) free(w->cs[i]);
    free(w->cs);
    free(w->per_day);
    free(w->seen90);
    free(w->hs_by_id);
}

/* The second worker's figures into the first's, and the per-certificate
 * ones into the certificate tables. */
static void workers_join(run_t *r)
{
    worker_t *a = &r->w[0];
    apr_int64_t id, d;
    int i, k, j;

    for (k = 1; k < WORKERS; k++) {
        worker_t *b = &r->w[k];
        map_merge(&a->suites, &b->suites, combine_sum);
        map_merge(&a->suites_sni, &b->suites_sni, combine_sum);
        map_merge(&a->reasons, &b->reasons, combine_sum);
        map_merge(&a->scope, &b->scope, combine_sum);
        map_merge(&a->not_verified, &b->not_verified, combine_sum);
        for (d = 0; d < r->days; d++) {
            for (j = 0; j < 5; j++) a->per_day[d][j] += b->per_day[d][j];
        }
        for (i = 0; i < r->ds->n; i++) {
            for (d = 0; d < INACTIVE_DAYS; d++) {
                a->seen90[i][d] |= b->seen90[i][d];
            }
        }
    }
    for (i = 0; i < r->ds->n; i++) {
        for (d = 0, r->s->empty_days[i] = 0; d < INACTIVE_DAYS; d++) {
            r->s->empty_days[i] += !a->seen90[i][d];
        }
        for (id = 1; id < r->cts[i].n; id++) {
            cinfo_t *c = &r->cts[i].c[id];
            for (k = 0; k < WORKERS; k++) {
                cstat_add(&c->st, &r->w[k].cs[i][id]);
            }
        }
    }
}

/* Sort by h: least significant 16 bits first, four passes, through tmp. */
static void radix_sort(fref_t *a, fref_t *tmp, size_t n)
{
    static size_t count[65536];
    int pass;

    for (pass = 0; pass < 4; pass++) {
        int shift = pass * 16;
        size_t i, sum = 0;
        fref_t *t;

        memset(count, 0, sizeof(count));
        for (i = 0; i < n; i++) count[(a[i].h >> shift) & 0xffff]++;
        for (i = 0; i < 65536; i++) {
            size_t c = count[i];
            count[i] = sum;
            sum += c;
        }
        for (i = 0; i < n; i++) tmp[count[(a[i].h >> shift) & 0xffff]++] = a[i];
        t = a;
        a = tmp;
        tmp = t;
    }
}

/* Before: more attempts, or as many and an earlier first row. */
static int group_before(const fref_t *a, const fref_t *b)
{
    return a->h != b->h ? a->h > b->h : a->ref < b->ref;
}

/* The failed attempts' groups, largest first (the top EVIDENCE_MAX kept),
 * each shown from its first row. */
static int invalid_evidence(run_t *r)
{
    size_t n = 0, k, j, groups = 0, ntop = 0;
    fref_t *all, *tmp, top[EVIDENCE_MAX];
    char buf[24];
    int w, rc = SQLITE_OK;

    for (w = 0; w < WORKERS; w++) {
        if (r->w[w].fails_oom) return SQLITE_NOMEM;
        n += r->w[w].nfails;
    }
    if (!n) return SQLITE_OK;
    all = malloc(n * sizeof(*all));
    tmp = malloc(n * sizeof(*tmp));
    if (!all || !tmp) {
        free(all);
        free(tmp);
        return SQLITE_NOMEM;
    }
    for (w = 0, n = 0; w < WORKERS; w++) {
        if (r->w[w].nfails) {
            memcpy(all + n, r->w[w].fails, r->w[w].nfails * sizeof(*all));
        }
        n += r->w[w].nfails;
        free(r->w[w].fails);
        r->w[w].fails = NULL;
        r->w[w].nfails = r->w[w].capfails = 0;
    }
    radix_sort(all, tmp, n);        /* four passes: back in all */
    free(tmp);
    /* Runs of one hash are groups: (count, first row); the best kept in
     * top, in order. */
    for (k = 0; k < n; k = j) {
        fref_t g;
        size_t at;
        g.ref = all[k].ref;
        for (j = k + 1; j < n && all[j].h == all[k].h; j++) {
            if (all[j].ref < g.ref) g.ref = all[j].ref;
        }
        g.h = j - k;
        groups++;
        if (ntop == EVIDENCE_MAX && !group_before(&g, &top[ntop - 1])) {
            continue;
        }
        for (at = ntop < EVIDENCE_MAX ? ntop : ntop - 1;
             at > 0 && group_before(&g, &top[at - 1]); at--) {
            top[at] = top[at - 1];
        }
        top[at] = g;
        if (ntop < EVIDENCE_MAX) ntop++;
    }
    free(all);
    for (k = 0; k < ntop && rc == SQLITE_OK; k++) {
        sqlite3_stmt *st;
        const char *row[6];
        int db = (int)(top[k].ref >> 56), c;
        char *sql = sqlite3_mprintf("SELECT outcome, verify_error, alert, "
                                    "client_addr, sni FROM db%d.handshakes "
                                    "WHERE id = ?1", db);

        rc = sql ? sqlite3_prepare_v2(ds_db(r->ds, db), sql, -1, &st, NULL)
                 : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) break;
        sqlite3_bind_int64(st, 1, (apr_int64_t)(top[k].ref
                                                & ((1ULL << 56) - 1)));
        if (sqlite3_step(st) == SQLITE_ROW) {
            row[0] = outcome_name(sqlite3_column_int(st, 0));
            row[1] = (const char *)sqlite3_column_text(st, 1);
            row[1] = row[1] ? row[1] : "";
            row[2] = sqlite3_column_type(st, 2) == SQLITE_NULL ? ""
                     : (const char *)sqlite3_column_text(st, 2);
            for (c = 3; c < 5; c++) {
                row[c] = (const char *)sqlite3_column_text(st, c);
                row[c] = row[c] ? row[c] : "";
            }
            row[5] = num((apr_int64_t)top[k].h, buf);
            ev_add(&r->s->invalid, row);
        }
        sqlite3_finalize(st);
    }
    r->s->invalid.total = (long)groups;
    return rc;
}

/* Run the pieces on the workers; join what they found into s. */
static int run_parts(run_t *r)
{
    pthread_t th[WORKERS];
    void *args[WORKERS][2];
    window_t **ws;
    int k, started[WORKERS], rc = SQLITE_OK;

    for (k = 0; k < WORKERS; k++) {
        args[k][0] = r;
        args[k][1] = &r->w[k];
        started[k] = k > 0 && pthread_create(&th[k], NULL, worker_main,
                                              args[k]) == 0;
    }
    worker_main(args[0]);
    for (k = 1; k < WORKERS; k++) {
        if (started[k]) pthread_join(th[k], NULL);
        else worker_main(args[k]);      /* no thread: the pieces are done */
    }
    for (k = 0; k < r->nparts; k++) {
        part_t *p = &r->parts[k];
        if (p->rc != SQLITE_OK) {
            fail("reading %s: %s", r->ds->files[p->db], p->err);
            return p->rc;
        }
    }
    for (k = 0; k < r->nparts; k++) {
        part_t *p = &r->parts[k];
        scan_take(r->s, &p->s);
        if (p->verify) {
            mtls_chain_result_t *c = &r->s->chain[p->db * MTLS_ANCHOR_TABLES
                                                  + p->table];
            if (k == 0 || r->parts[k - 1].db != p->db
                || r->parts[k - 1].table != p->table) {
                *c = p->res;
            }
            else {
                mtls_chain_result_join(c, &p->res);
            }
        }
    }
    pids_join(r);
    if (!(ws = malloc(sizeof(*ws) * (size_t)r->nparts))) return SQLITE_NOMEM;
    for (k = 0; k < r->nparts; k++) ws[k] = &r->parts[k].bursts;
    windows_join(r->s, ws, r->nparts, emit_burst, combine_count, r->cts);
    for (k = 0; k < r->nparts; k++) ws[k] = &r->parts[k].shared;
    windows_join(r->s, ws, r->nparts, emit_shared, combine_shared, r->cts);
    free(ws);
    workers_join(r);
    return rc;
}

static void run_free(run_t *r)
{
    int k;

    for (k = 0; k < r->nparts; k++) {
        part_t *p = &r->parts[k];
        window_free(&p->bursts);
        window_free(&p->shared);
        map_free(&p->pids);
        scan_free(&p->s);
    }
    free(r->parts);
    for (k = 0; k < WORKERS; k++) worker_free(r, &r->w[k]);
    for (k = 0; r->auth && k < r->ds->n; k++) free(r->auth[k]);
    free(r->auth);
    free(r->auth_n);
    free(r->summ);
}

int scan_period(dataset_t *ds, scan_t *s)
{
    ctab_t *cts = calloc((size_t)ds->n, sizeof(ctab_t));
    run_t r;
    int i, k, rc = SQLITE_OK;

    memset(&r, 0, sizeof(r));
    maps_dropped = 0;
    scan_init_evidence(s);
    r.ds = ds;
    r.s = s;
    r.cts = cts;
    r.key = s->key;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    s->empty_days = calloc((size_t)ds->n, sizeof(apr_int64_t));
    s->chain = calloc((size_t)ds->n * MTLS_ANCHOR_TABLES,
                      sizeof(mtls_chain_result_t));
    r.auth = calloc((size_t)ds->n, sizeof(*r.auth));
    r.auth_n = calloc((size_t)ds->n, sizeof(*r.auth_n));
    r.summ = calloc((size_t)ds->n, 1);
    r.days = (s->until - s->since + DAY_US - 1) / DAY_US;
    if (r.days > 20000) r.days = 20000;
    if (!cts || !s->empty_days || !s->chain || !r.auth || !r.auth_n
        || !r.summ) {
        rc = SQLITE_NOMEM;
    }
    for (i = 0; i < ds->n && rc == SQLITE_OK; i++) {
        rc = load_certs(ds, i, &cts[i]);
    }
    for (k = 0; k < WORKERS && rc == SQLITE_OK; k++) {
        if (worker_init(&r, &r.w[k]) != 0) rc = SQLITE_NOMEM;
    }
    if (rc == SQLITE_OK) rc = plan(&r);
    if (rc == SQLITE_OK && (rc = run_parts(&r)) != SQLITE_OK) {
        /* reported */
        rc = -rc;
    }
    if (rc == SQLITE_OK) rc = invalid_evidence(&r);
    if (rc == SQLITE_OK) rc = merge_certs(cts, ds->n);
    for (i = 0; i < ds->n && rc == SQLITE_OK; i++) {
        rc = cert_tables(ds, i, s, &cts[i]);
    }
    if (rc == SQLITE_OK) {
        ev_sort_least(&s->bursts);
        ev_sort(&s->bursts, 2, 1, 1);
        ev_sort_least(&s->shared);
        ev_sort(&s->shared, 3, 1, 1);
        ev_sort(&s->inventory, 7, 0, 0);
        ev_sort(&s->inventory, 12, 0, 1);
        bucket_expiry(s);
        maps_to_evidence(s, &r.w[0], r.days);
        rc = small_queries(ds, s);
    }
    if (rc > 0) {
        fail("reading the databases: %s", rc == SQLITE_NOMEM
             ? "out of memory" : ds_errmsg(ds));
    }
    run_free(&r);
    if (maps_dropped) {
        fprintf(stderr, "mtls-audit: warning: %ld groups (suites, reasons, "
                "servers, clients) beyond the %d a table may hold are left "
                "out of the evidence; the counts include them\n",
                maps_dropped, (int)map_limit);
    }
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    for (i = 0; cts && i < ds->n; i++) {
        free_certs(&cts[i]);
    }
    free(cts);
    return rc == SQLITE_OK ? EXIT_OK : EXIT_DB;
}

void scan_free(scan_t *s)
{
    evidence_t *all[SCAN_EVIDENCE];
    int k;

    scan_evidence(s, all);
    for (k = 0; k < SCAN_EVIDENCE; k++) {
        evidence_free(all[k]);
    }
    free(s->empty_days);
    s->empty_days = NULL;
    free(s->chain);
    s->chain = NULL;
}
