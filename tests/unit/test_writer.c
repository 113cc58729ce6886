/* The writer: many producers, drain on stop, overflow and failures become
 * counted gaps. */
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

static long long count(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;

    sqlite3_open(path, &db);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static mtls_writer_conf_t conf(const char *path)
{
    mtls_writer_conf_t c;
    memset(&c, 0, sizeof(c));
    c.path = path;
    c.busy_timeout_ms = 2000;
    c.queue_max = 100000;
    c.flush_ms = 20;
    c.batch_max = 256;
    c.retries = 3;
    c.pid = 1;
    return c;
}

typedef struct {
    mtls_writer_t *w;
    X509 *cert;
    int n;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    int i;
    for (i = 0; i < p->n; i++) {
        mtls_item_t *hs;
        X509_up_ref(p->cert);
        hs = unit_handshake(p->cert, MTLS_OUT_ACCEPTED);
        /* As the module does: a request item the writer may have kept. */
        mtls_item_t *rq = mtls_writer_item(p->w, MTLS_ITEM_REQUEST);
        rq->link = mtls_link_ref(hs->link);
        rq->u.rq.time_us = mtls_now_us();
        rq->u.rq.path = strdup("/p");
        mtls_writer_push(p->w, hs);
        mtls_writer_push(p->w, rq);
    }
    return NULL;
}

static void test_many_producers_drain_on_stop(void)
{
    static const char *const subj[] = { "CN", "load", NULL };
    const char *path = unit_db("writer");
    mtls_writer_conf_t c = conf(path);
    mtls_writer_stats_t stats;
    producer_t p[4];
    pthread_t t[4];
    char err[256];
    X509 *cert = unit_cert(subj, "ec", 9, "20200101000000Z",
                           "20300101000000Z", NULL, NULL);
    mtls_writer_t *w;
    int i;

    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    for (i = 0; i < 4; i++) {
        p[i].w = w;
        p[i].cert = cert;
        p[i].n = 2500;
        pthread_create(&t[i], NULL, produce, &p[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    mtls_writer_stats(w, &stats);
    CU_ASSERT_EQUAL(stats.queued, 20000);
    CU_ASSERT_EQUAL(stats.lost, 0);
    mtls_writer_stop(w);        /* must drain everything */
    X509_free(cert);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM handshakes"), 10000);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM requests"), 10000);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM requests r JOIN "
                          "handshakes h ON h.id = r.handshake_id"), 10000);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM certificates"), 1);
}

static void test_overflow_is_counted_and_recorded(void)
{
    const char *path = unit_db("overflow");
    mtls_writer_conf_t c = conf(path);
    mtls_writer_stats_t stats;
    char err[256];
    sqlite3 *locker;
    mtls_writer_t *w;
    int i, dropped = 0;

    c.queue_max = 50;
    c.busy_timeout_ms = 50;
    c.retries = 1;
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    /* Another process holds the write lock: batches fail. */
    sqlite3_open(path, &locker);
    CU_ASSERT_EQUAL(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL,
                                 NULL), SQLITE_OK);
    for (i = 0; i < 200; i++) {
        if (mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED)) != 0) {
            dropped++;
        }
    }
    usleep(300000);
    mtls_writer_stats(w, &stats);
    CU_ASSERT(dropped > 0);
    CU_ASSERT_EQUAL(stats.queued + dropped, 200);
    CU_ASSERT(stats.lost >= dropped);
    sqlite3_exec(locker, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(locker);
    /* Once writable again, the next write records the gap by itself. */
    for (i = 0; i < 100 && count(path, "SELECT count(*) FROM events WHERE "
                                 "kind = 'gap'") < 1; i++) {
        usleep(50000);
    }
    mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    mtls_writer_stop(w);
    /* Every one of the 201 records is either stored or counted lost. */
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM handshakes")
                    + count(path, "SELECT coalesce(sum(lost), 0) FROM events "
                            "WHERE kind = 'gap'"), 201);
    CU_ASSERT(count(path, "SELECT count(*) FROM events WHERE kind = 'gap' "
                    "AND gap_start_us <= gap_end_us AND detail IS NOT NULL")
              >= 1);
}

