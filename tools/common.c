/*
 * common.c -- what every mtls-audit command shares: errors, options,
 * times, output formats, the data set and its SQL functions.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tool.h"
#include "mtls_cert.h"
#include "mtls_json.h"
#include "mtls_store.h"
#include "mtls_summary.h"
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

static int gather_files(char ***files, int *n);
/* The files the command was given (parse_opts), for every command. */
static fileset_t the_set;

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
    /* Directories, globs in any order: the files in their chains' order
     * (archive takes its two files as given). */
    if (strcmp(cmd, "archive") != 0) {
        return gather_files(files, nfiles);
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

/* The characters of UTF-8 text s, and in *cut the bytes of its first max
 * characters: a character starts at every byte that is not a continuation
 * byte (10xxxxxx), so a cell is never cut inside a character and a column
 * is as wide on a terminal as its characters. */
static int utf8_chars(const char *s, int max, int *cut)
{
    int n = 0;
    const char *p;

    for (p = s; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && n++ == max) {
            break;
        }
    }
    if (cut) {
        *cut = (int)(p - s);
    }
    return n > max ? max : n;
}

static void table_line(FILE *f, char **cells, const int *width, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        const char *v = cells[i] ? cells[i] : "";
        int bytes, chars = utf8_chars(v, width[i], &bytes);
        fprintf(f, "%s%.*s", i ? "  " : "", bytes, v);
        if (i < n - 1) {
            fprintf(f, "%*s", width[i] - chars, "");
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
        width[i] = utf8_chars(sqlite3_column_name(stmt, i), 64, NULL);
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
                w = row[i] ? utf8_chars(row[i], 64, NULL) : 0;
                if (w > width[i]) width[i] = w;
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

int has_pan(const char *s)
{
    return mtls_has_pan(s);     /* as the summaries count them */
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

/* The views across files: eponymous virtual tables of ds->db, each
 * reading its arm over file 0, then file 1, ..., each on the connection
 * that has the file attached (ds_db).  SQLite attaches at most
 * SQLITE_MAX_ATTACHED files to one connection, so a UNION ALL view over
 * every file in one connection cannot be had beyond that. */
typedef struct {
    dataset_t  *ds;
    char       *arm, *old;
} union_aux_t;

typedef struct {
    sqlite3_vtab  base;
    union_aux_t  *aux;
} union_vtab_t;

typedef struct {
    sqlite3_vtab_cursor  base;
    int                  i;             /* the file being read */
    sqlite3_stmt        *st;            /* its arm, on a row; NULL at eof */
    sqlite3_int64        rowid;
} union_cur_t;

static char *union_arm(const union_aux_t *a, int i)
{
    return sqlite3_mprintf(a->arm, a->ds->files[i],
                           a->ds->version[i] < 3 ? a->old : "", i, i, i);
}

static void union_free(void *p)
{
    union_aux_t *a = p;
    if (!a) return;
    sqlite3_free(a->arm);
    sqlite3_free(a->old);
    sqlite3_free(a);
}

static int union_connect(sqlite3 *db, void *paux, int argc,
                         const char *const *argv, sqlite3_vtab **out,
                         char **pzerr)
{
    union_aux_t *a = paux;
    sqlite3 *fdb = ds_db(a->ds, 0);
    sqlite3_stmt *st = NULL;
    sqlite3_str *decl;
    union_vtab_t *vt;
    char *sql = union_arm(a, 0), *d;
    int rc, k, n;

    (void)argc;
    (void)argv;
    /* Its columns: those of the arm over the first file. */
    rc = sql ? sqlite3_prepare_v2(fdb, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        *pzerr = sqlite3_mprintf("%s: %s", a->ds->files[0],
                                 sqlite3_errmsg(fdb));
        return rc;
    }
    decl = sqlite3_str_new(db);
    sqlite3_str_appendall(decl, "CREATE TABLE x(");
    n = sqlite3_column_count(st);
    for (k = 0; k < n; k++) {
        const char *name = sqlite3_column_name(st, k);
        int j, dup = 0;
        for (j = 0; j < k; j++) {
            if (!sqlite3_stricmp(name, sqlite3_column_name(st, j))) dup = 1;
        }
        /* A name twice (as a view names it "name:1"). */
        sqlite3_str_appendf(decl, dup ? "%s\"%w:%d\"" : "%s\"%w\"",
                            k ? ", " : "", name, k);
    }
    sqlite3_str_appendall(decl, ")");
    sqlite3_finalize(st);
    d = sqlite3_str_finish(decl);
    rc = d ? sqlite3_declare_vtab(db, d) : SQLITE_NOMEM;
    sqlite3_free(d);
    if (rc != SQLITE_OK) return rc;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    if (!(vt = sqlite3_malloc(sizeof(*vt)))) return SQLITE_NOMEM;
    memset(vt, 0, sizeof(*vt));
    vt->aux = a;
    *out = &vt->base;
    return SQLITE_OK;
}

static int union_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int union_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    (void)vt;
    /* Every row of every file (the arms choose their own indexes). */
    info->estimatedCost = 1e6;
    info->estimatedRows = 100000;
    return SQLITE_OK;
}

static int union_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    union_cur_t *c = sqlite3_malloc(sizeof(*c));
    (void)vt;
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof(*c));
    *out = &c->base;
    return SQLITE_OK;
}

static int union_close(sqlite3_vtab_cursor *cur)
{
    union_cur_t *c = (union_cur_t *)cur;
    sqlite3_finalize(c->st);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* The next row: of the file being read, else of the next file that has
 * one.  Each file's statement runs in its own read transaction, and is
 * finalized (its locks released) before the next file's begins. */
static int union_step(union_cur_t *c)
{
    union_aux_t *a = ((union_vtab_t *)c->base.pVtab)->aux;
    int rc;

    for (;;) {
        if (c->st) {
            rc = sqlite3_step(c->st);
            if (rc == SQLITE_ROW) {
                c->rowid++;
                return SQLITE_OK;
            }
            sqlite3_finalize(c->st);
            c->st = NULL;
            if (rc != SQLITE_DONE) break;
            /* The pages it read leave the cache: with hundreds of files
             * (daily ones over a year), each kept at its cache size
             * would add up. */
            sqlite3_db_release_memory(ds_db(a->ds, c->i));
            c->i++;
        }
        if (c->i >= a->ds->n) return SQLITE_OK;
        {
            char *sql = union_arm(a, c->i);
            rc = sql ? sqlite3_prepare_v2(ds_db(a->ds, c->i), sql, -1,
                                          &c->st, NULL) : SQLITE_NOMEM;
            sqlite3_free(sql);
        }
        if (rc != SQLITE_OK) break;
    }
    sqlite3_free(c->base.pVtab->zErrMsg);
    c->base.pVtab->zErrMsg = sqlite3_mprintf("%s: %s", a->ds->files[c->i],
                                             sqlite3_errmsg(ds_db(a->ds,
                                                                  c->i)));
    c->i = a->ds->n;
    return rc;
}

static int union_filter(sqlite3_vtab_cursor *cur, int idxnum,
                        const char *idxstr, int argc, sqlite3_value **argv)
{
    union_cur_t *c = (union_cur_t *)cur;
    (void)idxnum;
    (void)idxstr;
    (void)argc;
    (void)argv;
    sqlite3_finalize(c->st);
    c->st = NULL;
    c->i = 0;
    c->rowid = 0;
    return union_step(c);
}

static int union_next(sqlite3_vtab_cursor *cur)
{
    return union_step((union_cur_t *)cur);
}

static int union_eof(sqlite3_vtab_cursor *cur)
{
    return ((union_cur_t *)cur)->st == NULL;
}

static int union_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx,
                        int k)
{
    union_cur_t *c = (union_cur_t *)cur;
    sqlite3_result_value(ctx, sqlite3_column_value(c->st, k));
    return SQLITE_OK;
}

