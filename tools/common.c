/*
 * common.c -- what every mtls-audit command shares: errors, options,
 * times, output formats, the data set and its SQL functions.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"
#include "mtls_json.h"
#include "mtls_store.h"
#include "readahead.h"

void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("mtls-audit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int finish_output(FILE *out, int code)
{
    if (fflush(out) != 0 || ferror(out)) {
        fail("cannot write the output: %s", strerror(errno));
        return EXIT_DB;
    }
    return code;
}

/* ------------------------------------------------------------------ */

int parse_opts(int argc, char **argv, const opt_t *opts, const char *help,
               const char *cmd, char ***files, int *nfiles)
{
    int i;

    *files = calloc((size_t)argc + 1, sizeof(char *));
    *nfiles = 0;
    if (!*files) {
        fail("out of memory");
        return EXIT_DB;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const opt_t *o;
        size_t n;

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return -1;
        }
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) {
                (*files)[(*nfiles)++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || !a[1]) {
            (*files)[(*nfiles)++] = argv[i];
            continue;
        }
        for (o = opts; o->name; o++) {
            n = strlen(o->name);
            if (!strncmp(a, o->name, n) && (a[n] == '\0' || a[n] == '=')) {
                break;
            }
        }
        if (!o->name) {
            fail("unknown option '%s'; see 'mtls-audit %s --help'", a, cmd);
            return EXIT_USAGE;
        }
        n = strlen(o->name);
        if (o->flag) {
            *o->flag = 1;
        }
        if (!o->takes_value) {
            if (a[n] == '=') {
                fail("%s takes no value", o->name);
                return EXIT_USAGE;
            }
            continue;
        }
        if (a[n] == '=') {
            *o->value = a + n + 1;
        }
        else if (i + 1 < argc) {
            *o->value = argv[++i];
        }
        else {
            fail("%s needs a value; see 'mtls-audit %s --help'", o->name,
                 cmd);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

int parse_time(const char *s, apr_int64_t *out)
{
    struct tm tm;
    const char *rest;
    long ms = 0;
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (!s || strlen(s) > 40 || !isdigit((unsigned char)s[0])) {
        return -1;
    }
    rest = strptime(s, "%Y-%m-%d", &tm);
    if (!rest) {
        return -1;
    }
    if (*rest == 'T' || *rest == ' ') {
        rest = strptime(rest + 1, "%H:%M:%S", &tm);
        if (!rest) {
            return -1;
        }
        if (*rest == '.') {
            int digits = 0;
            for (rest++; isdigit((unsigned char)*rest); rest++, digits++) {
                if (digits < 3) ms = ms * 10 + (*rest - '0');
            }
            if (digits == 0) {
                return -1;
            }
            for (; digits < 3; digits++) ms *= 10;
        }
        if (*rest == 'Z') {
            rest++;
        }
    }
    if (*rest || tm.tm_year < 70 || tm.tm_year > 1100) {
        return -1;
    }
    t = timegm(&tm);
    if (t == (time_t)-1) {
        return -1;
    }
    *out = ((apr_int64_t)t * 1000 + ms) * 1000;
    return 0;
}

const char *format_time(apr_int64_t us, char *buf)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&s, &tm);
    snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100,
             tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)((us / 1000) % 1000));
    return buf;
}

