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

/* The renderings of a row (MTLSAuditMirrorFormat, export --format):
 * native (the view's columns, above), ecs (an Elastic Common Schema
 * document, MTLS_ECS_VERSION; our own columns under mtls_audit.*) and
 * ocsf (an OCSF MTLS_OCSF_VERSION event: handshakes as Authentication,
 * class 3002; requests as HTTP Activity, 4002; events as Base Event, 0;
 * our own columns under unmapped.mtls_audit).  The mapping is in
 * README.md (Operations) and mtls_json.c (ecs_doc, ocsf_doc). */
#define MTLS_JSON_NATIVE  0
#define MTLS_JSON_ECS     1
#define MTLS_JSON_OCSF    2
#define MTLS_JSON_FORMATS 3
#define MTLS_ECS_VERSION  "9.4.0"
#define MTLS_OCSF_VERSION "1.8.0"
extern const char *const mtls_json_formats[MTLS_JSON_FORMATS];

/* The format named name (native, ecs, ocsf), or -1. */
int mtls_json_format(const char *name);

/* s (len bytes, or up to NUL when len < 0) as a JSON string. */
void mtls_json_str(sqlite3_str *out, const char *s, int len);

/* The current row of stmt as one line, '\n' included. */
void mtls_json_row(sqlite3_str *out, sqlite3_stmt *stmt, const char *type,
                   const char *source);

/* The current row of stmt, of view v (an index into mtls_json_view), as
 * one line of format, '\n' included.  Finds the columns by name on
 * every call; mtls_json_rows does it once per statement. */
void mtls_json_doc(sqlite3_str *out, sqlite3_stmt *stmt, int format, int v,
                   const char *source);

/* Lines of format for the rows of view v (an index into mtls_json_view) of db with
 * lo <= id <= hi, or with by_time, those whose table row has
 * lo <= time_us < hi; each given to fn, in id order.  Returns SQLITE_OK or
 * an SQLite error. */
int mtls_json_rows(sqlite3 *db, int format, int v, int by_time,
                   apr_int64_t lo, apr_int64_t hi, const char *source,
                   void (*fn)(void *baton, const char *line, int len),
                   void *baton);

#endif /* MTLS_JSON_H */
