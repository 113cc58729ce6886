/*
 * mtls_json.c -- audit rows as JSON lines (see mtls_json.h).
 */
#include <stdio.h>
#include <string.h>

#include "mtls_json.h"

const char *const mtls_json_view[MTLS_JSON_VIEWS] = {
    "v_handshakes", "v_requests", "v_events"
};
const char *const mtls_json_type[MTLS_JSON_VIEWS] = {
    "handshake", "request", "event"
};

void mtls_json_str(sqlite3_str *out, const char *s, int len)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + (len < 0 ? (int)strlen(s) : len);

    sqlite3_str_appendchar(out, 1, '"');
    for (; p < end; p++) {
        switch (*p) {
        case '"':  sqlite3_str_appendall(out, "\\\""); break;
        case '\\': sqlite3_str_appendall(out, "\\\\"); break;
        case '\n': sqlite3_str_appendall(out, "\\n"); break;
        case '\r': sqlite3_str_appendall(out, "\\r"); break;
        case '\t': sqlite3_str_appendall(out, "\\t"); break;
        case '<':  sqlite3_str_appendall(out, "\\u003c"); break;
        case '>':  sqlite3_str_appendall(out, "\\u003e"); break;
        case '&':  sqlite3_str_appendall(out, "\\u0026"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                sqlite3_str_appendf(out, "\\u%04x", *p);
            }
            else {
                sqlite3_str_appendchar(out, 1, (char)*p);
            }
        }
    }
    sqlite3_str_appendchar(out, 1, '"');
}

void mtls_json_row(sqlite3_str *out, sqlite3_stmt *stmt, const char *type,
                   const char *source)
{
    int i, n = sqlite3_column_count(stmt);

    sqlite3_str_appendall(out, "{\"type\":");
    mtls_json_str(out, type, -1);
    sqlite3_str_appendall(out, ",\"source\":");
    mtls_json_str(out, source ? source : "", -1);
    for (i = 0; i < n; i++) {
        sqlite3_str_appendchar(out, 1, ',');
        mtls_json_str(out, sqlite3_column_name(stmt, i), -1);
        sqlite3_str_appendchar(out, 1, ':');
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER:
            sqlite3_str_appendf(out, "%lld", sqlite3_column_int64(stmt, i));
            break;
        case SQLITE_FLOAT:
            sqlite3_str_appendf(out, "%!.17g", sqlite3_column_double(stmt, i));
            break;
        case SQLITE_NULL:
            sqlite3_str_appendall(out, "null");
            break;
        default:        /* text; a blob (none in the views) as its bytes */
            mtls_json_str(out, (const char *)sqlite3_column_text(stmt, i),
                          sqlite3_column_bytes(stmt, i));
        }
    }
    sqlite3_str_appendall(out, "}\n");
}

int mtls_json_rows(sqlite3 *db, int v, int by_time, apr_int64_t lo,
                   apr_int64_t hi, const char *source,
                   void (*fn)(void *baton, const char *line, int len),
                   void *baton)
{
    static const char *const table[MTLS_JSON_VIEWS] = {
        "handshakes", "requests", "events"
    };
    sqlite3_stmt *stmt;
    sqlite3_str *line;
    char sql[160];
    int rc;

    if (by_time) {
        snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE id IN (SELECT id "
                 "FROM %s WHERE time_us >= ?1 AND time_us < ?2) ORDER BY id",
                 mtls_json_view[v], table[v]);
    }
    else {
        snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE id BETWEEN ?1 "
                 "AND ?2 ORDER BY id", mtls_json_view[v]);
    }
    if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK) {
        return rc;
    }
    sqlite3_bind_int64(stmt, 1, lo);
    sqlite3_bind_int64(stmt, 2, hi);
    line = sqlite3_str_new(db);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        sqlite3_str_reset(line);
        mtls_json_row(line, stmt, mtls_json_type[v], source);
        if ((rc = sqlite3_str_errcode(line)) != SQLITE_OK) {
            break;
        }
        fn(baton, sqlite3_str_value(line), sqlite3_str_length(line));
    }
    sqlite3_free(sqlite3_str_finish(line));
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}