int parse_count(const char *s, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                               */

int parse_format(const char *s, const char *allowed, fmt_e *out)
{
    static const struct { const char *name; fmt_e fmt; } names[] = {
        { "table", FMT_TABLE }, { "json", FMT_JSON }, { "csv", FMT_CSV },
        { "text", FMT_TEXT }, { "html", FMT_HTML }, { NULL, FMT_TABLE }
    };
    int i;
    char word[16];

    for (i = 0; names[i].name; i++) {
        snprintf(word, sizeof(word), "|%s|", names[i].name);
        if (!strcmp(s, names[i].name) && strstr(allowed, word)) {
            *out = names[i].fmt;
            return 0;
        }
    }
    fail("unknown format '%s': use one of %s", s, allowed);
    return -1;
}

void json_str(FILE *f, const char *s)
{
    sqlite3_str *o = sqlite3_str_new(NULL);
    char *v;

    mtls_json_str(o, s, -1);
    v = sqlite3_str_finish(o);
    fputs(v ? v : "\"\"", f);
    sqlite3_free(v);
}

void csv_cell(FILE *f, const char *s)
{
    /* A cell a spreadsheet would run as a formula gets a leading quote. */
    int formula = s[0] && strchr("=+-@\t\r", s[0]) != NULL;

    fputc('"', f);
    if (formula) {
        fputc('\'', f);
    }
    for (; *s; s++) {
        if (*s == '"') {
            fputc('"', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

void html_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':  fputs("&lt;", f); break;
        case '>':  fputs("&gt;", f); break;
        case '&':  fputs("&amp;", f); break;
        case '"':  fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t') {
                fputs("&#xFFFD;", f);
            }
            else {
                fputc(*s, f);
            }
        }
    }
}

static void table_line(FILE *f, char **cells, const int *width, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        const char *v = cells[i] ? cells[i] : "";
        if (i == n - 1) {
            fprintf(f, "%s%.*s", i ? "  " : "", width[i], v);
        }
        else {
            fprintf(f, "%s%-*.*s", i ? "  " : "", width[i], width[i], v);
        }
    }
    fputc('\n', f);
}

long print_rows(FILE *f, sqlite3_stmt *stmt, fmt_e fmt)
{
    int i, n = sqlite3_column_count(stmt), rc;
    long rows = 0, r;
    char ***cells = NULL;
    int *width = calloc((size_t)n + 1, sizeof(int));

    if (!width) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        width[i] = (int)strlen(sqlite3_column_name(stmt, i));
    }
    if (fmt == FMT_JSON) {
        fputs("[", f);
    }
    else if (fmt == FMT_CSV) {
        for (i = 0; i < n; i++) {
            if (i) fputc(',', f);
            csv_cell(f, sqlite3_column_name(stmt, i));
        }
        fputs("\r\n", f);
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (fmt == FMT_JSON) {
            fputs(rows ? ",\n {" : "\n {", f);
            for (i = 0; i < n; i++) {
                int t = sqlite3_column_type(stmt, i);
                if (i) fputs(", ", f);
                json_str(f, sqlite3_column_name(stmt, i));
                fputs(": ", f);
                if (t == SQLITE_NULL) {
                    fputs("null", f);
                }
                else if (t == SQLITE_INTEGER) {
                    fprintf(f, "%lld", sqlite3_column_int64(stmt, i));
                }
                else if (t == SQLITE_FLOAT) {
                    fprintf(f, "%.17g", sqlite3_column_double(stmt, i));
                }
                else {
                    json_str(f, (const char *)sqlite3_column_text(stmt, i));
                }
            }
            fputs("}", f);
        }
        else if (fmt == FMT_CSV) {
            for (i = 0; i < n; i++) {
                const char *v = (const char *)sqlite3_column_text(stmt, i);
                if (i) fputc(',', f);
                if (v) csv_cell(f, v);
            }
            fputs("\r\n", f);
        }
        else {
            char **row = calloc((size_t)n, sizeof(char *));
            char ***nc = realloc(cells, sizeof(char **) * (size_t)(rows + 1));
            if (!row || !nc) {
                free(row);
                if (nc) cells = nc;
                rc = SQLITE_NOMEM;
                break;
            }
            cells = nc;
            for (i = 0; i < n; i++) {
                const char *v = (const char *)sqlite3_column_text(stmt, i);
                char *q;
                int w;
                row[i] = strdup(v ? v : "");
                for (q = row[i]; q && *q; q++) {
                    if ((unsigned char)*q < 0x20) *q = ' ';   /* one line */
                }
                w = row[i] ? (int)strlen(row[i]) : 0;
                if (w > width[i]) width[i] = w > 64 ? 64 : w;
            }
            cells[rows] = row;
        }
        rows++;
    }
    if (fmt == FMT_JSON) {
        fputs(rows ? "\n]\n" : "]\n", f);
    }
    else if (fmt != FMT_CSV) {
        char **hdr = calloc((size_t)n + 1, sizeof(char *));
        for (i = 0; hdr && i < n; i++) {
            hdr[i] = (char *)sqlite3_column_name(stmt, i);
        }
        if (hdr) {
            table_line(f, hdr, width, n);
        }
        free(hdr);
        for (r = 0; r < rows; r++) {
            table_line(f, cells[r], width, n);
            for (i = 0; i < n; i++) {
                free(cells[r][i]);
            }
            free(cells[r]);
        }
        free(cells);
    }
    free(width);
    if (rc != SQLITE_DONE) {
        fail("reading the database: %s",
             sqlite3_errmsg(sqlite3_db_handle(stmt)));
        return -1;
    }
    return rows;
}

