/*
 * mtls_json.c -- audit rows as JSON lines (see mtls_json.h).
 */
#include <stdio.h>
#include <string.h>

#include "mtls_json.h"

typedef struct cols cols_t;
static void cols_alloc_find(cols_t **c, sqlite3_stmt *stmt);
static void render(sqlite3_str *out, sqlite3_stmt *stmt, const cols_t *c,
                   int format, int v, const char *source);

const char *const mtls_json_view[MTLS_JSON_VIEWS] = {
    "v_handshakes", "v_requests", "v_events"
};
const char *const mtls_json_type[MTLS_JSON_VIEWS] = {
    "handshake", "request", "event"
};

void mtls_json_str(sqlite3_str *out, const char *s, int len)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + (len < 0 ? (int)strlen(s) : len);

    sqlite3_str_appendchar(out, 1, '"');
    for (; p < end; p++) {
        switch (*p) {
        case '"':  sqlite3_str_appendall(out, "\\\""); break;
        case '\\': sqlite3_str_appendall(out, "\\\\"); break;
        case '\n': sqlite3_str_appendall(out, "\\n"); break;
        case '\r': sqlite3_str_appendall(out, "\\r"); break;
        case '\t': sqlite3_str_appendall(out, "\\t"); break;
        case '<':  sqlite3_str_appendall(out, "\\u003c"); break;
        case '>':  sqlite3_str_appendall(out, "\\u003e"); break;
        case '&':  sqlite3_str_appendall(out, "\\u0026"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                sqlite3_str_appendf(out, "\\u%04x", *p);
            }
            else {
                sqlite3_str_appendchar(out, 1, (char)*p);
            }
        }
    }
    sqlite3_str_appendchar(out, 1, '"');
}

void mtls_json_row(sqlite3_str *out, sqlite3_stmt *stmt, const char *type,
                   const char *source)
{
    int i, n = sqlite3_column_count(stmt);

    sqlite3_str_appendall(out, "{\"type\":");
    mtls_json_str(out, type, -1);
    sqlite3_str_appendall(out, ",\"source\":");
    mtls_json_str(out, source ? source : "", -1);
    for (i = 0; i < n; i++) {
        sqlite3_str_appendchar(out, 1, ',');
        mtls_json_str(out, sqlite3_column_name(stmt, i), -1);
        sqlite3_str_appendchar(out, 1, ':');
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER:
            sqlite3_str_appendf(out, "%lld", sqlite3_column_int64(stmt, i));
            break;
        case SQLITE_FLOAT:
            sqlite3_str_appendf(out, "%!.17g", sqlite3_column_double(stmt, i));
            break;
        case SQLITE_NULL:
            sqlite3_str_appendall(out, "null");
            break;
        default:        /* text; a blob (none in the views) as its bytes */
            mtls_json_str(out, (const char *)sqlite3_column_text(stmt, i),
                          sqlite3_column_bytes(stmt, i));
        }
    }
    sqlite3_str_appendall(out, "}\n");
}

int mtls_json_rows(sqlite3 *db, int format, int v, int by_time,
                   apr_int64_t lo, apr_int64_t hi, const char *source,
                   void (*fn)(void *baton, const char *line, int len),
                   void *baton)
{
    static const char *const table[MTLS_JSON_VIEWS] = {
        "handshakes", "requests", "events"
    };
    sqlite3_stmt *stmt;
    sqlite3_str *line;
    cols_t *cols;
    char sql[160];
    int rc;

    if (by_time) {
        snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE id IN (SELECT id "
                 "FROM %s WHERE time_us >= ?1 AND time_us < ?2) ORDER BY id",
                 mtls_json_view[v], table[v]);
    }
    else {
        snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE id BETWEEN ?1 "
                 "AND ?2 ORDER BY id", mtls_json_view[v]);
    }
    if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(stmt, 1, lo);
    sqlite3_bind_int64(stmt, 2, hi);
    cols_alloc_find(&cols, stmt);
    if (!cols) {
        sqlite3_finalize(stmt);
        return SQLITE_NOMEM;
    }
    line = sqlite3_str_new(db);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        sqlite3_str_reset(line);
        render(line, stmt, cols, format, v, source);
        if ((rc = sqlite3_str_errcode(line)) != SQLITE_OK) {
            break;
        }
        fn(baton, sqlite3_str_value(line), sqlite3_str_length(line));
    }
    sqlite3_free(sqlite3_str_finish(line));
    sqlite3_free(cols);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ------------------------------------------------------------------ */