static int union_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    *rowid = ((union_cur_t *)cur)->rowid;
    return SQLITE_OK;
}

static const sqlite3_module union_module = {
    .iVersion = 0,
    .xCreate = NULL,            /* eponymous only */
    .xConnect = union_connect,
    .xBestIndex = union_best_index,
    .xDisconnect = union_disconnect,
    .xOpen = union_open,
    .xClose = union_close,
    .xFilter = union_filter,
    .xNext = union_next,
    .xEof = union_eof,
    .xColumn = union_column,
    .xRowid = union_rowid,
};

sqlite3 *ds_db(const dataset_t *ds, int i)
{
    return ds->conn && i >= 0 && i < ds->n ? ds->conn[i / ds->per] : NULL;
}

const char *ds_errmsg(const dataset_t *ds)
{
    int i;

    if (ds->db && sqlite3_errcode(ds->db) != SQLITE_OK) {
        return sqlite3_errmsg(ds->db);
    }
    for (i = 0; ds->conn && i < ds->nconn; i++) {
        if (ds->conn[i] && sqlite3_errcode(ds->conn[i]) != SQLITE_OK) {
            return sqlite3_errmsg(ds->conn[i]);
        }
    }
    return ds->db ? sqlite3_errmsg(ds->db) : "out of memory";
}

int ds_union(dataset_t *ds, const char *name, const char *arm,
             const char *old)
{
    union_aux_t *a = sqlite3_malloc(sizeof(*a));

    if (!a) return SQLITE_NOMEM;
    a->ds = ds;
    a->arm = sqlite3_mprintf("%s", arm);
    a->old = sqlite3_mprintf("%s", old);
    if (!a->arm || !a->old) {
        union_free(a);
        return SQLITE_NOMEM;
    }
    /* On failure SQLite calls union_free itself. */
    return sqlite3_create_module_v2(ds->db, name, &union_module, a,
                                    union_free);
}

static int make_views(dataset_t *ds)
{
    int rc;

    /* A file of schema 1 or 2 has no revocation columns (schema 3,
     * after hash): NULL in their place. */
    if ((rc = ds_union(ds, "hs", "SELECT %Q AS source, h.*%s, c.sha256, "
            "lower(hex(c.sha256)) AS cert_sha256, c.subject_dn, c.issuer_dn, "
            "c.serial, c.not_before, c.not_after, c.key_type, c.key_bits, "
            "c.sig_alg FROM db%d.handshakes h LEFT JOIN db%d.certificates c "
            "ON c.id = h.cert_id", MTLS_OLD_HS_COLS)) != SQLITE_OK) {
        return rc;
    }
    if ((rc = ds_union(ds, "ev", "SELECT %Q AS source, *%s FROM "
                       "db%d.events", "")) != SQLITE_OK) {
        return rc;
    }
    return ds_union(ds, "certs", "SELECT %Q AS source%s, id, sha256, "
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

/* A connection of the data set: :memory:, one thread (no mutexes),
 * hardened (a file's views and triggers are never trusted), with the
 * tool's functions. */
static int ds_conn(sqlite3 **db)
{
    int rc, i;

    rc = sqlite3_open_v2(":memory:", db, SQLITE_OPEN_READWRITE
                         | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        fail("cannot start SQLite: %s", sqlite3_errstr(rc));
        return EXIT_DB;
    }
    /* Before any ATTACH: attaching reads the file's schema, and another
     * connection closing holds the file's PENDING lock for a moment. */
    sqlite3_busy_timeout(*db, 5000);
    if (mtls_db_harden(*db) != SQLITE_OK) {
        fail("cannot start SQLite: %s", sqlite3_errmsg(*db));
        return EXIT_DB;
    }
    /* DIRECTONLY: for the tool's own statements, never for a view or a
     * trigger that came with a file. */
    for (i = 0; functions[i].name; i++) {
        sqlite3_create_function(*db, functions[i].name, functions[i].args,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC
                                | SQLITE_DIRECTONLY, NULL,
                                functions[i].fn, NULL, NULL);
    }
    return EXIT_OK;
}

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
    if ((rc = ds_conn(&ds->db)) != EXIT_OK) return rc;
    /* The files, as many to a connection as this SQLite attaches
     * (SQLITE_MAX_ATTACHED: 10 by default, 125 at most). */
    sqlite3_limit(ds->db, SQLITE_LIMIT_ATTACHED, 125);
    ds->per = sqlite3_limit(ds->db, SQLITE_LIMIT_ATTACHED, -1);
    if (ds->per < 1) ds->per = 1;
    ds->nconn = (n + ds->per - 1) / ds->per;
    ds->conn = calloc((size_t)ds->nconn, sizeof(*ds->conn));
    ds->version = calloc((size_t)n, sizeof(*ds->version));
    if (!ds->conn || !ds->version) {
        fail("out of memory");
        return EXIT_DB;
    }
    for (i = 0; i < n; i++) {
        mtls_store_t *st;
        sqlite3 *db;
        char *sql;

        if (i % ds->per == 0) {
            if ((rc = ds_conn(&ds->conn[i / ds->per])) != EXIT_OK) {
                return rc;
            }
            sqlite3_limit(ds->conn[i / ds->per], SQLITE_LIMIT_ATTACHED, 125);
        }
        db = ds->conn[i / ds->per];
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
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            fail("%s: %s", files[i], sqlite3_errmsg(db));
            return EXIT_DB;
        }
        {
            sqlite3_stmt *v;
            char q[64];
            snprintf(q, sizeof(q), "PRAGMA db%d.user_version", i);
            ds->version[i] = 0;
            if (sqlite3_prepare_v2(db, q, -1, &v, NULL) == SQLITE_OK
                && sqlite3_step(v) == SQLITE_ROW) {
                ds->version[i] = sqlite3_column_int(v, 0);
            }
            sqlite3_finalize(v);
            /* A small cache for each file: these connections look rows up
             * and read the small tables (the scan's workers read the big
             * ones on their own connections), and all files stay open
             * together, hundreds with daily files. */
            snprintf(q, sizeof(q), "PRAGMA db%d.cache_size = -256", i);
            sqlite3_exec(db, q, NULL, NULL, NULL);
        }
        ds->n++;
        /* dbI_v_handshakes, ...: the migrations' views over this file's
         * tables, in its connection; the file's own views are never
         * read. */
        sql = sqlite3_mprintf("db%d", i);
        {
            char prefix[16];
            snprintf(prefix, sizeof(prefix), "db%d_", i);
            rc = sql ? mtls_schema_temp_views(db, sql,
                                              mtls_schema_user_version(db,
                                                                       sql),
                                              prefix, err, sizeof(err))
                     : SQLITE_NOMEM;
        }
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            fail("%s: %s", files[i], err);
            return EXIT_DB;
        }
    }
    if ((rc = make_views(ds)) != SQLITE_OK) {
        fail("cannot read the databases as one: %s", sqlite3_errmsg(ds->db));
        return EXIT_DB;
    }
    return EXIT_OK;
}

