/*
 * mtls_chain.h -- the hash chain that makes the audit tables tamper-evident.
 *
 * DESIGN
 * Each row of an audited table (certificates, handshakes, requests, events)
 * stores hash = H(prev || table || enc(col_1) || ... || enc(col_n)), where
 * prev is the hash of the row before it in the same table (32 zero bytes
 * for the first), col_1..col_n are all the row's columns but `hash`, in
 * table order, id included, and H is SHA-256, or HMAC-SHA256 under the key
 * of MTLSAuditChainKey.  enc() is a type byte followed by the value:
 *     0 NULL            (nothing more)
 *     1 INTEGER         8 bytes, big-endian two's complement
 *     2 REAL            8 bytes, the IEEE 754 bits, big-endian
 *     3 TEXT, 4 BLOB    4-byte big-endian length, then the bytes
 * Columns a later schema version added (ALTER TABLE ADD COLUMN puts them
 * after `hash`: handshakes' revocation_method and revocation_status, schema
 * 3) are encoded only up to the last one that is not NULL, so a row written
 * before they existed hashes as it did, and a value in one is covered (a
 * NULL there encodes as no column; the column count is the table's, so
 * no two rows of a table share an encoding).
 * The writer hashes the very values it binds; the verifier hashes what
 * SELECT * gives back.  Changing, deleting, inserting or reordering a row
 * breaks the chain at that row; removing rows at the tail needs an anchor
 * (a head hash kept elsewhere) to be seen, and AUTOINCREMENT ids make a
 * truncated-then-continued table show a gap in ids.
 */
#ifndef MTLS_CHAIN_H
#define MTLS_CHAIN_H

#include <apr.h>
#include <sqlite3.h>

#define MTLS_HASH_LEN 32

typedef enum {
    MTLS_V_NULL = 0,
    MTLS_V_INT  = 1,
    MTLS_V_REAL = 2,
    MTLS_V_TEXT = 3,
    MTLS_V_BLOB = 4
} mtls_val_type_e;

typedef struct {
    int          type;              /* mtls_val_type_e */
    apr_int64_t  i;                 /* MTLS_V_INT */
    double       d;                 /* MTLS_V_REAL */
    const void  *p;                 /* MTLS_V_TEXT / MTLS_V_BLOB */
    apr_size_t   len;               /* bytes at p */
} mtls_val_t;

typedef struct {
    unsigned char *key;             /* NULL: plain SHA-256 */
    apr_size_t     len;
} mtls_chain_key_t;

/* Hash one row.  Returns 0, or -1 when out of memory or OpenSSL fails. */
int mtls_chain_hash(const mtls_chain_key_t *key, const char *table,
                    const unsigned char prev[MTLS_HASH_LEN],
                    const mtls_val_t *vals, int n,
                    unsigned char out[MTLS_HASH_LEN]);

/* How many of vals[0..n) to hash when vals[first_added..n) are columns a
 * later schema version added: n without the trailing NULLs among those. */
int mtls_chain_trim(const mtls_val_t *vals, int n, int first_added);

/* The same for the current row of stmt, skipping the column named "hash"
 * (whose value, if any, is copied to stored). */
int mtls_chain_hash_stmt(const mtls_chain_key_t *key, const char *table,
                         const unsigned char prev[MTLS_HASH_LEN],
                         sqlite3_stmt *stmt,
                         unsigned char out[MTLS_HASH_LEN],
                         unsigned char stored[MTLS_HASH_LEN],
                         int *has_stored);

/* The columns of stmt's current row, decoded once (text and blobs point
 * into the statement until its next step; i is 0 but for integers and
 * for reals within range, truncated).  Returns how many, at most max. */
#define MTLS_MAX_COLUMNS 64
int mtls_chain_row_values(sqlite3_stmt *stmt, mtls_val_t *vals, int max);
/* Index of the column named "hash" in stmt's result, or -1. */
int mtls_chain_hash_column(sqlite3_stmt *stmt);

/* Free the calling thread's hashing buffer and digest context (kept
 * between rows for speed).  Call when a thread that hashed rows ends. */
void mtls_chain_thread_done(void);

/* SHA-256 of len bytes at p with this thread's context (see
 * mtls_chain_thread_done); 0, or -1 on failure. */
int mtls_sha256(const void *p, apr_size_t len,
                unsigned char out[MTLS_HASH_LEN]);

/* Read a key file (at least 16 bytes, at most 4096; surrounding white
 * space is part of the key).  Returns 0, or -1 with *err set to a static
 * message. */
int mtls_chain_key_load(const char *path, mtls_chain_key_t *key,
                        const char **err);
void mtls_chain_key_clear(mtls_chain_key_t *key);

