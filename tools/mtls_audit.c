/*
 * mtls_audit.c -- the mtls-audit command-line tool.
 *
 * DESIGN
 * A table of subcommands, each with its own --help.  Databases are opened
 * read-only through the same core as the module (schema check, chain
 * code); several files are ATTACHed and read as one data set with a
 * `source` column naming the file.  Every query binds its parameters.
 * Exit codes: 0 ok, 1 a finding (a break in verify), 2 usage, 3 a database
 * or I/O error.  Errors go to stderr prefixed "mtls-audit:".
 *
 * This first version carries `query` and `verify`; reports and the
 * certificate inventory come next (see the issue tracker).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#include <openssl/crypto.h>

#include "mtls_core.h"
#include "mtls_chain.h"
#include "mtls_store.h"
#include "mtls_cert.h"

#define EXIT_OK      0
#define EXIT_FINDING 1
#define EXIT_USAGE   2
#define EXIT_DB      3

static const char *prog = "mtls-audit";

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Flush stdout and tell whether everything reached it (git's rule). */
static int finish_output(int code)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fail("cannot write the output: %s", strerror(errno));
        return EXIT_DB;
    }
    return code;
}

/* ------------------------------------------------------------------ */
/* Opening several databases as one                                     */

typedef struct {
    sqlite3 *db;
    int      n;                 /* files attached as db0..db(n-1) */
    char   **names;
} dataset_t;

static int open_dataset(dataset_t *ds, char **files, int n)
{
    char err[256];
    int i, rc;

    memset(ds, 0, sizeof(*ds));
    if (n < 1) {
        fail("no database given; see --help");
        return EXIT_USAGE;
    }
    rc = sqlite3_open_v2(":memory:", &ds->db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        fail("cannot start SQLite: %s", sqlite3_errstr(rc));
        return EXIT_DB;
    }
    ds->names = files;
    for (i = 0; i < n; i++) {
        mtls_store_t *st;
        char *sql;

        /* Check each file through the core first: a clear message for a
         * file that is not ours, and no schema change on a reader. */
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
        ds->n++;
    }
    return EXIT_OK;
}

static void close_dataset(dataset_t *ds)
{
    sqlite3_close(ds->db);
}

/* ------------------------------------------------------------------ */
/* Output                                                               */

typedef enum { FMT_TABLE, FMT_JSON, FMT_CSV } fmt_e;

static void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (; *p; p++) {
        switch (*p) {
        case '"':  fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '<':  fputs("\\u003c", f); break;
        case '>':  fputs("\\u003e", f); break;
        default:
            if (*p < 0x20) {
                fprintf(f, "\\u%04x", *p);
            }
            else {
                fputc(*p, f);
            }
        }
    }
    fputc('"', f);
}

/* RFC 4180, and a cell a spreadsheet would run as a formula starts with a
 * quote character instead. */
