/*
 * tool.h -- shared pieces of the mtls-audit tool: exit codes, errors,
 * option parsing, the data set (several databases read as one), output
 * formats, and the SQL functions the queries use.
 */
#ifndef MTLS_TOOL_H
#define MTLS_TOOL_H

#include <stdio.h>
#include <sqlite3.h>

#include "mtls_core.h"
#include "mtls_chain.h"

#define EXIT_OK      0
#define EXIT_FINDING 1
#define EXIT_USAGE   2
#define EXIT_DB      3

/* "mtls-audit: " + message on stderr. */
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Flush stdout (or out); a short write turns code into EXIT_DB (git's
 * rule: a report cut short must not exit 0). */
int finish_output(FILE *out, int code);

/* ---- options ---- */
typedef struct {
    const char  *name;          /* "--since" */
    int          takes_value;
    const char **value;         /* where the value goes */
    int         *flag;          /* set to 1 when present */
} opt_t;

/* Parse argv[1..]: options from opts (--opt VALUE or --opt=VALUE), the
 * rest are files.  Returns EXIT_OK, EXIT_USAGE (reported), or -1 when
 * --help was asked (help printed: the caller returns EXIT_OK). */
int parse_opts(int argc, char **argv, const opt_t *opts, const char *help,
               const char *cmd, char ***files, int *nfiles);

/* "2026-11-28" or "2026-11-28T10:00:00[.mmm]Z" -> microseconds, UTC. */
int parse_time(const char *s, apr_int64_t *out);
/* Microseconds -> "2026-11-28T10:00:00.000Z" (buf of 32). */
const char *format_time(apr_int64_t us, char *buf);
int parse_count(const char *s, long *out);

/* ---- output ---- */
typedef enum { FMT_TABLE, FMT_JSON, FMT_CSV, FMT_TEXT, FMT_HTML } fmt_e;

int  parse_format(const char *s, const char *allowed, fmt_e *out);
void json_str(FILE *f, const char *s);
void csv_cell(FILE *f, const char *s);
void html_text(FILE *f, const char *s);
/* Print every row of stmt; returns rows printed or -1 on error. */
long print_rows(FILE *f, sqlite3_stmt *stmt, fmt_e fmt);

/* ---- many files ----
 * Every command that reads databases takes files and directories (every
 * *.db in them) in any order: parse_opts expands the directories, drops a
 * file given twice, and orders the files by their chains (chain_cut: a
 * file whose chains end where another's begin comes before it), not by
 * their names.  What it learnt of each file stays in the set below until
 * the next parse_opts (or files_forget). */
typedef enum {
    HOW_NONE = 0,       /* not established (not read, or --no-verify) */
    HOW_WALKED,         /* every row's hash recomputed */
    HOW_SHA256,         /* the file's SHA-256 against its successor's
                         * 'sealed' event: no row walked */
    HOW_ANCHORS         /* walked, and anchors of the error log hold */
} how_e;

typedef struct {
    char        *path;
    int          ok;            /* its chains could be read */
    int          closed;        /* it has chain_cut end rows: an archive or a
                                 * sealed file, written no more */
    apr_int64_t  seal_id;       /* events.id of its 'seal' event, or 0 */
    int          has_range;     /* first_us..last_us known */
    apr_int64_t  first_us, last_us;
    const char  *range_from;    /* "seal" (its seal event) or "index" */
    apr_int64_t  hs_first, hs_last;     /* its handshakes' (time index);
                                         * 0 when none */
    int          pred, succ;    /* the files before and after it in its
                                 * chain (index in the set), or -1 */
    /* Its successor's 'sealed' event for it ("" when none): the SHA-256
     * and size the file had when nothing wrote it any more. */
    char         sealed_sha256[65];
    apr_int64_t  sealed_bytes, sealed_event;
    /* Rows of its chains before it that are in no file given (a file
     * missing from the middle): why, or "". */
    char         missing[768];
    int          selected;      /* read for the period (select_period) */
    how_e        how;           /* set by verify and report */
} file_meta_t;

