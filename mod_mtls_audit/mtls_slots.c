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
    t->created_us = mtls_now_us();
    return t;
}

/* 0.5 ms to 5 s: a batch commit on a local disk takes about a
 * millisecond; seconds mean a locked or stalled database. */
const apr_uint64_t mtls_write_bucket_us[MTLS_WRITE_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 5000000
};

mtls_metrics_t *mtls_slots_metrics(mtls_slots_t *t, mtls_slot_t *s)
{
    return s ? &s->m : t ? &t->spill : NULL;
}

int mtls_slots_vhost(mtls_slots_t *t, const char *name)
{
    apr_uint32_t i;

    if (!t) {
        return MTLS_VHOSTS - 1;
    }
    name = name ? name : "";
    for (i = 0; i < t->vhosts; i++) {
        if (strncmp(t->vhost[i], name, MTLS_VHOST_LEN - 1) == 0) {
            return (int)i;
        }
    }
    if (t->vhosts >= MTLS_VHOSTS - 1) {
        return MTLS_VHOSTS - 1;     /* "other", named so by the handler */
    }
    mtls_strlcpy(t->vhost[t->vhosts], name, MTLS_VHOST_LEN);
    return (int)t->vhosts++;
}

void mtls_metrics_add(volatile apr_uint64_t *counter, apr_uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

void mtls_metrics_handshake(mtls_metrics_t *m, int v, int outcome)
{
    if (m && v >= 0 && v < MTLS_VHOSTS && outcome >= 1
        && outcome <= MTLS_OUTCOMES) {
        mtls_metrics_add(&m->handshakes[v][outcome - 1], 1);
    }
}

void mtls_metrics_tx(mtls_metrics_t *m, apr_int64_t dur_us, int ok)
{
    int b = 0;

    if (!m) {
        return;
    }
    if (dur_us < 0) {
        dur_us = 0;
    }
    while (b < MTLS_WRITE_BUCKETS
           && (apr_uint64_t)dur_us > mtls_write_bucket_us[b]) {
        b++;
    }
    mtls_metrics_add(&m->tx_bucket[b], 1);
    mtls_metrics_add(&m->tx_sum_us, (apr_uint64_t)dur_us);
    mtls_metrics_add(ok ? &m->tx_ok : &m->tx_failed, 1);
    if (ok) {
        __atomic_store_n(&m->last_write_us, mtls_now_us(), __ATOMIC_RELAXED);
    }
}

void mtls_metrics_depth(mtls_metrics_t *m, int depth)
{
    apr_uint32_t d = depth > 0 ? (apr_uint32_t)depth : 0;

    if (!m) {
        return;
    }
    __atomic_store_n(&m->depth, d, __ATOMIC_RELAXED);
    if (d > __atomic_load_n(&m->depth_max, __ATOMIC_RELAXED)) {
        __atomic_store_n(&m->depth_max, d, __ATOMIC_RELAXED);
    }
}

static void sum_one(const mtls_metrics_t *m, mtls_metrics_sum_t *o,
                    int live)
{
    int i, j;
    apr_int64_t t;
    apr_uint32_t d;

    for (i = 0; i < MTLS_VHOSTS; i++) {
        for (j = 0; j < MTLS_OUTCOMES; j++) {
            o->handshakes[i][j] += __atomic_load_n(&m->handshakes[i][j],
                                                   __ATOMIC_RELAXED);
        }
    }
    o->requests += __atomic_load_n(&m->requests, __ATOMIC_RELAXED);
    for (i = 0; i < 4; i++) {
        o->written[i] += __atomic_load_n(&m->written[i], __ATOMIC_RELAXED);
    }
    for (i = 0; i < MTLS_LOSS_N; i++) {
        o->lost[i] += __atomic_load_n(&m->lost[i], __ATOMIC_RELAXED);
    }
    o->tx_ok += __atomic_load_n(&m->tx_ok, __ATOMIC_RELAXED);
    o->tx_failed += __atomic_load_n(&m->tx_failed, __ATOMIC_RELAXED);
    for (i = 0; i <= MTLS_WRITE_BUCKETS; i++) {
        o->tx_bucket[i] += __atomic_load_n(&m->tx_bucket[i],
                                           __ATOMIC_RELAXED);
    }
    o->tx_sum_us += __atomic_load_n(&m->tx_sum_us, __ATOMIC_RELAXED);
    t = __atomic_load_n(&m->last_write_us, __ATOMIC_RELAXED);
    if (t > o->last_write_us) {
        o->last_write_us = t;
    }
    if (live) {
        o->depth += __atomic_load_n(&m->depth, __ATOMIC_RELAXED);
    }
    d = __atomic_load_n(&m->depth_max, __ATOMIC_RELAXED);
    if (d > o->depth_max) {
        o->depth_max = d;
    }
}

void mtls_slots_sum(mtls_slots_t *t, mtls_metrics_sum_t *out)
{
    apr_uint32_t i;

    memset(out, 0, sizeof(*out));
    if (!t) {
        return;
    }
    sum_one(&t->spill, out, 1);
    for (i = 0; i < t->n; i++) {
        apr_uint32_t pid = __atomic_load_n(&t->slot[i].pid, __ATOMIC_ACQUIRE);
        int live = pid != 0 && pid != (apr_uint32_t)-1;
        out->processes += live ? 1 : 0;
        sum_one(&t->slot[i].m, out, live);
    }
}

int mtls_slots_certs_due(mtls_slots_t *t, apr_int64_t now_us)
{
    apr_int64_t busy, ttl = (apr_int64_t)MTLS_CERTS_TTL_S * 1000000;

    if (!t || now_us - __atomic_load_n(&t->certs_at_us, __ATOMIC_ACQUIRE)
              < ttl) {
        return 0;
    }
    /* One query at a time; one whose process died (or that hangs) for
     * two periods is taken over. */
    busy = __atomic_load_n(&t->certs_busy_us, __ATOMIC_ACQUIRE);
    if (busy != 0 && now_us - busy < 2 * ttl) {
        return 0;
    }
    return __atomic_compare_exchange_n(&t->certs_busy_us, &busy, now_us, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void mtls_slots_certs_set(mtls_slots_t *t, apr_int64_t now_us, int ok,
                          apr_int64_t certs, apr_int64_t soonest)
{
    if (!t) {
        return;
    }
    __atomic_store_n(&t->certs_ok, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&t->certs, certs, __ATOMIC_RELAXED);
    __atomic_store_n(&t->certs_soonest, soonest, __ATOMIC_RELAXED);
    __atomic_store_n(&t->certs_ok, ok ? 1 : 0, __ATOMIC_RELEASE);
    __atomic_store_n(&t->certs_at_us, now_us, __ATOMIC_RELEASE);
    __atomic_store_n(&t->certs_busy_us, 0, __ATOMIC_RELEASE);
}

int mtls_slots_certs(mtls_slots_t *t, apr_int64_t *certs,
                     apr_int64_t *soonest)
{
    if (!t || !__atomic_load_n(&t->certs_ok, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    *certs = __atomic_load_n(&t->certs, __ATOMIC_RELAXED);
    *soonest = __atomic_load_n(&t->certs_soonest, __ATOMIC_RELAXED);
    return 1;
}

const char *mtls_loss_name(int c)
{
    static const char *const names[MTLS_LOSS_N] = {
        "queue_full", "writer_stopped", "write_failed", "process_died",
        "no_writer"
    };
    return c >= 0 && c < MTLS_LOSS_N ? names[c] : "unknown";
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
        __atomic_store_n(&s->m.depth, 0, __ATOMIC_RELAXED);
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
            __atomic_store_n(&s->m.depth, 0, __ATOMIC_RELAXED);
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