static void test_follows_a_removed_file(void)
{
    const char *path = unit_db("removed");
    char saved[512];
    mtls_writer_conf_t c;
    mtls_writer_t *w;
    char err[256];
    int i;

    snprintf(saved, sizeof(saved), "%s", path);
    c = conf(saved);
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    for (i = 0; i < 5; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    usleep(200000);
    CU_ASSERT_EQUAL(count(saved, "SELECT count(*) FROM handshakes"), 5);
    /* Somebody removes the database (and its WAL) while we write. */
    unlink(saved);
    {
        char wal[600];
        snprintf(wal, sizeof(wal), "%s-wal", saved);
        unlink(wal);
        snprintf(wal, sizeof(wal), "%s-shm", saved);
        unlink(wal);
    }
    for (i = 0; i < 7; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    mtls_writer_stop(w);
    /* The records after the removal are in a new file at the same path,
     * which says what happened. */
    CU_ASSERT_EQUAL(count(saved, "SELECT count(*) FROM handshakes"), 7);
    CU_ASSERT_EQUAL(count(saved, "SELECT count(*) FROM events WHERE kind = "
                          "'reopen'"), 1);
}

/* The writer's figures once it has written at least `written` records and
 * counted at least `lost` lost, or as they are after ms milliseconds. */
static mtls_writer_stats_t wait_stats(mtls_writer_t *w, apr_int64_t written,
                                      apr_int64_t lost, int ms)
{
    mtls_writer_stats_t st;
    int i;

    for (i = 0; ; i++) {
        mtls_writer_stats(w, &st);
        if ((st.written >= written && st.lost >= lost) || i * 10 >= ms) {
            return st;
        }
        usleep(10000);
    }
}

static void wait_lost(mtls_writer_t *w, apr_int64_t lost)
{
    wait_stats(w, 0, lost, 5000);
}

static void remove_db(const char *path)
{
    char p[600];

    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

/* The file removed while no new one can be made at its path (its directory
 * is a regular file now: even root cannot create one there): what the
 * writer is given meanwhile is counted as lost, not written into the
 * removed file; the shared failing flag goes up with the first try, not
 * after the last; once the path can be written again, the new file holds
 * the reopen, the gap with its cause, and what came after. */
static void test_removed_file_that_cannot_be_made_again_is_a_gap(void)
{
    char dir[400], away[420], path[512];
    size_t size = mtls_slots_size(4);
    void *mem = calloc(1, size);
    mtls_slots_t *slots = mtls_slots_init(mem, 4);
    mtls_writer_stats_t stats;
    mtls_writer_conf_t c;
    mtls_writer_t *w;
    char err[256];
    FILE *f;
    int i;

    snprintf(dir, sizeof(dir), "%s/gone-dir", unit_dir);
    snprintf(away, sizeof(away), "%s.away", dir);
    snprintf(path, sizeof(path), "%s/x.db", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0750), 0);
    c = conf(path);
    c.slots = slots;
    c.retries = 5;                      /* 1.5 s of tries a batch */
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    for (i = 0; i < 3; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    stats = wait_stats(w, 3, 0, 2000);
    CU_ASSERT_EQUAL_FATAL(stats.written, 3);
    remove_db(path);
    CU_ASSERT_EQUAL_FATAL(rename(dir, away), 0);
    f = fopen(dir, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    for (i = 0; i < 100 && !mtls_slots_failing(slots); i++) {
        usleep(10000);
    }
    mtls_writer_stats(w, &stats);
    CU_ASSERT_TRUE(mtls_slots_failing(slots));
    CU_ASSERT_FALSE(mtls_writer_healthy(w));
    CU_ASSERT_EQUAL(stats.lost, 0);         /* still trying */
    for (i = 0; i < 4; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    wait_lost(w, 5);
    mtls_writer_stats(w, &stats);
    CU_ASSERT_EQUAL(stats.lost, 5);
    CU_ASSERT_EQUAL(stats.written, 3);
    CU_ASSERT_FALSE(mtls_writer_healthy(w));
    /* The path can be written again. */
    CU_ASSERT_EQUAL(unlink(dir), 0);
    CU_ASSERT_EQUAL(rename(away, dir), 0);
    for (i = 0; i < 2; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    mtls_writer_stop(w);
    CU_ASSERT_FALSE(mtls_slots_failing(slots));
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM handshakes"), 2);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM events WHERE kind = "
                          "'reopen'"), 1);
    CU_ASSERT_EQUAL(count(path, "SELECT sum(lost) FROM events WHERE kind = "
                          "'gap' AND detail LIKE 'database file removed and "
                          "cannot be created again (cannot create %' AND "
                          "detail LIKE '%(5 handshakes, 0 requests, "
                          "0 events)'"), 5);
    free(mem);
}

/* The file replaced by one that is not a database: the same, with the
 * cause; removing the bad file lets the writer make a new one. */
static void test_replaced_by_a_file_it_cannot_use_is_a_gap(void)
{
    char path[512], tmp[600];
    mtls_writer_stats_t stats;
    mtls_writer_conf_t c;
    mtls_writer_t *w;
    char err[256];
    FILE *f;
    int i;

    snprintf(path, sizeof(path), "%s", unit_db("replaced"));
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    c = conf(path);
    c.retries = 2;
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    stats = wait_stats(w, 1, 0, 2000);
    CU_ASSERT_EQUAL_FATAL(stats.written, 1);
    f = fopen(tmp, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (i = 0; i < 100; i++) {
        fputs("these are not the records you are looking for\n", f);
    }
    fclose(f);
    CU_ASSERT_EQUAL(rename(tmp, path), 0);
    snprintf(tmp, sizeof(tmp), "%s-wal", path);
    unlink(tmp);
    snprintf(tmp, sizeof(tmp), "%s-shm", path);
    unlink(tmp);
    for (i = 0; i < 4; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    wait_lost(w, 4);
    mtls_writer_stats(w, &stats);
    CU_ASSERT_EQUAL(stats.lost, 4);
    CU_ASSERT_EQUAL(stats.written, 1);
    CU_ASSERT_FALSE(mtls_writer_healthy(w));
    remove_db(path);
    mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    mtls_writer_stop(w);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM handshakes"), 1);
    CU_ASSERT_EQUAL(count(path, "SELECT sum(lost) FROM events WHERE kind = "
                          "'gap' AND detail LIKE 'database file replaced by "
                          "one that cannot be used (%not a database%'"), 4);
}

/* A process that dies with records in its queue: another writer finds
 * it through the shared counters and records the loss. */
static void test_killed_process_is_counted(void)
{
    const char *path = unit_db("killed");
    char saved[512];
    size_t size = mtls_slots_size(16);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mtls_slots_t *slots;
    mtls_writer_conf_t c;
    mtls_writer_t *w;
    char err[256];
    pid_t pid;
    int status;

    CU_ASSERT_FATAL(mem != MAP_FAILED);
    memset(mem, 0, size);
    slots = mtls_slots_init(mem, 16);
    snprintf(saved, sizeof(saved), "%s", path);
    c = conf(saved);
    c.slots = slots;
    {   /* create the database first */
        mtls_writer_t *w0;
        CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w0, err, sizeof(err)),
                              0);
        mtls_writer_stop(w0);
    }
    pid = fork();
    if (pid == 0) {
        sqlite3 *locker;
        int i;
        /* Keep the writer from writing, queue 100 records, die hard. */
        sqlite3_open(saved, &locker);
        sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        c.pid = (int)getpid();
        c.busy_timeout_ms = 10000;
        if (mtls_writer_start(&c, &w, err, sizeof(err)) != 0) _exit(2);
        for (i = 0; i < 100; i++) {
            mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
        }
        usleep(100000);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    CU_ASSERT_FATAL(pid > 0);
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* A surviving writer notices within a second or two of idling. */
    c.pid = (int)getpid();
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    {
        int i;
        for (i = 0; i < 50 && count(saved, "SELECT count(*) FROM events "
                                    "WHERE kind = 'gap'") < 1; i++) {
            usleep(100000);
        }
    }
    mtls_writer_stop(w);
    CU_ASSERT_EQUAL(count(saved, "SELECT count(*) FROM handshakes"), 0);
    CU_ASSERT_EQUAL(count(saved, "SELECT sum(lost) FROM events WHERE kind = "
                          "'gap' AND detail LIKE '%killed or crashed%'"), 100);
    {   /* the metrics say the same, and the dead queue is empty */
        mtls_metrics_sum_t m;
        mtls_slots_sum(slots, &m);
        CU_ASSERT_EQUAL(m.lost[MTLS_LOSS_PROCESS_DIED], 100);
        CU_ASSERT_EQUAL(m.depth, 0);
        CU_ASSERT(m.depth_max >= 100);
        CU_ASSERT_EQUAL(m.processes, 0);
        CU_ASSERT_EQUAL(m.written[MTLS_ITEM_EVENT], 1);
    }
    munmap(mem, size);
}

/* The metrics of a slot outlive its owner: the next one counts on, so
 * the sums never go down; vhost names keep their rows. */
static void test_metrics_outlive_their_process(void)
{
    size_t size = mtls_slots_size(2);
    void *mem = calloc(1, size);
    mtls_slots_t *t = mtls_slots_init(mem, 2);
    mtls_slot_t *s;
    mtls_metrics_sum_t m;
    int i;

    CU_ASSERT_EQUAL(mtls_slots_vhost(t, "a.test"), 0);
    CU_ASSERT_EQUAL(mtls_slots_vhost(t, "b.test"), 1);
    CU_ASSERT_EQUAL(mtls_slots_vhost(t, "a.test"), 0);
    for (i = 2; i < MTLS_VHOSTS + 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "v%d.test", i);
        CU_ASSERT_EQUAL(mtls_slots_vhost(t, name),
                        i < MTLS_VHOSTS - 1 ? i : MTLS_VHOSTS - 1);
    }
    s = mtls_slots_claim(t, 1000);
    mtls_metrics_handshake(mtls_slots_metrics(t, s), 1, MTLS_OUT_REJECTED);
    mtls_metrics_tx(mtls_slots_metrics(t, s), 700, 1);
    mtls_metrics_tx(mtls_slots_metrics(t, s), 9000000, 0);
    mtls_metrics_depth(mtls_slots_metrics(t, s), 7);
    mtls_slots_release(s);
    s = mtls_slots_claim(t, 1001);      /* the same slot, a new owner */
    mtls_metrics_handshake(mtls_slots_metrics(t, s), 1, MTLS_OUT_REJECTED);
    mtls_metrics_handshake(mtls_slots_metrics(t, NULL), 0,
                           MTLS_OUT_ACCEPTED);      /* the spill */
    mtls_metrics_handshake(mtls_slots_metrics(t, s), 0, 9);  /* ignored */
    mtls_slots_sum(t, &m);
    CU_ASSERT_EQUAL(m.handshakes[1][MTLS_OUT_REJECTED - 1], 2);
    CU_ASSERT_EQUAL(m.handshakes[0][MTLS_OUT_ACCEPTED - 1], 1);
    CU_ASSERT_EQUAL(m.tx_ok, 1);
    CU_ASSERT_EQUAL(m.tx_failed, 1);
    CU_ASSERT_EQUAL(m.tx_bucket[1], 1);                 /* <= 1 ms */
    CU_ASSERT_EQUAL(m.tx_bucket[MTLS_WRITE_BUCKETS], 1); /* + Inf */
    CU_ASSERT_EQUAL(m.tx_sum_us, 9000700);
    CU_ASSERT_EQUAL(m.depth, 0);        /* released: nothing queued */
    CU_ASSERT_EQUAL(m.depth_max, 7);
    CU_ASSERT_EQUAL(m.processes, 1);
    CU_ASSERT(m.last_write_us > 0);
    {   /* the certificate figures: one query per period, for everyone */
        apr_int64_t now = mtls_now_us(), c = -1, soon = -1;
        CU_ASSERT_FALSE(mtls_slots_certs(t, &c, &soon));
        CU_ASSERT_TRUE(mtls_slots_certs_due(t, now));
        CU_ASSERT_FALSE(mtls_slots_certs_due(t, now));  /* one runs */
        mtls_slots_certs_set(t, now, 1, 5, 1800000000);
        CU_ASSERT_TRUE(mtls_slots_certs(t, &c, &soon));
        CU_ASSERT_EQUAL(c, 5);
        CU_ASSERT_EQUAL(soon, 1800000000);
        CU_ASSERT_FALSE(mtls_slots_certs_due(t, now + 1000000));
        CU_ASSERT_TRUE(mtls_slots_certs_due(t, now + MTLS_CERTS_TTL_S
                                               * APR_INT64_C(1000000)));
        mtls_slots_certs_set(t, now + MTLS_CERTS_TTL_S * APR_INT64_C(1000000),
                             0, 0, 0);              /* the query failed */
        CU_ASSERT_FALSE(mtls_slots_certs(t, &c, &soon));
    }
    free(mem);
}

/* The shared "writing fails" flag is cleared by any idle writer that
 * finds the database writable, even if another process set it. */
static void test_shared_failing_flag_is_cleared_by_a_probe(void)
{
    const char *path = unit_db("probe");
    char saved[512];
    size_t size = mtls_slots_size(4);
    void *mem = calloc(1, size);
    mtls_slots_t *slots = mtls_slots_init(mem, 4);
    mtls_writer_conf_t c;
    mtls_writer_t *w;
    char err[256];
    int i;

    snprintf(saved, sizeof(saved), "%s", path);
    c = conf(saved);
    c.slots = slots;
    mtls_slots_set_failing(slots, 1);       /* as a dead process left it */
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    CU_ASSERT_FALSE(mtls_writer_healthy(w));
    for (i = 0; i < 40 && mtls_slots_failing(slots); i++) {
        usleep(100000);
    }
    CU_ASSERT_FALSE(mtls_slots_failing(slots));
    CU_ASSERT_TRUE(mtls_writer_healthy(w));
    mtls_writer_stop(w);
    free(mem);
}

static void test_unopenable_database_counts_losses(void)
{
    mtls_writer_conf_t c = conf("/nonexistent-dir/x.db");
    mtls_writer_stats_t st;
    mtls_writer_t *w;
    char err[256] = "";
    size_t size = mtls_slots_size(4);
    void *mem = calloc(1, size);
    int i;

    c.retries = 1;
    c.slots = mtls_slots_init(mem, 4);
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-dir/x.db"));
    CU_ASSERT_FALSE(mtls_writer_healthy(w));
    /* Every process refuses in closed mode, not this one alone. */
    CU_ASSERT_TRUE(mtls_slots_failing(c.slots));
    for (i = 0; i < 5; i++) {
        mtls_writer_push(w, unit_handshake(NULL, MTLS_OUT_FAILED));
    }
    st = wait_stats(w, 0, 5, 2500);
    CU_ASSERT_EQUAL(st.lost, 5);
    CU_ASSERT_EQUAL(st.written, 0);
    CU_ASSERT_TRUE(mtls_slots_failing(c.slots));
    mtls_writer_stop(w);
    free(mem);
}

/* What the writer stored it hands back for reuse, as new: zeroed, with
 * the defaults of its type, and nothing of the record it held but its own
 * memory, for the next DER or path. */
static void test_stored_items_come_back_as_new(void)
{
    static const char *const subj[] = { "CN", "reuse", NULL };
    const char *path = unit_db("reuse");
    mtls_writer_conf_t c = conf(path);
    mtls_writer_stats_t stats;
    X509 *cert = unit_cert(subj, "ec", 9, "20200101000000Z",
                           "20300101000000Z", NULL, NULL);
    mtls_item_t *hs, *rq, *again;
    mtls_writer_t *w;
    mtls_link_t *link;
    void *der;
    char err[256];

    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    X509_up_ref(cert);
    hs = unit_handshake(cert, MTLS_OUT_ACCEPTED);
    rq = mtls_writer_item(w, MTLS_ITEM_REQUEST);
    rq->link = mtls_link_ref(hs->link);
    rq->u.rq.path = strdup("/kept");
    mtls_strlcpy(rq->u.rq.method, "GET", sizeof(rq->u.rq.method));
    link = hs->link;
    der = hs->u.hs.certs.der;
    CU_ASSERT_PTR_NOT_NULL(der);
    CU_ASSERT_PTR_EQUAL(der, hs->mem);      /* the DER in its own memory */
    CU_ASSERT_EQUAL(mtls_writer_push(w, hs), 0);
    CU_ASSERT_EQUAL(mtls_writer_push(w, rq), 0);
    stats = wait_stats(w, 2, 0, 5000);
    CU_ASSERT_EQUAL_FATAL(stats.written, 2);
    /* Kept last, handed out first: the request item, now a handshake. */
    again = mtls_writer_item(w, MTLS_ITEM_HANDSHAKE);
    CU_ASSERT_PTR_EQUAL(again, rq);
    CU_ASSERT_EQUAL(again->type, MTLS_ITEM_HANDSHAKE);
    /* With the link whose last reference the writer dropped, as new. */
    CU_ASSERT_PTR_EQUAL(again->link, link);
    CU_ASSERT_EQUAL(again->link->refs, 1);
    CU_ASSERT_EQUAL(again->link->rowid, 0);
    CU_ASSERT_PTR_NULL(again->u.hs.certs.der);
    CU_ASSERT_EQUAL(again->u.hs.sni[0], '\0');
    CU_ASSERT_EQUAL(again->u.hs.verify_result, -1);
    CU_ASSERT_EQUAL(again->u.hs.alert, -1);
    CU_ASSERT_EQUAL(again->u.hs.certs.chain_from, -1);
    mtls_item_free(again);
    again = mtls_writer_item(w, MTLS_ITEM_REQUEST);
    CU_ASSERT_PTR_EQUAL(again, hs);
    CU_ASSERT_PTR_NULL(again->u.rq.path);
    CU_ASSERT_EQUAL(again->u.rq.method[0], '\0');
    CU_ASSERT_PTR_NULL(again->link);
    /* It kept its memory: the path goes where the DER was, no malloc. */
    CU_ASSERT_PTR_EQUAL(mtls_item_mem(again, 6), der);
    /* More than MTLS_ITEM_MEM_KEPT is not kept once released. */
    CU_ASSERT_PTR_NOT_NULL(mtls_item_mem(again, MTLS_ITEM_MEM_KEPT + 1));
    CU_ASSERT_EQUAL(again->mem_cap, MTLS_ITEM_MEM_KEPT + 1);
    mtls_item_release(again);
    CU_ASSERT_PTR_NULL(again->mem);
    CU_ASSERT_EQUAL(again->mem_cap, 0);
    mtls_item_free(again);
    mtls_writer_stop(w);
    X509_free(cert);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM requests r JOIN "
                          "handshakes h ON h.id = r.handshake_id WHERE "
                          "r.path = '/kept'"), 1);
}

/* A queue smaller than a batch: half of it wakes the writer, long before
 * its flush interval (else it overflows while the writer sleeps). */
static void test_half_a_small_queue_wakes_the_writer(void)
{
    const char *path = unit_db("smallqueue");
    mtls_writer_conf_t c = conf(path);
    mtls_writer_stats_t stats;
    mtls_writer_t *w;
    char err[256];
    int i;

    c.queue_max = 40;
    c.batch_max = 256;
    c.flush_ms = 60000;
    CU_ASSERT_EQUAL_FATAL(mtls_writer_start(&c, &w, err, sizeof(err)), 0);
    usleep(100000);             /* the writer is asleep for its minute */
    for (i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(mtls_writer_push(w, unit_handshake(NULL,
                                                           MTLS_OUT_FAILED)),
                        0);
    }
    stats = wait_stats(w, 20, 0, 3000);
    CU_ASSERT_EQUAL(stats.written, 20);     /* within 3 s, not 60 */
    CU_ASSERT_EQUAL(stats.lost, 0);
    mtls_writer_stop(w);
    CU_ASSERT_EQUAL(count(path, "SELECT count(*) FROM handshakes"), 20);
}

static void test_links(void)
{
    mtls_link_t *l = mtls_link_new();
    CU_ASSERT_EQUAL(l->refs, 1);
    mtls_link_ref(l);
    CU_ASSERT_EQUAL(l->refs, 2);
    mtls_link_unref(l);
    CU_ASSERT_EQUAL(l->refs, 1);
    mtls_link_unref(l);     /* freed; the sanitizer build checks it */
    mtls_link_unref(NULL);
    l = mtls_link_new();
    mtls_link_ref(l);
    CU_ASSERT_EQUAL(mtls_link_drop(l), 0);
    CU_ASSERT_EQUAL(mtls_link_drop(l), 1);  /* the last: ours to keep */
    l->rowid = 7;
    CU_ASSERT_PTR_EQUAL(mtls_link_init(l), l);
    CU_ASSERT_EQUAL(l->refs, 1);
    CU_ASSERT_EQUAL(l->rowid, 0);
    mtls_link_unref(l);
    CU_ASSERT_EQUAL(mtls_link_drop(NULL), 0);
    CU_ASSERT_PTR_NULL(mtls_link_ref(NULL));
}

void add_writer_tests(void)
{
    CU_pSuite s = CU_add_suite("writer", NULL, NULL);
    CU_add_test(s, "4 producers, 20000 items, drained on stop",
                test_many_producers_drain_on_stop);
    CU_add_test(s, "overflow and a locked database become a gap",
                test_overflow_is_counted_and_recorded);
    CU_add_test(s, "a removed database file is followed, and said so",
                test_follows_a_removed_file);
    CU_add_test(s, "a removed file that cannot be made again: a gap",
                test_removed_file_that_cannot_be_made_again_is_a_gap);
    CU_add_test(s, "a file replaced by one it cannot use: a gap",
                test_replaced_by_a_file_it_cannot_use_is_a_gap);
    CU_add_test(s, "a process killed with records queued is counted",
                test_killed_process_is_counted);
    CU_add_test(s, "the shared failing flag is cleared by a probe",
                test_shared_failing_flag_is_cleared_by_a_probe);
    CU_add_test(s, "a database that cannot be opened: losses counted",
                test_unopenable_database_counts_losses);
    CU_add_test(s, "stored items come back for reuse as new",
                test_stored_items_come_back_as_new);
    CU_add_test(s, "half of a queue smaller than a batch wakes the writer",
                test_half_a_small_queue_wakes_the_writer);
    CU_add_test(s, "link reference counts", test_links);
    CU_add_test(s, "metrics outlive their process; vhost rows",
                test_metrics_outlive_their_process);
}
