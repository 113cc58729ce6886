/*
 * mtls_slots.c -- shared per-process counters; see mtls_slots.h.
 */
#include "mtls_slots.h"
#include "mtls_core.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

apr_size_t mtls_slots_size(apr_uint32_t n)
{
    return offsetof(mtls_slots_t, slot) + (apr_size_t)n * sizeof(mtls_slot_t);
}

mtls_slots_t *mtls_slots_init(void *mem, apr_uint32_t n)
{
    mtls_slots_t *t = mem;
    t->n = n;
    return t;
}

mtls_slot_t *mtls_slots_claim(mtls_slots_t *t, apr_uint32_t pid)
{
    apr_uint32_t i;

    for (i = 0; t && i < t->n; i++) {
        apr_uint32_t free_pid = 0;
        mtls_slot_t *s = &t->slot[i];
        /* Counters first, so a reaper never sees our pid with another's
         * numbers: a claimed-but-unused slot settles as 0 lost. */
        if (__atomic_load_n(&s->pid, __ATOMIC_ACQUIRE) != 0) {
            continue;
        }
        if (__atomic_compare_exchange_n(&s->pid, &free_pid, (apr_uint32_t)-1,
                                        0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&s->queued, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->settled, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->since_us, mtls_now_us(), __ATOMIC_RELAXED);
            __atomic_store_n(&s->pid, pid, __ATOMIC_RELEASE);
            return s;
        }
    }
    return NULL;
}

void mtls_slots_release(mtls_slot_t *s)
{
    if (s) {
        __atomic_store_n(&s->pid, 0, __ATOMIC_RELEASE);
    }
}

void mtls_slot_queued(mtls_slot_t *s)
{
    if (s) {
        __atomic_fetch_add(&s->queued, 1, __ATOMIC_RELAXED);
    }
}

void mtls_slot_settled(mtls_slot_t *s, apr_uint64_t n)
{
    if (s) {
        __atomic_fetch_add(&s->settled, n, __ATOMIC_RELEASE);
    }
}

apr_uint32_t mtls_slots_reap(mtls_slots_t *t, apr_uint64_t *lost,
                             apr_int64_t *since_us)
{
    apr_uint32_t i;

    for (i = 0; t && i < t->n; i++) {
        mtls_slot_t *s = &t->slot[i];
        apr_uint32_t pid = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);

        if (pid == 0 || pid == (apr_uint32_t)-1) {
            continue;
        }
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) {
            continue;           /* alive (or not ours to ask) */
        }
        /* Take it: only one reaper wins. */
        if (__atomic_compare_exchange_n(&s->pid, &pid, (apr_uint32_t)-1, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            apr_uint64_t q = __atomic_load_n(&s->queued, __ATOMIC_ACQUIRE);
            apr_uint64_t d = __atomic_load_n(&s->settled, __ATOMIC_ACQUIRE);
            *lost = q > d ? q - d : 0;
            *since_us = __atomic_load_n(&s->since_us, __ATOMIC_RELAXED);
            __atomic_store_n(&s->pid, 0, __ATOMIC_RELEASE);
            return pid;
        }
    }
    return 0;
}

void mtls_slots_set_failing(mtls_slots_t *t, int failing)
{
    if (t && __atomic_load_n(&t->failing, __ATOMIC_RELAXED)
             != (apr_uint32_t)failing) {
        __atomic_store_n(&t->failing, (apr_uint32_t)failing,
                         __ATOMIC_RELEASE);
    }
}

int mtls_slots_failing(mtls_slots_t *t)
{
    return t && __atomic_load_n(&t->failing, __ATOMIC_ACQUIRE) != 0;
}