/* ------------------------------------------------------------------ */
/* Grading and SQL functions                                            */

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

int cipher_is_aead(const char *c)
{
    return c && (contains(c, "GCM") || contains(c, "CCM")
                 || contains(c, "CHACHA20") || contains(c, "POLY1305"));
}

int grade_suite(int version, const char *cipher, const char **why)
{
    char up[128];
    int i;

    if (version == 0x0300 || version == 0x0301 || version == 0x0002) {
        *why = "SSLv3 or TLS 1.0";
        return 2;
    }
    if (!cipher || !*cipher) {
        *why = "no suite negotiated";
        return 0;
    }
    for (i = 0; cipher[i] && i < (int)sizeof(up) - 1; i++) {
        up[i] = (char)toupper((unsigned char)cipher[i]);
    }
    up[i] = '\0';
    if (contains(up, "NULL") || contains(up, "EXP") || contains(up, "RC4")
        || contains(up, "DES") || contains(up, "ADH") || contains(up, "AECDH")
        || contains(up, "ANON") || contains(up, "MD5")) {
        *why = "NULL, EXPORT, RC4, DES/3DES or anonymous suite";
        return 2;
    }
    if (version == 0x0302) {
        *why = "TLS 1.1";
        return 1;
    }
    if (contains(up, "CHACHA20")) {
        *why = "ChaCha20-Poly1305: sound, not on the SP 800-52r2 list";
        return 1;
    }
    if (!strncmp(up, "TLS_", 4)) {      /* TLS 1.3: AES-GCM or AES-CCM */
        *why = "TLS 1.3 AEAD";
        return 0;
    }
    if (strncmp(up, "ECDHE-", 6) && strncmp(up, "DHE-", 4)) {
        *why = "static RSA key exchange (no forward secrecy)";
        return 1;
    }
    if (!contains(up, "GCM") && !contains(up, "CCM")) {
        *why = "CBC mode";
        return 1;
    }
    *why = "ECDHE/DHE with AES-GCM/CCM";
    return 0;
}

static int luhn(const char *d, int n)
{
    int sum = 0, i, dbl = 0;
    for (i = n - 1; i >= 0; i--) {
        int v = d[i] - '0';
        if (dbl) {
            v *= 2;
            if (v > 9) v -= 9;
        }
        sum += v;
        dbl = !dbl;
    }
    return sum % 10 == 0;
}

int has_pan(const char *s)
{
    char digits[64];
    int n = 0;
    const char *p;

    for (p = s; ; p++) {
        if (*p >= '0' && *p <= '9') {
            if (n < (int)sizeof(digits)) {
                digits[n] = *p;
            }
            n++;
            continue;
        }
        /* A single space or dash between digits continues the run. */
        if ((*p == ' ' || *p == '-') && n && p[1] >= '0' && p[1] <= '9') {
            continue;
        }
        if (n >= 13 && n <= 19 && luhn(digits, n)) {
            return 1;
        }
        n = 0;
        if (!*p) {
            break;
        }
    }
    return 0;
}

/* Parse "a.b.c.d[/n]" or "v6[/n]" into family, bytes, prefix bits. */
static int parse_addr(const char *s, int *fam, unsigned char *b, int *bits)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    long v;

    if (n >= sizeof(host)) {
        return -1;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    if (inet_pton(AF_INET, host, b) == 1) {
        *fam = 4;
        *bits = 32;
    }
    else if (inet_pton(AF_INET6, host, b) == 1) {
        *fam = 6;
        *bits = 128;
    }
    else {
        return -1;
    }
    if (slash) {
        if (parse_count(slash + 1, &v) != 0 || v > *bits) {
            return -1;
        }
        *bits = (int)v;
    }
    return 0;
}