void close_dataset(dataset_t *ds)
{
    int i;

    /* The views first: their cursors hold statements of the files'
     * connections. */
    sqlite3_close(ds->db);
    ds->db = NULL;
    for (i = 0; ds->conn && i < ds->nconn; i++) {
        sqlite3_close(ds->conn[i]);
    }
    free(ds->conn);
    ds->conn = NULL;
    ds->nconn = 0;
    free(ds->version);
    ds->version = NULL;
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

int schema_file(const char *path, int *ndiff, char *msg, size_t msglen)
{
    mtls_store_t *st;
    int rc;

    if (mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, msg, msglen)
        != SQLITE_OK) {
        return -1;
    }
    rc = mtls_schema_check(mtls_store_db(st), "main", ndiff, msg, msglen);
    mtls_store_close(st);
    return rc == SQLITE_OK ? 0 : -1;
}

void record_access(char **files, int n, const char *what,
                   const mtls_chain_key_t *key)
{
    struct passwd *pw = getpwuid(geteuid());
    char detail[512], **set = NULL;
    int i, recorded = 0, closed = 0;

    snprintf(detail, sizeof(detail), "mtls-audit %s by %s (uid %d)", what,
             pw ? pw->pw_name : "?", (int)geteuid());
    /* Every file given, also those a period left unread: the read is
     * recorded in the live one (archives and sealed files take no rows). */
    if (the_set.n > n && (set = calloc((size_t)the_set.n, sizeof(char *)))) {
        for (i = 0; i < the_set.n; i++) set[i] = the_set.f[i].path;
        files = set;
        n = the_set.n;
    }
    for (i = 0; i < n; i++) {
        mtls_store_t *st;
        mtls_item_t *ev;
        char err[256], why[512];
        int ndiff = 0;

        /* A trigger of someone else's would run with our rights: the
         * schema is checked before the file is opened for writing. */
        if (access(files[i], W_OK) == 0
            && (schema_file(files[i], &ndiff, why, sizeof(why)) != 0
                || ndiff)) {
            fprintf(stderr, "mtls-audit: note: this read of %s is not "
                    "recorded in it (its schema is not the one its version "
                    "defines: %s; see mtls-audit verify)\n", files[i], why);
            continue;
        }
        /* An archive's (or a sealed file's) chains end where the next
         * file's begin: it takes no new rows, and is not even opened for
         * writing, which would bring its schema up to date and change
         * the bytes its seal hashed. */
        if (mtls_store_open(files[i], MTLS_STORE_READONLY, 2000, &st, err,
                            sizeof(err)) == SQLITE_OK) {
            unsigned char h[MTLS_HASH_LEN];
            apr_int64_t end = 0;
            mtls_chain_cut(mtls_store_db(st), "main", "events", "end", &end,
                           h, NULL);
            mtls_store_close(st);
            if (end) {
                /* Among many files, the live one records the read. */
                closed++;
                if (n == 1) {
                    const file_meta_t *m = file_meta(files[i]);
                    fprintf(stderr, "mtls-audit: note: this read of %s is "
                            "not recorded in it (%s)\n", files[i],
                            m && m->seal_id ? "a file sealed by a rotation"
                                            : "an archive");
                }
                continue;
            }
        }
        if (access(files[i], W_OK) != 0
            || mtls_store_open(files[i], MTLS_STORE_NOFOLLOW, 2000, &st, err,
                               sizeof(err))
               != SQLITE_OK) {
            fprintf(stderr, "mtls-audit: note: this read of %s is not "
                    "recorded in it (not writable)\n", files[i]);
            continue;
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
            else {
                recorded++;
            }
            mtls_item_free(ev);
        }
        mtls_store_close(st);
    }
    if (!recorded && closed && n > 1) {
        fprintf(stderr, "mtls-audit: note: this read is recorded in none of "
                "the files: %d of them are archives or rotated files, which "
                "take no rows\n", closed);
    }
    free(set);
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
        w[0].lo[t] = INT64_MIN;     /* a row id below 1 is forged: read */
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

/* One file of the set, as the anchors see it. */
typedef struct {
    mtls_store_t *st;
    struct stat   sb;
    int           have_sb;      /* sb is valid */
    apr_int64_t   base[MTLS_ANCHOR_TABLES];   /* its chain starts after */
    apr_int64_t   end[MTLS_ANCHOR_TABLES];    /* an archive: ends at */
    unsigned char bhash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    unsigned char ehash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    int           pred[MTLS_ANCHOR_TABLES];   /* the file holding the
                                               * rows up to base, or -1 */
    int           archive;      /* has an end: an archive */
    int           named;        /* anchors naming it (one file given:
                                 * every anchor) */
    int           taken;        /* of them, naming another path */
    long          rows;         /* anchored rows of those anchors */
    long          away;         /* of them, in no file given */
    long          here;         /* anchored rows checked in it */
    int           bad;          /* something does not hold: why */
    char          why[768];
} afile_t;

int same_path(const char *a, const char *b)
{
    struct stat sa, sb;

    return !strcmp(a, b) || (stat(a, &sa) == 0 && stat(b, &sb) == 0
                             && sa.st_dev == sb.st_dev
                             && sa.st_ino == sb.st_ino);
}

/* Is path the file f (the same name, or the same inode)? */
static int same_file(const char *path, const char *name, const afile_t *f)
{
    struct stat sb;

    if (!strcmp(path, name)) {
        return 1;
    }
    return f->have_sb && stat(path, &sb) == 0 && sb.st_dev == f->sb.st_dev
           && sb.st_ino == f->sb.st_ino;
}

/* The stored hash of row id of table in db: 1 found, 0 no such row, -1
 * an error. */
static int stored_hash(sqlite3 *db, const char *table, apr_int64_t id,
                       unsigned char hash[MTLS_HASH_LEN])
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("SELECT hash FROM \"%w\" WHERE id = ?1",
                                table);
    int rc = sql ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;

    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    memset(hash, 0, MTLS_HASH_LEN);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == MTLS_HASH_LEN) {
        memcpy(hash, sqlite3_column_blob(st, 0), MTLS_HASH_LEN);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Which file holds the rows of table t up to f[i].base[t]: the one whose
 * chain ends there with that hash (or, a move interrupted, goes on past
 * it with that row), else the one the cut names (the path given to
 * archive), which then has lost rows at its end: a finding in it.  -1
 * when none of the files given; -2 on a read error. */
static int find_pred(afile_t *f, char **files, int n, int i, int t,
                     const char *other)
{
    unsigned char h[MTLS_HASH_LEN];
    apr_int64_t b = f[i].base[t];
    int j, r;

    for (j = 0; j < n; j++) {
        if (j != i && f[j].end[t] == b
            && !memcmp(f[j].ehash[t], f[i].bhash[t], MTLS_HASH_LEN)) {
            return j;
        }
    }
    for (j = 0; j < n; j++) {
        if (j == i || f[j].end[t] <= b || f[j].base[t] >= b) continue;
        r = stored_hash(mtls_store_db(f[j].st), mtls_anchor_tables[t], b, h);
        if (r < 0) return -2;
        if (r && !memcmp(h, f[i].bhash[t], MTLS_HASH_LEN)) return j;
    }
    for (j = 0; other && j < n; j++) {
        if (j == i || !same_file(other, files[j], &f[j])) continue;
        if (!f[j].bad) {
            f[j].bad = 1;
            if (f[j].end[t] < b) {
                snprintf(f[j].why, sizeof(f[j].why), "its %s end at row %lld, "
                         "but %s, whose cut names it, goes on after row "
                         "%lld: rows %lld-%lld are in neither file",
                         mtls_anchor_tables[t], (long long)f[j].end[t],
                         files[i], (long long)b, (long long)f[j].end[t] + 1,
                         (long long)b);
            }
            else {
                snprintf(f[j].why, sizeof(f[j].why), "its row %lld of %s is "
                         "not the one %s, whose cut names it, goes on from",
                         (long long)b, mtls_anchor_tables[t], files[i]);
            }
        }
        return j;
    }
    return -1;
}

/* Check table t's anchored row (id, hash) of an anchor naming file o:
 * in o, or in the file along o's cuts that holds it now.  Counts it; a
 * row that does not hold marks the file that holds it.  Returns the file
 * that held it, -1 when no file given does, -2 on a read error. */
static int check_anchored_row(afile_t *f, char **files, int n, int o, int t,
                              apr_int64_t id, const unsigned char *hash,
                              long lineno, const char *anchors)
{
    const char *table = mtls_anchor_tables[t];
    unsigned char h[MTLS_HASH_LEN];
    int cur = o, steps, k, r;

    for (steps = 0; cur >= 0 && steps <= 2 * n; steps++) {
        if (id > f[cur].base[t] && (!f[cur].end[t] || id <= f[cur].end[t])) {
            break;                              /* in cur */
        }
        if (id > f[cur].base[t]) {              /* after an archive's end */
            for (k = 0; k < n && f[k].pred[t] != cur; k++);
            cur = k < n ? k : -1;
            continue;
        }
        if (f[cur].pred[t] >= 0) {              /* before a live base */
            cur = f[cur].pred[t];
            continue;
        }
        if (id == f[cur].base[t]) {             /* the cut's own record */
            f[cur].here++;
            if (memcmp(f[cur].bhash[t], hash, MTLS_HASH_LEN) && !f[cur].bad) {
                f[cur].bad = 1;
                snprintf(f[cur].why, sizeof(f[cur].why), "%s: anchored row "
                         "%lld was archived with another hash than its "
                         "anchor (anchor at line %ld of %s)", table,
                         (long long)id, lineno, anchors);
            }
            return cur;
        }
        return -1;
    }
    if (cur < 0 || steps > 2 * n) {
        return -1;
    }
    if ((r = stored_hash(mtls_store_db(f[cur].st), table, id, h)) < 0) {
        return -2;
    }
    f[cur].here++;
    if (!f[cur].bad && (!r || memcmp(h, hash, MTLS_HASH_LEN))) {
        f[cur].bad = 1;
        snprintf(f[cur].why, sizeof(f[cur].why), "%s: anchored row %lld %s "
                 "(anchor at line %ld of %s, naming %s)", table, (long long)id,
                 !r ? "is missing: rows were removed from the end"
                    : "has another hash than its anchor: the table was "
                      "rewritten", lineno, anchors, files[o]);
    }
    return cur;
}

int check_anchor_files(const char *anchors, char **files, int n,
                       anchor_info_t *info, char *err, size_t errlen)
{
    char line[4096], path[2048], last[2048] = "";
    afile_t *f = calloc((size_t)n, sizeof(*f));
    long *held = calloc((size_t)n * (size_t)n, sizeof(long)), lineno = 0;
    int i, j, t, k, rc = 0, owner = -1, pass, same = 1;
    FILE *fp = NULL;

    if (!f || !held) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
        goto done;
    }
    if (!(fp = fopen(anchors, "r"))) {
        snprintf(err, errlen, "cannot read %s: %s", anchors, strerror(errno));
        rc = -1;
        goto done;
    }
    /* Each file's cuts, and which file holds the rows before each base. */
    for (i = 0; i < n; i++) {
        char e[256];
        if (mtls_store_open(files[i], MTLS_STORE_READONLY, 5000, &f[i].st, e,
                            sizeof(e)) != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", files[i], e);
            rc = -1;
            goto done;
        }
        f[i].have_sb = stat(files[i], &f[i].sb) == 0;
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            sqlite3 *db = mtls_store_db(f[i].st);
            if (mtls_chain_cut(db, "main", mtls_anchor_tables[t], "base",
                               &f[i].base[t], f[i].bhash[t], NULL)
                != SQLITE_OK
                || mtls_chain_cut(db, "main", mtls_anchor_tables[t], "end",
                                  &f[i].end[t], f[i].ehash[t], NULL)
                   != SQLITE_OK) {
                snprintf(err, errlen, "%s: %s", files[i], sqlite3_errmsg(db));
                rc = -1;
                goto done;
            }
            f[i].archive |= f[i].end[t] > 0;
            f[i].pred[t] = -1;
        }
    }
    for (i = 0; i < n; i++) {
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            char *other = NULL;
            apr_int64_t id;
            unsigned char h[MTLS_HASH_LEN];
            if (!f[i].base[t]) continue;
            mtls_chain_cut(mtls_store_db(f[i].st), "main",
                           mtls_anchor_tables[t], "base", &id, h, &other);
            f[i].pred[t] = find_pred(f, files, n, i, t, other);
            sqlite3_free(other);
            if (f[i].pred[t] == -2) {
                snprintf(err, errlen, "reading %s", files[i]);
                rc = -1;
                goto done;
            }
        }
    }
    /* Every anchor naming one of the files (with one file: every one). */
    while (fgets(line, sizeof(line), fp)) {
        mtls_anchor_t a;

        lineno++;
        if (!strstr(line, "mtls_audit: anchor ")
            || mtls_anchor_parse(line, path, sizeof(path), &a) != 0) {
            continue;
        }
        if (n == 1) {
            owner = 0;
            if (strcmp(path, last) != 0) {
                snprintf(last, sizeof(last), "%s", path);
                same = same_file(path, files[0], &f[0]);
            }
            f[0].taken += !same;        /* names another path: taken */
        }
        else if (strcmp(path, last) != 0) {
            for (owner = 0; owner < n
                 && !same_file(path, files[owner], &f[owner]); owner++);
            owner = owner < n ? owner : -1;
            snprintf(last, sizeof(last), "%s", path);
        }
        if (owner < 0) {
            continue;
        }
        f[owner].named++;
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            if (a.id[t] == 0) continue;         /* empty then */
            f[owner].rows++;
            k = check_anchored_row(f, files, n, owner, t, a.id[t], a.hash[t],
                                   lineno, anchors);
            if (k == -2) {
                snprintf(err, errlen, "reading %s", files[owner]);
                rc = -1;
                goto done;
            }
            if (k < 0) {
                f[owner].away++;
            }
            else {
                held[(size_t)owner * (size_t)n + (size_t)k]++;
            }
        }
    }
    /* What each file's anchors came to. */
    for (i = 0; i < n; i++) {
        anchor_info_t *in = &info[i];
        size_t off = 0;

        memset(in, 0, sizeof(*in));
        if (f[i].bad) {
            in->rc = 1;
            in->anchored = -1;
            snprintf(in->msg, sizeof(in->msg), "%s", f[i].why);
        }
        else if (f[i].named || f[i].here) {
            in->anchored = 1;
            if (f[i].named) {
                off += (size_t)snprintf(in->msg, sizeof(in->msg), "%d anchors "
                        "from %s %s; of their %ld anchored rows, %ld "
                        "hold here", f[i].named, anchors, f[i].taken
                        ? "(the only file given: taken for it whatever path "
                          "they name)" : "name it", f[i].rows - f[i].away,
                        held[(size_t)i * (size_t)n + (size_t)i]);
                for (j = 0; j < n && off < sizeof(in->msg); j++) {
                    long c = held[(size_t)i * (size_t)n + (size_t)j];
                    if (j != i && c) {
                        off += (size_t)snprintf(in->msg + off,
                                sizeof(in->msg) - off, ", %ld were checked in "
                                "%s", c, files[j]);
                    }
                }
                if (f[i].away && off < sizeof(in->msg)) {
                    off += (size_t)snprintf(in->msg + off,
                            sizeof(in->msg) - off, "; %ld more on the other "
                            "side of an archive cut, in a file not given "
                            "(give it too to check them)", f[i].away);
                }
            }
            else {
                off += (size_t)snprintf(in->msg, sizeof(in->msg),
                                        "no anchor names it");
            }
            for (j = 0; j < n && off < sizeof(in->msg); j++) {
                long c = held[(size_t)j * (size_t)n + (size_t)i];
                if (j != i && c) {
                    off += (size_t)snprintf(in->msg + off,
                            sizeof(in->msg) - off, "; %ld anchored rows of "
                            "%s hold here", c, files[j]);
                }
            }
        }
        else if (!f[i].archive) {
            in->rc = 1;
            snprintf(in->msg, sizeof(in->msg), "no anchor for %s in %s",
                     files[i], anchors);
        }
        else {
            snprintf(in->msg, sizeof(in->msg), "no anchor in %s names it or "
                     "a row it holds: an archive, checked through its cut "
                     "(give the file it continues into too)", anchors);
        }
    }
    /* An archive no anchor covers is covered through its cut by a file it
     * continues into whose anchors hold (archives in a row: n passes). */
    for (pass = 0; pass < n; pass++) {
        for (i = 0; i < n; i++) {
            if (info[i].anchored || info[i].rc || !f[i].archive) continue;
            for (j = 0; j < n; j++) {
                for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
                    if (f[j].pred[t] == i && info[j].anchored == 1
                        && !info[i].anchored) {
                        info[i].anchored = 1;
                        snprintf(info[i].msg, sizeof(info[i].msg), "no "
                                 "anchor names it or a row it holds; its "
                                 "chains end where those of %s begin, whose "
                                 "anchors hold", files[j]);
                    }
                }
            }
        }
    }
