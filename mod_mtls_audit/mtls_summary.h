/* Counts by hour that the reports read instead of every row.
 *
 * A file's `summaries` rows are computed once, when it is sealed (by the
 * module at rotation, by `mtls-audit archive` for its output), and inside
 * the sealing transaction, so the seal and the file's SHA-256 cover them.
 * The tool computes the same counts for a live file as it reads it. */
#ifndef MTLS_SUMMARY_H
#define MTLS_SUMMARY_H

#include <sqlite3.h>
#include <apr.h>

/* Fill the summaries of every row of db (in the caller's transaction).
 * Returns 0, or -1 with err set. */
int mtls_summary_fill(sqlite3 *db, char *err, apr_size_t errlen);

/* Whether s holds a card number: a run of 13 to 19 digits (single spaces
 * or dashes allowed between them) that passes the Luhn check.  The
 * reports and the summaries' `pan` count the same paths. */
int mtls_has_pan(const char *s);

#endif /* MTLS_SUMMARY_H */