int tool_in_cidr(const char *addr, const char *cidr)
{
    unsigned char a[16], c[16];
    int fa, fc, ba, bc, i;

    if (!addr || !cidr || parse_addr(addr, &fa, a, &ba) != 0
        || parse_addr(cidr, &fc, c, &bc) != 0 || fa != fc) {
        return 0;
    }
    for (i = 0; i < bc / 8; i++) {
        if (a[i] != c[i]) return 0;
    }
    if (bc % 8) {
        unsigned char m = (unsigned char)(0xff << (8 - bc % 8));
        if ((a[i] & m) != (c[i] & m)) return 0;
    }
    return 1;
}

int tool_valid_cidr(const char *cidr)
{
    unsigned char b[16];
    int f, bits;
    return parse_addr(cidr, &f, b, &bits) == 0;
}

static void fn_in_cidr(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int(ctx, tool_in_cidr(
        (const char *)sqlite3_value_text(argv[0]),
        (const char *)sqlite3_value_text(argv[1])));
}

/* ------------------------------------------------------------------ */
/* The data set                                                         */

static int exec_str(sqlite3 *db, sqlite3_str *s)
{
    char *sql = sqlite3_str_finish(s);
    int rc = sql ? sqlite3_exec(db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    return rc;
}

/* CREATE TEMP VIEW name AS the UNION ALL of arm, printed once per
 * database with (its file name, its text from old when its schema is
 * older than 3, its index, its index, its index). */
static int union_view(dataset_t *ds, const char *name, const char *arm,
                      const char *old)
{
    sqlite3_str *s = sqlite3_str_new(ds->db);
    int i;

    sqlite3_str_appendf(s, "CREATE TEMP VIEW %s AS ", name);
    for (i = 0; i < ds->n; i++) {
        if (i) sqlite3_str_appendall(s, " UNION ALL ");
        sqlite3_str_appendf(s, arm, ds->files[i],
                            ds->version[i] < 3 ? old : "", i, i, i);
    }
    return exec_str(ds->db, s);
}

static int make_views(dataset_t *ds)
{
    int rc;

    /* A file of schema 1 or 2 has no revocation columns (schema 3,
     * after hash): NULL in their place. */
    if ((rc = union_view(ds, "hs", "SELECT %Q AS source, h.*%s, c.sha256, "
            "lower(hex(c.sha256)) AS cert_sha256, c.subject_dn, c.issuer_dn, "
            "c.serial, c.not_before, c.not_after, c.key_type, c.key_bits, "
            "c.sig_alg FROM db%d.handshakes h LEFT JOIN db%d.certificates c "
            "ON c.id = h.cert_id", MTLS_OLD_HS_COLS)) != SQLITE_OK) {
        return rc;
    }
    if ((rc = union_view(ds, "ev", "SELECT %Q AS source, *%s FROM "
                         "db%d.events", "")) != SQLITE_OK) {
        return rc;
    }
    return union_view(ds, "certs", "SELECT %Q AS source%s, id, sha256, "
            "lower(hex(sha256)) AS cert_sha256, subject_dn, issuer_dn, serial, "
            "not_before, not_after, san, key_type, key_bits, sig_alg, "
            "first_seen_us FROM db%d.certificates", "");
}

static const struct {
    const char *name;
    int         args;
    void      (*fn)(sqlite3_context *, int, sqlite3_value **);
} functions[] = {
    { "in_cidr", 2, fn_in_cidr },
    { NULL, 0, NULL }
};

int open_dataset(dataset_t *ds, char **files, int n)
{
    char err[256];
    int i, rc;

    memset(ds, 0, sizeof(*ds));
    ds->files = files;
    if (n < 1) {
        fail("no database given; see --help");
        return EXIT_USAGE;
    }
    /* One thread uses this connection: no mutexes. */
    rc = sqlite3_open_v2(":memory:", &ds->db, SQLITE_OPEN_READWRITE
                         | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        fail("cannot start SQLite: %s", sqlite3_errstr(rc));
        return EXIT_DB;
    }
    /* Before any ATTACH: attaching reads the file's schema, and another
     * connection closing holds the file's PENDING lock for a moment. */
    sqlite3_busy_timeout(ds->db, 5000);
    sqlite3_limit(ds->db, SQLITE_LIMIT_ATTACHED, 125);
    if (n > 125) {
        fail("at most 125 databases at once");
        return EXIT_USAGE;
    }
    for (i = 0; i < n; i++) {
        mtls_store_t *st;
        char *sql;

        /* Through the core first: a clear message for a file that is not
         * ours, and no schema change by a reader. */
        rc = mtls_store_open(files[i], MTLS_STORE_READONLY, 5000, &st, err,
                             sizeof(err));
        if (rc != SQLITE_OK) {
            fail("%s: %s", files[i], err);
            return EXIT_DB;
        }
        mtls_store_close(st);
        sql = sqlite3_mprintf("ATTACH 'file:%q?mode=ro' AS db%d", files[i],
                              i);
        rc = sqlite3_exec(ds->db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            fail("%s: %s", files[i], sqlite3_errmsg(ds->db));
            return EXIT_DB;
        }
        {
            sqlite3_stmt *v;
            char q[64];
            snprintf(q, sizeof(q), "PRAGMA db%d.user_version", i);
            ds->version[i] = 0;
            if (sqlite3_prepare_v2(ds->db, q, -1, &v, NULL) == SQLITE_OK
                && sqlite3_step(v) == SQLITE_ROW) {
                ds->version[i] = sqlite3_column_int(v, 0);
            }
            sqlite3_finalize(v);
        }
        ds->n++;
    }
    for (i = 0; functions[i].name; i++) {
        sqlite3_create_function(ds->db, functions[i].name, functions[i].args,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                functions[i].fn, NULL, NULL);
    }
    if ((rc = make_views(ds)) != SQLITE_OK) {
        fail("cannot read the databases as one: %s", sqlite3_errmsg(ds->db));
        return EXIT_DB;
    }
    return EXIT_OK;
}

void close_dataset(dataset_t *ds)
{
    sqlite3_close(ds->db);
    ds->db = NULL;
}

int tail_matches(sqlite3 *db, const mtls_chain_key_t *key)
{
    unsigned char prev[MTLS_HASH_LEN], calc[MTLS_HASH_LEN];
    unsigned char stored[MTLS_HASH_LEN];
    sqlite3_stmt *st;
    int has, ok = 1, rows = 0;

    memset(prev, 0, sizeof(prev));
    if (sqlite3_prepare_v2(db, "SELECT * FROM (SELECT * FROM events ORDER "
                           "BY id DESC LIMIT 2) ORDER BY id", -1, &st,
                           NULL) != SQLITE_OK) {
        return 0;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (mtls_chain_hash_stmt(key, "events", prev, st, calc, stored,
                                 &has) != 0 || !has) {
            ok = 0;
            break;
        }
        /* The first of the two has an unknown predecessor: only the last
         * one is checked. */
        if (rows == 1 || sqlite3_column_int64(st, 0) == 1) {
            ok = memcmp(calc, stored, MTLS_HASH_LEN) == 0;
        }
        memcpy(prev, stored, MTLS_HASH_LEN);
        rows++;
    }
    sqlite3_finalize(st);
    return ok;
}

void record_access(char **files, int n, const char *what,
                   const mtls_chain_key_t *key)
{
    struct passwd *pw = getpwuid(geteuid());
    char detail[512];
    int i;

    snprintf(detail, sizeof(detail), "mtls-audit %s by %s (uid %d)", what,
             pw ? pw->pw_name : "?", (int)geteuid());
    for (i = 0; i < n; i++) {
        mtls_store_t *st;
        mtls_item_t *ev;
        char err[256];

        if (access(files[i], W_OK) != 0
            || mtls_store_open(files[i], 0, 2000, &st, err, sizeof(err))
               != SQLITE_OK) {
            fprintf(stderr, "mtls-audit: note: this read of %s is not "
                    "recorded in it (not writable)\n", files[i]);
            continue;
        }
        {
            /* An archive's chains end where the live file's begin: it
             * takes no new rows. */
            unsigned char h[MTLS_HASH_LEN];
            apr_int64_t end = 0;
            mtls_chain_cut(mtls_store_db(st), "main", "events", "end", &end,
                           h, NULL);
            if (end) {
                fprintf(stderr, "mtls-audit: note: this read of %s is not "
                        "recorded in it (an archive)\n", files[i]);
                mtls_store_close(st);
                continue;
            }
        }
        if (!tail_matches(mtls_store_db(st), key)) {
            fprintf(stderr, "mtls-audit: note: this read of %s is not "
                    "recorded in it (its chain has a key: give --key)\n",
                    files[i]);
            mtls_store_close(st);
            continue;
        }
        mtls_store_set_key(st, key && key->key ? key : NULL);
        if ((ev = mtls_item_new(MTLS_ITEM_EVENT))) {
            ev->u.ev.time_us = mtls_now_us();
            mtls_strlcpy(ev->u.ev.kind, "access", sizeof(ev->u.ev.kind));
            ev->u.ev.pid = (int)getpid();
            ev->u.ev.detail = strdup(detail);
            if (mtls_store_write(st, &ev, 1, err, sizeof(err)) != SQLITE_OK) {
                fprintf(stderr, "mtls-audit: note: this read of %s is not "
                        "recorded in it (%s)\n", files[i], err);
            }
            mtls_item_free(ev);
        }
        mtls_store_close(st);
    }
}

/* ------------------------------------------------------------------ */
/* Chain walks                                                          */

/* One thread's share: every table, over [lo[t], hi[t]]. */
typedef struct {
    const char             *path;
    const mtls_chain_key_t *key;
    apr_int64_t             lo[MTLS_ANCHOR_TABLES], hi[MTLS_ANCHOR_TABLES];
    mtls_chain_result_t     res[MTLS_ANCHOR_TABLES];
    int                     rc;
    char                    err[256];
} walk_t;

static void *walk(void *arg)
{
    walk_t *w = arg;
    mtls_store_t *st = NULL;
    int t;

    w->rc = mtls_store_open(w->path, MTLS_STORE_READONLY | MTLS_STORE_SCAN,
                            5000, &st, w->err, sizeof(w->err));
    for (t = 0; w->rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        if (w->lo[t] > w->hi[t]) continue;
        w->rc = mtls_chain_verify_range(mtls_store_db(st), "main",
                                        mtls_anchor_tables[t], w->key, w->lo[t],
                                        w->hi[t], &w->res[t]);
        if (w->rc != SQLITE_OK) {
            snprintf(w->err, sizeof(w->err), "reading %s: %s",
                     mtls_anchor_tables[t], sqlite3_errmsg(mtls_store_db(st)));
        }
    }
    mtls_store_close(st);
    mtls_chain_thread_done();
    return NULL;
}

/* Highest id of each table, to split the walk in two. */
static int max_ids(const char *path, apr_int64_t max[MTLS_ANCHOR_TABLES],
                   char *err, size_t errlen)
{
    mtls_store_t *st;
    int t, rc;

    rc = mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, err, errlen);
    for (t = 0; rc == SQLITE_OK && t < MTLS_ANCHOR_TABLES; t++) {
        sqlite3_stmt *q;
        char *sql = sqlite3_mprintf("SELECT coalesce(max(id), 0) FROM \"%w\"",
                                    mtls_anchor_tables[t]);
        max[t] = 0;
        if (sqlite3_prepare_v2(mtls_store_db(st), sql, -1, &q, NULL)
            == SQLITE_OK) {
            if (sqlite3_step(q) == SQLITE_ROW) {
                max[t] = sqlite3_column_int64(q, 0);
            }
            sqlite3_finalize(q);
        }
        sqlite3_free(sql);
    }
    if (rc == SQLITE_OK) {
        mtls_store_close(st);
    }
    return rc;
}