done:
    if (fp) {
        fclose(fp);
    }
    for (i = 0; f && i < n; i++) {
        mtls_store_close(f[i].st);
    }
    free(f);
    free(held);
    return rc;
}
/* ------------------------------------------------------------------ */
/* Many files: directories, order by chains, time ranges               */

/* What one file's chains and events say, for ordering (freed after). */
typedef struct {
    apr_int64_t   base[MTLS_ANCHOR_TABLES], end[MTLS_ANCHOR_TABLES];
    unsigned char bhash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    unsigned char ehash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    char         *bother[MTLS_ANCHOR_TABLES], *eother[MTLS_ANCHOR_TABLES];
    apr_int64_t   minid[MTLS_ANCHOR_TABLES], maxid[MTLS_ANCHOR_TABLES];
    unsigned char minhash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
    int           has_base, has_end, nsucc, npred;
} cuts_t;

const fileset_t *files_set(void)
{
    return &the_set;
}

file_meta_t *file_meta(const char *path)
{
    int i;
    for (i = 0; path && i < the_set.n; i++) {
        if (the_set.f[i].path == path || !strcmp(the_set.f[i].path, path)) {
            return &the_set.f[i];
        }
    }
    return NULL;
}

void files_forget(void)
{
    free(the_set.f);
    memset(&the_set, 0, sizeof(the_set));
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first integer of sql's first row, bound to ?1 = a; 0 if none. */
static apr_int64_t one_int(sqlite3 *db, const char *sql, apr_int64_t a,
                           int *null)
{
    sqlite3_stmt *st;
    apr_int64_t v = 0;

    if (null) *null = 1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    if (sqlite3_bind_parameter_count(st) >= 1) sqlite3_bind_int64(st, 1, a);
    if (sqlite3_step(st) == SQLITE_ROW
        && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        v = sqlite3_column_int64(st, 0);
        if (null) *null = 0;
    }
    sqlite3_finalize(st);
    return v;
}

/* Read path's cuts, first rows, seal and time range (no scan: the time
 * index, the ends of each table by id, or the seal event). */
static int read_cuts(const char *path, file_meta_t *m, cuts_t *c)
{
    mtls_store_t *st;
    sqlite3 *db;
    sqlite3_stmt *q;
    char err[256];
    int t, null;

    if (mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, err,
                        sizeof(err)) != SQLITE_OK) {
        return -1;
    }
    db = mtls_store_db(st);
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        const char *tb = mtls_anchor_tables[t];
        char sql[160];
        if (mtls_chain_cut(db, "main", tb, "base", &c->base[t], c->bhash[t],
                           &c->bother[t]) != SQLITE_OK
            || mtls_chain_cut(db, "main", tb, "end", &c->end[t], c->ehash[t],
                              &c->eother[t]) != SQLITE_OK) {
            mtls_store_close(st);
            return -1;
        }
        c->has_base |= c->base[t] > 0;
        c->has_end |= c->end[t] > 0;
        snprintf(sql, sizeof(sql), "SELECT max(id) FROM \"%s\"", tb);
        c->maxid[t] = one_int(db, sql, 0, NULL);
        snprintf(sql, sizeof(sql), "SELECT id, hash FROM \"%s\" ORDER BY id "
                 "LIMIT 1", tb);
        if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
            if (sqlite3_step(q) == SQLITE_ROW
                && sqlite3_column_bytes(q, 1) == MTLS_HASH_LEN) {
                c->minid[t] = sqlite3_column_int64(q, 0);
                memcpy(c->minhash[t], sqlite3_column_blob(q, 1),
                       MTLS_HASH_LEN);
            }
            sqlite3_finalize(q);
        }
    }
    m->closed = c->has_end;
    m->hs_first = one_int(db, "SELECT min(time_us) FROM handshakes", 0, NULL);
    m->hs_last = one_int(db, "SELECT max(time_us) FROM handshakes", 0, NULL);
    /* The seal is the file's last event (mtls_store_rotate). */
    if (sqlite3_prepare_v2(db, "SELECT id, json_extract(detail, "
            "'$.first_us'), json_extract(detail, '$.last_us') FROM (SELECT * "
            "FROM events ORDER BY id DESC LIMIT 16) WHERE kind = 'seal' AND "
            "json_valid(detail) ORDER BY id DESC LIMIT 1", -1, &q, NULL)
        == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW) {
            m->seal_id = sqlite3_column_int64(q, 0);
            if (sqlite3_column_type(q, 1) == SQLITE_INTEGER
                && sqlite3_column_type(q, 2) == SQLITE_INTEGER) {
                m->first_us = sqlite3_column_int64(q, 1);
                m->last_us = sqlite3_column_int64(q, 2);
                m->has_range = m->first_us <= m->last_us;
                m->range_from = "seal";
            }
        }
        sqlite3_finalize(q);
    }
    if (!m->has_range) {
        /* Handshakes by their time index; requests and events by their
         * first and last rows (written in time order). */
        static const char *const ends[] = {
            "SELECT min(time_us) FROM handshakes",
            "SELECT max(time_us) FROM handshakes",
            "SELECT time_us FROM requests ORDER BY id LIMIT 1",
            "SELECT time_us FROM requests ORDER BY id DESC LIMIT 1",
            "SELECT time_us FROM events ORDER BY id LIMIT 1",
            "SELECT time_us FROM events ORDER BY id DESC LIMIT 1",
        };
        int k;
        for (k = 0; k < 6; k++) {
            apr_int64_t v = one_int(db, ends[k], 0, &null);
            if (null) continue;
            if (!m->has_range) {
                m->first_us = m->last_us = v;
                m->has_range = 1;
            }
            if (v < m->first_us) m->first_us = v;
            if (v > m->last_us) m->last_us = v;
        }
        m->range_from = "index";
    }
    mtls_store_close(st);
    return 0;
}