/* ECS and OCSF: the same row, rendered as a standard's document.
 *
 * DESIGN.  A document is a list of (dotted path, value) pairs, written
 * in an order where the paths that share a prefix are adjacent; the
 * writer (jw_*) opens and closes the nested objects as the paths change,
 * and only when a value is written, so a NULL column leaves no key and an
 * object whose every member is NULL leaves no object.  The columns are
 * found by name once per statement (cols_t), so a line costs its
 * appends and nothing else: no SQL, no allocation but the line's. */

#define JW_DEPTH 6

typedef struct {
    sqlite3_str *out;
    int          depth;                 /* objects open below the top */
    char         key[JW_DEPTH][32];     /* their names (copies: a path
                                           may be in a reused buffer) */
    int          klen[JW_DEPTH];
    int          n[JW_DEPTH + 1];       /* members written, per level */
} jw_t;

static void jw_begin(jw_t *w, sqlite3_str *out)
{
    memset(w, 0, sizeof(*w));
    w->out = out;
    sqlite3_str_appendchar(out, 1, '{');
}

/* Write the key of path ("a.b.c": object a, object b, key c), closing
 * and opening objects as it differs from the last path. */
static void jw_key(jw_t *w, const char *path)
{
    const char *c[JW_DEPTH], *p = path, *dot;
    int l[JW_DEPTH], k = 0, same = 0;

    while (k < JW_DEPTH && (dot = strchr(p, '.')) != NULL
           && dot - p < (int)sizeof(w->key[0])) {
        c[k] = p;
        l[k++] = (int)(dot - p);
        p = dot + 1;
    }
    while (same < k && same < w->depth && l[same] == w->klen[same]
           && !memcmp(c[same], w->key[same], (size_t)l[same])) {
        same++;
    }
    for (; w->depth > same; w->depth--) {
        sqlite3_str_appendchar(w->out, 1, '}');
    }
    for (; w->depth < k; w->depth++) {
        if (w->n[w->depth]++) sqlite3_str_appendchar(w->out, 1, ',');
        sqlite3_str_appendf(w->out, "\"%.*s\":{", l[w->depth], c[w->depth]);
        memcpy(w->key[w->depth], c[w->depth], (size_t)l[w->depth]);
        w->klen[w->depth] = l[w->depth];
        w->n[w->depth + 1] = 0;
    }
    if (w->n[w->depth]++) sqlite3_str_appendchar(w->out, 1, ',');
    sqlite3_str_appendf(w->out, "\"%s\":", p);
}

static void jw_end(jw_t *w)
{
    for (; w->depth > 0; w->depth--) {
        sqlite3_str_appendchar(w->out, 1, '}');
    }
    sqlite3_str_appendall(w->out, "}\n");
}

/* A literal JSON value (a constant of the mapping). */
static void jw_raw(jw_t *w, const char *path, const char *json)
{
    jw_key(w, path);
    sqlite3_str_appendall(w->out, json);
}

static void jw_text(jw_t *w, const char *path, const char *s)
{
    jw_key(w, path);
    mtls_json_str(w->out, s, -1);
}

static void jw_int(jw_t *w, const char *path, sqlite3_int64 v)
{
    jw_key(w, path);
    sqlite3_str_appendf(w->out, "%lld", v);
}