int verify_file(const char *path, const mtls_chain_key_t *key,
                mtls_chain_result_t res[MTLS_ANCHOR_TABLES], char *err,
                size_t errlen)
{
    apr_int64_t max[MTLS_ANCHOR_TABLES];
    walk_t *w = calloc(2, sizeof(walk_t));
    pthread_t th;
    int t, rc, threaded;

    if (!w) {
        snprintf(err, errlen, "out of memory");
        return SQLITE_NOMEM;
    }
    /* The walks read every page in file order: in 256 KB windows
     * (readahead.c), or a page at a time if that VFS is missing. */
    mtls_readahead_register();
    if ((rc = max_ids(path, max, err, errlen)) != SQLITE_OK) {
        free(w);
        return rc;
    }
    /* Each table in two halves by id, one half per core. */
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        apr_int64_t mid = max[t] / 2;
        w[0].lo[t] = 0;
        w[0].hi[t] = mid;
        w[1].lo[t] = mid + 1;
        w[1].hi[t] = INT64_MAX;
    }
    w[0].path = w[1].path = path;
    w[0].key = w[1].key = key;
    threaded = pthread_create(&th, NULL, walk, &w[1]) == 0;
    walk(&w[0]);
    if (threaded) {
        pthread_join(th, NULL);
    }
    else {
        walk(&w[1]);
    }
    if (w[0].rc != SQLITE_OK || w[1].rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", w[0].rc != SQLITE_OK ? w[0].err
                                                         : w[1].err);
        rc = w[0].rc != SQLITE_OK ? w[0].rc : w[1].rc;
        free(w);
        return rc;
    }
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        res[t] = w[0].res[t];
        mtls_chain_result_join(&res[t], &w[1].res[t]);
    }
    free(w);
    return SQLITE_OK;
}

