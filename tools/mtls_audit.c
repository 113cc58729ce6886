/*
 * mtls_audit.c -- the mtls-audit command-line tool: main and the query,
 * certs, verify and version commands (report is in report.c).
 *
 * DESIGN
 * A table of subcommands, each with its own --help.  Databases are opened
 * read-only through the same core as the module (schema check, chain
 * code); several files are ATTACHed and read as one data set, a `source`
 * column naming the file.  Every query binds its parameters.  Exit codes:
 * 0 ok, 1 a finding (a FAIL in a report, a break or an altered schema in
 * verify), 2 usage, 3 a database or I/O error.  Errors go to stderr prefixed "mtls-audit:".
 * Each read is recorded in the databases it read (PCI DSS 10.2.1.3) when
 * they can be written.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tool.h"
#include "mtls_cert.h"
#include "mtls_store.h"
#include "mtls_json.h"

int tool_valid_cidr(const char *cidr);

static int bind_named(sqlite3_stmt *st, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(st, name);
    return i ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : SQLITE_OK;
}

static int bind_int_named(sqlite3_stmt *st, const char *name, apr_int64_t v)
{
    int i = sqlite3_bind_parameter_index(st, name);
    return i ? sqlite3_bind_int64(st, i, v) : SQLITE_OK;
}

const char *cmdline(int argc, char **argv, char *buf, size_t len)
{
    size_t off = 0;
    int i;
    buf[0] = '\0';
    for (i = 0; i < argc && off + 2 < len; i++) {
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? " " : "",
                                argv[i]);
    }
    return buf;
}

/* Print stmt's rows, close the data set and, if all went out, record the
 * read in the databases.  Returns the exit code. */