/* The columns the renderings read, found once per statement. */
enum {
    C_ID, C_TIME, C_SERVER_NAME, C_SNI, C_CLIENT_ADDR, C_CLIENT_PORT,
    C_LOCAL_PORT, C_TLS_VERSION, C_CIPHER, C_RESUMED, C_OUTCOME, C_KIND,
    C_VERIFY_MODE, C_VERIFY_RESULT, C_VERIFY_ERROR, C_VERIFY_DEPTH, C_ALERT,
    C_ALERT_NAME, C_ALERT_RECEIVED, C_CERT_SHA256, C_SUBJECT_DN,
    C_ISSUER_DN, C_SERIAL, C_NOT_BEFORE, C_NOT_AFTER, C_SAN, C_KEY_TYPE,
    C_KEY_BITS, C_SIG_ALG, C_CHAIN_LENGTH, C_CHAIN_SHA256, C_HANDSHAKE_US,
    C_VERIFY_US, C_REQUESTS, C_PID, C_REV_METHOD, C_REV_STATUS,
    C_HANDSHAKE_ID, C_METHOD, C_PATH, C_STATUS, C_BYTES_SENT,
    C_DURATION_US, C_SERVER_VERSION, C_MODULE_VERSION, C_OPENSSL_VERSION,
    C_LOST, C_GAP_START, C_GAP_END, C_DETAIL, C_COUNT
};
static const char *const col_name[C_COUNT] = {
    "id", "time_utc", "server_name", "sni", "client_addr", "client_port",
    "local_port", "tls_version", "cipher", "resumed", "outcome", "kind",
    "verify_mode", "verify_result", "verify_error", "verify_depth", "alert",
    "alert_name", "alert_received", "cert_sha256", "subject_dn",
    "issuer_dn", "serial", "not_before", "not_after", "san", "key_type",
    "key_bits", "sig_alg", "chain_length", "chain_sha256", "handshake_us",
    "verify_us", "requests", "pid", "revocation_method",
    "revocation_status", "handshake_id", "method", "path", "status",
    "bytes_sent", "duration_us", "server_version", "module_version",
    "openssl_version", "lost", "gap_start", "gap_end", "detail"
};

struct cols {
    int col[C_COUNT];                   /* index in the statement, or -1 */
};

static void cols_find(cols_t *c, sqlite3_stmt *stmt)
{
    int i, k, n = sqlite3_column_count(stmt);

    for (k = 0; k < C_COUNT; k++) {
        c->col[k] = -1;
    }
    for (i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        for (k = 0; name && k < C_COUNT; k++) {
            if (c->col[k] < 0 && !strcmp(name, col_name[k])) {
                c->col[k] = i;
                break;
            }
        }
    }
}

/* The columns of stmt, in memory from sqlite3_malloc (*c NULL when there
 * is none). */
static void cols_alloc_find(cols_t **c, sqlite3_stmt *stmt)
{
    if ((*c = sqlite3_malloc(sizeof(**c))) != NULL) cols_find(*c, stmt);
}

typedef struct {
    jw_t          w;
    sqlite3_stmt *stmt;
    const cols_t *c;
    const char   *source;
} doc_t;

/* Column k's text, or NULL when the column is absent or NULL. */
static const char *txt(doc_t *d, int k)
{
    int i = d->c->col[k];
    if (i < 0 || sqlite3_column_type(d->stmt, i) == SQLITE_NULL) return NULL;
    return (const char *)sqlite3_column_text(d->stmt, i);
}

static int has(doc_t *d, int k)
{
    int i = d->c->col[k];
    return i >= 0 && sqlite3_column_type(d->stmt, i) != SQLITE_NULL;
}

static sqlite3_int64 num(doc_t *d, int k)
{
    return sqlite3_column_int64(d->stmt, d->c->col[k]);
}

/* Column k at path: text as a string, a number as a number. */
static void col_text(doc_t *d, const char *path, int k)
{
    const char *s = txt(d, k);
    if (s) jw_text(&d->w, path, s);
}

static void col_int(doc_t *d, const char *path, int k)
{
    if (has(d, k)) jw_int(&d->w, path, num(d, k));
}

/* Column k times mul divided by div (microseconds as nanoseconds or
 * milliseconds). */
static void col_scaled(doc_t *d, const char *path, int k, int mul, int div)
{
    if (has(d, k)) jw_int(&d->w, path, num(d, k) * mul / div);
}

static void col_bool(doc_t *d, const char *path, int k)
{
    if (has(d, k)) jw_raw(&d->w, path, num(d, k) ? "true" : "false");
}

/* "2026-11-28T10:00:00.123Z" (or without the fraction) as milliseconds
 * since the epoch; 0 and *ok = 0 when it is not one. */
static sqlite3_int64 iso_ms(const char *s, int *ok)
{
    int y, mo, da, h, mi, se, n = 0, ms = 0, digits = 0;
    sqlite3_int64 days;
    unsigned yy, era, yoe, doy, doe;

    *ok = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &da, &h, &mi,
                     &se, &n) != 6) {
        return 0;
    }
    s += n;
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, digits++) {
            if (digits < 3) ms = ms * 10 + (*s - '0');
        }
        for (; digits < 3; digits++) ms *= 10;
    }
    if (*s != 'Z' || mo < 1 || mo > 12) return 0;
    /* days from 1970-01-01 of a proleptic Gregorian date */
    yy = (unsigned)(y - (mo <= 2));
    era = yy / 400;
    yoe = yy - era * 400;
    doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + da - 1);
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = (sqlite3_int64)era * 146097 + doe - 719468;
    *ok = 1;
    return ((days * 24 + h) * 60 + mi) * 60000LL + se * 1000LL + ms;
}