/* Does the file at path hold row id of table with that hash? */
static int holds_row(const char *path, const char *table, apr_int64_t id,
                     const unsigned char *hash)
{
    mtls_store_t *st;
    sqlite3_stmt *q;
    char err[256], *sql;
    int yes = 0;

    if (mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, err,
                        sizeof(err)) != SQLITE_OK) {
        return 0;
    }
    sql = sqlite3_mprintf("SELECT hash FROM \"%w\" WHERE id = ?1", table);
    if (sql && sqlite3_prepare_v2(mtls_store_db(st), sql, -1, &q, NULL)
        == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        yes = sqlite3_step(q) == SQLITE_ROW
              && sqlite3_column_bytes(q, 0) == MTLS_HASH_LEN
              && !memcmp(sqlite3_column_blob(q, 0), hash, MTLS_HASH_LEN);
        sqlite3_finalize(q);
    }
    sqlite3_free(sql);
    mtls_store_close(st);
    return yes;
}

/* Does b's chain go on exactly where a's ends (every table cut in both
 * at the same row with the same hash)? */
static int continues(const cuts_t *a, const cuts_t *b)
{
    int t, both = 0;

    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        if (!a->end[t] || !b->base[t]) continue;
        if (a->end[t] != b->base[t]
            || memcmp(a->ehash[t], b->bhash[t], MTLS_HASH_LEN)) {
            return 0;
        }
        both++;
    }
    return both > 0;
}