static int list_and_record(sqlite3_stmt *stmt, fmt_e fmt, dataset_t *ds,
                           char **files, int nfiles, int argc, char **argv)
{
    char buf[512];
    long rows = print_rows(stdout, stmt, fmt);
    int rc;

    sqlite3_finalize(stmt);
    close_dataset(ds);
    rc = finish_output(stdout, rows < 0 ? EXIT_DB : EXIT_OK);
    if (rc == EXIT_OK) {
        record_access(files, nfiles, cmdline(argc, argv, buf, sizeof(buf)),
                      NULL);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* query                                                                */

static const char query_help[] =
"usage: mtls-audit query [--since D] [--until D] [--outcome O] [--subject S]\n"
"                        [--cert SHA256-PREFIX] [--client ADDR[/BITS]]\n"
"                        [--limit N] [--format table|json|csv] DB...\n"
"\n"
"List recorded handshakes (the v_handshakes view), newest first, from one or\n"
"more databases read as one; the `source` column names the file.  The table\n"
"shows the main columns; json and csv carry every column of the view.\n"
"Filters combine (all must hold).  DB: files or directories (every *.db),\n"
"in any order (read in their chains' order); with --since/--until only the\n"
"files whose time range meets the period are read.\n"
"\n"
"  --since D, --until D   from D / before D: a date (2026-11-28, midnight UTC)\n"
"                         or an ISO time (2026-11-28T10:00:00Z)\n"
"  --outcome O            accepted, rejected, no_certificate, failed, aborted\n"
"  --subject S            the subject DN contains S\n"
"  --cert P               the certificate's SHA-256 starts with P (hex)\n"
"  --client A             the client address is A, or lies in the block A/BITS\n"
"  --limit N              at most N rows (default 100; 0 for all)\n"
"  --format F             table (default), json or csv\n"
"\n"
"Exit: 0 ok, 2 usage, 3 database or I/O error.\n";

static int cmd_query(int argc, char **argv)
{
    const char *since = NULL, *until = NULL, *outcome = NULL, *subject = NULL;
    const char *cert = NULL, *client = NULL, *limit_s = NULL, *format = NULL;
    const opt_t opts[] = {
        { "--since", 1, &since, NULL }, { "--until", 1, &until, NULL },
        { "--outcome", 1, &outcome, NULL }, { "--subject", 1, &subject, NULL },
        { "--cert", 1, &cert, NULL }, { "--client", 1, &client, NULL },
        { "--limit", 1, &limit_s, NULL }, { "--format", 1, &format, NULL },
        { NULL, 0, NULL, NULL }
    };
    apr_int64_t since_us = 0, until_us = 0;
    long limit = 100;
    fmt_e fmt = FMT_TABLE;
    char **files, *q;
    int nfiles, rc;
    sqlite3_stmt *stmt;
    sqlite3_str *sql;
    dataset_t ds;

    rc = parse_opts(argc, argv, opts, query_help, "query", &files, &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    rc = EXIT_USAGE;
    if (since && parse_time(since, &since_us) != 0) {
        fail("--since '%s' is not a date (YYYY-MM-DD) or an ISO time "
             "(YYYY-MM-DDTHH:MM:SSZ)", since);
        goto out;
    }
    if (until && parse_time(until, &until_us) != 0) {
        fail("--until '%s' is not a date (YYYY-MM-DD) or an ISO time "
             "(YYYY-MM-DDTHH:MM:SSZ)", until);
        goto out;
    }
    if (outcome && strcmp(outcome, "accepted") && strcmp(outcome, "rejected")
        && strcmp(outcome, "no_certificate") && strcmp(outcome, "failed")
        && strcmp(outcome, "aborted")) {
        fail("unknown outcome '%s': use accepted, rejected, no_certificate, "
             "failed or aborted", outcome);
        goto out;
    }
    if (cert && (!*cert || strspn(cert, "0123456789abcdefABCDEF:")
                           != strlen(cert))) {
        fail("--cert takes hexadecimal digits, not '%s'", cert);
        goto out;
    }
    if (client && !tool_valid_cidr(client)) {
        fail("--client '%s' is not an address or an ADDRESS/BITS block",
             client);
        goto out;
    }
    if (limit_s && parse_count(limit_s, &limit) != 0) {
        fail("--limit takes a whole number, not '%s'", limit_s);
        goto out;
    }
    if (format && parse_format(format, "|table|json|csv|", &fmt) != 0) {
        goto out;
    }
    /* Only the files whose time range meets the period. */
    if (since || until) {
        select_period(files, &nfiles, since ? since_us : INT64_MIN,
                      until ? until_us : INT64_MAX);
    }
    if ((rc = open_dataset(&ds, files, nfiles)) != EXIT_OK) {
        close_dataset(&ds);
        goto out;
    }
    sql = sqlite3_str_new(ds.db);
    if (fmt == FMT_TABLE) {
        /* A terminal gets who, when and what happened. */
        sqlite3_str_appendf(sql, "SELECT %sid, time_utc, client_addr, sni, "
                            "tls_version, outcome, verify_result AS vr, "
                            "revocation_method || ' ' || revocation_status "
                            "AS revocation, "
                            "alert_name AS alert, subject_dn, requests FROM (",
                            ds.n > 1 ? "source, " : "");
    }
    else {
        sqlite3_str_appendall(sql, "SELECT * FROM (");
    }
    /* Each file's rows of the period, file after file (a view across
     * the files' connections: ds_union).  temp.dbI_v_handshakes: the
     * migrations' view (open_dataset). */
    q = sqlite3_mprintf("SELECT %%Q AS source, v.*%%s FROM temp.db%%d_"
                        "v_handshakes v JOIN db%%d.handshakes h ON h.id = "
                        "v.id WHERE h.time_us >= %lld AND h.time_us < %lld",
                        (long long)(since ? since_us : 0),
                        (long long)(until ? until_us : INT64_MAX));
    rc = q ? ds_union(&ds, "period_hs", q, MTLS_OLD_HS_COLS) : SQLITE_NOMEM;
    sqlite3_free(q);
    if (rc != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(sql));
        fail("cannot query: %s", sqlite3_errmsg(ds.db));
        close_dataset(&ds);
        rc = EXIT_DB;
        goto out;
    }
    sqlite3_str_appendall(sql, "SELECT * FROM period_hs) WHERE 1");
    if (outcome) sqlite3_str_appendall(sql, " AND outcome = :outcome");
    if (subject) sqlite3_str_appendall(sql, " AND instr(subject_dn, :subject) > 0");
    if (cert) sqlite3_str_appendall(sql, " AND substr(cert_sha256, 1, "
                                    "length(:cert)) = :cert");
    if (client) sqlite3_str_appendall(sql, " AND in_cidr(client_addr, :client)");
    sqlite3_str_appendall(sql, " ORDER BY time_utc DESC, id DESC");
    if (limit > 0) sqlite3_str_appendf(sql, " LIMIT %ld", limit);
    q = sqlite3_str_finish(sql);
    rc = sqlite3_prepare_v2(ds.db, q, -1, &stmt, NULL);
    sqlite3_free(q);
    if (rc != SQLITE_OK) {
        fail("cannot query: %s", sqlite3_errmsg(ds.db));
        close_dataset(&ds);
        rc = EXIT_DB;
        goto out;
    }
    if (cert) {
        char low[65];
        size_t j, k = 0;
        for (j = 0; cert[j] && k < 64; j++) {
            if (cert[j] != ':') low[k++] = (char)(cert[j] | 0x20);
        }
        low[k] = '\0';
        bind_named(stmt, ":cert", low);
    }
    bind_named(stmt, ":outcome", outcome);
    bind_named(stmt, ":subject", subject);
    bind_named(stmt, ":client", client);
    rc = list_and_record(stmt, fmt, &ds, files, nfiles, argc, argv);
out:
    free(files);
    return rc;
}

/* ------------------------------------------------------------------ */
/* certs                                                                */

static const char certs_help[] =
"usage: mtls-audit certs [--expiring DAYS] [--format table|json|csv] DB...\n"
"\n"
"The inventory of every client certificate seen (v_certificates), one row\n"
"per certificate across all databases given: subject, issuer, serial,\n"
"fingerprint, key, signature algorithm, validity, days to expiry (negative:\n"
"expired), first and last seen, accepted and rejected handshakes, and the\n"
"databases it appears in.  Soonest expiry first.\n"
"\n"
"  --expiring DAYS   only certificates that expire within DAYS days from now\n"
"                    (expired ones included)\n"
"  --format F        table (default), json or csv\n"
"\n"
"Exit: 0 ok, 2 usage, 3 database or I/O error.\n";

static int cmd_certs(int argc, char **argv)
{
    const char *expiring = NULL, *format = NULL;
    const opt_t opts[] = {
        { "--expiring", 1, &expiring, NULL }, { "--format", 1, &format, NULL },
        { NULL, 0, NULL, NULL }
    };
    long days = -1;
    fmt_e fmt = FMT_TABLE;
    char **files;
    int nfiles, rc;
    sqlite3_stmt *stmt;
    dataset_t ds;
    const char *sql;

    rc = parse_opts(argc, argv, opts, certs_help, "certs", &files, &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    if (expiring && parse_count(expiring, &days) != 0) {
        fail("--expiring takes a number of days, not '%s'", expiring);
        free(files);
        return EXIT_USAGE;
    }
    if (format && parse_format(format, "|table|json|csv|", &fmt) != 0) {
        free(files);
        return EXIT_USAGE;
    }
    if ((rc = open_dataset(&ds, files, nfiles)) != EXIT_OK) {
        close_dataset(&ds);
        free(files);
        return rc;
    }
    sql = fmt == FMT_TABLE
        ? "SELECT subject_dn, issuer_dn, serial, substr(cert_sha256, 1, 16) "
          "AS sha256, key_type || ' ' || key_bits AS key, not_after, "
          "days_left, last_seen, accepted, rejected FROM inv"
        : "SELECT * FROM inv";
    {
        /* Each database's handshakes grouped by certificate from its own
         * table, read in file order (NOT INDEXED): through the hs view, or
         * by the cert_id index, ten million rows took 43 s, this 6.  A
         * view across the files' connections (ds_union), materialized
         * for the join (SQLite indexes it). */
        char *full = NULL;

        rc = ds_union(&ds, "cert_use", "SELECT %Q AS source%s, cert_id, "
                "min(time_us) AS first_us, max(time_us) AS last_us, "
                "sum(outcome = 1) AS acc, sum(outcome = 2) AS rej FROM "
                "db%d.handshakes NOT INDEXED WHERE cert_id IS NOT NULL "
                "GROUP BY cert_id", "");
        if (rc == SQLITE_OK) full = sqlite3_mprintf(
            "WITH use AS MATERIALIZED (SELECT * FROM cert_use), "
            "inv AS (SELECT c.cert_sha256, c.subject_dn, c.issuer_dn, "
            "c.serial, strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ', c.not_before, "
            "'unixepoch') AS not_before, strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ', "
            "c.not_after, 'unixepoch') AS not_after, "
            "CAST(floor((c.not_after - unixepoch('now')) / 86400.0) AS "
            "INTEGER) AS days_left, c.san, c.key_type, c.key_bits, c.sig_alg, "
            "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', min(coalesce(u.first_us, "
            "c.first_seen_us)) / 1e6, 'unixepoch') AS first_seen, "
            "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', max(coalesce(u.last_us, "
            "c.first_seen_us)) / 1e6, 'unixepoch') AS last_seen, "
            "coalesce(sum(u.acc), 0) AS accepted, coalesce(sum(u.rej), 0) AS "
            "rejected, group_concat(DISTINCT c.source) AS sources "
            "FROM certs c LEFT JOIN use u ON u.source = c.source AND "
            "u.cert_id = c.id GROUP BY c.sha256 "
            "HAVING :days < 0 OR c.not_after < unixepoch('now') + :days * 86400 "
            "ORDER BY c.not_after, c.subject_dn) %s", sql);
        if (rc == SQLITE_OK) {
            rc = full ? sqlite3_prepare_v2(ds.db, full, -1, &stmt, NULL)
                      : SQLITE_NOMEM;
        }
        sqlite3_free(full);
    }
    if (rc != SQLITE_OK) {
        fail("cannot query: %s", sqlite3_errmsg(ds.db));
        close_dataset(&ds);
        free(files);
        return EXIT_DB;
    }
    bind_int_named(stmt, ":days", days);
    rc = list_and_record(stmt, fmt, &ds, files, nfiles, argc, argv);
    free(files);
    return rc;
}

/* ------------------------------------------------------------------ */
/* verify                                                               */

static const char verify_help[] =
"usage: mtls-audit verify [--key FILE] [--anchor FILE] [--deep] [--no-record]\n"
"                         DB|DIR...\n"
"\n"
"Walk the hash chain of every audited table (certificates, handshakes,\n"
"requests, events) of each database.  Names the first row that breaks a\n"
"chain -- changed, deleted, inserted or moved -- and prints each table's\n"
"head (last id and hash) to compare with an anchor kept elsewhere: rows cut\n"
"from the end of a table can only be seen against such an anchor.  Then\n"
"compares the file's schema (tables, views, indexes, triggers) with what\n"
"the schema migrations of its version create, and names every object that\n"
"is foreign, missing or altered: the chains do not cover the schema.\n"
"\n"
"DB may be files and directories (every *.db in them), in any order: the\n"
"files are read in the order of their chains (an archive or rotated file\n"
"before the file its chains go on in), and a file missing between two\n"
"given is named (the rows no file holds, and the file its successor's cut\n"
"names).  Two files holding the same rows, or two going on from one, are\n"
"an error.  A sealed file (rotated, or written by archive) whose successor\n"
"(given too) recorded its SHA-256 is checked by that hash instead of a walk\n"
"of its rows (and, for a rotated file with --anchor, against the module's\n"
"'sealed' line for it in FILE; an archive's record is in the live file's\n"
"events, which its anchors cover).\n"
"\n"
"  --deep         walk every row of sealed files too\n"
"  --key FILE     the MTLSAuditChainKey file, when the server uses one\n"
"  --anchor FILE  also check the anchors (chain heads) the module wrote to\n"
"                 its error log, FILE: rows removed from the end of a table\n"
"                 are found only this way.  With one DB every anchor in\n"
"                 FILE is checked; with several, those naming one of them,\n"
"                 each row in the file that holds it now (the archive, for\n"
"                 a row archived after the anchor was written: give\n"
"                 ARCHIVE and LIVE together)\n"
"  --no-record    do not record this check in the databases\n"
"\n"
"Exit: 0 ok, 1 a finding, 2 usage, 3 database or I/O error.  A finding: a\n"
"break, an altered schema, a sealed file changed or a file missing between\n"
"two given.\n";

/* Archive cuts among the files verified together: an archive whose
 * chains end exactly where another file's begin is continued by it.  A
 * table cut at the same row with another hash means one of the two files
 * is not what the cut recorded; an archive that the other file's cut
 * names (the path given to archive) but that ends before that file
 * begins has lost rows at its end, even if its own record of its end was
 * rewritten to match.  Returns 1 on such a mismatch. */
static int check_cuts(char **files, int n,
                      mtls_chain_result_t (*res)[MTLS_ANCHOR_TABLES])
{
    int i, j, t, bad = 0;
    char *(*named)[MTLS_ANCHOR_TABLES] = n > 0 ? calloc((size_t)n,
                                                        sizeof(*named)) : NULL;

    /* The file each base names. */
    for (j = 0; named && j < n; j++) {
        mtls_store_t *st;
        char err[256];
        if (mtls_store_open(files[j], MTLS_STORE_READONLY, 5000, &st, err,
                            sizeof(err)) != SQLITE_OK) {
            continue;
        }
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            unsigned char h[MTLS_HASH_LEN];
            apr_int64_t id;
            if (res[j][t].base_id) {
                mtls_chain_cut(mtls_store_db(st), "main",
                               mtls_anchor_tables[t], "base", &id, h,
                               &named[j][t]);
            }
        }
        mtls_store_close(st);
    }
    for (i = 0; i < n; i++) {
        for (j = 0; j < n; j++) {
            int joined = 0, apart = 0;
            if (i == j) continue;
            for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
                const mtls_chain_result_t *a = &res[i][t], *l = &res[j][t];
                if (!a->end_id || !l->base_id) continue;
                if (a->end_id == l->base_id
                    && !memcmp(a->head, l->base, MTLS_HASH_LEN)) {
                    joined++;
                }
                else if (a->end_id == l->base_id) {
                    apart++;
                    printf("  %s: %s ends at row %lld with another hash "
                           "than %s starts from\n", mtls_anchor_tables[t],
                           files[i], (long long)a->end_id, files[j]);
                }
                else if (a->end_id < l->base_id && named && named[j][t]
                         && same_path(named[j][t], files[i])) {
                    apart++;
                    printf("  %s: %s ends at row %lld, but %s, whose cut "
                           "names it, starts after row %lld: rows %lld-%lld "
                           "are in neither file\n", mtls_anchor_tables[t],
                           files[i], (long long)a->end_id, files[j],
                           (long long)l->base_id, (long long)a->end_id + 1,
                           (long long)l->base_id);
                }
            }
            {
                /* Cut at the same row of some table only (one that took
                 * no row since) is no link: the set knows the links. */
                const file_meta_t *mj = file_meta(files[j]);
                if (mj && files_set()->n > 1 && (mj->pred < 0
                    || strcmp(files_set()->f[mj->pred].path, files[i]))) {
                    joined = 0;
                }
            }
            if (joined && !apart) {
                printf("%s continues into %s: ok (%d tables cut)\n",
                       files[i], files[j], joined);
            }
            bad |= apart > 0;
        }
    }
    for (j = 0; named && j < n; j++) {
        for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
            sqlite3_free(named[j][t]);
        }
    }
    free(named);
    return bad;
}