typedef struct {
    int          n;
    file_meta_t *f;
} fileset_t;

/* The set parse_opts found (n == 0 before any). */
const fileset_t *files_set(void);
/* The entry for path (as parse_opts gave it), or NULL. */
file_meta_t *file_meta(const char *path);
void files_forget(void);
/* Keep in files (in order) only those whose time range meets [since,
 * until) (unknown ranges are kept); marks them selected.  Returns how
 * many were left out. */
int select_period(char **files, int *nfiles, apr_int64_t since,
                  apr_int64_t until);
/* How many events of kind the file at path holds with time_us < before
 * (its events table is read: it is small). */
apr_int64_t file_events(const char *path, const char *kind,
                        apr_int64_t before);
/* The SHA-256 (hex) and size of the file at path: 0, or -1 (errno). */
int file_sha256_hex(const char *path, char out[65], apr_int64_t *bytes);
/* The last 'sealed' event in db's events naming the file at path: its
 * SHA-256, size and event id; 1 found, 0 none (or an 'unsealed' event
 * names it since: an archive being appended to).  seal_id is the file's
 * 'seal' event (a rotation's file, matched by it), or 0: matched by its
 * path, or, for an event with "seal": 0 (an archive's), by its last name
 * (the file moved since). */
int sealed_record(sqlite3 *db, const char *path, apr_int64_t seal_id,
                  char sha256[65], apr_int64_t *bytes, apr_int64_t *event);
/* Make the file at path final for a seal: its write-ahead log written
 * into it and truncated (a few tries while readers hold it), with no
 * connection of ours left; then its SHA-256 and size.  0, or -1 with why
 * in msg. */
int settle_file(const char *path, char out[65], apr_int64_t *bytes,
                char *msg, size_t msglen);
/* The error log's line for a sealed file ("mtls_audit: sealed PATH
 * sha256=HEX bytes=N seal=ID next=PATH", written by the module when it
 * recorded the hash): 1 a line names m (its path, or its seal id and file
 * name) with sha256, 0 one names it with another hash (msg says which),
 * -1 none does or the log cannot be read. */
int sealed_in_log(const char *log, const file_meta_t *m, const char *sha256,
                  char *msg, size_t msglen);
/* Check a sealed file by its hash when its successor recorded one: 1 it
 * matches, 0 it does not (msg says how), -1 no record to check against
 * (walk it).  msg gets the line for the cover or verify. */
int check_sealed(const file_meta_t *m, char *msg, size_t msglen);

/* ---- the data set ---- */
typedef struct {
    sqlite3  *db;               /* :memory:, no file attached: the views
                                 * below, across every file */
    int       n;
    char    **files;
    int      *version;          /* each file's schema version (older ones
                                   lack columns: see open_dataset) */
    /* The files themselves: file i is attached as schema dbI to
     * connection conn[i / per] (SQLite attaches at most
     * SQLITE_MAX_ATTACHED, 10 on Debian, to one connection; a data set
     * takes any number).  A statement of one file runs on ds_db(ds, i). */
    sqlite3 **conn;
    int       nconn, per;
} dataset_t;

/* Open files as one data set, read-only, with the views (in ds->db)
 *   hs(source, handshake columns, cert columns)   ev(source, events)
 *   certs(source, certificates without der)
 * and the SQL function in_cidr(addr, cidr) (in every connection).  The
 * views are virtual tables that read each file in turn, on its own
 * connection (no row is copied); they take no index: a join or a
 * correlated subquery over them goes through a MATERIALIZED CTE.
 * Returns EXIT_OK or an exit code (reported). */
int  open_dataset(dataset_t *ds, char **files, int n);
/* The connection that has file i attached (as schema dbI). */
sqlite3 *ds_db(const dataset_t *ds, int i);
/* The message of the last error of ds->db, else of the connection of a
 * file that has one. */
const char *ds_errmsg(const dataset_t *ds);
/* One more such view, name (in ds->db): the rows of arm over each file in
 * turn, arm printed with (its file name, old when its schema is older
 * than 3 else "", its index, its index, its index).  SQLITE_OK or an
 * error (sqlite3_errmsg(ds->db)). */