static void csv_cell(FILE *f, const char *s)
{
    int formula = strchr("=+-@\t\r", s[0]) != NULL && s[0];
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

/* Print every row of stmt in fmt.  Returns the number of rows, or -1 on a
 * database error (reported). */
static long print_rows(sqlite3_stmt *stmt, fmt_e fmt)
{
    int i, n = sqlite3_column_count(stmt), rc;
    long rows = 0;
    char ***cells = NULL;
    int *width = calloc((size_t)n, sizeof(int));

    if (!width) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        width[i] = (int)strlen(sqlite3_column_name(stmt, i));
    }
    if (fmt == FMT_JSON) {
        fputs("[", stdout);
    }
    else if (fmt == FMT_CSV) {
        for (i = 0; i < n; i++) {
            if (i) fputc(',', stdout);
            csv_cell(stdout, sqlite3_column_name(stmt, i));
        }
        fputs("\r\n", stdout);
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (fmt == FMT_JSON) {
            fputs(rows ? ",\n {" : "\n {", stdout);
            for (i = 0; i < n; i++) {
                int t = sqlite3_column_type(stmt, i);
                if (i) fputs(", ", stdout);
                json_str(stdout, sqlite3_column_name(stmt, i));
                fputs(": ", stdout);
                if (t == SQLITE_NULL) {
                    fputs("null", stdout);
                }
                else if (t == SQLITE_INTEGER) {
                    printf("%lld", sqlite3_column_int64(stmt, i));
                }
                else if (t == SQLITE_FLOAT) {
                    printf("%.17g", sqlite3_column_double(stmt, i));
                }
                else {
                    json_str(stdout, (const char *)sqlite3_column_text(stmt, i));
                }
            }
            fputs("}", stdout);
        }
        else if (fmt == FMT_CSV) {
            for (i = 0; i < n; i++) {
                const char *v = (const char *)sqlite3_column_text(stmt, i);
                if (i) fputc(',', stdout);
                if (v) csv_cell(stdout, v);
            }
            fputs("\r\n", stdout);
        }
        else {
            char **row = malloc(sizeof(char *) * (size_t)n);
            char ***nc = realloc(cells, sizeof(char **) * (size_t)(rows + 1));
            if (!row || !nc) {
                free(row);
                rc = SQLITE_NOMEM;
                break;
            }
            cells = nc;
            for (i = 0; i < n; i++) {
                const char *v = (const char *)sqlite3_column_text(stmt, i);
                int w;
                row[i] = strdup(v ? v : "");
                /* Table cells stay on one line. */
                for (char *q = row[i]; q && *q; q++) {
                    if ((unsigned char)*q < 0x20) *q = ' ';
                }
                w = row[i] ? (int)strlen(row[i]) : 0;
                if (w > width[i]) width[i] = w > 60 ? 60 : w;
            }
            cells[rows] = row;
        }
        rows++;
    }
    if (fmt == FMT_JSON) {
        fputs(rows ? "\n]\n" : "]\n", stdout);
    }
    else if (fmt == FMT_TABLE) {
        long r;
        for (i = 0; i < n; i++) {
            printf("%s%-*s", i ? "  " : "", width[i],
                   sqlite3_column_name(stmt, i));
        }
        putchar('\n');
        for (r = 0; r < rows; r++) {
            for (i = 0; i < n; i++) {
                const char *v = cells[r][i] ? cells[r][i] : "";
                printf("%s%-*.*s", i ? "  " : "", width[i], width[i], v);
                free(cells[r][i]);
            }
            putchar('\n');
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
/* Argument helpers                                                     */

static int parse_format(const char *s, fmt_e *out)
{
    if (!strcmp(s, "table")) *out = FMT_TABLE;
    else if (!strcmp(s, "json")) *out = FMT_JSON;
    else if (!strcmp(s, "csv")) *out = FMT_CSV;
    else {
        fail("unknown format '%s': use table, json or csv", s);
        return -1;
    }
    return 0;
}

/* "2026-11-28" or "2026-11-28T10:00:00[.mmm][Z]" -> microseconds UTC. */
static int parse_time(const char *s, apr_int64_t *out)
{
    struct tm tm;
    const char *rest;
    int ms = 0;

    memset(&tm, 0, sizeof(tm));
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
            for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++) {
                if (digits < 3) ms = ms * 10 + (*rest - '0');
            }
            for (; digits < 3; digits++) ms *= 10;
        }
        if (*rest == 'Z') {
            rest++;
        }
    }
    if (*rest) {
        return -1;
    }
    *out = ((apr_int64_t)timegm(&tm) * 1000 + ms) * 1000;
    return 0;
}

static int is_help(const char *a)
{
    return !strcmp(a, "-h") || !strcmp(a, "--help");
}

/* Value of option argv[*i] (--opt VALUE or --opt=VALUE); NULL + message
 * when missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=') {
        return argv[*i] + n + 1;
    }
    if (*i + 1 >= argc) {
        fail("%s needs a value", name);
        return NULL;
    }
    return argv[++*i];
}

/* ------------------------------------------------------------------ */
/* query                                                                */

