/*
 * mtls_writer.c -- bounded queue and writer thread; see mtls_writer.h.
 *
 * The core uses POSIX threads directly rather than APR's: the writer must
 * outlive no pool and be joinable from a pool cleanup, and pthreads give
 * exactly that with less ceremony.  Locking: `lock` guards the queue and
 * the counters; the store is touched only by the writer thread (and by
 * mtls_writer_start before the thread exists).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* pthread_setname_np */
#endif
#include "mtls_writer.h"
#include "mtls_store.h"
#include "mtls_chain.h"
#include "mtls_json.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct mtls_writer {
    mtls_writer_conf_t conf;
    mtls_store_t      *store;
    pthread_t          thread;
    pthread_mutex_t    lock;
    pthread_cond_t     wake;        /* producers -> writer: work or stop */
    mtls_item_t       *head, *tail; /* FIFO */
    int                depth;       /* queued or being written */
    int                wake_at;     /* depth that wakes the writer early */
    /* Stored items kept for the handshake path to fill again (guarded by
     * spare_lock, apart from the queue's lock) */
    pthread_mutex_t    spare_lock;
    mtls_item_t       *spare;
    int                spares;
    mtls_link_t       *spare_link;  /* links whose last reference the
                                       writer dropped, for new handshakes */
    int                spare_links;
    mtls_item_t      **batch;       /* the writer's: batch_max + 1 +
                                       REAP_MAX places */
    int                stopping;
    int                failing;     /* last write failed */
    apr_int64_t        queued, written, lost;
    /* losses not yet written as a gap event (guarded by lock) */
    apr_int64_t        gap_lost, gap_start_us, gap_end_us;
    apr_int64_t        gap_by_type[4];  /* by mtls_item_type_e */
    char               gap_cause[256];
    apr_int64_t        last_anchor_us;  /* writer thread only */
    int                gone_noted;      /* writer thread only: the file
                                           left its path and none can be
                                           opened there; logged */
    apr_int64_t        last_reap_us;    /* writer thread only */
    mtls_slot_t       *slot;            /* our counters in shared memory */
    mtls_metrics_t    *m;               /* our metrics there (or NULL) */
    apr_int64_t        mirror_lost;     /* lines not mirrored, this episode */
    apr_int64_t        rotate_logged_us;/* writer thread only: when a failed
                                           rotation was last logged */
    apr_int64_t        last_seal;       /* writer thread only */
    apr_int64_t        seal_retry_us;   /* writer thread only: when a seal
                                           not recorded was last logged */
    char               cur_path[2048];  /* the file written now (guarded
                                           by lock; it changes with a
                                           rotation) */
};

#define REAP_MAX 8      /* dead processes recorded per batch */
#define REAP_EVERY_US 1000000
#define SPARE_MAX 512   /* stored items kept for reuse */

/* Count n items lost to cause; caller holds the lock.  The items (when
 * known) say which kinds were lost. */
static void count_loss(mtls_writer_t *w, apr_int64_t n, int kind,
                       const char *cause, mtls_item_t **items)
{
    apr_int64_t now = mtls_now_us(), i;

    if (w->m) {
        mtls_metrics_add(&w->m->lost[kind], (apr_uint64_t)n);
    }

    for (i = 0; i < n; i++) {
        int t = items ? items[i]->type : MTLS_ITEM_HANDSHAKE;
        w->gap_by_type[t > 0 && t < 4 ? t : 0]++;
    }
    w->lost += n;
    if (w->gap_lost == 0) {
        w->gap_start_us = now;
        mtls_strlcpy(w->gap_cause, cause, sizeof(w->gap_cause));
    }
    w->gap_lost += n;
    w->gap_end_us = now;
}