/* ------------------------------------------------------------------ */
/* Anchors                                                              */

int check_anchors(const char *anchors, const char *db, int any_path,
                  const mtls_chain_key_t *key, int *found, char *msg,
                  size_t msglen)
{
    mtls_store_t *st;
    char line[4096], path[2048], err[256], why[256];
    long lineno = 0;
    FILE *f;
    int rc = 0, elsewhere = 0;
    (void)key;

    *found = 0;
    if (!(f = fopen(anchors, "r"))) {
        snprintf(msg, msglen, "cannot read %s: %s", anchors, strerror(errno));
        return -1;
    }
    if (mtls_store_open(db, MTLS_STORE_READONLY, 5000, &st, err, sizeof(err))
        != SQLITE_OK) {
        fclose(f);
        snprintf(msg, msglen, "%s", err);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        mtls_anchor_t a;
        int bad, other;

        lineno++;
        if (!strstr(line, "mtls_audit: anchor ")
            || mtls_anchor_parse(line, path, sizeof(path), &a) != 0
            || (!any_path && strcmp(path, db) != 0)) {
            continue;
        }
        (*found)++;
        if (mtls_anchor_check(mtls_store_db(st), &a, &bad, &other, why,
                              sizeof(why)) != SQLITE_OK) {
            snprintf(msg, msglen, "reading %s: %s", db,
                     sqlite3_errmsg(mtls_store_db(st)));
            rc = -1;
            break;
        }
        elsewhere += other > 0;
        if (bad >= 0) {
            snprintf(msg, msglen, "%s: %s (anchor at line %ld of %s)",
                     mtls_anchor_tables[bad], why, lineno, anchors);
            rc = 1;
            break;
        }
    }
    fclose(f);
    mtls_store_close(st);
    if (rc == 0 && !*found) {
        snprintf(msg, msglen, "no anchor for %s in %s", db, anchors);
        rc = 1;
    }
    else if (rc == 0 && elsewhere) {
        snprintf(msg, msglen, "%d anchors from %s hold (%d name rows on the "
                 "other side of an archive cut: those hold in that file)",
                 *found, anchors, elsewhere);
    }
    else if (rc == 0) {
        snprintf(msg, msglen, "%d anchors from %s hold", *found, anchors);
    }
    return rc;
}
