/*
 * scan.c -- one pass over each database's handshakes and requests for the
 * report; see scan.h.
 *
 * Rows are read in id order over the id range that covers the period
 * (found through the time index, widened by a margin because ids follow
 * the time only roughly: children write their batches in turn), and
 * filtered by time here.  Certificates are loaded once per database into
 * an array indexed by id.  Maps are open-addressing hash tables keyed by
 * the fields of a group joined with 0x1f; a map that would pass its limit
 * counts what it had to drop instead of growing without bound.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scan.h"
#include "mtls_core.h"

#define ID_MARGIN   200000      /* ids around the period also read */
#define MAP_LIMIT   2000000     /* entries a map may hold */
#define DETAIL_LIMIT 200000     /* entries of the per-client failure map */

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

void ev_add(evidence_t *ev, const char *const *vals)
{
    char **row, ***nr;
    int i;

    ev->total++;
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

void ev_sort(evidence_t *ev, int col, int numeric, int desc)
{
    sort_col = col;
    sort_num = numeric;
    sort_desc = desc;
    if (ev->nrows > 1) {
        qsort(ev->rows, (size_t)ev->nrows, sizeof(char **), row_cmp);
    }
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

/* ------------------------------------------------------------------ */
/* Maps                                                                 */

typedef struct {
    char        *key;           /* NULL: empty slot */
    size_t       klen;
    apr_uint64_t h;
    apr_int64_t  v[5];
    char        *extra;         /* per-map payload (shared addresses) */
} ment_t;

typedef struct {
    ment_t *t;
    size_t  cap, n;
    long    dropped;
    size_t  limit;              /* 0: MAP_LIMIT */
} map_t;

typedef struct {
    char   b[1536];
    size_t n;
} key_t_;

static void kb_reset(key_t_ *k) { k->n = 0; }

static void kb_str(key_t_ *k, const char *s)
{
    size_t l = s ? strlen(s) : 0;
    if (l > 400) l = 400;
    if (k->n + l + 2 >= sizeof(k->b)) return;
    k->b[k->n++] = s ? 's' : 'n';
    memcpy(k->b + k->n, s ? s : "", l);
    k->n += l;
    k->b[k->n++] = 0x1f;
}

static void kb_int(key_t_ *k, apr_int64_t v)
{
    char tmp[24];
    int l = 0, neg = v < 0;
    apr_uint64_t u = neg ? (apr_uint64_t)(-(v + 1)) + 1 : (apr_uint64_t)v;

    do {
        tmp[sizeof(tmp) - 1 - l++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg) tmp[sizeof(tmp) - 1 - l++] = '-';
    if (k->n + (size_t)l + 2 >= sizeof(k->b)) return;
    k->b[k->n++] = 'i';
    memcpy(k->b + k->n, tmp + sizeof(tmp) - l, (size_t)l);
    k->n += (size_t)l;
    k->b[k->n++] = 0x1f;
}

static apr_uint64_t fnv(const char *p, size_t n)
{
    apr_uint64_t h = 14695981039346656037ULL;
    while (n--) {
        h ^= (unsigned char)*p++;
        h *= 1099511628211ULL;
    }
    return h;
}

static int map_grow(map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256, i;
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
    return 0;
}

/* The entry for key, created zeroed; NULL when the map is full. */
static ment_t *map_get(map_t *m, const key_t_ *k)
{
    apr_uint64_t h = fnv(k->b, k->n);
    size_t i;

    if (!m->cap || (m->n + 1) * 4 > m->cap * 3) {
        if (m->n >= (m->limit ? m->limit : MAP_LIMIT) || map_grow(m) != 0) {
            goto lookup_only;
        }
    }
    for (i = h & (m->cap - 1); m->t[i].key; i = (i + 1) & (m->cap - 1)) {
        if (m->t[i].h == h && m->t[i].klen == k->n
            && !memcmp(m->t[i].key, k->b, k->n)) {
            return &m->t[i];
        }
    }
    if (!(m->t[i].key = malloc(k->n ? k->n : 1))) {
        m->dropped++;
        return NULL;
    }
    memcpy(m->t[i].key, k->b, k->n);
    m->t[i].klen = k->n;
    m->t[i].h = h;
    m->n++;
    return &m->t[i];
lookup_only:
    for (i = h & (m->cap - 1); m->cap && m->t[i].key;
         i = (i + 1) & (m->cap - 1)) {
        if (m->t[i].h == h && m->t[i].klen == k->n
            && !memcmp(m->t[i].key, k->b, k->n)) {
            return &m->t[i];
        }
    }
    m->dropped++;
    return NULL;
}

static void map_free(map_t *m)
{
    size_t i;
    for (i = 0; i < m->cap; i++) {
        free(m->t[i].key);
        free(m->t[i].extra);
    }
    free(m->t);
    memset(m, 0, sizeof(*m));
}

/* Split an entry's key back into its fields (n at most). */
static int key_fields(const ment_t *e, char fields[][404], int n)
{
    size_t i = 0;
    int f = 0;

    while (i < e->klen && f < n) {
        size_t j = i + 1;
        char kind = e->key[i];
        while (j < e->klen && e->key[j] != 0x1f) j++;
        if (kind == 'n') {
            fields[f][0] = '\0';
        }
        else {
            size_t l = j - i - 1;
            memcpy(fields[f], e->key + i + 1, l);
            fields[f][l] = '\0';
        }
        f++;
        i = j + 1;
    }
    return f;
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

typedef struct {
    int          present;
    char         hex[65];
    char        *subject, *issuer, *serial, *sig_alg, *key_type;
    apr_int64_t  nb, na, first_seen;
    int          key_bits, weak;
    apr_int64_t  acc, rej, seen, first, last;   /* in the period */
    apr_int64_t  last_acc;                      /* in the scan window */
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
    int rc = sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL);

    sqlite3_free(sql);
    memset(ct, 0, sizeof(*ct));
    if (rc != SQLITE_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        ct->n = sqlite3_column_int64(st, 0) + 1;
    }
    sqlite3_finalize(st);
    if (ct->n < 1 || ct->n > 100000000) ct->n = 1;
    ct->c = calloc((size_t)ct->n, sizeof(cinfo_t));
    if (!ct->c) return SQLITE_NOMEM;
    sql = sqlite3_mprintf("SELECT id, lower(hex(sha256)), subject_dn, "
                          "issuer_dn, serial, not_before, not_after, key_type, "
                          "key_bits, sig_alg, first_seen_us FROM "
                          "db%d.certificates", i);
    rc = sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL);
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

typedef struct {
    map_t       cur, prev;
    apr_int64_t slot;           /* slot of cur; prev is slot - 1 */
    int         started;
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

/* The map for slot, advancing the window (and emitting what leaves it). */
static map_t *window_for(scan_t *s, window_t *w, apr_int64_t slot,
                         emit_fn *fn, ctab_t *cts)
{
    if (!w->started) {
        w->started = 1;
        w->slot = slot;
    }
    if (slot > w->slot) {
        window_emit(s, &w->prev, w->slot - 1, fn, cts);
        if (slot == w->slot + 1) {
            w->prev = w->cur;
        }
        else {
            window_emit(s, &w->cur, w->slot, fn, cts);
        }
        memset(&w->cur, 0, sizeof(w->cur));
        w->slot = slot;
    }
    return slot == w->slot ? &w->cur : &w->prev;   /* late rows: prev */
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

static void emit_shared(scan_t *s, const ment_t *e, apr_int64_t slot,
                        ctab_t *cts)
{
    char f[2][404], when[32], n[24];
    const char *row[5];
    cinfo_t *c;
    int src;
    apr_int64_t id;

    if (e->v[0] <= SHARE_ADDRS) return;
    key_fields(e, f, 2);
    src = atoi(f[0]);
    id = atoll(f[1]);
    c = id > 0 && id < cts[src].n ? &cts[src].c[id] : NULL;
    row[0] = c ? c->hex : "";
    row[1] = c ? c->subject : NULL;
    row[2] = iso_s(slot * 3600, when);
    row[3] = num(e->v[0], n);
    row[4] = e->extra;
    ev_add(&s->shared, row);
}

/* ------------------------------------------------------------------ */
/* The handshake pass                                                   */

typedef struct {
    map_t    suites, suites_sni, reasons, invalid, scope, pids, not_verified;
    window_t bursts, shared;
    apr_int64_t (*per_day)[5];
    apr_int64_t days;
} acc_t;

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
    if (sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, t);
        if (sqlite3_step(st) == SQLITE_ROW) {
            id = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_free(sql);
    return id;
}

static int valid_result(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL
           ? -1 : sqlite3_column_int(st, col);
}

static int scan_handshakes(dataset_t *ds, int i, scan_t *s, acc_t *a,
                           ctab_t *ct, ctab_t *cts)
{
    apr_int64_t lo = s->since < s->until - INACTIVE_DAYS * DAY_US
                     ? s->since : s->until - INACTIVE_DAYS * DAY_US;
    apr_int64_t idlo = first_id(ds, i, "handshakes", lo, 0);
    apr_int64_t idhi = first_id(ds, i, "handshakes", s->until, 1);
    sqlite3_stmt *st;
    char *sql, buf[5][32];
    key_t_ k;
    int rc;

    unsigned char seen90[INACTIVE_DAYS];
    apr_int64_t d90 = s->until - INACTIVE_DAYS * DAY_US;
    int d;

    memset(seen90, 0, sizeof(seen90));
    s->empty_days[i] = INACTIVE_DAYS;
    if (!idlo || !idhi) {
        return SQLITE_OK;       /* nothing in the window */
    }
    idlo = idlo > ID_MARGIN ? idlo - ID_MARGIN : 1;
    idhi += ID_MARGIN;
    sql = sqlite3_mprintf("SELECT id, time_us, client_addr, server_name, sni, "
                          "tls_version, cipher, outcome, verify_result, "
                          "verify_error, alert, cert_id, pid FROM "
                          "db%d.handshakes WHERE id BETWEEN ?1 AND ?2", i);
    rc = sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, idlo);
    sqlite3_bind_int64(st, 2, idhi);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t id = sqlite3_column_int64(st, 0);
        apr_int64_t t = sqlite3_column_int64(st, 1);
        const char *client = (const char *)sqlite3_column_text(st, 2);
        const char *server = (const char *)sqlite3_column_text(st, 3);
        const char *sni = (const char *)sqlite3_column_text(st, 4);
        int ver = sqlite3_column_int(st, 5);
        const char *cipher = (const char *)sqlite3_column_text(st, 6);
        int out = sqlite3_column_int(st, 7);
        int vr = valid_result(st, 8);
        const char *verr = (const char *)sqlite3_column_text(st, 9);
        int alert = valid_result(st, 10);
        apr_int64_t cid = sqlite3_column_type(st, 11) == SQLITE_NULL
                          ? 0 : sqlite3_column_int64(st, 11);
        int pid = sqlite3_column_int(st, 12);
        cinfo_t *c = cid > 0 && cid < ct->n && ct->c[cid].present
                     ? &ct->c[cid] : NULL;
        const char *why;
        int grade, verified;
        ment_t *e;

        if (t < lo || t >= s->until) continue;
        if (out == 1 && c && t > c->last_acc) c->last_acc = t;
        if (t >= d90) seen90[(t - d90) / DAY_US] = 1;
        if (t < s->since) continue;

        s->n_hs++;
        verified = out == 1 && c && vr == 0;
        if (out != 1) s->n_fail++;
        if (out == 2 || out == 3) s->failures++;
        if (vr == 9) s->not_yet_valid++;
        if (vr == 3 || vr == 8 || (vr >= 11 && vr <= 16) || vr == 23
            || (vr >= 33 && vr <= 36) || (vr >= 39 && vr <= 42) || vr == 44) {
            s->revocation++;
        }
        grade = grade_suite(ver, cipher, &why);
        if (out == 1) {
            s->accepted++;
            if (grade == 2) s->bad_suite++;
            if (grade == 1) s->weak_suite++;
            if (c) s->with_cert++;
            if (c && vr != 0) s->unverified++;
            if (verified) s->verified++;
            if (cipher_is_aead(cipher)) s->aead++;
            if (c && (t / 1000000 > c->na || t / 1000000 < c->nb)) {
                s->outside_validity++;
            }
        }
        if (client && server && (out != 1 || c)) {
            s->complete++;
        }
        else {
            const char *row[6];
            row[0] = num(id, buf[0]);
            row[1] = ds->files[i];
            row[2] = iso_us(t, buf[1]);
            row[3] = client;
            row[4] = server;
            row[5] = outcome_name(out);
            ev_add(&s->incomplete, row);
        }
        if (c) {
            c->seen++;
            if (out == 1) {
                c->acc++;
                if (!c->first || t < c->first) c->first = t;
                if (t > c->last) c->last = t;
            }
            else if (out == 2) {
                c->rej++;
            }
        }
        /* per day */
        {
            apr_int64_t d = (t - s->since) / DAY_US;
            if (d >= 0 && d < a->days && out >= 1 && out <= 5) {
                a->per_day[d][out - 1]++;
            }
        }
        kb_reset(&k);
        kb_int(&k, ver);
        kb_str(&k, cipher);
        if ((e = map_get(&a->suites, &k))) {
            e->v[0]++;
            if (out == 1) e->v[1]++;
            if (out == 1 && c && vr != 0) e->v[2]++;
        }
        if (out == 1) {
            kb_str(&k, sni);
            if ((e = map_get(&a->suites_sni, &k))) {
                e->v[0]++;
                if (!e->v[3] || t < e->v[3]) e->v[3] = t;
                if (t > e->v[4]) e->v[4] = t;
            }
        }
        kb_reset(&k);
        kb_str(&k, ds->files[i]);
        kb_str(&k, server);
        if ((e = map_get(&a->scope, &k))) {
            e->v[0]++;
            if (out == 1) e->v[1]++;
        }
        if (!verified) {
            kb_reset(&k);
            kb_int(&k, out);
            kb_str(&k, verr ? verr : "no certificate");
            if ((e = map_get(&a->not_verified, &k))) e->v[0]++;
        }
        if (out != 1) {
            kb_reset(&k);
            kb_int(&k, out);
            kb_str(&k, verr);
            kb_int(&k, alert);
            if ((e = map_get(&a->reasons, &k))) e->v[0]++;
            kb_str(&k, client);
            kb_str(&k, sni);
            if ((e = map_get(&a->invalid, &k))) e->v[0]++;
        }
        if (out == 2 || out == 3) {
            map_t *m = window_for(s, &a->bursts, t / 1800000000, emit_burst,
                                  cts);
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
            map_t *m = window_for(s, &a->shared, t / 3600000000, emit_shared,
                                  cts);
            kb_reset(&k);
            kb_int(&k, i);
            kb_int(&k, cid);
            if ((e = map_get(m, &k)) && e->v[0] <= SHARE_ADDRS) {
                /* Distinct addresses, kept as text up to one past the bar. */
                size_t l = strlen(client);
                char *list = e->extra;
                int known = 0;
                if (list) {
                    const char *p = list;
                    while ((p = strstr(p, client))) {
                        if ((p == list || p[-1] == ',')
                            && (p[l] == ',' || p[l] == '\0')) {
                            known = 1;
                            break;
                        }
                        p++;
                    }
                }
                if (!known) {
                    size_t old = list ? strlen(list) : 0;
                    char *nl = realloc(list, old + l + 2);
                    if (nl) {
                        if (old) nl[old++] = ',';
                        memcpy(nl + old, client, l + 1);
                        e->extra = nl;
                        e->v[0]++;
                    }
                }
            }
        }
        /* Time going backwards between rows of one child. */
        kb_reset(&k);
        kb_int(&k, i);
        kb_int(&k, pid);
        if ((e = map_get(&a->pids, &k))) {
            if (e->v[1] && t < e->v[0] - 1000000) {
                const char *row[5];
                s->backwards++;
                row[0] = ds->files[i];
                row[1] = num(pid, buf[0]);
                row[2] = num(id, buf[1]);
                row[3] = iso_us(t, buf[2]);
                row[4] = iso_us(e->v[0], buf[3]);
                ev_add(&s->backwards_ev, row);
            }
            e->v[0] = t;
            e->v[1] = 1;
        }
    }
    sqlite3_finalize(st);
    for (d = 0, s->empty_days[i] = 0; d < INACTIVE_DAYS; d++) {
        s->empty_days[i] += !seen90[d];
    }
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Requests: ids found by bisection on time (no time index on requests),
 * widened by the margin. */
static apr_int64_t bisect_requests(dataset_t *ds, int i, apr_int64_t t)
{
    sqlite3_stmt *mx, *at;
    apr_int64_t lo = 1, hi = 0, mid;
    char *sql = sqlite3_mprintf("SELECT max(id) FROM db%d.requests", i);

    if (sqlite3_prepare_v2(ds->db, sql, -1, &mx, NULL) == SQLITE_OK) {
        if (sqlite3_step(mx) == SQLITE_ROW) hi = sqlite3_column_int64(mx, 0);
        sqlite3_finalize(mx);
    }
    sqlite3_free(sql);
    sql = sqlite3_mprintf("SELECT time_us FROM db%d.requests WHERE id >= ?1 "
                          "ORDER BY id LIMIT 1", i);
    if (sqlite3_prepare_v2(ds->db, sql, -1, &at, NULL) != SQLITE_OK) {
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

static char *mask_digits(const char *p);

static int scan_requests(dataset_t *ds, int i, scan_t *s, ctab_t *ct)
{
    apr_int64_t idlo = bisect_requests(ds, i, s->since);
    apr_int64_t idhi = bisect_requests(ds, i, s->until);
    sqlite3_stmt *st;
    char *sql, buf[4][32];
    int rc;

    idlo = idlo > ID_MARGIN ? idlo - ID_MARGIN : 1;
    idhi += ID_MARGIN;
    sql = sqlite3_mprintf("SELECT r.id, r.time_us, r.method, r.path, r.status, "
                          "h.cert_id, h.verify_result, h.server_name, "
                          "h.client_addr FROM db%d.requests r LEFT JOIN "
                          "db%d.handshakes h ON h.id = r.handshake_id WHERE "
                          "r.id BETWEEN ?1 AND ?2", i, i);
    rc = sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(st, 1, idlo);
    sqlite3_bind_int64(st, 2, idhi);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t t = sqlite3_column_int64(st, 1);
        const char *path = (const char *)sqlite3_column_text(st, 3);
        int status = sqlite3_column_int(st, 4);
        apr_int64_t cid = sqlite3_column_type(st, 5) == SQLITE_NULL
                          ? 0 : sqlite3_column_int64(st, 5);
        int vr = valid_result(st, 6);
        cinfo_t *c = cid > 0 && cid < ct->n && ct->c[cid].present
                     ? &ct->c[cid] : NULL;

        if (t < s->since || t >= s->until) continue;
        s->n_rq++;
        if (status < 400) {
            s->answered++;
            if (!c || vr != 0) {
                const char *row[9];
                s->unauthenticated++;
                row[0] = iso_us(t, buf[0]);
                row[1] = ds->files[i];
                row[2] = (const char *)sqlite3_column_text(st, 7);
                row[3] = (const char *)sqlite3_column_text(st, 8);
                row[4] = (const char *)sqlite3_column_text(st, 2);
                row[5] = path;
                row[6] = num(status, buf[1]);
                row[7] = c ? c->subject : "";
                row[8] = vr < 0 ? NULL : num(vr, buf[2]);
                ev_add(&s->unauth_ev, row);
            }
        }
        if (path && has_pan(path)) {
            const char *row[4];
            char *masked = mask_digits(path);
            s->pan++;
            row[0] = ds->files[i];
            row[1] = num(sqlite3_column_int64(st, 0), buf[0]);
            row[2] = iso_us(t, buf[1]);
            row[3] = masked;
            ev_add(&s->pan_ev, row);
            free(masked);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
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

static void maps_to_evidence(scan_t *s, acc_t *a)
{
    static const char *const vnames[] = { "SSLv3", "TLSv1", "TLSv1.1",
                                          "TLSv1.2", "TLSv1.3" };
    char f[6][404], b[6][32];
    size_t i;

    for (i = 0; i < a->suites.cap; i++) {
        ment_t *e = &a->suites.t[i];
        const char *why, *row[6];
        int ver, grade;
        if (!e->key) continue;
        key_fields(e, f, 2);
        ver = atoi(f[0]);
        grade = grade_suite(ver, f[1], &why);
        row[0] = ver >= 0x300 && ver <= 0x304 ? vnames[ver - 0x300] : NULL;
        row[1] = f[1];
        row[2] = num(e->v[0], b[0]);
        row[3] = num(e->v[1], b[1]);
        ev_add(&s->suites, row);        /* version, cipher, total, accepted */
        if (e->v[1]) {
            const char *r2[6];
            r2[0] = row[0];
            r2[1] = f[1];
            r2[2] = grade == 0 ? "approved" : grade == 1 ? "deprecated"
                                                         : "prohibited";
            r2[3] = why;
            r2[4] = b[1];
            r2[5] = num(e->v[2], b[2]);
            /* reuse non_aead for non-AEAD accepted, crypto table below */
            if (!cipher_is_aead(f[1])) {
                const char *r3[3] = { row[0], f[1], b[1] };
                ev_add(&s->non_aead, r3);
            }
            ev_add(&s->crypto, r2);    /* crypto evidence (see report.c) */
        }
    }
    ev_sort(&s->suites, 2, 1, 1);
    ev_sort(&s->crypto, 4, 1, 1);
    for (i = 0; i < a->suites_sni.cap; i++) {
        ment_t *e = &a->suites_sni.t[i];
        const char *row[6];
        int ver;
        if (!e->key) continue;
        key_fields(e, f, 3);
        ver = atoi(f[0]);
        row[0] = ver >= 0x300 && ver <= 0x304 ? vnames[ver - 0x300] : NULL;
        row[1] = f[1];
        row[2] = f[2];
        row[3] = num(e->v[0], b[0]);
        row[4] = iso_us(e->v[3], b[1]);
        row[5] = iso_us(e->v[4], b[2]);
        ev_add(&s->suites_sni, row);
    }
    ev_sort(&s->suites_sni, 3, 1, 1);
    for (i = 0; i < a->reasons.cap; i++) {
        ment_t *e = &a->reasons.t[i];
        const char *row[4];
        if (!e->key) continue;
        key_fields(e, f, 3);
        row[0] = outcome_name(atoi(f[0]));
        row[1] = f[1];
        row[2] = atoi(f[2]) >= 0 ? (mtls_alert_name(atoi(f[2]))
                                    ? mtls_alert_name(atoi(f[2])) : f[2]) : "";
        row[3] = num(e->v[0], b[0]);
        ev_add(&s->reasons, row);
    }
    ev_sort(&s->reasons, 3, 1, 1);
    for (i = 0; i < a->invalid.cap; i++) {
        ment_t *e = &a->invalid.t[i];
        const char *row[6];
        if (!e->key) continue;
        key_fields(e, f, 5);
        row[0] = outcome_name(atoi(f[0]));
        row[1] = f[1];
        row[2] = atoi(f[2]) >= 0 ? f[2] : "";
        row[3] = f[3];
        row[4] = f[4];
        row[5] = num(e->v[0], b[0]);
        ev_add(&s->invalid, row);
    }
    ev_sort(&s->invalid, 5, 1, 1);
    for (i = 0; i < a->scope.cap; i++) {
        ment_t *e = &a->scope.t[i];
        const char *row[4];
        if (!e->key) continue;
        key_fields(e, f, 2);
        row[0] = f[0];
        row[1] = f[1];
        row[2] = num(e->v[0], b[0]);
        row[3] = num(e->v[1], b[1]);
        ev_add(&s->scope, row);
    }
    ev_sort(&s->scope, 1, 0, 0);
    ev_sort(&s->scope, 0, 0, 0);
    for (i = 0; i < a->not_verified.cap; i++) {
        ment_t *e = &a->not_verified.t[i];
        const char *row[3];
        if (!e->key) continue;
        key_fields(e, f, 2);
        row[0] = outcome_name(atoi(f[0]));
        row[1] = f[1];
        row[2] = num(e->v[0], b[0]);
        ev_add(&s->not_verified, row);
    }
    ev_sort(&s->not_verified, 2, 1, 1);
    for (i = 0; i < (size_t)a->days; i++) {
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
        head->acc += c->acc;
        head->rej += c->rej;
        head->seen += c->seen;
        if (c->first && (!head->first || c->first < head->first)) {
            head->first = c->first;
        }
        if (c->last > head->last) head->last = c->last;
        if (c->last_acc > head->last_acc) head->last_acc = c->last_acc;
        if (c->first_seen < head->first_seen) {
            head->first_seen = c->first_seen;
        }
        c->dup = 1;
    }
    free(all);
    return SQLITE_OK;
}

static int cert_tables(dataset_t *ds, int i, scan_t *s, ctab_t *ct)
{
    apr_int64_t id, now_s = s->now / 1000000;
    char b[8][32];

    for (id = 1; id < ct->n; id++) {
        cinfo_t *c = &ct->c[id];
        if (!c->present || c->dup) continue;
        if (c->seen) {
            s->expiry_n[c->na < now_s ? 0 : c->na < now_s + 30 * 86400 ? 1
                        : c->na < now_s + 90 * 86400 ? 2 : 3]++;
        }
        if (c->acc) {
            const char *finding = c->weak ? "weak"
                : c->last / 1000000 > c->na ? "accepted expired"
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
            row[8] = num((c->na - now_s) >= 0 ? (c->na - now_s) / 86400
                         : -((now_s - c->na + 86399) / 86400), b[2]);
            row[9] = iso_us(c->first, b[3]);
            row[10] = iso_us(c->last, b[4]);
            row[11] = num(c->acc, b[5]);
            row[12] = finding;
            ev_add(&s->inventory, row);
        }
        /* Valid at the end of the period, and no accepted use in its last
         * 90 days, but one before. */
        if (c->na > s->until / 1000000 && c->first_seen
            < s->until - INACTIVE_DAYS * DAY_US
            && c->last_acc < s->until - INACTIVE_DAYS * DAY_US) {
            apr_int64_t last = c->last_acc;
            if (!last) {
                sqlite3_stmt *st;
                char *sql = sqlite3_mprintf("SELECT time_us FROM "
                    "db%d.handshakes WHERE cert_id = ?1 AND outcome = 1 "
                    "ORDER BY id DESC LIMIT 1", i);
                if (sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL)
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
    static const char changes[] =
        "SELECT c.subject_dn, c.cert_sha256, c.issuer_dn, "
        "strftime('%Y-%m-%dT%H:%M:%SZ', c.first_seen_us / 1000000, "
        "'unixepoch') AS first_seen FROM certs c WHERE c.first_seen_us >= ?1 "
        "AND c.first_seen_us < ?2 AND EXISTS (SELECT 1 FROM certs o WHERE "
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

/* The request pass of database i runs on the second core, on a connection
 * of its own; it only reads the certificate table's text fields, which
 * nobody writes while it runs. */
typedef struct {
    dataset_t *ds;
    int        i;
    scan_t    *s;
    ctab_t    *ct;
    int        rc;
} rq_job_t;

static void *request_thread(void *arg)
{
    rq_job_t *j = arg;
    dataset_t own = *j->ds;
    char *sql;

    j->rc = sqlite3_open_v2(":memory:", &own.db, SQLITE_OPEN_READWRITE
                            | SQLITE_OPEN_NOMUTEX, NULL);
    if (j->rc == SQLITE_OK) {
        sql = sqlite3_mprintf("ATTACH 'file:%q?mode=ro' AS db%d",
                              j->ds->files[j->i], j->i);
        j->rc = sqlite3_exec(own.db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
    }
    if (j->rc == SQLITE_OK) {
        sqlite3_busy_timeout(own.db, 5000);
        j->rc = scan_requests(&own, j->i, j->s, j->ct);
    }
    sqlite3_close(own.db);
    return NULL;
}

int scan_period(dataset_t *ds, scan_t *s)
{
    static const char *const c_day[] = { "day", "accepted", "rejected",
        "no_certificate", "failed", "aborted", NULL };
    static const char *const c_suite[] = { "tls_version", "cipher",
        "handshakes", "accepted", NULL };
    static const char *const c_crypto[] = { "tls_version", "cipher", "grade",
        "why", "accepted", "unverified", NULL };
    static const char *const c_sni[] = { "tls_version", "cipher", "sni",
        "handshakes", "first_seen", "last_seen", NULL };
    static const char *const c_reason[] = { "outcome", "reason", "alert",
        "attempts", NULL };
    static const char *const c_invalid[] = { "outcome", "verify_error",
        "alert", "client_addr", "sni", "attempts", NULL };
    static const char *const c_scope[] = { "source", "server_name",
        "handshakes", "accepted", NULL };
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
    ctab_t *cts = calloc((size_t)ds->n, sizeof(ctab_t));
    acc_t a;
    int i, rc = SQLITE_OK;

    memset(&a, 0, sizeof(a));
    ev_init(&s->per_day, c_day);
    ev_init(&s->suites, c_suite);
    ev_init(&s->crypto, c_crypto);
    ev_init(&s->suites_sni, c_sni);
    ev_init(&s->reasons, c_reason);
    ev_init(&s->invalid, c_invalid);
    ev_init(&s->scope, c_scope);
    ev_init(&s->incomplete, c_incomplete);
    ev_init(&s->backwards_ev, c_back);
    ev_init(&s->bursts, c_burst);
    ev_init(&s->shared, c_shared);
    ev_init(&s->inventory, c_inv);
    ev_init(&s->expiry, c_exp);
    ev_init(&s->inactive_ev, c_inact);
    ev_init(&s->changes, c_changes);
    ev_init(&s->unauth_ev, c_unauth);
    ev_init(&s->pan_ev, c_pan);
    ev_init(&s->non_aead, c_aead);
    ev_init(&s->not_verified, c_nv);
    s->empty_days = calloc((size_t)ds->n, sizeof(apr_int64_t));
    a.invalid.limit = DETAIL_LIMIT;
    a.days = (s->until - s->since + DAY_US - 1) / DAY_US;
    if (a.days > 20000) a.days = 20000;
    a.per_day = calloc((size_t)a.days + 1, sizeof(*a.per_day));
    if (!cts || !a.per_day || !s->empty_days) {
        fail("out of memory");
        free(cts);
        free(a.per_day);
        return EXIT_DB;
    }
    for (i = 0; i < ds->n && rc == SQLITE_OK; i++) {
        rq_job_t job = { ds, i, s, &cts[i], SQLITE_OK };
        pthread_t th;
        int threaded;

        if ((rc = load_certs(ds, i, &cts[i])) != SQLITE_OK) {
            break;
        }
        threaded = pthread_create(&th, NULL, request_thread, &job) == 0;
        rc = scan_handshakes(ds, i, s, &a, &cts[i], cts);
        if (threaded) {
            pthread_join(th, NULL);
        }
        else {
            request_thread(&job);
        }
        if (rc == SQLITE_OK) rc = job.rc;
    }
    if (rc == SQLITE_OK) rc = merge_certs(cts, ds->n);
    for (i = 0; i < ds->n && rc == SQLITE_OK; i++) {
        rc = cert_tables(ds, i, s, &cts[i]);
    }
    if (rc == SQLITE_OK) {
        window_emit(s, &a.bursts.prev, a.bursts.slot - 1, emit_burst, cts);
        window_emit(s, &a.bursts.cur, a.bursts.slot, emit_burst, cts);
        window_emit(s, &a.shared.prev, a.shared.slot - 1, emit_shared, cts);
        window_emit(s, &a.shared.cur, a.shared.slot, emit_shared, cts);
        ev_sort(&s->bursts, 2, 1, 1);
        ev_sort(&s->shared, 3, 1, 1);
        ev_sort(&s->inventory, 7, 0, 0);
        ev_sort(&s->inventory, 12, 0, 1);
        bucket_expiry(s);
        maps_to_evidence(s, &a);
        rc = small_queries(ds, s);
    }
    if (rc != SQLITE_OK) {
        fail("reading the databases: %s", sqlite3_errmsg(ds->db));
    }
    map_free(&a.suites);
    map_free(&a.suites_sni);
    map_free(&a.reasons);
    map_free(&a.invalid);
    map_free(&a.scope);
    map_free(&a.pids);
    map_free(&a.not_verified);
    map_free(&a.bursts.cur);
    map_free(&a.bursts.prev);
    map_free(&a.shared.cur);
    map_free(&a.shared.prev);
    for (i = 0; i < ds->n; i++) {
        free_certs(&cts[i]);
    }
    free(cts);
    free(a.per_day);
    return rc == SQLITE_OK ? EXIT_OK : EXIT_DB;
}

void scan_free(scan_t *s)
{
    evidence_t *all[] = {
        &s->per_day, &s->suites, &s->suites_sni, &s->reasons, &s->invalid,
        &s->scope, &s->crypto, &s->incomplete, &s->backwards_ev, &s->bursts,
        &s->shared, &s->inventory, &s->expiry, &s->inactive_ev, &s->changes,
        &s->unauth_ev, &s->pan_ev, &s->non_aead, &s->not_verified
    };
    size_t i;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        evidence_free(all[i]);
    }
    free(s->empty_days);
    s->empty_days = NULL;
}