static void col_ms(doc_t *d, const char *path, int k)
{
    int ok;
    sqlite3_int64 ms = iso_ms(txt(d, k), &ok);
    if (ok) jw_int(&d->w, path, ms);
}

/* Column k's list (items separated by sep) as an array of strings; with
 * san 1, "TYPE:value" items as OCSF san objects; with san 2, as their
 * values (ECS's alternative_names: names, not types). */
static void col_list(doc_t *d, const char *path, int k, const char *sep,
                     int san)
{
    const char *s = txt(d, k), *e;
    size_t seplen = strlen(sep);
    int first = 1;

    if (!s) return;
    jw_key(&d->w, path);
    sqlite3_str_appendchar(d->w.out, 1, '[');
    for (; *s; s = *e ? e + seplen : e) {
        const char *colon;
        e = strstr(s, sep);
        if (!e) e = s + strlen(s);
        if (e == s) continue;
        if (!first) sqlite3_str_appendchar(d->w.out, 1, ',');
        first = 0;
        colon = memchr(s, ':', (size_t)(e - s));
        if (!san || (san == 2 && !colon)) {
            mtls_json_str(d->w.out, s, (int)(e - s));
        }
        else if (san == 2) {
            mtls_json_str(d->w.out, colon + 1, (int)(e - colon - 1));
        }
        else if (colon) {
            sqlite3_str_appendall(d->w.out, "{\"name\":");
            mtls_json_str(d->w.out, colon + 1, (int)(e - colon - 1));
            sqlite3_str_appendall(d->w.out, ",\"type\":");
            mtls_json_str(d->w.out, s, (int)(colon - s));
            sqlite3_str_appendchar(d->w.out, 1, '}');
        }
        else {
            sqlite3_str_appendall(d->w.out, "{\"name\":");
            mtls_json_str(d->w.out, s, (int)(e - s));
            sqlite3_str_appendall(d->w.out, ",\"type\":\"unknown\"}");
        }
    }
    sqlite3_str_appendchar(d->w.out, 1, ']');
}

static int is(doc_t *d, int k, const char *value)
{
    const char *s = txt(d, k);
    return s && !strcmp(s, value);
}

/* "TLSv1.3" as ECS's tls.version ("1.3") and version_protocol ("tls"). */
static void tls_version(doc_t *d, const char *vpath, const char *ppath)
{
    const char *v = txt(d, C_TLS_VERSION);

    if (!v) return;
    if (!strncmp(v, "TLSv", 4)) {
        jw_text(&d->w, vpath, strcmp(v + 4, "1") ? v + 4 : "1.0");
        if (ppath) jw_text(&d->w, ppath, "tls");
    }
    else if (!strncmp(v, "SSLv", 4)) {
        jw_text(&d->w, vpath, strcmp(v + 4, "3") ? v + 4 : "3.0");
        if (ppath) jw_text(&d->w, ppath, "ssl");
    }
    else {
        jw_text(&d->w, vpath, v);
    }
}

/* Our own columns, under prefix (ECS: "mtls_audit.", OCSF:
 * "unmapped.mtls_audit."): the native name, the native value. */
static void own(doc_t *d, const char *prefix, const int *ks, int n)
{
    char path[96];
    int i;

    for (i = 0; i < n; i++) {
        int k = ks[i], t;
        if (!has(d, k)) continue;
        snprintf(path, sizeof(path), "%s%s", prefix, col_name[k]);
        t = sqlite3_column_type(d->stmt, d->c->col[k]);
        if (k == C_CHAIN_SHA256) {
            col_list(d, path, k, " ", 0);
        }
        else if (t == SQLITE_INTEGER) {
            jw_int(&d->w, path, num(d, k));
        }
        else {
            col_text(d, path, k);
        }
    }
}

static void own_source(doc_t *d, const char *path, const char *type)
{
    char p[96];
    snprintf(p, sizeof(p), "%stype", path);
    jw_text(&d->w, p, type);
    if (d->source) {
        snprintf(p, sizeof(p), "%ssource", path);
        jw_text(&d->w, p, d->source);
    }
}