/* The last name of path (after its last '/'). */
static const char *last_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

int sealed_record(sqlite3 *db, const char *path, apr_int64_t seal_id,
                  char sha256[65], apr_int64_t *bytes, apr_int64_t *event)
{
    sqlite3_stmt *q;
    int found = 0;

    if (sqlite3_prepare_v2(db, "SELECT id, json_extract(detail, '$.seal'), "
            "json_extract(detail, '$.file'), json_extract(detail, "
            "'$.sha256'), json_extract(detail, '$.bytes'), kind FROM "
            "main.events WHERE kind IN ('sealed', 'unsealed') AND "
            "json_valid(detail) ORDER BY id", -1, &q, NULL) != SQLITE_OK) {
        return 0;
    }
    /* The last event naming the file wins: an archive is 'unsealed'
     * before rows are appended to it, then sealed again with its new
     * hash. */
    while (sqlite3_step(q) == SQLITE_ROW) {
        apr_int64_t seal = sqlite3_column_int64(q, 1);
        const char *file = (const char *)sqlite3_column_text(q, 2);
        const char *sha = (const char *)sqlite3_column_text(q, 3);
        int mine;
        if (seal_id) {
            mine = seal == seal_id;         /* a rotation's, by its seal */
        }
        else {
            /* By its path; an archive's (no seal) also by its file name:
             * one moved to cold storage is still the file before. */
            mine = file && (same_path(file, path)
                            || (!seal && !strcmp(last_name(file),
                                                 last_name(path))));
        }
        if (mine && !strcmp((const char *)sqlite3_column_text(q, 5),
                            "unsealed")) {
            found = 0;
            continue;
        }
        if (!mine || !sha || strlen(sha) != 64) continue;
        memcpy(sha256, sha, 65);
        if (bytes) *bytes = sqlite3_column_int64(q, 4);
        if (event) *event = sqlite3_column_int64(q, 0);
        found = 1;
    }
    sqlite3_finalize(q);
    return found;
}

/* The 'sealed' events of file s: fill the sealed_* of the file before
 * it (p) from the last one that names p (sealed_record). */
static void read_sealed(file_meta_t *s, file_meta_t *p)
{
    mtls_store_t *st;
    char err[256];

    if (mtls_store_open(s->path, MTLS_STORE_READONLY, 5000, &st, err,
                        sizeof(err)) != SQLITE_OK) {
        return;
    }
    if (!sealed_record(mtls_store_db(st), p->path, p->seal_id,
                       p->sealed_sha256, &p->sealed_bytes,
                       &p->sealed_event)) {
        p->sealed_sha256[0] = '\0';
    }
    mtls_store_close(st);
}

/* Order the n files of the set by their chains; find the files missing
 * between them; refuse overlaps and forks.  Returns EXIT_OK or an exit
 * code (reported). */
static int order_set(void)
{
    int n = the_set.n, i, j, t, rc = EXIT_OK, k, *order = NULL, *seen;
    cuts_t *c = calloc((size_t)n, sizeof(cuts_t));
    file_meta_t *f = the_set.f, *sorted = NULL;

    order = calloc((size_t)n * 2 + 1, sizeof(int));
    if (!c || !order) {
        fail("out of memory");
        free(c);
        free(order);
        return EXIT_DB;
    }
    seen = order + n;
    for (i = 0; i < n; i++) {
        f[i].pred = f[i].succ = -1;
        f[i].ok = read_cuts(f[i].path, &f[i], &c[i]) == 0;
    }
    /* The same rows in two files of one chain (cut by an archive run or
     * a rotation): a copy, or an archive's move cut short (running it
     * again finishes it).  Each file's first row of each table is looked
     * for in the others.  Files with no cut are chains of their own (one
     * per server), whatever rows they share. */
    for (j = 0; j < n && rc == EXIT_OK; j++) {
        for (i = 0; i < n && rc == EXIT_OK; i++) {
            if (i == j || !f[i].ok || !f[j].ok
                || !(c[i].has_base || c[i].has_end || c[j].has_base
                     || c[j].has_end)) {
                continue;
            }
            for (t = 1; t < MTLS_ANCHOR_TABLES; t++) {   /* not certificates:
                                                           * archive copies them */
                apr_int64_t id = c[j].minid[t];
                if (!id || id < c[i].minid[t] || id > c[i].maxid[t]
                    || !holds_row(f[i].path, mtls_anchor_tables[t], id,
                                  c[j].minhash[t])) {
                    continue;
                }
                fail("%s and %s both hold row %lld of %s (the same hash): "
                     "the same records in two files, a copy or an archive "
                     "run cut short (run it again to finish the move); give "
                     "each record once", f[i].path, f[j].path, (long long)id,
                     mtls_anchor_tables[t]);
                rc = EXIT_DB;
                break;
            }
        }
    }
    /* Which file continues which. */
    for (i = 0; i < n && rc == EXIT_OK; i++) {
        for (j = 0; j < n && rc == EXIT_OK; j++) {
            if (i == j || !f[i].ok || !f[j].ok || !continues(&c[i], &c[j])) {
                continue;
            }
            if (f[i].succ >= 0 || f[j].pred >= 0) {
                int other = f[i].succ >= 0 ? f[i].succ : f[j].pred;
                fail("%s, %s and %s: two files %s (a fork, or a copy of a "
                     "file): give one chain", f[i].path, f[j].path,
                     f[other].path, f[i].succ >= 0
                     ? "go on from where the first one ends"
                     : "end where the second one begins");
                rc = EXIT_DB;
                break;
            }
            f[i].succ = j;
            f[j].pred = i;
        }
    }
    /* A file whose chains start after rows that no file given ends with,
     * while a file given ends before it: the one between is missing. */
    for (j = 0; j < n && rc == EXIT_OK; j++) {
        int best = -1, bt = -1;
        if (!f[j].ok || f[j].pred >= 0 || !c[j].has_base) continue;
        for (i = 0; i < n; i++) {
            int below = 0, above = 0;
            if (i == j || !f[i].ok || f[i].succ >= 0 || !c[i].has_end) {
                continue;
            }
            for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
                if (!c[i].end[t] || !c[j].base[t]) continue;
                if (c[i].end[t] < c[j].base[t]) below++;
                else if (c[i].end[t] > c[j].base[t]) above++;
            }
            if (below && !above && (best < 0 || c[i].end[1] > c[best].end[1])) {
                best = i;
            }
        }
        if (best < 0) continue;
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            if (c[best].end[t] && c[j].base[t]
                && c[best].end[t] < c[j].base[t]) {
                bt = t;
                if (t == 1) break;      /* handshakes say it best */
            }
        }
        snprintf(f[j].missing, sizeof(f[j].missing), "%s rows %lld-%lld are "
                 "in no file given: %s starts after row %lld (its cut names "
                 "%s), %s ends at row %lld (its cut names %s): a file "
                 "between them is missing", mtls_anchor_tables[bt],
                 (long long)c[best].end[bt] + 1, (long long)c[j].base[bt],
                 f[j].path, (long long)c[j].base[bt],
                 c[j].bother[bt] ? c[j].bother[bt] : "no file",
                 f[best].path, (long long)c[best].end[bt],
                 c[best].eother[bt] ? c[best].eother[bt] : "no file");
    }
    /* The hashes successors recorded of sealed files. */
    for (i = 0; i < n && rc == EXIT_OK; i++) {
        if (f[i].succ >= 0) {
            read_sealed(&f[f[i].succ], &f[i]);
        }
    }
    /* The order: each chain from its first file, chains by their first
     * time (then name). */
    if (rc == EXIT_OK && (sorted = calloc((size_t)n, sizeof(*sorted)))) {
        int m = 0;
        while (m < n) {
            int head = -1, steps;
            for (i = 0; i < n; i++) {
                if (seen[i] || (f[i].pred >= 0 && !seen[f[i].pred])) continue;
                if (head < 0
                    || (f[i].has_range && (!f[head].has_range
                        || f[i].first_us < f[head].first_us))
                    || (f[i].has_range == f[head].has_range
                        && (!f[i].has_range
                            || f[i].first_us == f[head].first_us)
                        && strcmp(f[i].path, f[head].path) < 0)) {
                    head = i;
                }
            }
            if (head < 0) {                     /* a cycle: keep the rest */
                for (i = 0; i < n; i++) if (!seen[i]) { head = i; break; }
            }
            for (k = head, steps = 0; k >= 0 && !seen[k] && steps < n;
                 k = f[k].succ, steps++) {
                seen[k] = 1;
                order[m++] = k;
            }
        }
        for (i = 0; i < n; i++) {
            sorted[i] = f[order[i]];
        }
        /* Links by the new positions. */
        for (k = 0; k < n; k++) seen[order[k]] = k;
        for (i = 0; i < n; i++) {
            if (sorted[i].pred >= 0) sorted[i].pred = seen[sorted[i].pred];
            if (sorted[i].succ >= 0) sorted[i].succ = seen[sorted[i].succ];
        }
        free(the_set.f);
        the_set.f = sorted;
    }
    else if (rc == EXIT_OK) {
        fail("out of memory");
        rc = EXIT_DB;
    }
    for (i = 0; i < n; i++) {
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            sqlite3_free(c[i].bother[t]);
            sqlite3_free(c[i].eother[t]);
        }
    }
    free(c);
    free(order);
    return rc;
}