int  ds_union(dataset_t *ds, const char *name, const char *arm,
              const char *old);
/* What a file of schema 1 or 2 selects after its handshakes' (or
 * v_handshakes') columns in place of those schema 3 added. */
#define MTLS_OLD_HS_COLS ", NULL AS revocation_method, NULL AS revocation_status"
void close_dataset(dataset_t *ds);

/* Record that this command read the files (PCI DSS 10.2.1.3): an
 * "access" event in each database we may write without breaking its
 * chain.  what is the command without the program's name ("verify
 * DB"): the detail reads "mtls-audit <what> by <user> (uid N)".  Quietly
 * skips files it cannot write; says so on stderr. */
void record_access(char **files, int n, const char *what,
                   const mtls_chain_key_t *key);

/* Suite grading (NIST SP 800-52r2, PCI DSS): 0 approved, 1 deprecated
 * (ATTENTION), 2 prohibited (FAIL); *why names the reason. */
int grade_suite(int version, const char *cipher, const char **why);
int cipher_is_aead(const char *cipher);
/* A Luhn-valid run of 13 to 19 digits in s (spaces or dashes allowed
 * between digits)? */
int has_pan(const char *s);

/* Walk every chain of the database at path, the big tables on two
 * threads, each with its own read-only connection.  Returns SQLITE_OK
 * with res[] filled (in mtls_anchor_tables order: the audited tables,
 * certificates first), or an error with a message in err. */
int verify_file(const char *path, const mtls_chain_key_t *key,
                mtls_chain_result_t res[MTLS_ANCHOR_TABLES], char *err,
                size_t errlen);

/* Do paths a and b name the same file (the same string, or the same
 * inode)? */
int same_path(const char *a, const char *b);

/* What the anchors of an error log say of one file of a set checked
 * together (check_anchor_files). */
typedef struct {
    int   rc;                   /* 1: a finding (an anchor that does not
                                 * hold, rows missing at a cut, or a file
                                 * that is no archive and no anchor names) */
    int   anchored;             /* 1: anchors cover it and hold, 0: none
                                 * covers it, -1: one does not hold */
    char  msg[1024];            /* how its anchors were checked, or what
                                 * broke */
} anchor_info_t;

/* Check the anchors in the text file anchors (an error log) against the
 * n files read as one set.  An anchor names the live file's path (with
 * one file, every anchor is taken for it); each row it names is checked
 * in the file that holds that row now: the named file, or, for a row an
 * archive took, the archive whose chains end where the named file's
 * begin (chain_cut), found among the n files.  An archive no anchor
 * covers is no finding.  Fills info[0..n-1]; returns 0, or -1 when a
 * file cannot be read (err says why). */
int check_anchor_files(const char *anchors, char **files, int n,
                       anchor_info_t *info, char *err, size_t errlen);

/* Compare the schema of the file at path with its version's
 * (mtls_schema_check), on a read-only connection: before anything opens
 * it for writing, which would run its triggers.  Returns 0 with *ndiff
 * and msg, or -1 with the error in msg. */
int schema_file(const char *path, int *ndiff, char *msg, size_t msglen);

/* Does the tail of db's events chain verify with key (NULL or an empty
 * key: plain SHA-256)?  Writing with the wrong key would break the chain
 * the module keeps. */
int tail_matches(sqlite3 *db, const mtls_chain_key_t *key);

/* argv joined by spaces into buf, for the record of a command. */
const char *cmdline(int argc, char **argv, char *buf, size_t len);

/* The whole tool: argv[1] the command.  Returns the exit code; output on
 * stdout and stderr; no exit(), and no state kept from one call to the
 * next (tests/fuzz/fuzz_db.c calls it over and over). */
int mtls_audit_main(int argc, char **argv);

int cmd_report(int argc, char **argv);
int cmd_archive(int argc, char **argv);
int cmd_policy(int argc, char **argv);

#endif /* MTLS_TOOL_H */