static const int own_handshake[] = {
    C_ID, C_OUTCOME, C_KIND, C_VERIFY_MODE, C_VERIFY_RESULT, C_VERIFY_ERROR,
    C_VERIFY_DEPTH, C_ALERT, C_ALERT_NAME, C_ALERT_RECEIVED, C_CHAIN_LENGTH,
    C_CHAIN_SHA256, C_VERIFY_US, C_REQUESTS, C_REV_METHOD, C_REV_STATUS
};
/* and, in OCSF, those ECS has a field for and OCSF none (the TLS ones
 * go to unmapped.tls when there is a version, which that object needs) */
static const int own_ocsf_handshake[] = {
    C_RESUMED, C_KEY_TYPE, C_KEY_BITS, C_SIG_ALG, C_PID
};
static const int own_ocsf_no_tls[] = { C_SNI, C_CIPHER };
static const int own_request[] = { C_ID, C_HANDSHAKE_ID, C_DURATION_US };
static const int own_event[] = {
    C_ID, C_KIND, C_PID, C_SERVER_VERSION, C_MODULE_VERSION,
    C_OPENSSL_VERSION, C_LOST, C_GAP_START, C_GAP_END, C_DETAIL
};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ECS event.category / event.type of an event row's kind. */
static void ecs_event_kind(doc_t *d)
{
    static const struct { const char *kind, *category, *type; } map[] = {
        { "start",  "[\"process\"]", "[\"start\"]" },
        { "stop",   "[\"process\"]", "[\"end\"]" },
        { "reload", "[\"process\"]", "[\"change\"]" },
        { "gap",    "[\"process\"]", "[\"error\"]" },
        { "reopen", "[\"file\"]",    "[\"change\"]" },
        { "access", "[\"file\"]",    "[\"access\"]" },
        { "archive","[\"file\"]",    "[\"deletion\"]" },
    };
    const char *k = txt(d, C_KIND);
    int i;

    /* A vhost's TLS policy (mtls_policy.h): recorded for the first time,
     * changed, or the same as before (the short form). */
    if (k && !strcmp(k, "policy")) {
        const char *det = txt(d, C_DETAIL);
        jw_raw(&d->w, "event.category", "[\"configuration\"]");
        jw_raw(&d->w, "event.type",
               det && strstr(det, ",\"unchanged_since\":") ? "[\"info\"]"
               : det && strstr(det, ",\"changed\":") ? "[\"change\"]"
               : "[\"creation\"]");
        return;
    }
    for (i = 0; k && i < N_OF(map); i++) {
        if (!strcmp(k, map[i].kind)) {
            jw_raw(&d->w, "event.category", map[i].category);
            jw_raw(&d->w, "event.type", map[i].type);
            return;
        }
    }
    jw_raw(&d->w, "event.category", "[\"process\"]");
    jw_raw(&d->w, "event.type", "[\"info\"]");
}