/* Expand the directories among the n paths in *files (every *.db in
 * them), drop repeats, order by chains: *files becomes one allocation
 * (the array and its strings), *n its length. */
static int gather_files(char ***files, int *n)
{
    char **in = *files, **names = NULL, **out;
    size_t cap = 0, count = 0, bytes = 0, k;
    int i, rc = EXIT_OK;
    char *p;

    files_forget();
    for (i = 0; i < *n && rc == EXIT_OK; i++) {
        struct stat sb;
        size_t before = count;
        if (stat(in[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            DIR *d = opendir(in[i]);
            struct dirent *e;
            if (!d) {
                fail("%s: %s", in[i], strerror(errno));
                rc = EXIT_DB;
                break;
            }
            while ((e = readdir(d))) {
                size_t l = strlen(e->d_name);
                struct stat fs;
                char *full;
                if (l < 4 || strcmp(e->d_name + l - 3, ".db")
                    || e->d_name[0] == '.') {
                    continue;
                }
                full = malloc(strlen(in[i]) + l + 2);
                if (!full) break;
                sprintf(full, "%s%s%s", in[i],
                        in[i][strlen(in[i]) - 1] == '/' ? "" : "/",
                        e->d_name);
                if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode)) {
                    free(full);
                    continue;
                }
                if (count == cap) {
                    char **nn = realloc(names, (cap = cap * 2 + 16)
                                        * sizeof(char *));
                    if (!nn) { free(full); break; }
                    names = nn;
                }
                names[count++] = full;
            }
            closedir(d);
            if (count == before) {
                fail("%s: a directory with no *.db file", in[i]);
                rc = EXIT_USAGE;
                continue;   /* names may still be NULL: nothing to sort */
            }
            qsort(names + before, count - before, sizeof(char *), by_name);
            continue;
        }
        if (count == cap) {
            char **nn = realloc(names, (cap = cap * 2 + 16) * sizeof(char *));
            if (!nn) break;
            names = nn;
        }
        names[count++] = strdup(in[i]);
    }
    if (rc == EXIT_OK && i < *n) {
        fail("out of memory");
        rc = EXIT_DB;
    }
    /* A file given twice (by a directory and by name) is read once. */
    for (k = 0; rc == EXIT_OK && k < count; k++) {
        size_t m;
        for (m = 0; names[k] && m < k; m++) {
            if (names[m] && same_path(names[m], names[k])) {
                free(names[k]);
                names[k] = NULL;
                break;
            }
        }
        if (names[k]) bytes += strlen(names[k]) + 1;
    }
    out = rc == EXIT_OK ? malloc((count + 1) * sizeof(char *) + bytes) : NULL;
    the_set.f = out ? calloc(count + 1, sizeof(file_meta_t)) : NULL;
    if (rc == EXIT_OK && (!out || !the_set.f)) {
        fail("out of memory");
        rc = EXIT_DB;
    }
    if (rc == EXIT_OK) {
        p = (char *)(out + count + 1);
        for (k = 0; k < count; k++) {
            if (!names[k]) continue;
            strcpy(p, names[k]);
            the_set.f[the_set.n].pred = the_set.f[the_set.n].succ = -1;
            the_set.f[the_set.n++].path = p;
            p += strlen(p) + 1;
        }
        if (the_set.n > 1) {
            rc = order_set();
        }
        for (i = 0; i < the_set.n; i++) {
            out[i] = the_set.f[i].path;
        }
        out[the_set.n] = NULL;
        free(*files);
        *files = out;
        *n = the_set.n;
    }
    else {
        free(out);
        files_forget();
    }
    for (k = 0; k < count; k++) free(names[k]);
    free(names);
    return rc;
}

int select_period(char **files, int *nfiles, apr_int64_t since,
                  apr_int64_t until)
{
    int i, m = 0, left = 0;

    for (i = 0; i < *nfiles; i++) {
        file_meta_t *f = file_meta(files[i]);
        if (f && f->has_range && (f->last_us < since || f->first_us >= until)) {
            left++;
            continue;
        }
        if (f) f->selected = 1;
        files[m++] = files[i];
    }
    /* None meets it: the newest, to read nothing from. */
    if (!m && *nfiles) {
        files[0] = files[*nfiles - 1];
        m = 1;
        left--;
        if (file_meta(files[0])) file_meta(files[0])->selected = 1;
    }
    *nfiles = m;
    return left;
}