mtls_item_t *mtls_writer_item(mtls_writer_t *w, int type)
{
    mtls_item_t *item = NULL;
    mtls_link_t *link = NULL;

    if (w) {
        pthread_mutex_lock(&w->spare_lock);
        if ((item = w->spare)) {
            w->spare = item->next;
            w->spares--;
        }
        if (type == MTLS_ITEM_HANDSHAKE && (link = w->spare_link)) {
            w->spare_link = link->next;
            w->spare_links--;
        }
        pthread_mutex_unlock(&w->spare_lock);
    }
    if (!item) {
        item = mtls_item_new(type);
    }
    else {
        mtls_item_init(item, type);
    }
    if (type == MTLS_ITEM_HANDSHAKE) {
        link = link ? mtls_link_init(link) : mtls_link_new();
        if (!item || !link) {
            free(link);
            mtls_item_free(item);
            return NULL;
        }
        item->link = link;
    }
    return item;
}

/* Done with items[0..n): keep up to SPARE_MAX for mtls_writer_item, free
 * the rest.  The handshake path then refills these instead of taking a
 * fresh kilobyte from malloc for each record (a largebin request, which
 * consolidates the arena's fastbins) that the writer then freed into the
 * handshake thread's arena.  So with the links whose last reference goes
 * here (most: the connection has closed before its records are stored),
 * which the writer freed into those arenas' fastbins for malloc_consolidate
 * to sort out. */
static void recycle(mtls_writer_t *w, mtls_item_t **items, int n)
{
    mtls_link_t *links = NULL, *l;
    int i;

    for (i = 0; i < n; i++) {
        if (mtls_link_drop(l = items[i]->link)) {
            l->next = links;
            links = l;
        }
        items[i]->link = NULL;
        mtls_item_release(items[i]);
    }
    pthread_mutex_lock(&w->spare_lock);
    for (i = 0; i < n && w->spares < SPARE_MAX; i++) {
        items[i]->next = w->spare;
        w->spare = items[i];
        w->spares++;
    }
    while (links && w->spare_links < SPARE_MAX) {
        l = links;
        links = l->next;
        l->next = w->spare_link;
        w->spare_link = l;
        w->spare_links++;
    }
    pthread_mutex_unlock(&w->spare_lock);
    for (; i < n; i++) {
        mtls_item_free(items[i]);       /* released: frees its memory */
    }
    while (links) {
        l = links;
        links = l->next;
        free(l);
    }
}

int mtls_writer_push(mtls_writer_t *w, mtls_item_t *item)
{
    int signal;

    pthread_mutex_lock(&w->lock);
    if (w->stopping || w->depth >= w->conf.queue_max) {
        int first = w->gap_lost == 0;
        count_loss(w, 1, w->stopping ? MTLS_LOSS_STOPPED
                                     : MTLS_LOSS_QUEUE_FULL,
                   w->stopping ? "writer stopped"
                                     : "queue full (MTLSAuditQueueSize)",
                   &item);
        pthread_mutex_unlock(&w->lock);
        if (first) {
            mtls_log(MTLS_LOG_ERR, "record lost: %s; losses are counted "
                     "and stored as a gap", w->stopping
                     ? "writer stopped" : "queue full");
        }
        mtls_item_free(item);
        return -1;
    }
    item->next = NULL;
    if (w->tail) {
        w->tail->next = item;
    }
    else {
        w->head = item;
    }
    w->tail = item;
    w->depth++;
    w->queued++;
    mtls_slot_queued(w->slot);
    mtls_metrics_depth(w->m, w->depth);
    /* The writer wakes every MTLSAuditFlushInterval by itself; wake it
     * early only for a half-full batch, or a half-full queue when that is
     * smaller (waking it for every first record made a transaction of one
     * or two records, several times the CPU of a full batch). */
    signal = w->depth == w->wake_at;
    pthread_mutex_unlock(&w->lock);
    if (signal) {
        pthread_cond_signal(&w->wake);
    }
    return 0;
}

int mtls_writer_healthy(mtls_writer_t *w)
{
    int ok;
    pthread_mutex_lock(&w->lock);
    ok = !w->stopping && !w->failing && w->depth < w->conf.queue_max
         && !mtls_slots_failing(w->conf.slots);
    pthread_mutex_unlock(&w->lock);
    return ok;
}

