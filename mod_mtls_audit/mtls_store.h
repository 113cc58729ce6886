/*
 * mtls_store.h -- the SQLite store of audit records.
 *
 * DESIGN
 * One mtls_store_t is one SQLite connection, used by one thread: the
 * writer thread of an httpd child, the parent at start-up, or the tool.
 * (After a rotation, the store's sealer thread finishes the sealed file
 * on a connection of its own; see mtls_store_rotate.)
 * Several processes may write one file: each batch is one BEGIN IMMEDIATE
 * transaction that reads the tail of each chain, appends, and commits, so
 * the chains stay linear whatever the interleaving.  A row is hashed into
 * its chain when it is appended; handshakes and requests then wait to go
 * into SQLite 16 rows per INSERT (a statement's fixed cost is about a
 * row's), at the latest when the batch ends.  Certificates are
 * stored once per SHA-256; a small cache avoids asking SQLite again for the
 * ones a child has just seen.  The schema lives in schema/NNN_*.sql, compiled
 * in, applied and upgraded here by the module and the tool alike.
 */
#ifndef MTLS_STORE_H
#define MTLS_STORE_H

#include "mtls_core.h"
#include "mtls_chain.h"

#include <sqlite3.h>

typedef struct mtls_store mtls_store_t;

#define MTLS_STORE_READONLY  0x01   /* open read-only, never change schema */
#define MTLS_STORE_NO_DER    0x02   /* do not keep certificates' DER */
/* With READONLY, for a reader that walks the whole file (the tool's
 * verify): open through the VFS named MTLS_STORE_SCAN_VFS when one is
 * registered (tools/readahead.c), else the default one. */
#define MTLS_STORE_SCAN      0x04
#define MTLS_STORE_SCAN_VFS  "mtls-ra"
/* A write into a sealed file fails (SQLITE_READONLY) instead of going on
 * in the file its seal names: for the tool, which runs as whoever reads
 * and must not open for writing a path that the file's writer chose. */
#define MTLS_STORE_NOFOLLOW  0x08

/* The newest schema version this build knows. */
int mtls_schema_version(void);

/* Apply every migration newer than the database's user_version.  Returns
 * SQLITE_OK or an error, with a message in err. */
int mtls_schema_apply(sqlite3 *db, char *err, apr_size_t errlen);

/* Make db safe to point at a file someone else may have written:
 * SQLITE_DBCONFIG_DEFENSIVE (no writable_schema, no corrupting PRAGMAs)
 * and trusted_schema OFF (the file's views and triggers may call only
 * innocuous functions, never the application's own).  Every connection
 * the module and the tool open goes through here before it reads a
 * schema.  Returns SQLITE_OK or an error. */
int mtls_db_harden(sqlite3 *db);

/* Compare every object of the schema `schema` (main, db0, ...) of db --
 * tables, views, indexes, triggers, SQLite's own tables -- with what the
 * migrations up to that schema's user_version create, built afresh in
 * memory: type, name, table and the CREATE statement's text (comments and
 * white space dropped, keywords and bare names in lower case; quoted text
 * kept).  Returns SQLITE_OK with *ndiff the number of objects foreign,
 * missing or altered, and msg naming them ("view v_handshakes altered;
 * trigger t foreign; ..."; "N objects as schema version V" when none), or
 * an error with a message in msg. */
int mtls_schema_check(sqlite3 *db, const char *schema, int *ndiff,
                      char *msg, apr_size_t msglen);

/* Create, in db's TEMP schema, a view PREFIXname for each view the
 * migrations up to version define, from their own CREATE VIEW text, each
 * reading the tables of `schema` by qualified name (a WITH clause names
 * them).  Unqualified names resolve to TEMP first: with prefix "" the
 * file's own views, altered or not, are never read.  Returns SQLITE_OK or
 * an error with a message in err. */
int mtls_schema_temp_views(sqlite3 *db, const char *schema, int version,
                           const char *prefix, char *err, apr_size_t errlen);

/* The schema's user_version, or -1 when it cannot be read. */
int mtls_schema_user_version(sqlite3 *db, const char *schema);

/* Open (creating if needed, unless READONLY) the database at path, in WAL
 * mode, with busy_timeout_ms of patience for locks, and bring its schema up
 * to date.  Returns SQLITE_OK and *out, or an error with a message in err
 * (and *out NULL). */
