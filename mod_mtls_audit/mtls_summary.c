/* Summaries: see mtls_summary.h and schema/005_summaries.sql.
 *
 * Four INSERT ... SELECT, one per kind of row, each one pass over its
 * table grouped in SQLite.  What they count is what the reports count row
 * by row (tools/scan.c): a certificate is "presented" when the handshake's
 * cert_id names a row of `certificates`; a request is "unauth" when its
 * handshake has no such certificate with verify_result 0. */
#include <stdio.h>

#include "mtls_summary.h"

#define HOUR_US "3600000000"
#define DAY_H   "24"

static const char *const fill_sql[] = {
    "DELETE FROM summaries",

    /* handshakes, by hour */
    "INSERT INTO summaries (hour, kind, server_name, sni, tls_version, "
    " cipher, outcome, verify_result, verify_error, alert, cert_id, "
    " revocation_method, revocation_status, n, complete, outside, first_us, "
    " last_us) "
    "SELECT h.time_us / " HOUR_US ", 'handshakes', h.server_name, h.sni, "
    " h.tls_version, h.cipher, h.outcome, h.verify_result, h.verify_error, "
    " h.alert, c.id IS NOT NULL, h.revocation_method, h.revocation_status, "
    " count(*), "
    " sum(h.client_addr IS NOT NULL AND h.server_name IS NOT NULL "
    "     AND (h.outcome != 1 OR c.id IS NOT NULL)), "
    " sum(h.outcome = 1 AND c.id IS NOT NULL "
    "     AND (h.time_us / 1000000 > coalesce(c.not_after, 0) "
    "          OR h.time_us / 1000000 < coalesce(c.not_before, 0))), "
    " min(h.time_us), max(h.time_us) "
    "FROM handshakes h LEFT JOIN certificates c ON c.id = h.cert_id "
    "GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13",

    /* certificates, by day */
    "INSERT INTO summaries (hour, kind, cert_id, outcome, n, first_us, "
    " last_us) "
    "SELECT h.time_us / " HOUR_US " / " DAY_H " * " DAY_H ", 'certificate', "
    " h.cert_id, h.outcome, count(*), min(h.time_us), max(h.time_us) "
    "FROM handshakes h JOIN certificates c ON c.id = h.cert_id "
    "GROUP BY 1, 3, 4",

    /* failures, by half hour */
    "INSERT INTO summaries (hour, kind, slot, sni, outcome, verify_error, "
    " alert, cert_id, client_addr, n, first_id, first_us, last_us) "
    "SELECT h.time_us / " HOUR_US ", 'failure', "
    " h.time_us / 1800000000 - h.time_us / " HOUR_US " * 2, h.sni, "
    " h.outcome, h.verify_error, h.alert, c.id, h.client_addr, count(*), "
    " min(h.id), min(h.time_us), max(h.time_us) "
    "FROM handshakes h LEFT JOIN certificates c ON c.id = h.cert_id "
    "WHERE h.outcome != 1 "
    "GROUP BY 1, 3, 4, 5, 6, 7, 8, 9",

    /* certificates shared by more than 3 addresses in an hour */
    "INSERT INTO summaries (hour, kind, cert_id, n, client_addr) "
    "WITH a AS (SELECT h.time_us / " HOUR_US " AS hour, h.cert_id, "
    "             h.client_addr, min(h.id) AS fid "
    "           FROM handshakes h JOIN certificates c ON c.id = h.cert_id "
    "           WHERE h.outcome = 1 AND h.client_addr IS NOT NULL "
    "           GROUP BY 1, 2, 3), "
    "     g AS (SELECT hour, cert_id, count(*) AS n FROM a GROUP BY 1, 2 "
    "           HAVING count(*) > 3) "
    "SELECT g.hour, 'shared', g.cert_id, g.n, "
    " (SELECT group_concat(client_addr, ',') FROM (SELECT client_addr FROM a "
    "   WHERE a.hour = g.hour AND a.cert_id = g.cert_id ORDER BY fid "
    "   LIMIT 4)) "
    "FROM g",

    /* a child's clock going backwards */
    "INSERT INTO summaries (hour, kind, n) "
    "SELECT time_us / " HOUR_US ", 'backwards', count(*) FROM "
    " (SELECT time_us, lag(time_us) OVER (PARTITION BY pid ORDER BY id) "
    "  AS prev FROM handshakes) WHERE time_us < prev - 1000000 GROUP BY 1",

    /* requests, by hour */
    "INSERT INTO summaries (hour, kind, status, n, unauth, pan, first_us, "
    " last_us) "
    "SELECT r.time_us / " HOUR_US ", 'requests', r.status, count(*), "
    " sum(NOT EXISTS (SELECT 1 FROM handshakes h JOIN certificates c "
    "                 ON c.id = h.cert_id WHERE h.id = r.handshake_id "
    "                 AND h.verify_result = 0)), "
    " sum(mtls_has_pan(r.path)), "
    " min(r.time_us), max(r.time_us) "
    "FROM requests r GROUP BY 1, 3",
    NULL
};

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

int mtls_has_pan(const char *s)
{
    char digits[64];
    int n = 0;
    const char *p;

    if (!s) {
        return 0;
    }
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

static void sql_has_pan(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int(ctx, sqlite3_value_type(argv[0]) == SQLITE_TEXT
                       && mtls_has_pan((const char *)
                                       sqlite3_value_text(argv[0])));
}

int mtls_summary_fill(sqlite3 *db, char *err, apr_size_t errlen)
{
    int k;

    if (sqlite3_create_function(db, "mtls_has_pan", 1, SQLITE_UTF8
                                | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY,
                                NULL, sql_has_pan, NULL, NULL) != SQLITE_OK) {
        if (errlen) {
            snprintf(err, errlen, "summaries: %s", sqlite3_errmsg(db));
        }
        return -1;
    }
    for (k = 0; fill_sql[k]; k++) {
        if (sqlite3_exec(db, fill_sql[k], NULL, NULL, NULL) != SQLITE_OK) {
            if (errlen) {
                snprintf(err, errlen, "summaries: %s", sqlite3_errmsg(db));
            }
            return -1;
        }
    }
    if (errlen) {
        err[0] = '\0';
    }
    return 0;
}