void mtls_writer_path(mtls_writer_t *w, char *out, apr_size_t len)
{
    pthread_mutex_lock(&w->lock);
    mtls_strlcpy(out, w->cur_path[0] ? w->cur_path : w->conf.path, len);
    pthread_mutex_unlock(&w->lock);
}

mtls_metrics_t *mtls_writer_metrics(mtls_writer_t *w)
{
    return w ? w->m : NULL;
}

void mtls_writer_stats(mtls_writer_t *w, mtls_writer_stats_t *st)
{
    pthread_mutex_lock(&w->lock);
    st->queued = w->queued;
    st->written = w->written;
    st->lost = w->lost;
    st->depth = w->depth;
    pthread_mutex_unlock(&w->lock);
}

/* A gap event for the losses counted so far, or NULL if none.  Caller
 * holds the lock; the counters are cleared only once the event is stored. */
static mtls_item_t *gap_event(mtls_writer_t *w)
{
    mtls_item_t *ev;
    char detail[400];

    if (w->gap_lost == 0 || !(ev = mtls_item_new(MTLS_ITEM_EVENT))) {
        return NULL;
    }
    ev->u.ev.time_us = mtls_now_us();
    mtls_strlcpy(ev->u.ev.kind, "gap", sizeof(ev->u.ev.kind));
    ev->u.ev.pid = w->conf.pid;
    ev->u.ev.lost = w->gap_lost;
    ev->u.ev.gap_start_us = w->gap_start_us;
    ev->u.ev.gap_end_us = w->gap_end_us;
    snprintf(detail, sizeof(detail), "%s (%lld handshakes, %lld requests, "
             "%lld events)", w->gap_cause,
             (long long)w->gap_by_type[MTLS_ITEM_HANDSHAKE],
             (long long)w->gap_by_type[MTLS_ITEM_REQUEST],
             (long long)w->gap_by_type[MTLS_ITEM_EVENT]);
    ev->u.ev.detail = strdup(detail);
    return ev;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

typedef struct {
    int         fd;
    apr_int64_t lost;
    int         err;
} mirror_out_t;

static void mirror_line(void *baton, const char *line, int len)
{
    mirror_out_t *o = baton;
    ssize_t k = write(o->fd, line, (size_t)len);

    if (k != len) {
        o->lost++;
        o->err = k < 0 ? errno : EAGAIN;
    }
}

apr_int64_t mtls_mirror_written(mtls_store_t *st, int fd, int format,
                                const char *source, int *err)
{
    mirror_out_t o = { fd, 0, 0 };
    int v;

    for (v = 0; v < MTLS_JSON_VIEWS; v++) {
        apr_int64_t lo, hi;
        mtls_store_written(st, v, &lo, &hi);
        if (lo && mtls_json_rows(mtls_store_db(st), format, v, 0, lo, hi,
                                 source,
                                 mirror_line, &o) != SQLITE_OK) {
            o.lost += hi - lo + 1;
            o.err = EIO;
        }
    }
    *err = o.err;
    return o.lost;
}

/* The rows the last write stored, into MTLSAuditMirror.  The descriptor
 * does not block: a slow or dead reader costs lines of the mirror
 * (counted, logged once an episode), never records of the database. */
static void mirror(mtls_writer_t *w)
{
    int err;
    apr_int64_t lost = mtls_mirror_written(w->store, w->conf.mirror_fd,
                                           w->conf.mirror_format,
                                           mtls_store_path(w->store), &err);

    if (lost && !w->mirror_lost) {
        mtls_log(MTLS_LOG_WARNING, "mirror: cannot write a line (%s); the "
                 "records are in the database, the mirror misses them "
                 "until it can be written again", strerror(err));
    }
    else if (!lost && w->mirror_lost) {
        mtls_log(MTLS_LOG_WARNING, "mirror: writing again after %"
                 APR_INT64_T_FMT " lines could not be (the records are in "
                 "the database)", w->mirror_lost);
        w->mirror_lost = 0;
    }
    w->mirror_lost += lost;
}

/* Every write of the writer: store the items and, once they are stored,
 * mirror them. */
static int store_write(mtls_writer_t *w, mtls_item_t **items, int n,
                       char *err, apr_size_t errlen)
{
    apr_int64_t t0 = mtls_mono_us();
    int rc = mtls_store_write(w->store, items, n, err, errlen), i;

    /* One transaction: its time and, once stored, its records. */
    mtls_metrics_tx(w->m, mtls_mono_us() - t0, rc == SQLITE_OK);
    if (rc == SQLITE_OK && w->m) {
        for (i = 0; i < n; i++) {
            int t = items[i]->type;
            mtls_metrics_add(&w->m->written[t > 0 && t < 4 ? t : 0], 1);
        }
    }

    if (rc == SQLITE_OK && n > 0 && w->conf.mirror_fd > 0) {
        mirror(w);
    }
    return rc;
}

/* Before each write: make w->store the file at the configured path.  If
 * the file was removed or replaced behind our back, open (a new file at)
 * the path and say so in it: records written to a removed file are lost to
 * every reader.  Returns SQLITE_OK when the store may be written; else an
 * error, with the cause in err, and nothing may be written: the file we
 * hold is not at the path any more (what went into it would be counted as
 * stored and never read), or we hold none.  Called again before the next
 * try, it opens the path as soon as it can be. */
static int follow_file(mtls_writer_t *w, char *err, apr_size_t errlen)
{
    mtls_store_t *st;
    mtls_item_t *ev;
    char why[256], path[2048];
    int gone;

    if (!w->store) {
        /* Not open yet (it could not be at start): try again now. */
        if (mtls_store_open(w->conf.path, w->conf.store_flags,
                            w->conf.busy_timeout_ms, &w->store, why,
                            sizeof(why)) != SQLITE_OK) {
            snprintf(err, errlen, "cannot open %s (%s)", w->conf.path, why);
            return SQLITE_CANTOPEN;
        }
        mtls_store_set_key(w->store, w->conf.key);
        mtls_log(MTLS_LOG_NOTICE, "%s is open for writing now",
                 w->conf.path);
        return SQLITE_OK;
    }
    if ((gone = mtls_store_file_gone(w->store)) == MTLS_FILE_IN_PLACE) {
        w->gone_noted = 0;
        return SQLITE_OK;
    }
    /* The file we write now: the configured one, or the one a rotation
     * went on in. */
    mtls_strlcpy(path, mtls_store_path(w->store), sizeof(path));
    if (mtls_store_open(path, w->conf.store_flags,
                        w->conf.busy_timeout_ms, &st, why, sizeof(why))
        != SQLITE_OK) {
        /* Keep the old store: should the file come back to its path, it
         * is written again. */
        snprintf(err, errlen, "database file %s (%s)",
                 gone == MTLS_FILE_REMOVED
                 ? "removed and cannot be created again"
                 : "replaced by one that cannot be used", why);
        if (!w->gone_noted) {
            w->gone_noted = 1;
            mtls_log(MTLS_LOG_ERR, "%s: %s; records are not stored, and are "
                     "counted as lost, until the file at that path can be "
                     "written", path, err);
        }
        return SQLITE_CANTOPEN;
    }
    w->gone_noted = 0;
    mtls_log(MTLS_LOG_ERR, "%s was removed or replaced while in use; "
             "recording goes on in the file now at that path",
             path);
    mtls_store_move_seals(st, w->store);
    mtls_store_close(w->store);
    w->store = st;
    mtls_store_set_key(w->store, w->conf.key);
    if ((ev = mtls_item_new(MTLS_ITEM_EVENT))) {
        ev->u.ev.time_us = mtls_now_us();
        mtls_strlcpy(ev->u.ev.kind, "reopen", sizeof(ev->u.ev.kind));
        ev->u.ev.pid = w->conf.pid;
        ev->u.ev.detail = strdup("the database file was removed or replaced "
                                 "while the server wrote it; earlier records "
                                 "are not in this file");
        if (store_write(w, &ev, 1, why, sizeof(why)) != SQLITE_OK) {
            mtls_log(MTLS_LOG_ERR, "cannot record the reopen: %s", why);
        }
        mtls_item_free(ev);
    }
    return SQLITE_OK;
}

/* Write the chain heads to the log: an anchor kept outside the database
 * (see mtls_chain.h). */
static void log_anchor(mtls_writer_t *w)
{
    mtls_anchor_t a;
    char line[1024];

    w->last_anchor_us = mtls_now_us();
    if (w->store && mtls_anchor_read(mtls_store_db(w->store), &a) == SQLITE_OK) {
        mtls_anchor_format(mtls_store_path(w->store), &a, line, sizeof(line));
        mtls_log(MTLS_LOG_NOTICE, "%s", line);
    }
}

/* Gap events for processes that died with records still queued (found
 * through the shared counters), into out[0..REAP_MAX); returns how many. */
static int reap_dead(mtls_writer_t *w, mtls_item_t **out, int now_anyway)
{
    apr_uint64_t lost;
    apr_int64_t since, now = mtls_now_us();
    apr_uint32_t pid;
    int n = 0;

    /* A look costs a kill(pid, 0) per live process: once a second is
     * soon enough for a crash, and a stopping writer looks once more. */
    if (now - w->last_reap_us < REAP_EVERY_US && !now_anyway) {
        return 0;
    }
    w->last_reap_us = now;

    while (n < REAP_MAX && w->conf.slots
           && (pid = mtls_slots_reap(w->conf.slots, &lost, &since)) != 0) {
        mtls_item_t *ev;
        char detail[200];

        if (lost && w->m) {
            mtls_metrics_add(&w->m->lost[MTLS_LOSS_PROCESS_DIED], lost);
        }
        if (lost == 0 || !(ev = mtls_item_new(MTLS_ITEM_EVENT))) {
            continue;
        }
        mtls_log(MTLS_LOG_ERR, "httpd process %u ended without writing %llu "
                 "records (killed or crashed); recording them as lost", pid,
                 (unsigned long long)lost);
        ev->u.ev.time_us = mtls_now_us();
        mtls_strlcpy(ev->u.ev.kind, "gap", sizeof(ev->u.ev.kind));
        ev->u.ev.pid = (int)pid;
        ev->u.ev.lost = (apr_int64_t)lost;
        ev->u.ev.gap_start_us = since;
        ev->u.ev.gap_end_us = ev->u.ev.time_us;
        snprintf(detail, sizeof(detail), "process %u ended (killed or "
                 "crashed) with records not written (%llu records: "
                 "handshakes, requests and events; at most one batch of "
                 "them may in fact be stored)", pid,
                 (unsigned long long)lost);
        ev->u.ev.detail = strdup(detail);
        out[n++] = ev;
    }
    return n;
}

/* What the store's sealer has finished (a file sealed by a rotation of
 * ours: its summaries and SHA-256, made on the sealer's thread while we
 * wrote on): its 'sealed' event and log line, now.  A record that cannot
 * be written is tried again at the next pass (said once a minute). */
static void record_seals(mtls_writer_t *w)
{
    apr_int64_t now;
    char err[512];

    if (!w->store || mtls_store_seal_hash(w->store, err, sizeof(err))
                     == SQLITE_OK) {
        return;
    }
    now = mtls_now_us();
    if (now - w->seal_retry_us > 60000000) {
        w->seal_retry_us = now;
        mtls_log(MTLS_LOG_WARNING, "the SHA-256 of a sealed file is not "
                 "recorded yet: %s", err);
    }
}

/* Before a write: when the file is due (MTLSAuditRotate), seal it and go
 * on in the next.  Every child's writer looks; the first to take the
 * file's write lock seals it, the others find the seal and follow it
 * (mtls_store_rotate).  A rotation that fails leaves the file as it was,
 * written on; it is tried again before the next write (said once a
 * minute).  While our sealer still finishes the file sealed before (its
 * record must go into the file we write now, before that is sealed in
 * turn), the rotation waits, and we write on. */
static void maybe_rotate(mtls_writer_t *w)
{
    apr_int64_t now = mtls_now_us();
    const mtls_store_sealed_t *sl;
    char name[2048], err[512];

    if (w->conf.rotate && w->store) {
        /* The file before ours, left unfinished by a process that ended
         * first: ours to finish (cheap once settled). */
        mtls_store_finish_previous(w->store);
        record_seals(w);
    }
    if (!w->conf.rotate || !w->store
        || !mtls_store_rotate_due(w->store, w->conf.rotate,
                                  w->conf.rotate_size, now)
        || mtls_store_seal_pending(w->store)) {
        return;
    }
    if (mtls_store_name(w->conf.pattern, now, name, sizeof(name)) != 0) {
        if (now - w->rotate_logged_us > 60000000) {
            w->rotate_logged_us = now;
            mtls_log(MTLS_LOG_ERR, "cannot name the file after %s (from %s)",
                     mtls_store_path(w->store), w->conf.pattern);
        }
        return;
    }
    sl = mtls_store_last_seal(w->store);
    w->last_seal = sl ? sl->seal : 0;
    if (mtls_store_rotate(w->store, name, err, sizeof(err)) != SQLITE_OK) {
        if (now - w->rotate_logged_us > 60000000) {
            w->rotate_logged_us = now;
            mtls_log(MTLS_LOG_ERR, "cannot rotate %s: %s; writing on in it",
                     mtls_store_path(w->store), err);
        }
        return;
    }
    /* Sealed it ourselves: the new file's heads to the log too. */
    if ((sl = mtls_store_last_seal(w->store)) && sl->seal != w->last_seal) {
        log_anchor(w);
    }
}

/* Write batch[0..n) (plus a pending gap event and the gaps of dead
 * processes: the caller leaves 1 + REAP_MAX free places), retrying; free
 * them. */
static void write_batch(mtls_writer_t *w, mtls_item_t **batch, int n)
{
    mtls_item_t *gap;
    char err[512];
    int attempt, rc = SQLITE_OK, m, logged = 0, anchor_now = 0, stopping;
    int was_failing, unusable = 0;
    apr_int64_t gap_lost = 0;

    pthread_mutex_lock(&w->lock);
    gap = gap_event(w);
    if (gap) {
        gap_lost = w->gap_lost;
    }
    stopping = w->stopping;
    was_failing = w->failing;
    pthread_mutex_unlock(&w->lock);
    if (gap) {
        batch[n] = gap;         /* the caller left room for it */
    }
    m = n + (gap ? 1 : 0);
    m += reap_dead(w, batch + m, stopping);
    maybe_rotate(w);
    for (attempt = 0; attempt < w->conf.retries; attempt++) {
        if ((rc = follow_file(w, err, sizeof(err))) == SQLITE_OK) {
            rc = store_write(w, batch, m, err, sizeof(err));
            unusable = 0;
        }
        else {
            /* No usable file at the path (ours was removed or replaced,
             * or none could be opened yet): no write can succeed until
             * there is one, so MTLSAuditFailMode closed refuses new
             * connections now, not after the tries. */
            unusable = w->store != NULL;
            if (!w->failing) {
                pthread_mutex_lock(&w->lock);
                w->failing = 1;
                pthread_mutex_unlock(&w->lock);
            }
            mtls_slots_set_failing(w->conf.slots, 1);
        }
        if (rc == SQLITE_OK) {
            break;
        }
        if (!was_failing && !logged) {
            mtls_log(MTLS_LOG_ERR, "cannot write to %s (%s), retrying",
                     w->conf.path, err);
            logged = 1;
        }
        sleep_ms(100 * (attempt + 1));
    }
    mtls_slot_settled(w->slot, (apr_uint64_t)n);   /* stored or counted */
    pthread_mutex_lock(&w->lock);
    if (w->store && strcmp(w->cur_path, mtls_store_path(w->store)) != 0) {
        mtls_strlcpy(w->cur_path, mtls_store_path(w->store),
                     sizeof(w->cur_path));
    }
    if (rc == SQLITE_OK) {
        w->written += n;
        if (gap) {
            /* Losses counted while we wrote stay for the next gap. */
            w->gap_lost -= gap_lost;
            if (w->gap_lost == 0) {
                w->gap_cause[0] = '\0';
                memset(w->gap_by_type, 0, sizeof(w->gap_by_type));
            }
            else {
                w->gap_start_us = mtls_now_us();
            }
        }
        if (w->failing) {
            mtls_log(MTLS_LOG_NOTICE, "writing to %s again", w->conf.path);
        }
        w->failing = 0;
        mtls_slots_set_failing(w->conf.slots, 0);
        anchor_now = w->conf.anchor_s > 0 && mtls_now_us() - w->last_anchor_us
                     >= (apr_int64_t)w->conf.anchor_s * 1000000;
    }
    else {
        char cause[256] = "database write failed: ";
        if (unusable) {
            cause[0] = '\0';       /* err says it all */
        }
        mtls_strlcpy(cause + strlen(cause), err, sizeof(cause) - strlen(cause));
        count_loss(w, n, MTLS_LOSS_WRITE_FAILED, cause, batch);
        if (!was_failing) {
            mtls_log(MTLS_LOG_ERR, "dropped %d records after %d tries: %s",
                     n, w->conf.retries, err);
        }
        w->failing = 1;
        mtls_slots_set_failing(w->conf.slots, 1);
    }
    w->depth -= n;
    mtls_metrics_depth(w->m, w->depth);
    pthread_mutex_unlock(&w->lock);
    recycle(w, batch, m);
    if (anchor_now) {
        log_anchor(w);
    }
}

static void *writer_main(void *arg)
{
    mtls_writer_t *w = arg;
    mtls_item_t **batch = w->batch;
    struct timespec until;
    mtls_item_t *list;
    int n;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (!w->stopping && w->depth < w->wake_at) {
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += (long)w->conf.flush_ms * 1000000L;
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&w->wake, &w->lock, &until);
        }
        if (!w->head && (w->gap_lost == 0 || w->failing)) {
            if (w->stopping) {
                break;
            }
            /* Idle: a sealed file our sealer has finished is recorded
             * now, not at the next record. */
            if (w->conf.rotate && w->store) {
                int ready;
                pthread_mutex_unlock(&w->lock);
                mtls_store_finish_previous(w->store);
                if ((ready = mtls_store_seal_ready(w->store))) {
                    record_seals(w);
                }
                pthread_mutex_lock(&w->lock);
                if (ready) {
                    continue;
                }
            }
            /* Idle: now and then, look for processes that died with
             * records in their queues. */
            if (w->gap_lost == 0 && w->conf.slots
                && mtls_now_us() - w->last_reap_us >= REAP_EVERY_US) {
                int k;
                pthread_mutex_unlock(&w->lock);
                k = reap_dead(w, batch, 0);
                /* Everybody refuses while the shared flag says writing
                 * fails; whoever idles checks whether it works again (an
                 * empty write transaction), or the flag could outlive the
                 * process that set it.  So does a writer whose own last
                 * try failed (one that could not open the file at start):
                 * refusing every connection, it gets no record to try. */
                if (!k && (mtls_slots_failing(w->conf.slots) || w->failing)) {
                    char err[512];
                    if (follow_file(w, err, sizeof(err)) == SQLITE_OK
                        && mtls_store_write(w->store, batch, 0, err,
                                            sizeof(err)) == SQLITE_OK) {
                        mtls_slots_set_failing(w->conf.slots, 0);
                        if (w->failing) {
                            mtls_log(MTLS_LOG_NOTICE, "writing to %s again",
                                     w->conf.path);
                            pthread_mutex_lock(&w->lock);
                            w->failing = 0;
                            pthread_mutex_unlock(&w->lock);
                        }
                    }
                }
                if (k) {
                    char err[512];
                    if (follow_file(w, err, sizeof(err)) != SQLITE_OK
                        || store_write(w, batch, k, err, sizeof(err))
                           != SQLITE_OK) {
                        mtls_log(MTLS_LOG_ERR, "cannot record the loss of "
                                 "a dead process: %s", err);
                    }
                    while (k) mtls_item_free(batch[--k]);
                }
                pthread_mutex_lock(&w->lock);
                continue;
            }
            if (w->gap_lost == 0) {
                continue;
            }
        }
        /* Take the whole queue at once and walk it unlocked: walking it
         * here touched every record while the handshake path waited for
         * the lock.  The records stay counted in depth until written. */
        list = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        do {                    /* (no records: a pending gap alone) */
            for (n = 0; list && n < w->conf.batch_max; n++) {
                batch[n] = list;
                list = list->next;
            }
            write_batch(w, batch, n);
        } while (list);
        pthread_mutex_lock(&w->lock);
        if (w->stopping && !w->head) {
            break;
        }
    }
    pthread_mutex_unlock(&w->lock);
    mtls_chain_thread_done();
    return NULL;
}

