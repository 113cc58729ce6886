/*
 * mtls_slots.h -- per-process record counters in shared memory, so that
 * records lost with a process that dies without its cleanups (SIGKILL, a
 * crash) are still counted.
 *
 * DESIGN
 * The parent maps one table of slots before it forks (anonymous shared
 * memory that outlives restarts).  Each child claims a slot with its pid.
 * Its writer counts what was `queued` and what was `settled` (stored, or
 * dropped and counted in a gap of its own).  At a normal exit the writer
 * drains, settles everything and frees the slot.  A slot whose pid no
 * longer exists with queued > settled belongs to a process that died with
 * records in its queue: any other writer that finds it takes it (one
 * compare-and-swap, so only one does) and records the difference as a gap.
 * The counters move with lock-free atomics: the handshake path pays one
 * atomic add.  A process killed between a commit and its counter update
 * is counted as having lost that batch too: the gap may overstate, never
 * understate, by at most one batch.
 *
 * METRICS
 * Each slot also holds the monitoring counters of whoever owns it
 * (mtls_metrics_t): handshakes by vhost and outcome, requests, records
 * written and lost by cause, write transactions and their durations.
 * Only the owner adds to them (atomic adds: its threads share them), and
 * nobody ever clears them: a child that claims a freed slot goes on
 * counting from where the previous owner stopped.  So the sum over all
 * slots (mtls_slots_sum) only ever grows while the memory lives, which is
 * as long as the parent: across graceful and plain restarts alike, as
 * Prometheus expects of a counter.  A process that found no free slot
 * counts in `spill`.  Vhosts are named in a fixed table filled by the
 * parent at post_config (mtls_slots_vhost): a name keeps its index across
 * restarts; past MTLS_VHOSTS - 1 names, they all count as the last one.
 */
#ifndef MTLS_SLOTS_H
#define MTLS_SLOTS_H

#include <apr.h>

/* Kinds of loss counted in the metrics (records not stored). */
typedef enum {
    MTLS_LOSS_QUEUE_FULL = 0,   /* MTLSAuditQueueSize reached */
    MTLS_LOSS_STOPPED,          /* pushed after the writer stopped */
    MTLS_LOSS_WRITE_FAILED,     /* a batch failed all its tries */
    MTLS_LOSS_PROCESS_DIED,     /* a killed process's queue (reaped) */
    MTLS_LOSS_NO_WRITER,        /* the process has no writer: not in any
                                   gap event, as nothing can write one */
    MTLS_LOSS_N
} mtls_loss_e;

#define MTLS_VHOSTS     32      /* vhost names in the table; the last one
                                   stands for every vhost past the others */
#define MTLS_VHOST_LEN  128
#define MTLS_OUTCOMES   5       /* mtls_outcome_e 1..5 */
#define MTLS_WRITE_BUCKETS 12   /* finite histogram bounds, below */

/* Upper bounds of the write duration histogram, microseconds. */
extern const apr_uint64_t mtls_write_bucket_us[MTLS_WRITE_BUCKETS];

/* Monitoring counters of one slot; see METRICS.  All only grow, except
 * depth (the queue now). */
typedef struct {
    volatile apr_uint64_t handshakes[MTLS_VHOSTS][MTLS_OUTCOMES];
    volatile apr_uint64_t requests;           /* request records queued */
    volatile apr_uint64_t written[4];         /* stored, by item type */
    volatile apr_uint64_t lost[MTLS_LOSS_N];  /* records lost, by cause */
    volatile apr_uint64_t tx_ok, tx_failed;   /* write transactions */
    volatile apr_uint64_t tx_bucket[MTLS_WRITE_BUCKETS + 1]; /* + Inf */
    volatile apr_uint64_t tx_sum_us;          /* their durations */
    volatile apr_int64_t  last_write_us;      /* last successful write */
    volatile apr_uint32_t depth;              /* queued now (owner's) */
    volatile apr_uint32_t depth_max;          /* highest depth seen */
} mtls_metrics_t;

typedef struct {
    volatile apr_uint32_t pid;        /* 0: free */
    volatile apr_uint64_t queued;     /* records accepted by the queue */
    volatile apr_uint64_t settled;    /* stored, or dropped and counted */
    volatile apr_int64_t  since_us;   /* when the slot was claimed */
    mtls_metrics_t        m;          /* never cleared; see METRICS */
} mtls_slot_t;