static const char query_help[] =
"usage: mtls-audit query [--since D] [--until D] [--outcome O] [--subject S]\n"
"                        [--cert SHA256-PREFIX] [--client ADDR] [--limit N]\n"
"                        [--format table|json|csv] DB...\n"
"\n"
"List recorded handshakes (the v_handshakes view), newest first, from one or\n"
"more databases read as one; the `source` column names the file.  The table\n"
"shows the main columns; json and csv carry every column of the view.\n"
"\n"
"  --since D, --until D   from / before D: a date (2026-11-28) or an ISO time\n"
"                         (2026-11-28T10:00:00Z), UTC\n"
"  --outcome O            accepted, rejected, no_certificate, failed, aborted\n"
"  --subject S            subject DN contains S\n"
"  --cert P               certificate SHA-256 starts with P (hex)\n"
"  --client ADDR          client address equals ADDR\n"
"  --limit N              at most N rows (default 100, 0 for all)\n"
"  --format F             table (default), json or csv\n"
"\n"
"Exit: 0 ok, 2 usage, 3 database or I/O error.\n";

static int cmd_query(int argc, char **argv)
{
    const char *outcome = NULL, *subject = NULL, *cert = NULL, *client = NULL;
    apr_int64_t since = 0, until = 0;
    int has_since = 0, has_until = 0, i, rc, nfiles = 0;
    long limit = 100;
    fmt_e fmt = FMT_TABLE;
    char **files = calloc((size_t)argc + 1, sizeof(char *));
    dataset_t ds;
    sqlite3_str *sql;
    sqlite3_stmt *stmt;
    char *q;
    long rows;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (is_help(a)) {
            fputs(query_help, stdout);
            free(files);
            return finish_output(EXIT_OK);
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            files[nfiles++] = argv[i];
            continue;
        }
#define OPT(name) (!strncmp(a, name, strlen(name)) \
                   && (a[strlen(name)] == '\0' || a[strlen(name)] == '='))
        if (OPT("--since") || OPT("--until")) {
            int is_since = OPT("--since");
            if (!(v = opt_value(argc, argv, &i, is_since ? "--since"
                                                         : "--until"))) {
                goto usage;
            }
            if (parse_time(v, is_since ? &since : &until) != 0) {
                fail("'%s' is not a date (YYYY-MM-DD) or an ISO time "
                     "(YYYY-MM-DDTHH:MM:SSZ)", v);
                goto usage;
            }
            *(is_since ? &has_since : &has_until) = 1;
        }
        else if (OPT("--outcome")) {
            if (!(v = opt_value(argc, argv, &i, "--outcome"))) goto usage;
            if (strcmp(v, "accepted") && strcmp(v, "rejected")
                && strcmp(v, "no_certificate") && strcmp(v, "failed")
                && strcmp(v, "aborted")) {
                fail("unknown outcome '%s': use accepted, rejected, "
                     "no_certificate, failed or aborted", v);
                goto usage;
            }
            outcome = v;
        }
        else if (OPT("--subject")) {
            if (!(subject = opt_value(argc, argv, &i, "--subject"))) goto usage;
        }
        else if (OPT("--cert")) {
            if (!(cert = opt_value(argc, argv, &i, "--cert"))) goto usage;
        }
        else if (OPT("--client")) {
            if (!(client = opt_value(argc, argv, &i, "--client"))) goto usage;
        }
        else if (OPT("--limit")) {
            char *end;
            if (!(v = opt_value(argc, argv, &i, "--limit"))) goto usage;
            errno = 0;
            limit = strtol(v, &end, 10);
            if (errno || *end || end == v || limit < 0) {
                fail("--limit takes a whole number, not '%s'", v);
                goto usage;
            }
        }
        else if (OPT("--format")) {
            if (!(v = opt_value(argc, argv, &i, "--format"))) goto usage;
            if (parse_format(v, &fmt) != 0) goto usage;
        }
        else {
            fail("unknown option '%s'; see 'mtls-audit query --help'", a);
            goto usage;
        }