static void ecs_doc(doc_t *d, int v)
{
    jw_t *w = &d->w;

    col_text(d, "@timestamp", C_TIME);
    if (v == 0) {
        int ok = is(d, C_OUTCOME, "accepted");
        col_text(d, "destination.domain", C_SERVER_NAME);
        col_int(d, "destination.port", C_LOCAL_PORT);
        jw_text(w, "ecs.version", MTLS_ECS_VERSION);
        jw_text(w, "event.action", "tls-client-certificate");
        jw_raw(w, "event.category", "[\"authentication\",\"network\"]");
        jw_text(w, "event.dataset", "mtls_audit.handshake");
        col_scaled(d, "event.duration", C_HANDSHAKE_US, 1000, 1);
        jw_text(w, "event.kind", "event");
        jw_text(w, "event.module", "mtls_audit");
        jw_text(w, "event.outcome", ok ? "success" : "failure");
        if (has(d, C_VERIFY_ERROR)) col_text(d, "event.reason", C_VERIFY_ERROR);
        else col_text(d, "event.reason", C_ALERT_NAME);
        col_int(d, "event.sequence", C_ID);
        jw_raw(w, "event.type", ok ? "[\"connection\",\"allowed\"]"
                                   : "[\"connection\",\"denied\"]");
        own(d, "mtls_audit.", own_handshake, N_OF(own_handshake));
        own_source(d, "mtls_audit.", "handshake");
        col_int(d, "process.pid", C_PID);
        col_text(d, "source.address", C_CLIENT_ADDR);
        col_text(d, "source.ip", C_CLIENT_ADDR);
        col_int(d, "source.port", C_CLIENT_PORT);
        col_text(d, "tls.cipher", C_CIPHER);
        col_text(d, "tls.client.hash.sha256", C_CERT_SHA256);
        col_text(d, "tls.client.issuer", C_ISSUER_DN);
        col_text(d, "tls.client.not_after", C_NOT_AFTER);
        col_text(d, "tls.client.not_before", C_NOT_BEFORE);
        col_text(d, "tls.client.server_name", C_SNI);
        col_text(d, "tls.client.subject", C_SUBJECT_DN);
        col_list(d, "tls.client.x509.alternative_names", C_SAN, ", ", 2);
        col_text(d, "tls.client.x509.issuer.distinguished_name", C_ISSUER_DN);
        col_text(d, "tls.client.x509.not_after", C_NOT_AFTER);
        col_text(d, "tls.client.x509.not_before", C_NOT_BEFORE);
        col_text(d, "tls.client.x509.public_key_algorithm", C_KEY_TYPE);
        col_int(d, "tls.client.x509.public_key_size", C_KEY_BITS);
        col_text(d, "tls.client.x509.serial_number", C_SERIAL);
        col_text(d, "tls.client.x509.signature_algorithm", C_SIG_ALG);
        col_text(d, "tls.client.x509.subject.distinguished_name",
                 C_SUBJECT_DN);
        jw_raw(w, "tls.established", ok ? "true" : "false");
        col_bool(d, "tls.resumed", C_RESUMED);
        tls_version(d, "tls.version", "tls.version_protocol");
    }
    else if (v == 1) {
        int failed = has(d, C_STATUS) && num(d, C_STATUS) >= 400;
        jw_text(w, "ecs.version", MTLS_ECS_VERSION);
        jw_text(w, "event.action", "http-request");
        jw_raw(w, "event.category", "[\"web\"]");
        jw_text(w, "event.dataset", "mtls_audit.request");
        col_scaled(d, "event.duration", C_DURATION_US, 1000, 1);
        jw_text(w, "event.kind", "event");
        jw_text(w, "event.module", "mtls_audit");
        if (has(d, C_STATUS)) {
            jw_text(w, "event.outcome", failed ? "failure" : "success");
        }
        col_int(d, "event.sequence", C_ID);
        jw_raw(w, "event.type", "[\"access\"]");
        col_text(d, "http.request.method", C_METHOD);
        col_int(d, "http.response.bytes", C_BYTES_SENT);
        col_int(d, "http.response.status_code", C_STATUS);
        own(d, "mtls_audit.", own_request, N_OF(own_request));
        own_source(d, "mtls_audit.", "request");
        col_text(d, "tls.client.hash.sha256", C_CERT_SHA256);
        col_text(d, "tls.client.subject", C_SUBJECT_DN);
        col_text(d, "tls.client.x509.subject.distinguished_name",
                 C_SUBJECT_DN);
        col_text(d, "url.path", C_PATH);
    }
    else {
        jw_text(w, "ecs.version", MTLS_ECS_VERSION);
        col_text(d, "event.action", C_KIND);
        ecs_event_kind(d);
        jw_text(w, "event.dataset", "mtls_audit.event");
        col_text(d, "event.end", C_GAP_END);
        jw_text(w, "event.kind", "event");
        jw_text(w, "event.module", "mtls_audit");
        col_int(d, "event.sequence", C_ID);
        col_text(d, "event.start", C_GAP_START);
        col_text(d, "message", C_DETAIL);
        own(d, "mtls_audit.", own_event, N_OF(own_event));
        own_source(d, "mtls_audit.", "event");
        col_int(d, "process.pid", C_PID);
    }
}

static void ocsf_metadata(doc_t *d, const char *log_name, int host)
{
    jw_text(&d->w, "metadata.log_name", log_name);
    jw_text(&d->w, "metadata.product.name", "mod_mtls_audit");
    jw_text(&d->w, "metadata.product.vendor_name", "mod_mtls_audit");
    if (host) jw_raw(&d->w, "metadata.profiles", "[\"host\"]");
    jw_text(&d->w, "metadata.version", MTLS_OCSF_VERSION);
}

