/*
 * hsload.c -- mtls-hsload: a load client of full mutual-TLS handshakes,
 * for the handshake benchmark (bench/handshake-bench.py).
 *
 *   mtls-hsload -p PORT -n CONNECTIONS -c CONCURRENCY -v 1.2|1.3
 *               --ca CA.pem --client CERT,KEY,WEIGHT [--client ...]
 *
 * Each connection is a new TCP connection and a full handshake (no
 * session resumption), then "GET / HTTP/1.1" with Connection: close, read
 * to the end.  --client none,,WEIGHT makes connections without a
 * certificate; several --client options mix certificates by weight (a
 * fixed, interleaved sequence: the same mix in every run).  Prints one
 * JSON object: connections, those answered 200, failed ones, seconds,
 * connections per second, latency percentiles (connect to last byte, in
 * microseconds) and the client's own CPU seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CLIENTS 2048     /* --client options */

typedef struct {
    SSL_CTX *ctx;
    int      weight;
} client_t;

static client_t clients[MAX_CLIENTS];
static int nclients, port, total, conc, version = TLS1_3_VERSION;
static int *plan;                       /* client index per connection */
static long *lat;                       /* microseconds per connection */
static int next_conn, ok, failed;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "mtls-hsload: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

/* One connection: returns 1 when answered 200. */
static int one(SSL_CTX *ctx)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    struct sockaddr_in sa;
    char buf[4096];
    int fd, n, good = 0, got = 0, one_ = 1;
    SSL *ssl;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
        return 0;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof(one_));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return 0;
    }
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, req, sizeof(req) - 1) > 0) {
        while ((n = SSL_read(ssl, buf + got, (int)sizeof(buf) - got - 1))
               > 0) {
            got += n;
            if (got >= (int)sizeof(buf) - 1) {
                got = 16;       /* keep the status line, drop the rest */
            }
        }
        buf[got] = '\0';
        good = strncmp(buf, "HTTP/1.1 200", 12) == 0;
        SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return good;
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        long t0;
        int i, good;

        pthread_mutex_lock(&mu);
        i = next_conn < total ? next_conn++ : -1;
        pthread_mutex_unlock(&mu);
        if (i < 0) {
            return NULL;
        }
        t0 = now_us();
        good = one(clients[plan[i]].ctx);
        lat[i] = now_us() - t0;
        pthread_mutex_lock(&mu);
        if (good) ok++; else failed++;
        pthread_mutex_unlock(&mu);
    }
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static void add_client(const char *spec, const char *ca)
{
    char *s = strdup(spec), *cert = s, *key, *w;
    client_t *c;

    if (nclients == MAX_CLIENTS || !(key = strchr(s, ','))
        || !(w = strchr(key + 1, ','))) {
        die("--client CERT,KEY,WEIGHT (or none,,WEIGHT)");
    }
    *key++ = '\0';
    *w++ = '\0';
    c = &clients[nclients++];
    c->weight = atoi(w);
    if (c->weight < 1) die("a weight is a positive integer");
    if (!(c->ctx = SSL_CTX_new(TLS_client_method()))) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(c->ctx, version);
    SSL_CTX_set_max_proto_version(c->ctx, version);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1) die(ca);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (strcmp(cert, "none") != 0
        && (SSL_CTX_use_certificate_chain_file(c->ctx, cert) != 1
            || SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM)
               != 1)) {
        die(cert);
    }
    free(s);
}

int main(int argc, char **argv)
{
    const char *ca = NULL;
    const char *specs[MAX_CLIENTS];
    int nspecs = 0, i, k, sum = 0;
    pthread_t *th;
    struct rusage ru;
    long t0, t1;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("every option takes a value");
        if (!strcmp(a, "-p")) port = atoi(v);
        else if (!strcmp(a, "-n")) total = atoi(v);
        else if (!strcmp(a, "-c")) conc = atoi(v);
        else if (!strcmp(a, "-v")) version = !strcmp(v, "1.2")
                                             ? TLS1_2_VERSION : TLS1_3_VERSION;
        else if (!strcmp(a, "--ca")) ca = v;
        else if (!strcmp(a, "--client")) {
            if (nspecs == MAX_CLIENTS) die("too many --client options");
            specs[nspecs++] = v;
        }
        else die("unknown option (see the comment at the top of hsload.c)");
        i++;
    }
    if (!port || total < 1 || conc < 1 || !ca || !nspecs) {
        die("need -p, -n, -c, --ca and --client");
    }
    for (i = 0; i < nspecs; i++) add_client(specs[i], ca);
    for (i = 0; i < nclients; i++) sum += clients[i].weight;
    plan = calloc((size_t)total, sizeof(int));
    lat = calloc((size_t)total, sizeof(long));
    th = calloc((size_t)conc, sizeof(pthread_t));
    if (!plan || !lat || !th) die("out of memory");
    /* Spread each client over the run by weight: connection i takes the
     * client whose share of i..i+sum is due. */
    for (i = 0; i < total; i++) {
        int slot = i % sum;
        for (k = 0; k < nclients && slot >= clients[k].weight; k++) {
            slot -= clients[k].weight;
        }
        plan[i] = k;
    }
    t0 = now_us();
    for (i = 0; i < conc; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (i = 0; i < conc; i++) pthread_join(th[i], NULL);
    t1 = now_us();
    getrusage(RUSAGE_SELF, &ru);
    qsort(lat, (size_t)total, sizeof(long), cmp_long);
    printf("{\"connections\": %d, \"ok\": %d, \"failed\": %d, "
           "\"seconds\": %.3f, \"rps\": %.1f, \"p50_us\": %ld, "
           "\"p90_us\": %ld, \"p99_us\": %ld, \"client_cpu_s\": %.3f}\n",
           total, ok, failed, (t1 - t0) / 1e6, total / ((t1 - t0) / 1e6),
           lat[total / 2], lat[total * 9 / 10], lat[total * 99 / 100],
           ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
           + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    return 0;
}
