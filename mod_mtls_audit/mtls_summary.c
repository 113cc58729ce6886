/* Summaries: see mtls_summary.h. */
#include "mtls_summary.h"

int mtls_summary_fill(sqlite3 *db, char *err, apr_size_t errlen)
{
    (void)db;
    if (errlen) {
        err[0] = '\0';
    }
    return 0;
}
