/*
 * mtls_json.h -- audit rows as JSON lines: the format of MTLSAuditMirror
 * (written by the module as it stores the records) and of
 * `mtls-audit export --format jsonl` (from stored databases), one code
 * for both so the two never drift apart.
 *
 * One line per row of the views v_handshakes, v_requests and v_events:
 *   {"type":"handshake","source":"/var/lib/.../audit.db","id":1,
 *    "time_utc":"2026-11-28T10:00:00.123Z",...}
 * type is handshake, request or event; source the database file; then
 * every column of the view under its own name, in view order, with its
 * SQLite type (integer or real: a number, text: a string, NULL: null).
 * Times are the views' RFC 3339 texts.  Strings are escaped so that a
 * line holds no raw control character, and <, > and & appear as \uXXXX
 * (safe to embed anywhere).  schema/mirror.schema.json describes it.
 */
#ifndef MTLS_JSON_H
#define MTLS_JSON_H

#include <apr.h>
#include <sqlite3.h>

/* The views rows are mirrored from, in the store's table order
 * (handshakes, requests, events), and their "type". */
#define MTLS_JSON_VIEWS 3
extern const char *const mtls_json_view[MTLS_JSON_VIEWS];
extern const char *const mtls_json_type[MTLS_JSON_VIEWS];

/* s (len bytes, or up to NUL when len < 0) as a JSON string. */
void mtls_json_str(sqlite3_str *out, const char *s, int len);

/* The current row of stmt as one line, '\n' included. */
void mtls_json_row(sqlite3_str *out, sqlite3_stmt *stmt, const char *type,
                   const char *source);

/* Lines for the rows of view v (an index into mtls_json_view) of db with
 * lo <= id <= hi, or with by_time, those whose table row has
 * lo <= time_us < hi; each given to fn, in id order.  Returns SQLITE_OK or
 * an SQLite error. */
int mtls_json_rows(sqlite3 *db, int v, int by_time, apr_int64_t lo,
                   apr_int64_t hi, const char *source,
                   void (*fn)(void *baton, const char *line, int len),
                   void *baton);

#endif /* MTLS_JSON_H */