apr_int64_t file_events(const char *path, const char *kind,
                        apr_int64_t before)
{
    mtls_store_t *st;
    sqlite3_stmt *q;
    char err[256];
    apr_int64_t n = 0;

    if (mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, err,
                        sizeof(err)) != SQLITE_OK) {
        return 0;
    }
    if (sqlite3_prepare_v2(mtls_store_db(st), "SELECT count(*) FROM events "
                           "WHERE kind = ?1 AND time_us < ?2", -1, &q, NULL)
        == SQLITE_OK) {
        sqlite3_bind_text(q, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, before);
        if (sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    mtls_store_close(st);
    return n;
}

/* A file that shrinks while it is mapped raises SIGBUS on the next page
 * read: the thread hashing it jumps back and reports an error instead of
 * dying (a hostile writer can truncate a sealed file under us). */
static __thread sigjmp_buf *bus_jump;

static void on_sigbus(int sig)
{
    if (bus_jump) {
        siglongjmp(*bus_jump, 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void catch_sigbus(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* SHA-256 over [off, off + len) of fd, read through a mapping: no copy of
 * the page cache into a buffer, which for a year of sealed files cost as
 * much CPU as the hash itself.  0, -1 (errno set), or -2 when fd cannot
 * be mapped. */
static int hash_mapped(EVP_MD_CTX *ctx, int fd, off_t off, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    sigjmp_buf jump;
    void *volatile p;
    int rc;

    pthread_once(&once, catch_sigbus);
    p = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, off);
    if (p == MAP_FAILED) {
        return -2;              /* not mappable: read instead */
    }
    madvise(p, len, MADV_SEQUENTIAL);
    if (sigsetjmp(jump, 1) == 0) {
        bus_jump = &jump;
        rc = EVP_DigestUpdate(ctx, p, len) ? 0 : -1;
    }
    else {
        errno = ESTALE;         /* it shrank under us */
        rc = -1;
    }
    bus_jump = NULL;
    munmap(p, len);
    return rc;
}

int file_sha256_hex(const char *path, char out[65], apr_int64_t *bytes)
{
    const size_t window = (size_t)16 << 20;
    unsigned char md[32];
    unsigned int mdlen;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;
    struct stat sb;
    apr_int64_t total = 0;

    if (fd >= 0 && ctx && fstat(fd, &sb) == 0
        && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = 0;
        while (rc == 0 && total < (apr_int64_t)sb.st_size) {
            size_t len = (apr_int64_t)sb.st_size - total < (apr_int64_t)window
                         ? (size_t)(sb.st_size - total) : window;
            if ((rc = hash_mapped(ctx, fd, (off_t)total, len)) == -2) {
                rc = 0;
                break;
            }
            total += rc == 0 ? (apr_int64_t)len : 0;
        }
        /* Not mappable, or grown since (it should not): the rest, read. */
        while (rc == 0) {
            unsigned char buf[65536];
            ssize_t n = pread(fd, buf, sizeof(buf), (off_t)total);
            if (n <= 0) {
                rc = n == 0 ? 0 : -1;
                break;
            }
            rc = EVP_DigestUpdate(ctx, buf, (size_t)n) ? 0 : -1;
            total += n;
        }
        if (rc == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen)) {
            mtls_hex(md, 32, out);
        }
        else if (rc == 0) {
            rc = -1;
        }
    }
    if (fd >= 0) close(fd);
    EVP_MD_CTX_free(ctx);
    if (bytes) *bytes = total;
    return rc;
}

int settle_file(const char *path, char out[65], apr_int64_t *bytes,
                char *msg, size_t msglen)
{
    sqlite3 *db = NULL;
    int tries, busy = 1, logsz = -1, done = -2;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK
        || mtls_db_harden(db) != SQLITE_OK) {
        snprintf(msg, msglen, "cannot open it: %s",
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 200);
    /* TRUNCATE waits for readers to leave the WAL; some tries, not
     * forever. */
    for (tries = 0; tries < 10 && (busy || logsz != done); tries++) {
        sqlite3_stmt *q;
        if (tries) usleep(100000);
        if (sqlite3_prepare_v2(db, "PRAGMA main.wal_checkpoint(TRUNCATE)", -1,
                               &q, NULL) != SQLITE_OK) {
            break;
        }
        if (sqlite3_step(q) == SQLITE_ROW) {
            busy = sqlite3_column_int(q, 0);
            logsz = sqlite3_column_int(q, 1);
            done = sqlite3_column_int(q, 2);
        }
        sqlite3_finalize(q);
    }
    if (busy || logsz != done) {
        snprintf(msg, msglen, "its write-ahead log could not be written into "
                 "it: %s", busy ? "readers hold it" : sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    if (file_sha256_hex(path, out, bytes) != 0) {
        snprintf(msg, msglen, "cannot read it: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int sealed_in_log(const char *log, const file_meta_t *m, const char *sha256,
                  char *msg, size_t msglen)
{
    char line[8192], path[4096], hex[80];
    long long bytes, seal;
    long lineno = 0;
    int found = -1;
    FILE *fp = log && m ? fopen(log, "r") : NULL;

    if (!fp) {
        return -1;
    }
    while (fgets(line, sizeof(line), fp)) {
        const char *p = strstr(line, "mtls_audit: sealed ");
        const char *mine = strrchr(m->path, '/'), *theirs;
        lineno++;
        if (!p || sscanf(p, "mtls_audit: sealed %4095s sha256=%79s "
                         "bytes=%lld seal=%lld", path, hex, &bytes, &seal)
                  != 4) {
            continue;
        }
        theirs = strrchr(path, '/');
        mine = mine ? mine + 1 : m->path;
        theirs = theirs ? theirs + 1 : path;
        /* The path the module wrote, or (the files moved since) the same
         * name and the same seal. */
        if (!same_path(path, m->path)
            && !(m->seal_id && seal == m->seal_id && !strcmp(mine, theirs))) {
            continue;
        }
        if (!strcasecmp(hex, sha256)) {
            snprintf(msg, msglen, "the error log's sealed line for it (line "
                     "%ld of %s) gives the same SHA-256", lineno, log);
            found = 1;
        }
        else {
            snprintf(msg, msglen, "the error log's sealed line for it (line "
                     "%ld of %s) gives SHA-256 %s, not %s", lineno, log, hex,
                     sha256);
            found = 0;
            break;
        }
    }
    fclose(fp);
    return found;
}

int check_sealed(const file_meta_t *m, char *msg, size_t msglen)
{
    char hex[65], wal[1100];
    apr_int64_t bytes = 0;
    struct stat sb;
    const char *succ;

    if (!m || !m->sealed_sha256[0] || m->succ < 0) {
        return -1;
    }
    succ = the_set.f[m->succ].path;
    /* Rows in a WAL beside it would be read, and are not in the hash. */
    snprintf(wal, sizeof(wal), "%s-wal", m->path);
    if (stat(wal, &sb) == 0 && sb.st_size > 0) {
        snprintf(msg, msglen, "a write-ahead log of %lld bytes lies beside "
                 "it, which its SHA-256 does not cover", (long long)sb.st_size);
        return -1;
    }
    if (file_sha256_hex(m->path, hex, &bytes) != 0) {
        snprintf(msg, msglen, "cannot read it: %s", strerror(errno));
        return 0;
    }
    if (strcasecmp(hex, m->sealed_sha256) != 0) {
        snprintf(msg, msglen, "sealed file CHANGED: its SHA-256 is %s (%lld "
                 "bytes), not %s (%lld bytes) as %s recorded when it was "
                 "sealed (event %lld)", hex, (long long)bytes,
                 m->sealed_sha256, (long long)m->sealed_bytes, succ,
                 (long long)m->sealed_event);
        return 0;
    }
    snprintf(msg, msglen, "its SHA-256 matches the one %s recorded when it "
             "was sealed (event %lld, %lld bytes); rows not walked (--deep "
             "walks them)", succ,
             (long long)m->sealed_event, (long long)bytes);
    return 1;
}