int mtls_store_open(const char *path, int flags, int busy_timeout_ms,
                    mtls_store_t **out, char *err, apr_size_t errlen);

/* The chain key to use from now on (borrowed: must outlive the store). */
void mtls_store_set_key(mtls_store_t *st, const mtls_chain_key_t *key);

/* Store n items in one transaction.  On success every handshake item's
 * link holds its row id.  On failure the transaction is rolled back, no
 * link keeps a row id from it, and the SQLite error is returned (message in
 * err): the caller still owns the items and may try again.  A transaction
 * committed into a file that was removed or replaced meanwhile (checked
 * after COMMIT) is a failure too: SQLITE_IOERR, as if rolled back. */
int mtls_store_write(mtls_store_t *st, mtls_item_t **items, int n,
                     char *err, apr_size_t errlen);

/* Is the file this store writes still the one at its path?  SQLite would
 * go on writing to a removed file, where nobody will ever read it.  A stat
 * of the path (and an fstat when it cannot be looked at); returns one of: */
#define MTLS_FILE_IN_PLACE 0    /* at its path; or the path cannot be
                                   looked at (a directory we may not
                                   search) and the file still has a link */
#define MTLS_FILE_REMOVED  1    /* nothing at the path, or the file has no
                                   link left */
#define MTLS_FILE_REPLACED 2    /* another file at the path */
int mtls_store_file_gone(mtls_store_t *st);

/* The ids the last successful mtls_store_write stored in table 0
 * handshakes, 1 requests or 2 events (mtls_json_view's order): a
 * contiguous range, as one transaction writes it; 0 and 0 for none. */
void mtls_store_written(mtls_store_t *st, int table, apr_int64_t *first,
                        apr_int64_t *last);

/* For monitoring: the distinct certificates of handshakes accepted since
 * since_us (*count) and the soonest not_after among them (*soonest, 0
 * when none), from the file at path opened read-only for this query only
 * (WAL: a reader never blocks the writers), waiting at most timeout_ms
 * for a lock.  Walks the handshakes since since_us by their time index.
 * Returns SQLITE_OK, or the error with a message in err. */
int mtls_store_cert_stats(const char *path, apr_int64_t since_us,
                          int timeout_ms, apr_int64_t *count,
                          apr_int64_t *soonest, char *err,
                          apr_size_t errlen);

/* Rotation (see mtls_store.c): seal the file st writes and go on in a new
 * file at next_path.  First, the previous seal of st still being
 * finished (mtls_store_seal_pending), wait for it and record it.  In one
 * write transaction of the old file: when it is sealed already (another
 * process rotated first), switch to the file its seal names, and on past
 * files sealed since; else make next_path (schema, the certificates
 * copied, chain_cut 'base' rows continuing the chains and the ids, first
 * event 'rotate'), write the old file's last event 'seal' (detail JSON:
 * next, first_us, last_us, tables: rows, head, hash) and its chain_cut
 * 'end' rows, and commit; switch st to next_path.  The old file is then
 * finished on st's sealer thread, with a connection of its own: its
 * summaries, its WAL checkpointed, its SHA-256.  That result goes into
 * st's file as event 'sealed' (and to the log, "sealed <path> sha256=..
 * bytes=.. seal=.. next=..") when st's own thread calls
 * mtls_store_seal_hash, mtls_store_seal_wait or mtls_store_close.
 * next_path must not exist.  Returns SQLITE_OK, or an error with err
 * set, st still on the old file, unsealed (or, the seal committed but
 * next_path not opened, sealed: its next write follows the seal). */
int mtls_store_rotate(mtls_store_t *st, const char *next_path, char *err,
                      apr_size_t errlen);

/* Names for rotated files.  mtls_store_seq_name: name with sequence
 * number seq before its extension (audit-2026-12.db, 2: audit-2026-12.2.db;
 * 0: name itself).  mtls_store_name: pattern expanded by strftime(3) at
 * time_us (UTC), then the first of name, name.1, name.2, ... that does
 * not exist.  Return 0, or -1 when out is too small or the pattern gives
 * nothing. */
int mtls_store_seq_name(const char *name, int seq, char *out,
                        apr_size_t len);
int mtls_store_name(const char *pattern, apr_int64_t time_us, char *out,
                    apr_size_t len);

