/*
 * mtls_writer.h -- the per-process writer: a bounded queue and one thread
 * that stores what the queue holds.
 *
 * DESIGN (after Redis' bio.c)
 * Producers (httpd worker threads, in the handshake path) lock, append,
 * maybe signal, unlock: they never touch SQLite and never wait for it.  The
 * writer thread wakes when a batch is ready or the flush interval passes,
 * takes everything queued, writes it in transactions of up to a batch and
 * keeps the items for reuse (or frees them).  A full queue drops the new
 * item and counts it; a batch that cannot be written after its retries is
 * dropped and counted too.  Whatever was lost is written as one "gap"
 * event (first and last time, count, cause) as soon as a write succeeds
 * again: a loss is never silent.
 * mtls_writer_stop drains the queue to the last item before it returns.
 */
#ifndef MTLS_WRITER_H
#define MTLS_WRITER_H

#include "mtls_core.h"
#include "mtls_chain.h"
#include "mtls_slots.h"
#include "mtls_store.h"

typedef struct mtls_writer mtls_writer_t;

typedef struct {
    const char             *path;           /* database file */
    int                     store_flags;    /* MTLS_STORE_* */
    int                     busy_timeout_ms;/* patience for a locked db */
    const mtls_chain_key_t *key;            /* borrowed, may be NULL */
    int                     queue_max;      /* items queued at most */
    int                     flush_ms;       /* longest wait before a write */
    int                     batch_max;      /* items per transaction */
    int                     retries;        /* tries of a failing batch */
    int                     pid;            /* for gap events */
    int                     anchor_s;       /* log the chain heads every
                                               anchor_s seconds; 0 never */
    mtls_slots_t           *slots;          /* shared counters, or NULL */
    int                     mirror_fd;      /* MTLSAuditMirror: each stored
                                               row as a JSON line here
                                               (non-blocking); 0: none */
    int                     mirror_format;  /* MTLS_JSON_NATIVE, _ECS or
                                               _OCSF (mtls_json.h) */
    int                     rotate;         /* MTLS_ROTATE_*: seal the file
                                               and go on in the next when
                                               due, before a write */
    apr_int64_t             rotate_size;    /* MTLS_ROTATE_SIZE: bytes */
    const char             *pattern;        /* the next file's name:
                                               mtls_store_name(pattern) */
} mtls_writer_conf_t;

/* Start a writer thread on conf (copied).  The database is opened in the
 * calling thread so that errors show at once: when it cannot be, the
 * writer starts all the same with a message in err (log it), tries again
 * before each write and counts what it cannot store.  Returns 0 and *out,
 * or -1 (no thread) with a message in err. */
int mtls_writer_start(const mtls_writer_conf_t *conf, mtls_writer_t **out,
                      char *err, apr_size_t errlen);

/* A zeroed item of type (as mtls_item_new) for w's queue: one the writer
 * has stored and kept, or a new one; a handshake comes with a new link
 * (one reference, the item's), likewise kept or new.  NULL when out of
 * memory.  w may be NULL. */
mtls_item_t *mtls_writer_item(mtls_writer_t *w, int type);

/* Queue item; the writer owns it from now on.  Returns 0 when queued, -1
 * when dropped (queue full or writer stopped); the loss is counted. */
int mtls_writer_push(mtls_writer_t *w, mtls_item_t *item);

/* Would a push succeed now?  (For MTLSAuditFailMode closed.) */
int mtls_writer_healthy(mtls_writer_t *w);

typedef struct {
    apr_int64_t queued;             /* items accepted by push */
    apr_int64_t written;            /* items stored */
    apr_int64_t lost;               /* items dropped, all causes */
    int         depth;              /* items waiting now */
} mtls_writer_stats_t;

void mtls_writer_stats(mtls_writer_t *w, mtls_writer_stats_t *st);

/* The shared metrics w counts in (its slot's, or the spill), or NULL
 * without shared memory; for the handshake path's counters. */
mtls_metrics_t *mtls_writer_metrics(mtls_writer_t *w);

/* Write the rows that st's last successful write stored as JSON lines
 * (mtls_json.h, source names the database) to fd.  Returns the lines that
 * could not be written, with the errno of the last failure in *err. */
apr_int64_t mtls_mirror_written(mtls_store_t *st, int fd, int format,
                                const char *source, int *err);

/* The file w writes now (the configured one, or the one a rotation went
 * on in, as of its last write), into out. */
void mtls_writer_path(mtls_writer_t *w, char *out, apr_size_t len);

/* Write everything queued, stop the thread, close the database, free w. */
void mtls_writer_stop(mtls_writer_t *w);

#endif /* MTLS_WRITER_H */