#undef OPT
    }
    if ((rc = open_dataset(&ds, files, nfiles)) != EXIT_OK) {
        close_dataset(&ds);
        free(files);
        return rc;
    }
    sql = sqlite3_str_new(ds.db);
    /* A terminal gets the columns that answer "who, when, what happened";
     * json and csv get every column of the view. */
    if (fmt == FMT_TABLE) {
        sqlite3_str_appendf(sql, "SELECT %sid, time_utc, client_addr, sni, "
                            "tls_version, outcome, verify_result AS vr, "
                            "alert_name AS alert, subject_dn, requests FROM (",
                            ds.n > 1 ? "source, " : "");
    }
    else {
        sqlite3_str_appendall(sql, "SELECT * FROM (");
    }
    for (i = 0; i < ds.n; i++) {
        sqlite3_str_appendf(sql, "%sSELECT %Q AS source, * FROM db%d."
                            "v_handshakes", i ? " UNION ALL " : "", files[i],
                            i);
    }
    sqlite3_str_appendall(sql, ") WHERE 1");
    if (has_since) sqlite3_str_appendall(sql, " AND time_utc >= :since");
    if (has_until) sqlite3_str_appendall(sql, " AND time_utc < :until");
    if (outcome) sqlite3_str_appendall(sql, " AND outcome = :outcome");
    if (subject) sqlite3_str_appendall(sql, " AND instr(subject_dn, :subject) > 0");
    if (cert) sqlite3_str_appendall(sql, " AND substr(cert_sha256, 1, length(:cert)) = lower(:cert)");
    if (client) sqlite3_str_appendall(sql, " AND client_addr = :client");
    sqlite3_str_appendall(sql, " ORDER BY time_utc DESC, id DESC");
    if (limit > 0) sqlite3_str_appendf(sql, " LIMIT %ld", limit);
    q = sqlite3_str_finish(sql);
    rc = sqlite3_prepare_v2(ds.db, q, -1, &stmt, NULL);
    sqlite3_free(q);
    if (rc != SQLITE_OK) {
        fail("cannot query: %s", sqlite3_errmsg(ds.db));
        close_dataset(&ds);
        free(files);
        return EXIT_DB;
    }
#define BIND_TIME(name, v) do { \
        char t[96]; time_t s_ = (time_t)((v) / 1000000); struct tm tm_; \
        gmtime_r(&s_, &tm_); \
        snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", \
                 tm_.tm_year + 1900, tm_.tm_mon + 1, tm_.tm_mday, tm_.tm_hour, \
                 tm_.tm_min, tm_.tm_sec, (int)(((v) / 1000) % 1000)); \
        sqlite3_bind_text(stmt, sqlite3_bind_parameter_index(stmt, name), t, \
                          -1, SQLITE_TRANSIENT); } while (0)
    if (has_since) BIND_TIME(":since", since);
    if (has_until) BIND_TIME(":until", until);
#undef BIND_TIME
    sqlite3_bind_text(stmt, sqlite3_bind_parameter_index(stmt, ":outcome"),
                      outcome, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, sqlite3_bind_parameter_index(stmt, ":subject"),
                      subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, sqlite3_bind_parameter_index(stmt, ":cert"),
                      cert, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, sqlite3_bind_parameter_index(stmt, ":client"),
                      client, -1, SQLITE_STATIC);
    rows = print_rows(stmt, fmt);
    sqlite3_finalize(stmt);
    close_dataset(&ds);
    free(files);
    return finish_output(rows < 0 ? EXIT_DB : EXIT_OK);
usage:
    free(files);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* verify                                                               */

static const char verify_help[] =
"usage: mtls-audit verify [--key FILE] DB...\n"
"\n"
"Walk the hash chain of every audited table (certificates, handshakes,\n"
"requests, events) of each database.  Names the first row that breaks a\n"
"chain (changed, deleted, inserted or reordered) and prints each table's\n"
"head (last id and hash) to compare with an anchor kept elsewhere.\n"
"\n"
"  --key FILE   the MTLSAuditChainKey file, when the server uses one\n"
"\n"
"Exit: 0 every chain holds, 1 a break, 2 usage, 3 database or I/O error.\n";

