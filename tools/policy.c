/*
 * policy.c -- the recorded TLS policy as a time line (policy.h), and the
 * `mtls-audit policy` command.
 *
 * DESIGN
 * The module writes, at every start and reload, one `policy` event per
 * audited vhost, right after the start or reload event.  A row is in
 * force from its time until the next start or reload of its file; a stop
 * does not end it (the policy of record stays the last one recorded).
 * The JSON is read with SQLite's JSON functions on the tool's own
 * connection, always behind json_valid(): a row that is not JSON is
 * skipped, never trusted.  Summaries (policy_field) and differences
 * (policy_diff) are SQL over the JSON text, so the module may add keys
 * without the tool breaking.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define ISO_OF(x) "strftime('%Y-%m-%dT%H:%M:%SZ', " x ", 'unixepoch')"

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* One text from sql with ?1 = a, ?2 = b, ?3 = c (any may be NULL). */
static char *sql_text(sqlite3 *db, const char *sql, const char *a,
                      const char *b, const char *c)
{
    sqlite3_stmt *st;
    char *out = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return NULL;
    }
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2) {
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    }
    if (sqlite3_bind_parameter_count(st) >= 3) {
        sqlite3_bind_text(st, 3, c, -1, SQLITE_STATIC);
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        out = dup_col(st, 0);
    }
    sqlite3_finalize(st);
    return out;
}

/* ------------------------------------------------------------------ */
/* Summaries                                                            */

static const struct {
    const char *name;
    const char *sql;            /* ?1 = the policy JSON */
} fields[] = {
    { "verify", "SELECT coalesce(json_extract(?1, '$.verify.mode'), '?') "
      "|| ', depth ' || coalesce(json_extract(?1, '$.verify.depth'), '?') "
      "|| coalesce((SELECT '; ' || group_concat(coalesce(json_extract(value, "
      "'$.where'), '?') || ' ' || coalesce(json_extract(value, '$.mode'), "
      "'?'), '; ') FROM json_each(?1, '$.verify.locations')), '')" },
    { "protocols", "SELECT group_concat(value, ' ') FROM json_each(?1, "
      "'$.protocols.enabled')" },
    { "tls12", "SELECT group_concat(value, ' ') FROM json_each(?1, "
      "'$.ciphers.tls12')" },
    { "tls13", "SELECT group_concat(value, ' ') FROM json_each(?1, "
      "'$.ciphers.tls13')" },
    { "cas", "SELECT group_concat(coalesce(json_extract(value, '$.subject'), "
      "'?') || ' (' || coalesce(json_extract(value, '$.key_type'), '?') || "
      "' ' || coalesce(json_extract(value, '$.key_bits'), '?') || ', ' || "
      "coalesce(json_extract(value, '$.sig_alg'), '?') || ', until ' || "
      "coalesce(" ISO_OF("json_extract(value, '$.not_after')") ", '?') || "
      "', sha256 ' || substr(coalesce(json_extract(value, '$.sha256'), '?'), "
      "1, 16) || ')', '; ') FROM json_each(?1, '$.cas')" },
    { "revocation", "SELECT 'CRL check ' || coalesce(json_extract(?1, "
      "'$.revocation.crl_check'), '?') || coalesce((SELECT '; ' || "
      "group_concat('CRL of ' || coalesce(json_extract(value, '$.issuer'), "
      "'?') || ' (' || coalesce(json_extract(value, '$.entries'), '?') || "
      "' entries, next update ' || coalesce(" ISO_OF("json_extract(value, "
      "'$.next_update')") ", '?') || ')', '; ') FROM json_each(?1, "
      "'$.revocation.crls')), '') || '; OCSP ' || CASE json_type(?1, "
      "'$.revocation.ocsp.enabled') WHEN 'true' THEN 'on' || coalesce(' (' "
      "|| json_extract(?1, '$.revocation.ocsp.responder') || ')', '') ELSE "
      "'off' END" },
    { "resumption", "SELECT 'tickets ' || CASE json_type(?1, "
      "'$.resumption.tickets') WHEN 'true' THEN 'on' WHEN 'false' THEN 'off' "
      "ELSE '?' END || ', cache ' || coalesce(json_extract(?1, "
      "'$.resumption.cache'), '?')" },
    { "server_certs", "SELECT group_concat(coalesce(json_extract(value, "
      "'$.subject'), '?') || ' (until ' || coalesce(" ISO_OF("json_extract("
      "value, '$.not_after')") ", '?') || ')', '; ') FROM json_each(?1, "
      "'$.server_certs')" },
    { "config", "SELECT json_extract(?1, '$.config')" },
    { "digest", "SELECT json_extract(?1, '$.digest')" },
    { NULL, NULL }
};