typedef struct {
    apr_uint32_t n;
    volatile apr_uint32_t failing;    /* a writer cannot write (shared by
                                         all, for MTLSAuditFailMode closed) */
    apr_int64_t  created_us;          /* when the table was made */
    apr_uint32_t vhosts;              /* names in vhost[] (parent only) */
    char         vhost[MTLS_VHOSTS][MTLS_VHOST_LEN];
    mtls_metrics_t spill;             /* for a process without a slot */
    /* The certificate figures of the last query (one for all the
     * processes, at most every MTLS_CERTS_TTL_S): see mtls_slots_certs */
    volatile apr_int64_t certs_at_us;     /* when computed; 0 never */
    volatile apr_int64_t certs_busy_us;   /* a query runs since; 0 none */
    volatile apr_int64_t certs, certs_soonest;
    volatile apr_uint32_t certs_ok;
    mtls_slot_t  slot[1];             /* n of them */
} mtls_slots_t;

/* Bytes for a table of n slots. */
apr_size_t mtls_slots_size(apr_uint32_t n);
/* Set up a table in mem (zeroed by the caller). */
mtls_slots_t *mtls_slots_init(void *mem, apr_uint32_t n);
/* A free slot for pid, or NULL when all are taken. */
mtls_slot_t *mtls_slots_claim(mtls_slots_t *t, apr_uint32_t pid);
/* Free the slot (after its writer settled everything). */
void mtls_slots_release(mtls_slot_t *s);

void mtls_slot_queued(mtls_slot_t *s);
void mtls_slot_settled(mtls_slot_t *s, apr_uint64_t n);

/* Say that writing fails (1) or works again (0), for every process. */
void mtls_slots_set_failing(mtls_slots_t *t, int failing);
int  mtls_slots_failing(mtls_slots_t *t);

/* Find one slot of a dead process, free it and return its pid, the
 * records it never settled (*lost) and when it started; 0 if none. */
apr_uint32_t mtls_slots_reap(mtls_slots_t *t, apr_uint64_t *lost,
                             apr_int64_t *since_us);

/* The metrics a process counts in: its slot's, or the spill when it has
 * none (t may be NULL: then NULL). */
mtls_metrics_t *mtls_slots_metrics(mtls_slots_t *t, mtls_slot_t *s);

/* The index of vhost name in t's table, adding it when new (the parent,
 * at post_config, before any child reads the table).  Past the table's
 * size, the last index. */
int mtls_slots_vhost(mtls_slots_t *t, const char *name);

/* Count one handshake of vhost index v with outcome (1..5); m may be
 * NULL.  One relaxed atomic add: the handshake path. */
void mtls_metrics_handshake(mtls_metrics_t *m, int v, int outcome);
void mtls_metrics_add(volatile apr_uint64_t *counter, apr_uint64_t n);
/* One write transaction of dur_us: stored (ok) or not. */
void mtls_metrics_tx(mtls_metrics_t *m, apr_int64_t dur_us, int ok);
/* The queue's depth now, and so its high-water mark. */
void mtls_metrics_depth(mtls_metrics_t *m, int depth);

/* Everything summed over all slots and the spill.  The counters are what
 * they are: a handler's read is not one instant, but each only grows. */
typedef struct {
    apr_uint64_t handshakes[MTLS_VHOSTS][MTLS_OUTCOMES];
    apr_uint64_t requests;
    apr_uint64_t written[4];
    apr_uint64_t lost[MTLS_LOSS_N];
    apr_uint64_t tx_ok, tx_failed;
    apr_uint64_t tx_bucket[MTLS_WRITE_BUCKETS + 1]; /* not cumulative */
    apr_uint64_t tx_sum_us;
    apr_int64_t  last_write_us;         /* latest over all; 0 never */
    apr_uint64_t depth;                 /* over live processes */
    apr_uint64_t depth_max;             /* highest of any one queue */
    apr_uint32_t processes;             /* slots held now */
} mtls_metrics_sum_t;

void mtls_slots_sum(mtls_slots_t *t, mtls_metrics_sum_t *out);

#define MTLS_CERTS_TTL_S 30
/* Does the certificate figures' cache want a new query now?  Returns 1
 * to one caller (which then runs it and calls mtls_slots_certs_set),
 * 0 to the others meanwhile, and when the figures are recent enough. */
int  mtls_slots_certs_due(mtls_slots_t *t, apr_int64_t now_us);
void mtls_slots_certs_set(mtls_slots_t *t, apr_int64_t now_us, int ok,
                          apr_int64_t certs, apr_int64_t soonest);
/* The cached figures: 1 and them, or 0 if the last query failed (or
 * none ran yet). */
int  mtls_slots_certs(mtls_slots_t *t, apr_int64_t *certs,
                      apr_int64_t *soonest);
/* The name of loss cause c ("queue_full", ...). */
const char *mtls_loss_name(int c);

#endif /* MTLS_SLOTS_H */