static int cmd_verify(int argc, char **argv)
{
    static const char *const tables[] = {
        "certificates", "handshakes", "requests", "events", NULL
    };
    const char *keyfile = NULL, *kerr;
    mtls_chain_key_t key = { NULL, 0 };
    int i, t, nfiles = 0, broken = 0, code = EXIT_OK;
    char **files = calloc((size_t)argc + 1, sizeof(char *));

    for (i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(verify_help, stdout);
            free(files);
            return finish_output(EXIT_OK);
        }
        if (!strncmp(argv[i], "--key", 5)
            && (argv[i][5] == '\0' || argv[i][5] == '=')) {
            if (!(keyfile = opt_value(argc, argv, &i, "--key"))) {
                free(files);
                return EXIT_USAGE;
            }
        }
        else if (argv[i][0] == '-') {
            fail("unknown option '%s'; see 'mtls-audit verify --help'",
                 argv[i]);
            free(files);
            return EXIT_USAGE;
        }
        else {
            files[nfiles++] = argv[i];
        }
    }
    if (!nfiles) {
        fail("no database given; see 'mtls-audit verify --help'");
        free(files);
        return EXIT_USAGE;
    }
    if (keyfile && mtls_chain_key_load(keyfile, &key, &kerr) != 0) {
        fail("%s: %s", keyfile, kerr);
        free(files);
        return EXIT_DB;
    }
    for (i = 0; i < nfiles && code != EXIT_DB; i++) {
        mtls_store_t *st;
        char err[256];

        if (mtls_store_open(files[i], MTLS_STORE_READONLY, 5000, &st, err,
                            sizeof(err)) != SQLITE_OK) {
            fail("%s: %s", files[i], err);
            code = EXIT_DB;
            break;
        }
        printf("%s\n", files[i]);
        for (t = 0; tables[t]; t++) {
            mtls_chain_result_t res;
            char hex[2 * MTLS_HASH_LEN + 1];
            int rc = mtls_chain_verify(mtls_store_db(st), "main", tables[t],
                                       &key, &res);
            if (rc != SQLITE_OK) {
                fail("%s: reading %s: %s", files[i], tables[t],
                     sqlite3_errmsg(mtls_store_db(st)));
                code = EXIT_DB;
                break;
            }
            mtls_hex(res.head, MTLS_HASH_LEN, hex);
            if (res.bad_id) {
                broken = 1;
                printf("  %-12s BROKEN at id %lld: %s\n", tables[t],
                       (long long)res.bad_id, res.why);
            }
            else {
                printf("  %-12s ok  %lld rows  head id %lld  %s\n",
                       tables[t], (long long)res.rows,
                       (long long)res.head_id, hex);
            }
        }
        mtls_store_close(st);
    }
    mtls_chain_key_clear(&key);
    free(files);
    if (code == EXIT_OK && broken) {
        code = EXIT_FINDING;
    }
    return finish_output(code);
}

/* ------------------------------------------------------------------ */

static const char main_help[] =
"usage: mtls-audit COMMAND [OPTIONS] DB...\n"
"\n"
"Read the audit databases of mod_mtls_audit.\n"
"\n"
"Commands:\n"
"  query    list recorded handshakes, with filters\n"
"  verify   check the hash chains of the databases\n"
"  version  print the version\n"
"\n"
"'mtls-audit COMMAND --help' describes each command.\n"
"Exit codes: 0 ok, 1 a finding, 2 usage, 3 a database or I/O error.\n";

typedef struct {
    const char *name;
    int (*fn)(int, char **);
} command_t;

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("mtls-audit %s (schema %d, %s, SQLite %s)\n", MTLS_VERSION,
           mtls_schema_version(), OpenSSL_version(OPENSSL_VERSION),
           sqlite3_libversion());
    return finish_output(EXIT_OK);
}

static const command_t commands[] = {
    { "query",   cmd_query },
    { "verify",  cmd_verify },
    { "version", cmd_version },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    int i;

    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    if (is_help(argv[1])) {
        fputs(main_help, stdout);
        return finish_output(EXIT_OK);
    }
    if (!strcmp(argv[1], "--version")) {
        return cmd_version(argc - 1, argv + 1);
    }
    for (i = 0; commands[i].name; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fail("'%s' is not a command; see 'mtls-audit --help'", argv[1]);
    return EXIT_USAGE;
}