char *policy_field(sqlite3 *db, const char *policy, const char *field)
{
    int i;

    if (!policy) return NULL;
    for (i = 0; fields[i].name; i++) {
        if (!strcmp(fields[i].name, field)) {
            return sql_text(db, fields[i].sql, policy, NULL, NULL);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Differences                                                          */

/* Values compared one to one: ranked ones weaken when their rank falls. */
static const struct {
    const char *path, *label;
    const char *ranks;          /* weakest first, space-separated, or NULL */
} scalars[] = {
    { "$.verify.mode", "verify", " none optional_no_ca optional require " },
    { "$.verify.depth", "verify depth", NULL },
    { "$.revocation.crl_check", "CRL check", " none leaf chain " },
    { "$.revocation.ocsp.enabled", "OCSP", " off on " },
    { "$.revocation.ocsp.responder", "OCSP responder", NULL },
    { "$.revocation.ocsp.override", "OCSP override", NULL },
    { "$.protocols.min", "min protocol", NULL },
    { "$.protocols.max", "max protocol", NULL },
    { "$.protocols.security_level", "security level", " 0 1 2 3 4 5 " },
    { "$.resumption.tickets", "session tickets", NULL },
    { "$.resumption.cache", "session cache", NULL },
    { "$.config", "config", NULL },
    { NULL, NULL, NULL }
};

/* Arrays compared as sets of keys (key: an expression over `value`). */
static const struct {
    const char *path, *label, *key;
    int         weak_added;     /* 1: an added item weakens; 2: one whose
                                   key does not end in " require" */
} sets[] = {
    { "$.verify.locations", "locations", "coalesce(json_extract(value, "
      "'$.where'), '?') || ' ' || coalesce(json_extract(value, '$.mode'), "
      "'?')", 2 },
    { "$.cas", "trusted CAs", "coalesce(json_extract(value, '$.subject'), "
      "'?') || ' (sha256 ' || substr(coalesce(json_extract(value, "
      "'$.sha256'), '?'), 1, 16) || ')'", 1 },
    { "$.ca_names", "CA names sent", "value", 0 },
    { "$.revocation.crls", "CRLs", "coalesce(json_extract(value, "
      "'$.issuer'), '?') || ' (next update ' || coalesce(" ISO_OF(
      "json_extract(value, '$.next_update')") ", '?') || ')'", 0 },
    { "$.protocols.enabled", "protocols", "value", 1 },
    { "$.protocols.configured", "protocols configured", "value", 0 },
    { "$.ciphers.tls12", "TLS 1.2 suites", "value", 1 },
    { "$.ciphers.tls13", "TLS 1.3 suites", "value", 1 },
    { "$.server_certs", "server certificates", "coalesce(json_extract("
      "value, '$.subject'), '?') || ' (sha256 ' || substr(coalesce("
      "json_extract(value, '$.sha256'), '?'), 1, 16) || ')'", 0 },
    { NULL, NULL, NULL, 0 }
};

static int rank_of(const char *ranks, const char *v)
{
    char word[64];
    const char *p;

    if (!ranks || !v) return -1;
    snprintf(word, sizeof(word), " %s ", v);
    p = strstr(ranks, word);
    return p ? (int)(p - ranks) : -1;
}

char *policy_diff(sqlite3 *db, const char *a, const char *b, int *weakened)
{
    sqlite3_str *out = sqlite3_str_new(db);
    char *text;
    int i;

    *weakened = 0;
    for (i = 0; scalars[i].path; i++) {
        static const char one[] = "SELECT CASE json_type(?1, ?3) WHEN 'true' "
            "THEN 'on' WHEN 'false' THEN 'off' ELSE json_extract(?1, ?3) END";
        char *va = sql_text(db, one, a, NULL, scalars[i].path);
        char *vb = sql_text(db, one, b, NULL, scalars[i].path);
        if ((va || vb) && (!va || !vb || strcmp(va, vb))) {
            int ra = rank_of(scalars[i].ranks, va);
            int rb = rank_of(scalars[i].ranks, vb);
            sqlite3_str_appendf(out, "%s%s %s -> %s",
                                sqlite3_str_length(out) ? "; " : "",
                                scalars[i].label, va ? va : "-",
                                vb ? vb : "-");
            if (ra >= 0 && rb >= 0 && rb < ra) *weakened = 1;
            /* No OCSP or CRL check left at all counts too. */
        }
        free(va);
        free(vb);
    }
    for (i = 0; sets[i].path; i++) {
        char *sql = sqlite3_mprintf("SELECT group_concat(k, ', ') FROM "
            "(SELECT %s AS k FROM json_each(?1, ?3) EXCEPT SELECT %s FROM "
            "json_each(?2, ?3))", sets[i].key, sets[i].key);
        char *added = sql ? sql_text(db, sql, b, a, sets[i].path) : NULL;
        char *removed = sql ? sql_text(db, sql, a, b, sets[i].path) : NULL;
        sqlite3_free(sql);
        if (added || removed) {
            sqlite3_str_appendf(out, "%s%s:%s%s%s%s",
                                sqlite3_str_length(out) ? "; " : "",
                                sets[i].label, added ? " added " : "",
                                added ? added : "",
                                removed ? (added ? ", removed " : " removed ")
                                        : "", removed ? removed : "");
        }
        if (added && sets[i].weak_added == 1) *weakened = 1;
        if (added && sets[i].weak_added == 2) {
            /* A location added or changed to a mode weaker than require. */
            char *p, *save = NULL, *copy = strdup(added);
            for (p = copy ? strtok_r(copy, ",", &save) : NULL; p;
                 p = strtok_r(NULL, ",", &save)) {
                size_t l = strlen(p);
                if (l < 8 || strcmp(p + l - 8, " require")) *weakened = 1;
            }
            free(copy);
        }
        free(added);
        free(removed);
    }
    text = sqlite3_str_finish(out);
    if (text && !*text) {
        sqlite3_free(text);
        return NULL;
    }
    if (text) {
        char *copy = strdup(text);
        sqlite3_free(text);
        return copy;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Loading                                                              */

static int push_row(policy_set_t *ps, const policy_row_t *r)
{
    policy_row_t *nr = realloc(ps->rows, sizeof(*nr) * (ps->n + 1));
    if (!nr) return -1;
    ps->rows = nr;
    ps->rows[ps->n++] = *r;
    return 0;
}

/* The rows of database i (first is the index of its first row in ps). */
static int load_file(sqlite3 *db, int i, const char *source,
                     policy_set_t *ps)
{
    char sql[2048];
    sqlite3_stmt *st;
    apr_int64_t *life = NULL;   /* ids and times of starts and reloads */
    size_t nlife = 0, first = ps->n, k;
    int rc;

    snprintf(sql, sizeof(sql), "SELECT id, time_us FROM db%d.events WHERE "
             "kind IN ('start', 'reload') ORDER BY id", i);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        apr_int64_t *nl = realloc(life, sizeof(*nl) * 2 * (nlife + 1));
        if (!nl) break;
        life = nl;
        life[2 * nlife] = sqlite3_column_int64(st, 0);
        life[2 * nlife + 1] = sqlite3_column_int64(st, 1);
        nlife++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(life);
        return -1;
    }

    snprintf(sql, sizeof(sql), "SELECT id, time_us, CASE WHEN v THEN "
             "json_extract(detail, '$.vhost') END, CASE WHEN v THEN (SELECT "
             "group_concat(value, ' ') FROM json_each(detail, "
             "'$.addresses')) END, CASE WHEN v THEN json_extract(detail, "
             "'$.unchanged_since') END, CASE WHEN v THEN (SELECT "
             "group_concat(value, ' ') FROM json_each(detail, '$.changed')) "
             "END, CASE WHEN v THEN json(detail) END, v, CASE WHEN v THEN "
             "json_extract(detail, '$.carried') END, CASE WHEN v THEN "
             "json_extract(detail, '$.since_us') END FROM (SELECT id, "
             "time_us, detail, "
             "coalesce(json_valid(detail) AND json_type(detail) = 'object', "
             "0) AS v FROM db%d.events WHERE kind = 'policy') ORDER BY id", i);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        free(life);
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        policy_row_t r;
        size_t j;

        if (!sqlite3_column_int(st, 7)) {
            continue;                   /* not a JSON object: not read */
        }
        memset(&r, 0, sizeof(r));
        r.source = source;
        r.id = sqlite3_column_int64(st, 0);
        r.time_us = sqlite3_column_int64(st, 1);
        r.end_us = POLICY_FOREVER;
        for (k = 0; k < nlife; k++) {
            if (life[2 * k] > r.id) {
                r.end_us = life[2 * k + 1];
                break;
            }
        }
        r.vhost = dup_col(st, 2);
        r.addresses = dup_col(st, 3);
        r.changed = dup_col(st, 5);
        if (sqlite3_column_type(st, 4) == SQLITE_NULL) {
            r.full = 1;
            r.policy = dup_col(st, 6);
            r.set_id = r.id;
            r.set_us = r.time_us;
            if (sqlite3_column_type(st, 8) != SQLITE_NULL) {
                /* Carried into this file by a rotation: the policy of
                 * row `carried` of the file before, recorded at since_us,
                 * going on -- not a change. */
                r.carried = 1;
                r.set_id = sqlite3_column_int64(st, 8);
                if (sqlite3_column_int64(st, 9) > 0) {
                    r.set_us = sqlite3_column_int64(st, 9);
                }
            }
        }
        else {
            apr_int64_t since = sqlite3_column_int64(st, 4);
            for (j = ps->n; j > first; j--) {
                if (ps->rows[j - 1].id == since) {
                    const policy_row_t *o = &ps->rows[j - 1];
                    r.policy = o->policy ? strdup(o->policy) : NULL;
                    r.set_id = o->set_id;
                    r.set_us = o->set_us;
                    break;
                }
            }
            if (j == first) {
                /* The row it repeats is not in this file (archived). */
                r.set_id = since;
            }
        }
        /* The vhost's previous row in this file. */
        r.first = 1;
        for (j = ps->n; j > first; j--) {
            const policy_row_t *o = &ps->rows[j - 1];
            if (((!o->vhost && !r.vhost) || (o->vhost && r.vhost
                                             && !strcmp(o->vhost, r.vhost)))
                && ((!o->addresses && !r.addresses)
                    || (o->addresses && r.addresses
                        && !strcmp(o->addresses, r.addresses)))) {
                r.first = 0;
                if (r.full && !r.carried && o->policy && r.policy) {
                    r.what = policy_diff(db, o->policy, r.policy,
                                         &r.weakened);
                }
                break;
            }
        }
        if (push_row(ps, &r) != 0) {
            free(r.vhost);
            free(r.addresses);
            free(r.changed);
            free(r.policy);
            free(r.what);
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    free(life);
    return rc == SQLITE_DONE ? 0 : -1;
}

int policy_load(sqlite3 *db, const dataset_t *ds, policy_set_t *ps)
{
    int i;

    memset(ps, 0, sizeof(*ps));
    (void)db;
    for (i = 0; i < ds->n; i++) {
        /* Each file on the connection it is attached to. */
        sqlite3 *fdb = ds_db(ds, i);
        if (!fdb || load_file(fdb, i, ds->files[i], ps) != 0) {
            fail("%s: cannot read the policy events: %s", ds->files[i],
                 fdb ? sqlite3_errmsg(fdb) : "not open");
            return EXIT_DB;
        }
    }
    return EXIT_OK;
}

void policy_free(policy_set_t *ps)
{
    size_t i;
    for (i = 0; i < ps->n; i++) {
        free(ps->rows[i].vhost);
        free(ps->rows[i].addresses);
        free(ps->rows[i].policy);
        free(ps->rows[i].changed);
        free(ps->rows[i].what);
    }
    free(ps->rows);
    memset(ps, 0, sizeof(*ps));
}

/* ------------------------------------------------------------------ */
/* Views of the time line                                               */

static const char *const in_force_cols[] = { "source", "vhost", "addresses",
    "in_force_since", "recorded", "verify", "protocols", "tls12_suites",
    "tls13_suites", "trusted_cas", "revocation", "resumption",
    "server_certs", "config", "digest", NULL };
static const char *const in_force_fields[] = { "verify", "protocols",
    "tls12", "tls13", "cas", "revocation", "resumption", "server_certs",
    "config", "digest" };

void policy_in_force(sqlite3 *db, const policy_set_t *ps, apr_int64_t at,
                     evidence_t *ev)
{
    size_t i;
    int k;

    ev_init(ev, in_force_cols);
    for (i = 0; i < ps->n; i++) {
        const policy_row_t *r = &ps->rows[i];
        char since[32], rec[96], tb[32], *vals[10];
        const char *row[15];

        if (!(r->time_us <= at && at < r->end_us)) continue;
        snprintf(since, sizeof(since), "%s", format_time(r->set_us, tb));
        if (r->full) {
            snprintf(rec, sizeof(rec), "event %lld", (long long)r->id);
        }
        else {
            snprintf(rec, sizeof(rec), "event %lld, unchanged since event "
                     "%lld", (long long)r->id, (long long)r->set_id);
        }
        row[0] = r->source;
        row[1] = r->vhost;
        row[2] = r->addresses;
        row[3] = r->set_us ? since : NULL;
        row[4] = rec;
        for (k = 0; k < 10; k++) {
            vals[k] = policy_field(db, r->policy, in_force_fields[k]);
            row[5 + k] = vals[k];
        }
        if (!r->policy) {
            row[5] = "(the full row is not in the files read)";
        }
        ev_add(ev, row);
        for (k = 0; k < 10; k++) free(vals[k]);
    }
}

static const char *const change_cols[] = { "time_utc", "source", "vhost",
    "addresses", "event", "changed", "what", "weakened", NULL };

/* Is row r a change: a first row, or a full row that differs? */
static int is_change(const policy_row_t *r)
{
    return r->full && !r->carried && (r->first || r->what);
}

void policy_changes(const policy_set_t *ps, apr_int64_t from, apr_int64_t to,
                    evidence_t *ev)
{
    size_t i;

    ev_init(ev, change_cols);
    for (i = 0; i < ps->n; i++) {
        const policy_row_t *r = &ps->rows[i];
        char tb[32], id[48];
        const char *row[8];

        if (!is_change(r) || r->time_us < from || r->time_us >= to) continue;
        snprintf(id, sizeof(id), "%s (event %lld)", r->first
                 ? "first recorded" : "changed", (long long)r->id);
        row[0] = format_time(r->time_us, tb);
        row[1] = r->source;
        row[2] = r->vhost;
        row[3] = r->addresses;
        row[4] = id;
        row[5] = r->changed;
        row[6] = r->what;
        row[7] = r->first ? "" : r->weakened ? "yes" : "no";
        ev_add(ev, row);
    }
}

/* ------------------------------------------------------------------ */
/* mtls-audit policy                                                    */

static const char policy_help[] =
"usage: mtls-audit policy [--at D] [--history] [--format table|json] DB...\n"
"\n"
"The TLS policy the module recorded at each start and reload of the server\n"
"(`policy` events): per audited vhost, the client verification mode and\n"
"depth (and per-location modes), the trusted client CAs, revocation\n"
"checking (CRLs with their next update, OCSP), the protocols and suites\n"
"enabled, session resumption and the server certificates.  A reload that\n"
"changed nothing is shown as the policy it repeats.\n"
"\n"
"  --at D           the policy in force at D (default: now): a date or an\n"
"                   ISO time, UTC\n"
"  --history        every change up to --at instead: each vhost's first\n"
"                   policy and each reload that changed it, with its time,\n"
"                   the keys that changed, what was added and removed, and\n"
"                   whether it weakened the policy\n"
"  --format F       table (default) or json (the recorded policy JSON in\n"
"                   full)\n"
"\n"
"Exit: 0 ok, 2 usage, 3 database or I/O error.\n";

/* Rows of ev as blocks of "column  value" lines, one block per row. */
static void print_blocks(FILE *f, const evidence_t *ev)
{
    long r;
    int i;

    for (r = 0; r < ev->nrows; r++) {
        if (r) fputc('\n', f);
        for (i = 0; i < ev->ncols; i++) {
            const char *v = ev->rows[r][i], *p;
            if (!v || !*v) continue;
            fprintf(f, "%-15s ", ev->cols[i]);
            for (p = v; *p; p++) {
                fputc((unsigned char)*p < 0x20 ? '?' : *p, f);
            }
            fputc('\n', f);
        }
    }
    if (ev->total > ev->nrows) {
        fprintf(f, "\n... %ld more (--format json has them all)\n",
                ev->total - ev->nrows);
    }
}

/* The policy JSON (json_valid, and rewritten by json() in canonical
 * form when loaded), or null. */
static void json_policy(FILE *f, const char *p)
{
    if (p) fputs(p, f);
    else fputs("null", f);
}

static void json_kv(FILE *f, const char *k, const char *v, int comma)
{
    if (comma) fputs(", ", f);
    json_str(f, k);
    fputs(": ", f);
    if (v) json_str(f, v);
    else fputs("null", f);
}

static void write_json_rows(FILE *f, const policy_set_t *ps, apr_int64_t at,
                            int history)
{
    size_t i;
    int n = 0;
    char tb[32];

    fputs("[", f);
    for (i = 0; i < ps->n; i++) {
        const policy_row_t *r = &ps->rows[i];
        if (history ? !(is_change(r) && r->time_us <= at)
                    : !(r->time_us <= at && at < r->end_us)) continue;
        fputs(n++ ? ",\n {" : "\n {", f);
        json_kv(f, "source", r->source, 0);
        json_kv(f, "vhost", r->vhost, 1);
        json_kv(f, "addresses", r->addresses, 1);
        fprintf(f, ", \"id\": %lld", (long long)r->id);
        json_kv(f, "time_utc", format_time(r->time_us, tb), 1);
        if (history) {
            json_kv(f, "event", r->first ? "first recorded" : "changed", 1);
            json_kv(f, "changed", r->changed, 1);
            json_kv(f, "what", r->what, 1);
            fprintf(f, ", \"weakened\": %s", r->weakened ? "true" : "false");
        }
        else {
            json_kv(f, "in_force_since", r->set_us
                    ? format_time(r->set_us, tb) : NULL, 1);
            fprintf(f, ", \"set_by_event\": %lld", (long long)r->set_id);
        }
        fputs(",\n  \"policy\": ", f);
        json_policy(f, r->policy);
        fputs("}", f);
    }
    fputs(n ? "\n]\n" : "]\n", f);
}

int cmd_policy(int argc, char **argv)
{
    const char *at_s = NULL, *format = NULL;
    int history = 0;
    const opt_t opts[] = {
        { "--at", 1, &at_s, NULL }, { "--format", 1, &format, NULL },
        { "--history", 0, NULL, &history }, { NULL, 0, NULL, NULL }
    };
    apr_int64_t at;
    fmt_e fmt = FMT_TABLE;
    char **files, buf[512];
    int nfiles, rc;
    dataset_t ds;
    policy_set_t ps;
    evidence_t ev;

    rc = parse_opts(argc, argv, opts, policy_help, "policy", &files, &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    at = mtls_now_us();
    if (at_s && parse_time(at_s, &at) != 0) {
        fail("--at '%s' is not a date (YYYY-MM-DD) or an ISO time "
             "(YYYY-MM-DDTHH:MM:SSZ)", at_s);
        free(files);
        return EXIT_USAGE;
    }
    if (format && parse_format(format, "|table|json|", &fmt) != 0) {
        free(files);
        return EXIT_USAGE;
    }
    if ((rc = open_dataset(&ds, files, nfiles)) != EXIT_OK) {
        close_dataset(&ds);
        free(files);
        return rc;
    }
    if ((rc = policy_load(ds.db, &ds, &ps)) != EXIT_OK) {
        policy_free(&ps);
        close_dataset(&ds);
        free(files);
        return rc;
    }
    if (fmt == FMT_JSON) {
        write_json_rows(stdout, &ps, at, history);
    }
    else {
        if (history) policy_changes(&ps, INT64_MIN, at + 1, &ev);
        else policy_in_force(ds.db, &ps, at, &ev);
        if (!ps.n) {
            printf("no policy recorded in %s (a database written before the "
                   "module recorded its TLS policy)\n",
                   nfiles > 1 ? "these databases" : "this database");
        }
        else if (!ev.nrows) {
            printf("no policy %s %s\n", history ? "change up to"
                   : "in force at", format_time(at, buf));
        }
        print_blocks(stdout, &ev);
        evidence_free(&ev);
    }
    policy_free(&ps);
    close_dataset(&ds);
    rc = finish_output(stdout, EXIT_OK);
    if (rc == EXIT_OK) {
        record_access(files, nfiles, cmdline(argc, argv, buf, sizeof(buf)),
                      NULL);
    }
    free(files);
    return rc;
}