/* MTLSAuditRotate */
#define MTLS_ROTATE_OFF      0
#define MTLS_ROTATE_DAILY    1
#define MTLS_ROTATE_WEEKLY   2      /* weeks start on Monday */
#define MTLS_ROTATE_MONTHLY  3
#define MTLS_ROTATE_SIZE     4

/* The end of the period (UTC) that holds t_us, for a DAILY, WEEKLY or
 * MONTHLY mode; 0 for another.  For tests only: with the environment
 * variable MTLS_AUDIT_TEST_ROTATE_SECONDS=N every period is N seconds. */
apr_int64_t mtls_rotate_period_end(int mode, apr_int64_t t_us);

/* Is the file st writes due for rotation at now_us?  SIZE: it holds at
 * least size bytes; a time mode: now is past the end of the period of its
 * first event. */
int mtls_store_rotate_due(mtls_store_t *st, int mode, apr_int64_t size,
                          apr_int64_t now_us);

/* The live file among those pattern names (strftime conversions as any
 * text, with or without a sequence number): the unsealed one with the
 * newest events.  Returns 1 with its path in out, 0 when there is none. */
int mtls_store_find_live(const char *pattern, char *out, apr_size_t len);

/* What the last mtls_store_rotate of st sealed; NULL when none. */
typedef struct {
    char        file[1024];     /* the sealed file */
    char        next[1024];     /* the file it continues into */
    char        sha256[65];     /* hex; "" until the sealer's result is
                                   recorded */
    apr_int64_t bytes;          /* its size */
    apr_int64_t seal;           /* the id of its 'seal' event */
    apr_int64_t time_us;        /* when */
} mtls_store_sealed_t;
const mtls_store_sealed_t *mtls_store_last_seal(mtls_store_t *st);

/* Record what st's sealer has finished (event 'sealed' into st, the log
 * line), without waiting; from the thread that uses st.  Returns
 * SQLITE_OK (recorded, or nothing finished), or the error of a record
 * that failed (tried again at the next call). */
int mtls_store_seal_hash(mtls_store_t *st, char *err, apr_size_t errlen);

/* Whether st's sealer has something for mtls_store_seal_hash to record
 * (cheap: a look under a mutex). */
int mtls_store_seal_ready(mtls_store_t *st);

/* Whether a seal of st is not finished and recorded yet, in a way worth
 * waiting for (the summaries or the hash are being made, or a result
 * waits to be recorded; not: a hash that waits for readers to leave the
 * WAL, tried again every 10 s, given up when the next seal comes).  The
 * writer puts a rotation off while it is. */
int mtls_store_seal_pending(mtls_store_t *st);

/* Wait, at most timeout_ms (-1: as long as it takes), until every seal
 * of st is finished, recording each; a hash waiting for readers is tried
 * again at once.  Returns SQLITE_OK, SQLITE_BUSY on timeout (err says
 * which file), or the error of a record. */
int mtls_store_seal_wait(mtls_store_t *st, int timeout_ms, char *err,
                         apr_size_t errlen);

/* When the file st writes continues a sealed file (its 'rotate' event
 * names it) whose 'sealed' record is not in st's file -- the process that
 * sealed it ended before its sealer was done, or crashed -- finish that
 * file on st's sealer (summaries if missing, hash, record), unless
 * another process is at it (a flock on the file says so: then look
 * again in 2 s).  Cheap once settled; from the thread that uses st.
 * Returns 1 when a job was queued, else 0. */
int mtls_store_finish_previous(mtls_store_t *st);

/* Hand the sealer of `from` (and its last seal) to `to`, a store of the
 * same data set opened in its place (the file was replaced). */
void mtls_store_move_seals(mtls_store_t *to, mtls_store_t *from);

/* The time rotations record in their events (mtls-gen: the generated
 * time); 0, the default, for the clock. */
void mtls_store_set_time(mtls_store_t *st, apr_int64_t time_us);

/* The file st writes now (it changes with a rotation, or when a write
 * finds its file sealed and follows the seal). */
const char *mtls_store_path(mtls_store_t *st);

sqlite3 *mtls_store_db(mtls_store_t *st);
/* Close st.  A sealed file its sealer is still finishing is waited for
 * 2 s at most, then given up (logged; the file is left without summaries
 * and/or its 'sealed' record until the next writer of its successor
 * finishes it, mtls_store_finish_previous; reports and verify read its
 * rows meanwhile). */
void     mtls_store_close(mtls_store_t *st);

#endif /* MTLS_STORE_H */