int mtls_writer_start(const mtls_writer_conf_t *conf, mtls_writer_t **out,
                      char *err, apr_size_t errlen)
{
    pthread_condattr_t ca;
    mtls_writer_t *w;
    int rc;

    *out = NULL;
    if (!(w = calloc(1, sizeof(*w)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->conf = *conf;
    if (w->conf.queue_max < 1) w->conf.queue_max = 1;
    if (w->conf.batch_max < 1) w->conf.batch_max = 1;
    if (w->conf.retries < 1) w->conf.retries = 1;
    if (w->conf.flush_ms < 1) w->conf.flush_ms = 1;
    w->wake_at = (w->conf.batch_max < w->conf.queue_max
                  ? w->conf.batch_max : w->conf.queue_max) / 2;
    if (w->wake_at < 1) w->wake_at = 1;
    w->batch = malloc(sizeof(*w->batch)
                      * (size_t)(w->conf.batch_max + 1 + REAP_MAX));
    if (!w->batch) {
        snprintf(err, errlen, "out of memory");
        free(w);
        return -1;
    }
    /* A database that cannot be opened now is tried again before each
     * write; until then records are counted as lost, never dropped
     * unseen.  The caller logs err. */
    err[0] = '\0';
    rc = mtls_store_open(conf->path, conf->store_flags,
                         conf->busy_timeout_ms, &w->store, err, errlen);
    if (rc != SQLITE_OK) {
        w->store = NULL;
        w->failing = 1;
        mtls_slots_set_failing(conf->slots, 1);     /* closed mode refuses */
    }
    if (w->store) {
        mtls_store_set_key(w->store, conf->key);
    }
    w->last_anchor_us = mtls_now_us();  /* the parent anchored at start */
    w->slot = mtls_slots_claim(conf->slots, (apr_uint32_t)conf->pid);
    w->m = mtls_slots_metrics(conf->slots, w->slot);
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->spare_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        mtls_store_close(w->store);
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        pthread_mutex_destroy(&w->spare_lock);
        free(w->batch);
        free(w);
        return -1;
    }
    /* Visible in top -H and /proc/PID/task/TID/comm (the benchmark reads
     * its CPU time there). */
    pthread_setname_np(w->thread, "mtls-writer");
    *out = w;
    return 0;
}

void mtls_writer_stop(mtls_writer_t *w)
{
    mtls_writer_stats_t st;

    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_mutex_unlock(&w->lock);
    pthread_cond_signal(&w->wake);
    pthread_join(w->thread, NULL);
    mtls_writer_stats(w, &st);
    if (w->gap_lost) {
        mtls_log(MTLS_LOG_ERR, "stopping with %" APR_INT64_T_FMT " records "
                 "lost and not recorded as a gap (%s)", w->gap_lost,
                 w->gap_cause);
    }
    mtls_store_close(w->store);
    mtls_slots_release(w->slot);        /* everything settled */
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->spare_lock);
    while (w->spare) {
        mtls_item_t *next = w->spare->next;
        mtls_item_free(w->spare);
        w->spare = next;
    }
    while (w->spare_link) {
        mtls_link_t *next = w->spare_link->next;
        free(w->spare_link);
        w->spare_link = next;
    }
    free(w->batch);
    free(w);
}