/* OCSF's class, activity and type of a document, and its severity. */
static void ocsf_class(doc_t *d, int category, const char *category_name,
                       int cls, const char *class_name, int activity,
                       const char *activity_name, int severity)
{
    static const char *const sev[] = {
        "Unknown", "Informational", "Low", "Medium", "High"
    };
    jw_t *w = &d->w;
    char type_name[96];

    jw_int(w, "activity_id", activity);
    jw_text(w, "activity_name", activity_name);
    jw_text(w, "category_name", category_name);
    jw_int(w, "category_uid", category);
    jw_text(w, "class_name", class_name);
    jw_int(w, "class_uid", cls);
    jw_text(w, "severity", sev[severity]);
    jw_int(w, "severity_id", severity);
    col_ms(d, "time", C_TIME);
    jw_key(w, "type_name");
    snprintf(type_name, sizeof(type_name), "%s: %s", class_name,
             activity_name);
    mtls_json_str(w->out, type_name, -1);
    jw_int(w, "type_uid", cls * 100 + activity);
}

static void ocsf_doc(doc_t *d, int v)
{
    static const char *const methods[] = {   /* http_activity activity_id */
        NULL, "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT",
        "TRACE", "PATCH"
    };
    jw_t *w = &d->w;

    if (v == 0) {
        int ok = is(d, C_OUTCOME, "accepted");
        ocsf_class(d, 3, "Identity & Access Management", 3002,
                   "Authentication", 1, "Logon", ok ? 1 : 2);
        jw_text(w, "auth_protocol", "TLS client certificate");
        jw_int(w, "auth_protocol_id", 99);
        if (has(d, C_CERT_SHA256)) {
            col_ms(d, "certificate.created_time", C_NOT_BEFORE);
            col_ms(d, "certificate.expiration_time", C_NOT_AFTER);
            jw_key(w, "certificate.fingerprints");
            sqlite3_str_appendall(w->out, "[{\"algorithm\":\"SHA-256\","
                                  "\"algorithm_id\":3,\"value\":");
            mtls_json_str(w->out, txt(d, C_CERT_SHA256), -1);
            sqlite3_str_appendall(w->out, "}]");
            col_text(d, "certificate.issuer", C_ISSUER_DN);
            col_list(d, "certificate.sans", C_SAN, ", ", 1);
            col_text(d, "certificate.serial_number", C_SERIAL);
            col_text(d, "certificate.subject", C_SUBJECT_DN);
        }
        col_text(d, "dst_endpoint.hostname", C_SERVER_NAME);
        col_int(d, "dst_endpoint.port", C_LOCAL_PORT);
        col_scaled(d, "duration", C_HANDSHAKE_US, 1, 1000);
        jw_raw(w, "is_remote", "true");
        jw_text(w, "logon_type", "Network");
        jw_int(w, "logon_type_id", 3);
        ocsf_metadata(d, "handshakes", 0);
        col_text(d, "src_endpoint.ip", C_CLIENT_ADDR);
        col_int(d, "src_endpoint.port", C_CLIENT_PORT);
        jw_text(w, "status", ok ? "Success" : "Failure");
        col_text(d, "status_code", C_OUTCOME);
        if (has(d, C_VERIFY_ERROR)) col_text(d, "status_detail", C_VERIFY_ERROR);
        else col_text(d, "status_detail", C_ALERT_NAME);
        jw_int(w, "status_id", ok ? 1 : 2);
        own(d, "unmapped.mtls_audit.", own_handshake, N_OF(own_handshake));
        own(d, "unmapped.mtls_audit.", own_ocsf_handshake,
            N_OF(own_ocsf_handshake));
        if (!has(d, C_TLS_VERSION)) {
            own(d, "unmapped.mtls_audit.", own_ocsf_no_tls,
                N_OF(own_ocsf_no_tls));
        }
        own_source(d, "unmapped.mtls_audit.", "handshake");
        if (has(d, C_TLS_VERSION)) {    /* the tls object needs version */
            col_int(d, "unmapped.tls.alert", C_ALERT);
            col_text(d, "unmapped.tls.cipher", C_CIPHER);
            col_scaled(d, "unmapped.tls.handshake_dur", C_HANDSHAKE_US, 1,
                       1000);
            col_text(d, "unmapped.tls.sni", C_SNI);
            tls_version(d, "unmapped.tls.version", NULL);
        }
        if (has(d, C_CERT_SHA256)) {
            col_text(d, "user.name", C_SUBJECT_DN);
            col_text(d, "user.uid", C_CERT_SHA256);
        }
        else {
            jw_text(w, "user.name", "unknown");
            jw_text(w, "user.type", "Unknown");
            jw_int(w, "user.type_id", 0);
        }
    }
    else if (v == 1) {
        const char *m = txt(d, C_METHOD);
        int a = 99, i, host = has(d, C_CERT_SHA256);
        int failed = has(d, C_STATUS) && num(d, C_STATUS) >= 400;
        char caption[16];

        for (i = 1; m && i < N_OF(methods); i++) {
            if (!strcmp(m, methods[i])) a = i;
        }
        if (a == 99) {
            snprintf(caption, sizeof(caption), "Other");
        }
        else {          /* "GET" as "Get", the activity's caption */
            snprintf(caption, sizeof(caption), "%c%s", methods[a][0],
                     methods[a] + 1);
            for (i = 1; caption[i]; i++) {
                caption[i] = (char)(caption[i] - 'A' + 'a');
            }
        }
        ocsf_class(d, 4, "Network Activity", 4002, "HTTP Activity", a,
                   caption, failed ? 2 : 1);
        if (host) {
            col_text(d, "actor.user.name", C_SUBJECT_DN);
            col_text(d, "actor.user.uid", C_CERT_SHA256);
        }
        col_scaled(d, "duration", C_DURATION_US, 1, 1000);
        if (a != 99) col_text(d, "http_request.http_method", C_METHOD);
        col_text(d, "http_request.url.path", C_PATH);
        if (has(d, C_STATUS)) {
            col_int(d, "http_response.code", C_STATUS);
            col_scaled(d, "http_response.latency", C_DURATION_US, 1, 1000);
            col_int(d, "http_response.length", C_BYTES_SENT);
            col_int(d, "http_status", C_STATUS);
        }
        ocsf_metadata(d, "requests", host);
        if (has(d, C_STATUS)) {
            jw_text(w, "status", failed ? "Failure" : "Success");
            col_text(d, "status_code", C_STATUS);
            jw_int(w, "status_id", failed ? 2 : 1);
        }
        own(d, "unmapped.mtls_audit.", own_request, N_OF(own_request));
        own_source(d, "unmapped.mtls_audit.", "request");
        if (a == 99) col_text(d, "unmapped.mtls_audit.method", C_METHOD);
    }
    else {
        const char *k = txt(d, C_KIND);
        int gap = k && !strcmp(k, "gap");
        ocsf_class(d, 0, "Uncategorized", 0, "Base Event", 99,
                   k ? k : "Other",
                   gap ? 3 : 1);
        col_ms(d, "end_time", C_GAP_END);
        col_text(d, "message", C_DETAIL);
        ocsf_metadata(d, "events", 0);
        col_ms(d, "start_time", C_GAP_START);
        own(d, "unmapped.mtls_audit.", own_event, N_OF(own_event));
        own_source(d, "unmapped.mtls_audit.", "event");
    }
}

/* ------------------------------------------------------------------ */

const char *const mtls_json_formats[MTLS_JSON_FORMATS] = {
    "native", "ecs", "ocsf"
};

int mtls_json_format(const char *name)
{
    int f;
    for (f = 0; name && f < MTLS_JSON_FORMATS; f++) {
        if (!strcmp(name, mtls_json_formats[f])) return f;
    }
    return -1;
}

static void render(sqlite3_str *out, sqlite3_stmt *stmt, const cols_t *c,
                   int format, int v, const char *source)
{
    doc_t d;

    if (format == MTLS_JSON_NATIVE) {
        mtls_json_row(out, stmt, mtls_json_type[v], source);
        return;
    }
    d.stmt = stmt;
    d.c = c;
    d.source = source;
    jw_begin(&d.w, out);
    if (format == MTLS_JSON_ECS) ecs_doc(&d, v);
    else ocsf_doc(&d, v);
    jw_end(&d.w);
}

void mtls_json_doc(sqlite3_str *out, sqlite3_stmt *stmt, int format, int v,
                   const char *source)
{
    cols_t c;
    cols_find(&c, stmt);
    render(out, stmt, &c, format, v, source);
}
