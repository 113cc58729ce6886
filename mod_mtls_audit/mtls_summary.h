/* Counts by hour that the reports read instead of every row.
 *
 * A file's `summaries` rows are computed once, when it is sealed (by the
 * module at rotation, right after the seal commits and before the file's
 * SHA-256 is taken, so that hash covers them; by `mtls-audit archive` for
 * its output).  The tool reads a file's summaries only where they count
 * exactly its rows, and its rows otherwise. */
#ifndef MTLS_SUMMARY_H
#define MTLS_SUMMARY_H

#include <sqlite3.h>
#include <apr.h>

/* Fill the summaries of every row of db.  In the caller's transaction if
 * it has one; otherwise the counts are made in reads alone and stored in
 * one short write transaction of their own.  Returns 0, or -1 with err
 * set. */
int mtls_summary_fill(sqlite3 *db, char *err, apr_size_t errlen);

/* Whether s holds a card number: a run of 13 to 19 digits (single spaces
 * or dashes allowed between them) that passes the Luhn check.  The
 * reports and the summaries' `pan` count the same paths. */
int mtls_has_pan(const char *s);

#endif /* MTLS_SUMMARY_H */
