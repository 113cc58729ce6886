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
 */
#ifndef MTLS_SLOTS_H
#define MTLS_SLOTS_H

#include <apr.h>

typedef struct {
    volatile apr_uint32_t pid;        /* 0: free */
    volatile apr_uint64_t queued;     /* records accepted by the queue */
    volatile apr_uint64_t settled;    /* stored, or dropped and counted */
    volatile apr_int64_t  since_us;   /* when the slot was claimed */
} mtls_slot_t;

typedef struct {
    apr_uint32_t n;
    volatile apr_uint32_t failing;    /* a writer cannot write (shared by
                                         all, for MTLSAuditFailMode closed) */
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

#endif /* MTLS_SLOTS_H */
