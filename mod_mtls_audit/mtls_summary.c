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
    "INSERT INTO summaries (hour, kind, cert_id, outcome, verify_result, n, "
    " first_us, last_us) "
    "SELECT h.time_us / " HOUR_US " / " DAY_H " * " DAY_H ", 'certificate', "
    " h.cert_id, h.outcome, h.verify_result, count(*), min(h.time_us), "
    " max(h.time_us) "
    "FROM handshakes h JOIN certificates c ON c.id = h.cert_id "
    "GROUP BY 1, 3, 4, 5",

    /* failures, by half hour */
    "INSERT INTO summaries (hour, kind, slot, sni, outcome, verify_result, "
    " verify_error, alert, cert_id, client_addr, n, first_us, last_us) "
    "SELECT h.time_us / " HOUR_US ", 'failure', "
    " h.time_us / 1800000000 - h.time_us / " HOUR_US " * 2, h.sni, "
    " h.outcome, h.verify_result, h.verify_error, h.alert, c.id, "
    " h.client_addr, count(*), min(h.time_us), max(h.time_us) "
    "FROM handshakes h LEFT JOIN certificates c ON c.id = h.cert_id "
    "WHERE h.outcome != 1 "
    "GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10",

    /* requests, by hour */
    "INSERT INTO summaries (hour, kind, status, n, unauth, first_us, "
    " last_us) "
    "SELECT r.time_us / " HOUR_US ", 'requests', r.status, count(*), "
    " sum(NOT EXISTS (SELECT 1 FROM handshakes h JOIN certificates c "
    "                 ON c.id = h.cert_id WHERE h.id = r.handshake_id "
    "                 AND h.verify_result = 0)), "
    " min(r.time_us), max(r.time_us) "
    "FROM requests r GROUP BY 1, 3",
    NULL
};

int mtls_summary_fill(sqlite3 *db, char *err, apr_size_t errlen)
{
    int k;

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