/* Result of walking one table's chain. */
typedef struct {
    apr_int64_t rows;               /* rows read */
    apr_int64_t bad_id;             /* first row that breaks, 0 if none */
    char        why[160];           /* what was wrong at bad_id */
    apr_int64_t base_id;            /* rows up to this id were archived
                                       (chain_cut base); 0 if none */
    unsigned char base[MTLS_HASH_LEN];   /* the hash of row base_id */
    apr_int64_t end_id;             /* this is an archive: the chain goes
                                       on after this id elsewhere */
    apr_int64_t head_id;            /* id of the last row */
    unsigned char head[MTLS_HASH_LEN];   /* its hash */
} mtls_chain_result_t;

/* Where an archive cut table's chain in db (schema 002 chain_cut): side
 * "base" (a live file: rows up to *id were moved out, the first row left
 * chains to hash) or "end" (an archive: the chain goes on after row *id
 * in another file, *other when not NULL, a string to sqlite3_free).
 * *id = 0 and a zero hash when there was no cut (or the database
 * predates archiving).  Returns SQLITE_OK or an error. */
int mtls_chain_cut(sqlite3 *db, const char *schema, const char *table,
                   const char *side, apr_int64_t *id,
                   unsigned char hash[MTLS_HASH_LEN], char **other);

/* Walk the chain of table in db.  Returns SQLITE_OK (the result says
 * whether it holds) or the SQLite error that stopped the walk. */
int mtls_chain_verify(sqlite3 *db, const char *schema, const char *table,
                      const mtls_chain_key_t *key,
                      mtls_chain_result_t *res);

/* The same over the rows with lo <= id <= hi, starting from the stored
 * hash of the row before lo: ranges can be walked in parallel and their
 * results merged (rows add up, the first break wins, the head is the
 * highest range's). */
int mtls_chain_verify_range(sqlite3 *db, const char *schema,
                            const char *table, const mtls_chain_key_t *key,
                            apr_int64_t lo, apr_int64_t hi,
                            mtls_chain_result_t *res);

/* A walk fed one row at a time by a reader that selects the rows anyway
 * (the report: the chain checked and the figures counted from one
 * decoding of each row).  The statement is the caller's: "SELECT * FROM
 * table ... ORDER BY id" (every column, the id first), the same statement
 * for every row.  begin reads the cuts and the stored hash of the row
 * before lo; row returns 0, or -1 when out of memory; end checks an
 * archive's end when the walk reached hi. */
typedef struct {
    const char             *table;
    const mtls_chain_key_t *key;
    mtls_chain_result_t    *res;
    unsigned char           prev[MTLS_HASH_LEN], end[MTLS_HASH_LEN];
    apr_int64_t             last_id;
    int                     hcol;
} mtls_chain_walk_t;

int  mtls_chain_walk_begin(mtls_chain_walk_t *w, sqlite3 *db,
                           const char *schema, const char *table,
                           const mtls_chain_key_t *key, apr_int64_t lo,
                           mtls_chain_result_t *res);
int  mtls_chain_walk_row(mtls_chain_walk_t *w, sqlite3_stmt *stmt);
/* The same from a row already decoded (mtls_chain_row_values): vals[0]
 * the id, vals[hcol] the stored hash. */
int  mtls_chain_walk_vals(mtls_chain_walk_t *w, const mtls_val_t *vals,
                          int n, int hcol);
void mtls_chain_walk_end(mtls_chain_walk_t *w, apr_int64_t hi);

/* Add the result of the next range of a table (walked apart) to acc. */
void mtls_chain_result_join(mtls_chain_result_t *acc,
                            const mtls_chain_result_t *next);

/*
 * Anchors: the head (last id and hash) of each audited table, written
 * outside the database -- to the error log -- so that rows removed from
 * the end of a table can be found later:
 *   anchor <db path> certificates=<id>:<hex> handshakes=<id>:<hex>
 *          requests=<id>:<hex> events=<id>:<hex>
 * (one line).  An anchor holds when each named row still exists with that
 * hash.
 */
#define MTLS_ANCHOR_TABLES 4
extern const char *const mtls_anchor_tables[MTLS_ANCHOR_TABLES];

typedef struct {
    apr_int64_t   id[MTLS_ANCHOR_TABLES];     /* 0: table empty */
    unsigned char hash[MTLS_ANCHOR_TABLES][MTLS_HASH_LEN];
} mtls_anchor_t;

/* Read the heads of db's tables.  Returns SQLITE_OK or an error. */
int mtls_anchor_read(sqlite3 *db, mtls_anchor_t *a);

/* "anchor <path> certificates=..." into buf. */
void mtls_anchor_format(const char *path, const mtls_anchor_t *a, char *buf,
                        apr_size_t len);

/* Find an anchor in a line (of an error log, say).  Returns 0 and fills
 * *a and path (up to pathlen bytes), or -1 when the line holds none. */
int mtls_anchor_parse(const char *line, char *path, apr_size_t pathlen,
                      mtls_anchor_t *a);

#endif /* MTLS_CHAIN_H */