/* A sealed file checked by its hash: the chain results its cuts give
 * (the file is, byte for byte, the one that was sealed). */
static void sealed_results(const char *path,
                           mtls_chain_result_t res[MTLS_ANCHOR_TABLES])
{
    mtls_store_t *st;
    char err[256];
    int t;

    memset(res, 0, sizeof(mtls_chain_result_t) * MTLS_ANCHOR_TABLES);
    if (mtls_store_open(path, MTLS_STORE_READONLY, 5000, &st, err,
                        sizeof(err)) != SQLITE_OK) {
        return;
    }
    for (t = 0; t < MTLS_ANCHOR_TABLES; t++) {
        sqlite3 *db = mtls_store_db(st);
        mtls_chain_cut(db, "main", mtls_anchor_tables[t], "base",
                       &res[t].base_id, res[t].base, NULL);
        mtls_chain_cut(db, "main", mtls_anchor_tables[t], "end",
                       &res[t].end_id, res[t].head, NULL);
        res[t].head_id = res[t].end_id;
    }
    mtls_store_close(st);
}

static int cmd_verify(int argc, char **argv)
{
    const char *keyfile = NULL, *kerr, *anchor = NULL;
    int no_record = 0, deep = 0;
    const opt_t opts[] = {
        { "--key", 1, &keyfile, NULL }, { "--no-record", 0, NULL, &no_record },
        { "--anchor", 1, &anchor, NULL }, { "--deep", 0, NULL, &deep },
        { NULL, 0, NULL, NULL }
    };
    mtls_chain_key_t key = { NULL, 0 };
    mtls_chain_result_t (*all)[MTLS_ANCHOR_TABLES] = NULL;
    anchor_info_t *anchors = NULL;
    int i, t, nfiles, broken = 0, rc;
    char **files, buf[512];

    rc = parse_opts(argc, argv, opts, verify_help, "verify", &files, &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
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
    if (!(all = calloc((size_t)nfiles, sizeof(*all)))) {
        fail("out of memory");
        free(files);
        return EXIT_DB;
    }
    /* The anchors first, over the files as one set: a row an anchor of
     * the live file names may be in an archive now. */
    if (anchor) {
        char err[1024];
        if (!(anchors = calloc((size_t)nfiles, sizeof(*anchors)))) {
            fail("out of memory");
            rc = EXIT_DB;
        }
        else if (check_anchor_files(anchor, files, nfiles, anchors, err,
                                    sizeof(err)) != 0) {
            fail("%s", err);
            rc = EXIT_DB;
        }
    }
    for (i = 0; i < nfiles && rc == EXIT_OK; i++) {
        mtls_chain_result_t *res = all[i];
        file_meta_t *m = file_meta(files[i]);
        char err[256], seal[1024];
        int sealed = -1;

        /* A sealed file whose successor recorded its hash: the hash,
         * unless --deep. */
        seal[0] = '\0';
        if (!deep) {
            sealed = check_sealed(m, seal, sizeof(seal));
        }
        if (sealed >= 0) {
            printf("%s\n", files[i]);
            printf("  %-12s %s  %s\n", "sealed", sealed ? "ok" : "BROKEN",
                   seal);
            broken |= !sealed;
            if (sealed && anchor) {
                /* The module's line for the seal in its error log. */
                int log = sealed_in_log(anchor, m, m->sealed_sha256, seal,
                                        sizeof(seal));
                if (log >= 0) {
                    printf("  %-12s %s  %s\n", "sealed", log ? "ok"
                           : "BROKEN", seal);
                    broken |= !log;
                }
            }
            sealed_results(files[i], res);
            if (m) m->how = HOW_SHA256;
        }
        else if (verify_file(files[i], &key, res, err, sizeof(err))
                 != SQLITE_OK) {
            fail("%s: %s", files[i], err);
            rc = EXIT_DB;
            break;
        }
        else {
            printf("%s\n", files[i]);
            if (m) m->how = HOW_WALKED;
            if (seal[0]) {
                printf("  %-12s walked: %s\n", "sealed", seal);
            }
        }
        if (m && m->missing[0]) {
            printf("  %-12s MISSING  %s\n", "files", m->missing);
            broken = 1;
        }
        for (t = 0; sealed < 0 && t < MTLS_ANCHOR_TABLES; t++) {
            char hex[2 * MTLS_HASH_LEN + 1];
            mtls_hex(res[t].head, MTLS_HASH_LEN, hex);
            if (res[t].bad_id) {
                broken = 1;
                printf("  %-12s BROKEN at id %lld: %s\n", mtls_anchor_tables[t],
                       (long long)res[t].bad_id, res[t].why);
            }
            else {
                printf("  %-12s ok  %lld rows  head id %lld  %s\n",
                       mtls_anchor_tables[t], (long long)res[t].rows,
                       (long long)res[t].head_id, hex);
            }
            if (res[t].base_id) {
                printf("  %-12s starts after row %lld (archived)\n", "",
                       (long long)res[t].base_id);
            }
            if (res[t].end_id) {
                printf("  %-12s %s: goes on after row %lld in the %s file\n",
                       "", m && m->seal_id ? "sealed by a rotation"
                       : "an archive", (long long)res[t].end_id,
                       m && m->seal_id ? "next" : "live");
            }
        }
        {
            /* The chains cover rows, not the schema: a view, trigger or
             * index someone added, removed or changed shows here. */
            char msg[1024];
            int ndiff;
            if (schema_file(files[i], &ndiff, msg, sizeof(msg)) != 0) {
                fail("%s: %s", files[i], msg);
                rc = EXIT_DB;
                break;
            }
            printf("  %-12s %s  %s\n", "schema", ndiff ? "ALTERED" : "ok",
                   msg);
            broken |= ndiff > 0;
        }
        if (anchor) {
            const anchor_info_t *a = &anchors[i];
            printf("  %-12s %s  %s\n", "anchors", a->rc ? "BROKEN"
                   : a->anchored ? "ok" : "none", a->msg);
            broken |= a->rc;
        }
    }
    if (rc == EXIT_OK) {
        broken |= check_cuts(files, nfiles, all);
    }
    free(all);
    free(anchors);
    rc = finish_output(stdout, rc == EXIT_OK && broken ? EXIT_FINDING : rc);
    if (rc != EXIT_DB && !no_record) {
        record_access(files, nfiles, cmdline(argc, argv, buf, sizeof(buf)),
                      &key);
    }
    mtls_chain_key_clear(&key);
    free(files);
    return rc;
}

/* ------------------------------------------------------------------ */
/* export                                                               */

static const char export_help[] =
"usage: mtls-audit export [--format jsonl|ecs|ocsf] [--since D] [--until D]\n"
"                         DB...\n"
"\n"
"Write the records of each database as JSON lines, exactly as\n"
"MTLSAuditMirror writes them while the server records (with\n"
"MTLSAuditMirrorFormat native, ecs or ocsf): one object per row of\n"
"v_handshakes, v_requests and v_events.  Ship them to a log pipeline\n"
"(rsyslog, Fluent Bit, Vector, Splunk, Loki) or a SIEM.  Rows come\n"
"database by database, each view in id order.\n"
"\n"
"  --format jsonl  (the default) \"type\" (handshake, request, event),\n"
"                  \"source\" (the database file) and every column of the\n"
"                  view under its own name, times in RFC 3339 (UTC); the\n"
"                  lines follow schema/mirror.schema.json\n"
"  --format ecs    Elastic Common Schema 9.4.0 documents (@timestamp,\n"
"                  event.*, source.*, tls.client.x509.*, url.path, http.*),\n"
"                  the other columns under mtls_audit.*\n"
"  --format ocsf   OCSF 1.8.0 events: handshakes as Authentication (3002),\n"
"                  requests as HTTP Activity (4002), the module's own\n"
"                  events as Base Event (0); the other columns under\n"
"                  unmapped.mtls_audit\n"
"  --since D       rows from D on (2026-11-01 or 2026-11-01T10:00:00Z)\n"
"  --until D       rows before D\n"
"\n"
"Exit: 0 ok, 2 usage, 3 database or I/O error.\n";

/* A short write shows in finish_output (ferror): exit 3. */
static void export_line(void *baton, const char *line, int len)
{
    fwrite(line, 1, (size_t)len, baton);
}

static int cmd_export(int argc, char **argv)
{
    const char *format = "jsonl", *since_s = NULL, *until_s = NULL;
    const opt_t opts[] = {
        { "--format", 1, &format, NULL }, { "--since", 1, &since_s, NULL },
        { "--until", 1, &until_s, NULL }, { NULL, 0, NULL, NULL }
    };
    apr_int64_t since = INT64_MIN, until = INT64_MAX;
    char **files, err[256], buf[512];
    int rc, i, v, nfiles, fmt;

    rc = parse_opts(argc, argv, opts, export_help, "export", &files,
                    &nfiles);
    if (rc != EXIT_OK) {
        free(files);
        return rc < 0 ? finish_output(stdout, EXIT_OK) : rc;
    }
    /* jsonl is the native rendering; ecs and ocsf the standards' */
    fmt = !strcmp(format, "jsonl") ? MTLS_JSON_NATIVE
          : mtls_json_format(format);
    if (fmt < 0 || (fmt == MTLS_JSON_NATIVE && strcmp(format, "jsonl"))) {
        fail("--format: '%s' is not jsonl, ecs or ocsf", format);
        rc = EXIT_USAGE;
    }
    else if ((since_s && parse_time(since_s, &since) != 0)
             || (until_s && parse_time(until_s, &until) != 0)) {
        fail("--since/--until: not a date (2026-11-01 or "
             "2026-11-01T10:00:00Z)");
        rc = EXIT_USAGE;
    }
    else if (!nfiles) {
        fail("no database given; see 'mtls-audit export --help'");
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_OK && (since_s || until_s)) {
        select_period(files, &nfiles, since, until);
    }
    for (i = 0; rc == EXIT_OK && i < nfiles; i++) {
        mtls_store_t *st;
        if (mtls_store_open(files[i], MTLS_STORE_READONLY, 5000, &st, err,
                            sizeof(err)) != SQLITE_OK) {
            fail("%s: %s", files[i], err);
            rc = EXIT_DB;
            break;
        }
        for (v = 0; rc == EXIT_OK && v < MTLS_JSON_VIEWS; v++) {
            if (mtls_json_rows(mtls_store_db(st), fmt, v, 1, since, until,
                               files[i], export_line, stdout) != SQLITE_OK) {
                fail("%s: %s", files[i], sqlite3_errmsg(mtls_store_db(st)));
                rc = EXIT_DB;
            }
        }
        mtls_store_close(st);
    }
    rc = finish_output(stdout, rc);
    if (rc == EXIT_OK) {
        record_access(files, nfiles, cmdline(argc, argv, buf, sizeof(buf)),
                      NULL);
    }
    free(files);
    return rc;
}

/* ------------------------------------------------------------------ */

static const char main_help[] =
"usage: mtls-audit COMMAND [OPTIONS] DB...\n"
"\n"
"Read the audit databases of mod_mtls_audit.  Several DB files (one per\n"
"server) are read as one data set.  A DB may be a directory (every *.db in\n"
"it); files are read in the order of their chains (chain_cut), whatever\n"
"order they are given in, a file missing between two is named, and a\n"
"period reads only the files whose time range meets it.\n"
"\n"
"Commands:\n"
"  report   compliance evidence: --standard pci-dss, hipaa or summary\n"
"  query    list recorded handshakes, with filters\n"
"  certs    the inventory of client certificates seen\n"
"  verify   check the hash chains and the schema of the databases\n"
"  archive  move old rows to another file while the server writes\n"
"  export   the records as JSON lines (native, ECS or OCSF), as\n"
"           MTLSAuditMirror writes them\n"
"  policy   the TLS policy in force (verification, CAs, revocation,\n"
"           protocols, suites) per vhost, or its history of changes\n"
"  version  print the version\n"
"\n"
"'mtls-audit COMMAND --help' describes each command.\n"
"Exit codes: 0 ok, 1 a finding (a FAIL in a report, a break or an altered\n"
"schema in verify), 2 usage, 3 a database or I/O error.\n";

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("mtls-audit %s (schema %d, %s, SQLite %s)\n", MTLS_VERSION,
           mtls_schema_version(), OpenSSL_version(OPENSSL_VERSION),
           sqlite3_libversion());
    return finish_output(stdout, EXIT_OK);
}

typedef struct {
    const char *name;
    int (*fn)(int, char **);
} command_t;

static const command_t commands[] = {
    { "report",  cmd_report },
    { "query",   cmd_query },
    { "certs",   cmd_certs },
    { "verify",  cmd_verify },
    { "archive", cmd_archive },
    { "export",  cmd_export },
    { "policy",  cmd_policy },
    { "version", cmd_version },
    { NULL, NULL }
};

int mtls_audit_main(int argc, char **argv)
{
    int i;

    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")
        || !strcmp(argv[1], "help")) {
        fputs(main_help, stdout);
        return finish_output(stdout, EXIT_OK);
    }
    if (!strcmp(argv[1], "--version")) {
        return cmd_version(argc - 1, argv + 1);
    }
    for (i = 0; commands[i].name; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            files_forget();
            return rc;
        }
    }
    fail("'%s' is not a command; see 'mtls-audit --help'", argv[1]);
    return EXIT_USAGE;
}

#ifndef MTLS_AUDIT_NO_MAIN
int main(int argc, char **argv)
{
    return mtls_audit_main(argc, argv);
}
#endif
