/*
 * mod_mtls_audit.c -- httpd glue: configuration, hooks into mod_ssl, and
 * the hand-over of records to the per-child writer.
 *
 * DESIGN
 * A failed client-certificate handshake never becomes a request, so the
 * capture lives inside OpenSSL's callbacks, installed through mod_ssl's
 * optional hooks:
 *
 *   init_server    (per vhost SSL_CTX, at start-up)  a certificate-verify
 *                  callback that wraps X509_verify_cert: it survives SNI,
 *                  renegotiation and TLS 1.3 post-handshake auth, times the
 *                  verification and copies the presented chain (OpenSSL
 *                  keeps no peer certificate when verification fails).
 *   pre_handshake  (per connection)  a message callback (first byte,
 *                  ClientHello, the client's Certificate, alerts) and an
 *                  info callback that chains to the CTX's (mod_ssl's, looked
 *                  up at each call because SNI switches the CTX) and
 *                  finalizes the record at its terminal event: handshake
 *                  done, fatal alert, fatal error.
 *
 * A record is opened at the first byte received (or at a later ClientHello,
 * or when we send a TLS 1.3 CertificateRequest after the handshake) and
 * finalized at its terminal event, or at connection close if none came
 * (the client went away).  Finalizing decides the outcome, drops the record
 * if the vhost chosen by SNI does not audit, and queues it: the writer
 * thread does everything else, so the handshake path never waits on
 * SQLite.  Requests on an audited connection are queued from the
 * log_transaction hook with a link to their handshake's row.
 *
 * HTTP/2: each stream is a request on a secondary connection (c2), whose
 * c->master is the connection that carries the TLS and our state (mod_ssl
 * makes no SSL for c2).  mod_http2 runs the streams of one connection on
 * several worker threads at once while the primary connection's thread
 * goes on reading and writing TLS records, so what a request reads of the
 * connection's state (the link, audited, refuse) is swapped and read under
 * the state's spin lock (conn_lock), and the link's count is atomic.  A
 * stream reads the state during its request only, and never outlives it:
 * a stream's pool descends from the primary connection's (through the
 * h2 session's and its multiplexer's), and mod_http2 waits for every
 * stream of the connection (h2_mplx_c1_destroy, from the connection's
 * pre_close hook or the session pool's pre-cleanup) before that pool's
 * own cleanups run, conn_cleanup among them.  A queued request item holds
 * a reference to the link, never to the state.
 *
 * The revocation check (handshakes.revocation_method and _status) is
 * learnt without waiting on anything: the certificate-verify callback also
 * wraps, for the length of X509_verify_cert, the verify callback OpenSSL
 * calls for each certificate (mod_ssl's).  A CRL error reaches it from
 * OpenSSL (before mod_ssl sees it); mod_ssl's OCSP check runs inside it
 * (SSLOCSPEnable, at depth 0 for leaf) and leaves X509_V_OK, CERT_REVOKED
 * or APPLICATION_VERIFICATION behind.  Why an OCSP check failed, mod_ssl
 * only says in the error log: an error_log hook, armed by a thread-local
 * pointer only while mod_ssl's callback runs an OCSP check on this
 * thread, reads the AH number of its messages (all at level error, so
 * seen at any LogLevel from error up).
 *
 * The parent process (root, post_config) creates the database and its
 * directory with private modes owned by the run user, applies the schema,
 * reads the chain key and writes the start/reload/stop events; after a
 * start or reload event, in its transaction, one 'policy' event per
 * audited vhost (mtls_policy.h), read from the SSL_CTX mod_ssl built,
 * which ssl_init_server keeps, and from the configuration tree.  Each child
 * (child_init, after the switch to the run user) starts its writer; a
 * pchild cleanup drains it on graceful restart, graceful-stop and stop.
 *
 * Metrics: the handshake and request paths add to this child's counters
 * in shared memory (mtls_slots.h, METRICS), the writer to its own; the
 * mtls-audit-metrics handler and mod_status's status_hook sum them over
 * all slots, with the database's size and one shared, cached read-only
 * query for the certificate figures.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "util_cfgtree.h"
#include "ap_listen.h"
#include "unixd.h"
#include "mod_ssl.h"
#include "mod_status.h"

#include "apr_atomic.h"
#include "apr_optional_hooks.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"
#include "apr_lib.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls_core.h"
#include "mtls_chain.h"
#include "mtls_store.h"
#include "mtls_json.h"
#include "mtls_writer.h"
#include "mtls_slots.h"
#include "mtls_policy.h"

#include "apr_shm.h"

/* mod_ssl's OpenSSL hooks; Debian's apache2-dev lacks mod_ssl_openssl.h,
 * so we declare the two we use exactly as mod_ssl does. */
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, init_server,
                          (server_rec *s, apr_pool_t *p, int is_proxy,
                           SSL_CTX *ctx))
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, pre_handshake,
                          (conn_rec *c, SSL *ssl, int is_proxy))

module AP_MODULE_DECLARE_DATA mtls_audit_module;

#define DEFAULT_DB          "logs/mtls_audit.db"
#define DEFAULT_QUEUE       8192
#define DEFAULT_FLUSH_MS    1000
#define DEFAULT_BUSY_MS     5000
#define DEFAULT_ANCHOR_S    3600
#define BATCH_MAX           2048
#define WRITE_RETRIES       5
#define MAX_PATH_LEN        2048

typedef struct {
    int         engine;           /* MTLSAuditEngine, -1 unset (Off) */
    int         requests;         /* MTLSAuditRequests, -1 unset (On) */
    const char *db_path;          /* MTLSAuditDatabase, main server only */
    int         store_certs;      /* MTLSAuditStoreCertificates, -1 (On) */
    int         fail_closed;      /* MTLSAuditFailMode, -1 (open) */
    int         queue_size;       /* MTLSAuditQueueSize, -1 (8192) */
    int         flush_ms;         /* MTLSAuditFlushInterval, -1 (1000) */
    int         busy_ms;          /* MTLSAuditBusyTimeout, -1 (5000) */
    const char *key_file;         /* MTLSAuditChainKey, NULL none */
    int         anchor_s;         /* MTLSAuditAnchorInterval, -1 (3600) */
    int         verify_cfg;       /* SSLVerifyClient of this vhost: the
                                     mode mod_ssl put on its SSL_CTX, told
                                     optional from optional_no_ca by the
                                     config tree; -1 unknown */
    int         ocsp_cfg;         /* SSLOCSPEnable of this vhost: OCSP_*
                                     flags, 0 off (config tree) */
    const char *engine_at;        /* "file:line" of MTLSAuditEngine */
    int         engine_here;      /* set in this very server (not merged:
                                     an On written in this vhost) */
    int         tls;              /* mod_ssl configured TLS for this
                                     server (its init_server hook ran) */
    int         audit;            /* engine On and tls: its handshakes are
                                     recorded (decided in post_config) */
    const char *db_at;            /* "file:line" of MTLSAuditDatabase */
    int         rotate;           /* MTLSAuditRotate: MTLS_ROTATE_*, -1
                                     unset (off) */
    apr_int64_t rotate_size;      /* its SIZE in bytes */
    const char *rotate_at;        /* "file:line" of MTLSAuditRotate */
    const char *mirror;           /* MTLSAuditMirror FILE or |COMMAND */
    const char *mirror_at;
    int         mirror_format;    /* MTLSAuditMirrorFormat: MTLS_JSON_*,
                                     -1 unset (native) */
    int         vhost_ix;         /* its row in the shared metrics' vhost
                                     table (post_config) */
    SSL_CTX    *ssl_ctx;          /* the SSL_CTX mod_ssl built for it
                                     (ssl_init_server): its policy */
} srv_conf_t;

/* SSLOCSPEnable, as mod_ssl reads it (srv_conf_t.ocsp_cfg). */
#define OCSP_LEAF       0x01      /* leaf: the client's certificate */
#define OCSP_CHAIN      0x02      /* on: every certificate of the chain */
#define OCSP_NO_URL_OK  0x04      /* no_ocsp_for_cert_ok */
#define OCSP_DEFAULT    0x08      /* an SSLOCSPDefaultResponder is set */

/* Per-process state.  Set in post_config (parent) and child_init. */
static struct {
    int               any_engine;   /* some vhost audits */
    int               ssl_idx;      /* SSL ex_data: our conn state */
    int               ctx_idx;      /* SSL_CTX ex_data: its server_rec */
    server_rec       *main_server;
    const char       *db_path;      /* absolute: the live file */
    const char       *db_pattern;   /* MTLSAuditDatabase, absolute, as a
                                       strftime pattern (MTLSAuditRotate);
                                       NULL without rotation */
    mtls_chain_key_t  key;
    mtls_writer_t    *writer;       /* this child's writer, or NULL */
    int               mirror_fd;    /* MTLSAuditMirror, opened by the
                                       parent; 0: none */
    int               mirror_format;/* its MTLS_JSON_* rendering */
    mtls_slots_t     *slots;        /* per-child counters, shared */
    int               lost_noted;   /* "no writer" logged */
    volatile int      refusing;     /* fail closed: refusing connections */
    int               pid;          /* this child's (getpid is a system
                                       call: not one per handshake) */
    int               ssl_module;   /* mod_ssl's module_index, -1 */
    mtls_metrics_t   *metrics;      /* this child's, in shared memory */
} g = { 0, -1, -1, NULL, NULL, NULL, { NULL, 0 }, NULL, 0, 0, NULL, 0, 0,
        0, -1, NULL };

/* Why a record is being finalized. */
typedef enum {
    FIN_DONE,          /* handshake completed */
    FIN_ALERT_SENT,    /* we sent a fatal alert */
    FIN_ALERT_RECV,    /* the client sent a fatal alert */
    FIN_ERROR,         /* fatal error without an alert */
    FIN_CLOSED         /* connection closed with the record still open */
} fin_e;

typedef struct {
    conn_rec     *c;
    server_rec   *srv;            /* vhost of the current SSL_CTX */
    mtls_item_t  *rec;            /* the open handshake record, or NULL */
    apr_int64_t   start_mono;     /* monotonic time the record opened */
    int           records;        /* records opened on this connection */
    int           hs_done;        /* handshakes completed */
    int           cert_msg;       /* client Certificate: 0 none, 1 empty,
                                     2 with certificates */
    int           eof;            /* the client went away mid-handshake */
    int           hello_sent;     /* we sent a ServerHello: the version is
                                     negotiated */
    int           audited;        /* the last record was kept: requests
                                     on this connection are recorded */
    int           refuse;         /* fail closed: record not queued */
    mtls_link_t  *link;           /* link of the last kept record */
    volatile apr_uint32_t lock;   /* 1 while link, audited or refuse are
                                     being swapped or read for an HTTP/2
                                     stream (conn_lock) */
    int         (*verify_cb)(int, X509_STORE_CTX *);
                                  /* the verify callback we wrap (mod_ssl's)
                                     while X509_verify_cert runs */
    int           ocsp_cfg;       /* srv_conf_t.ocsp_cfg of the vhost that
                                     verifies */
    int           headers;        /* record headers received */
    int           dummy;          /* the first bytes are the MPM's dummy
                                     connection's (is_dummy_connection) */
} mtls_conn_t;

/* While X509_verify_cert runs on this thread for an audited connection:
 * its state (the verify callback we wrap finds it here).  While mod_ssl's
 * callback runs an OCSP check: the connection, and the cause its error
 * log messages gave (the error_log hook sets it, first message wins). */
static __thread mtls_conn_t *tls_verifying;
static __thread mtls_conn_t *tls_ocsp;
static __thread int          tls_ocsp_cause;

static srv_conf_t *srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &mtls_audit_module);
}

/* ------------------------------------------------------------------ */
/* Configuration                                                        */

static void *create_srv(apr_pool_t *p, server_rec *s)
{
    srv_conf_t *sc = apr_pcalloc(p, sizeof(*sc));
    (void)s;
    sc->engine = -1;
    sc->requests = -1;
    sc->store_certs = -1;
    sc->fail_closed = -1;
    sc->queue_size = -1;
    sc->flush_ms = -1;
    sc->busy_ms = -1;
    sc->anchor_s = -1;
    sc->verify_cfg = -1;
    sc->mirror_format = -1;
    sc->rotate = -1;
    return sc;
}

#define MERGE_INT(f) sc->f = (add->f != -1) ? add->f : base->f
#define MERGE_PTR(f) sc->f = add->f ? add->f : base->f

static void *merge_srv(apr_pool_t *p, void *basev, void *addv)
{
    srv_conf_t *base = basev, *add = addv;
    srv_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    MERGE_INT(engine);
    MERGE_INT(requests);
    MERGE_PTR(db_path);
    MERGE_INT(store_certs);
    MERGE_INT(fail_closed);
    MERGE_INT(queue_size);
    MERGE_INT(flush_ms);
    MERGE_INT(busy_ms);
    MERGE_PTR(key_file);
    MERGE_INT(anchor_s);
    MERGE_PTR(engine_at);
    MERGE_PTR(db_at);
    MERGE_PTR(mirror);
    MERGE_PTR(mirror_at);
    MERGE_INT(mirror_format);
    MERGE_INT(rotate);
    sc->rotate_size = add->rotate != -1 ? add->rotate_size
                                        : base->rotate_size;
    MERGE_PTR(rotate_at);
    sc->engine_here = add->engine != -1;
    sc->verify_cfg = -1;
    sc->tls = 0;
    sc->audit = 0;
    return sc;
}

/* "file:line" of the directive being read, for messages at start. */
static const char *where(cmd_parms *cmd)
{
    return cmd->directive && cmd->directive->filename
        ? apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename,
                       cmd->directive->line_num)
        : "(command line)";
}

static const char *set_engine(cmd_parms *cmd, void *dc, int on)
{
    srv_conf_t *sc = srv_conf(cmd->server);
    (void)dc;
    sc->engine = on ? 1 : 0;
    sc->engine_here = 1;
    sc->engine_at = where(cmd);
    return NULL;
}

static const char *set_flag(cmd_parms *cmd, void *dc, int on)
{
    srv_conf_t *sc = srv_conf(cmd->server);
    int off = (int)(apr_uintptr_t)cmd->info;
    (void)dc;
    *(int *)((char *)sc + off) = on ? 1 : 0;
    return NULL;
}

static const char *set_global_flag(cmd_parms *cmd, void *dc, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    return err ? err : set_flag(cmd, dc, on);
}

static const char *set_database(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) {
        return err;
    }
    if (!*arg) {
        return "MTLSAuditDatabase needs a file name";
    }
    srv_conf(cmd->server)->db_path = arg;
    srv_conf(cmd->server)->db_at = where(cmd);
    return NULL;
}

static const char *set_mirror(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) {
        return err;
    }
    if (!*arg || !strcmp(arg, "|") || !strcmp(arg, "||")
        || !strcmp(arg, "|$")) {
        return "MTLSAuditMirror needs a file name or |command";
    }
    srv_conf(cmd->server)->mirror = arg;
    srv_conf(cmd->server)->mirror_at = where(cmd);
    return NULL;
}

static const char *set_mirror_format(cmd_parms *cmd, void *dc,
                                     const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    int f = mtls_json_format(arg);
    (void)dc;
    if (err) {
        return err;
    }
    if (f < 0) {
        return apr_psprintf(cmd->pool, "MTLSAuditMirrorFormat: '%s' is not "
                            "native, ecs or ocsf", arg);
    }
    srv_conf(cmd->server)->mirror_format = f;
    return NULL;
}

static const char *set_key(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) {
        return err;
    }
    srv_conf(cmd->server)->key_file = ap_server_root_relative(cmd->pool, arg);
    return NULL;
}

static const char *set_fail_mode(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "open")) {
        srv_conf(cmd->server)->fail_closed = 0;
    }
    else if (!strcasecmp(arg, "closed")) {
        srv_conf(cmd->server)->fail_closed = 1;
    }
    else {
        return apr_psprintf(cmd->pool, "MTLSAuditFailMode: '%s' is neither "
                            "'open' nor 'closed'", arg);
    }
    return NULL;
}

/* A whole number in [lo, hi] into *out, or a message naming the
 * directive. */
static const char *parse_number(cmd_parms *cmd, const char *arg,
                                apr_int64_t lo, apr_int64_t hi, int *out)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v;
    char *end;

    if (err) {
        return err;
    }
    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    if (errno || *end || end == arg || v < lo || v > hi) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a whole number from "
                            "%" APR_INT64_T_FMT " to %" APR_INT64_T_FMT,
                            cmd->cmd->name, arg, lo, hi);
    }
    *out = (int)v;
    return NULL;
}

/* MTLSAuditQueueSize, FlushInterval, BusyTimeout: the int field at
 * cmd->info. */
static const char *set_number(cmd_parms *cmd, void *dc, const char *arg)
{
    int off = (int)(apr_uintptr_t)cmd->info;
    (void)dc;
    return parse_number(cmd, arg, 1, 10000000,
                        (int *)((char *)srv_conf(cmd->server) + off));
}

/* Seconds between anchors; 0: only at start, reload and stop. */
static const char *set_anchor(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return parse_number(cmd, arg, 0, 31536000,
                        &srv_conf(cmd->server)->anchor_s);
}

/* MTLSAuditRotate daily|weekly|monthly|SIZE|off, as rotatelogs takes
 * them: SIZE in bytes with K, M or G (1024s), at least 64K. */
static const char *set_rotate(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    srv_conf_t *sc = srv_conf(cmd->server);
    apr_int64_t v, unit = 1;
    char *end;
    (void)dc;

    if (err) {
        return err;
    }
    sc->rotate_at = where(cmd);
    sc->rotate_size = 0;
    if (!strcasecmp(arg, "off")) {
        sc->rotate = MTLS_ROTATE_OFF;
        return NULL;
    }
    if (!strcasecmp(arg, "daily")) {
        sc->rotate = MTLS_ROTATE_DAILY;
        return NULL;
    }
    if (!strcasecmp(arg, "weekly")) {
        sc->rotate = MTLS_ROTATE_WEEKLY;
        return NULL;
    }
    if (!strcasecmp(arg, "monthly")) {
        sc->rotate = MTLS_ROTATE_MONTHLY;
        return NULL;
    }
    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    if (*end && !end[1]) {
        switch (*end) {
        case 'k': case 'K': unit = 1024; end++; break;
        case 'm': case 'M': unit = 1024 * 1024; end++; break;
        case 'g': case 'G': unit = 1024 * 1024 * 1024; end++; break;
        }
    }
    if (errno || *end || end == arg || v < 1 || v > (APR_INT64_MAX >> 31)
        || v * unit < 65536) {
        return apr_psprintf(cmd->pool, "MTLSAuditRotate: '%s' is not daily, "
                            "weekly, monthly, off or a size of at least 64K "
                            "(500M, 2G; K, M and G are 1024s)", arg);
    }
    sc->rotate = MTLS_ROTATE_SIZE;
    sc->rotate_size = v * unit;
    return NULL;
}

#define OFF(f) (void *)APR_OFFSETOF(srv_conf_t, f)

static const command_rec cmds[] = {
    AP_INIT_FLAG("MTLSAuditEngine", set_engine, NULL, RSRC_CONF,
                 "On to record every TLS handshake to this host (default Off)"),
    AP_INIT_TAKE1("MTLSAuditDatabase", set_database, NULL, RSRC_CONF,
                  "SQLite file of the audit records (default "
                  DEFAULT_DB " under ServerRoot)"),
    AP_INIT_FLAG("MTLSAuditRequests", set_flag, OFF(requests), RSRC_CONF,
                 "On to also record each HTTP request on audited "
                 "connections (default On)"),
    AP_INIT_FLAG("MTLSAuditStoreCertificates", set_global_flag,
                 OFF(store_certs), RSRC_CONF,
                 "On to keep the DER of every distinct certificate "
                 "(default On)"),
    AP_INIT_TAKE1("MTLSAuditFailMode", set_fail_mode, NULL, RSRC_CONF,
                  "open: serve on and count lost records; closed: refuse "
                  "what cannot be recorded (default open)"),
    AP_INIT_TAKE1("MTLSAuditQueueSize", set_number, OFF(queue_size),
                  RSRC_CONF, "records a child may hold for its writer "
                  "(default 8192)"),
    AP_INIT_TAKE1("MTLSAuditFlushInterval", set_number, OFF(flush_ms),
                  RSRC_CONF, "milliseconds a record may wait before it is "
                  "written (default 200)"),
    AP_INIT_TAKE1("MTLSAuditBusyTimeout", set_number, OFF(busy_ms),
                  RSRC_CONF, "milliseconds to wait for a locked database "
                  "(default 5000)"),
    AP_INIT_TAKE1("MTLSAuditAnchorInterval", set_anchor, NULL, RSRC_CONF,
                  "seconds between anchors (chain heads) in the error log, "
                  "besides start and stop; 0 for none (default 3600)"),
    AP_INIT_TAKE1("MTLSAuditMirror", set_mirror, NULL, RSRC_CONF,
                  "also write every record as a JSON line to a file or, "
                  "with |command, to a program as CustomLog does (default "
                  "none)"),
    AP_INIT_TAKE1("MTLSAuditMirrorFormat", set_mirror_format, NULL,
                  RSRC_CONF, "the mirror's lines: native (the views' "
                  "columns), ecs (Elastic Common Schema) or ocsf (OCSF) "
                  "(default native)"),
    AP_INIT_TAKE1("MTLSAuditRotate", set_rotate, NULL, RSRC_CONF,
                  "seal the database and go on in a new file: daily, weekly, "
                  "monthly (UTC) or at a SIZE (500M, 2G); MTLSAuditDatabase "
                  "may then be a strftime pattern (default off)"),
    AP_INIT_TAKE1("MTLSAuditChainKey", set_key, NULL, RSRC_CONF,
                  "file with the secret key of the HMAC hash chain "
                  "(default none: plain SHA-256)"),
    { NULL }
};

/* ------------------------------------------------------------------ */
/* Logging and small helpers                                            */

static void log_to_httpd(void *baton, int level, const char *msg)
{
    (void)baton;
    ap_log_error(APLOG_MARK, level, 0, g.main_server, MTLS_LOG_TAG " %s",
                 msg);
}

static int parse_verify(const char *args)
{
    char word[32];
    int i;

    for (i = 0; args[i] && !apr_isspace(args[i]) && i < 31; i++) {
        word[i] = (char)apr_tolower(args[i]);
    }
    word[i] = '\0';
    if (!strcmp(word, "require")) return MTLS_VM_REQUIRE;
    if (!strcmp(word, "optional")) return MTLS_VM_OPTIONAL;
    if (!strcmp(word, "optional_no_ca")) return MTLS_VM_OPTIONAL_NO_CA;
    return MTLS_VM_NONE;
}

/* Which servers have TLS, and with which SSLVerifyClient.
 *
 * mod_ssl keeps its configuration private.  What it configured is learnt
 * from its init_server hook (ssl_init_server), which mod_ssl's post_config
 * runs for exactly the servers it gave TLS, with their SSL_CTX and the
 * verify mode on it: post_config decides from that who is audited.  The
 * configuration tree answers the two questions left: at configtest, where
 * mod_ssl's post_config does not run, whether a virtual host with
 * MTLSAuditEngine On can have TLS at all (check_config); and optional
 * against optional_no_ca, which OpenSSL's verify mode cannot tell apart.
 *
 * By the time the tree is complete httpd has applied what it evaluates
 * as it reads: a true <IfDefine>, <IfModule>, <IfVersion> or <IfFile>
 * leaves its children in its parent's place and a false one leaves
 * nothing; Include and mod_macro's Use leave the lines they read; ${VAR}
 * is replaced as each line is read.  So a server's own directives are the
 * direct children of its <VirtualHost> (the top level for the main
 * server), the last one winning as it does for mod_ssl; one nested in
 * <If>, <Location>, <Directory> and the like is per-directory, not the
 * server's. */

/* The <VirtualHost> node that made s, or NULL (the main server).  It is
 * at the top level: httpd accepts <VirtualHost> nowhere else. */
static ap_directive_t *vhost_node(server_rec *s)
{
    ap_directive_t *d;

    if (!s->is_virtual || !s->defn_name) {
        return NULL;
    }
    for (d = ap_conftree; d; d = d->next) {
        if (!strcasecmp(d->directive, "<VirtualHost")
            && (unsigned)d->line_num == s->defn_line_number
            && d->filename && !strcmp(d->filename, s->defn_name)) {
            return d;
        }
    }
    return NULL;
}

/* The arguments of the last directive name among first and its next
 * siblings, or NULL. */
static const char *last_directive(ap_directive_t *first, const char *name)
{
    const char *args = NULL;
    ap_directive_t *d;

    for (d = first; d; d = d->next) {
        if (!strcasecmp(d->directive, name)) {
            args = d->args;
        }
    }
    return args;
}

/* The arguments of directive name as it applies to server s: its own, or
 * else the main server's, which mod_ssl's merge gives every virtual host
 * that does not set it; NULL if neither sets it. */
static const char *find_directive(server_rec *s, const char *name)
{
    ap_directive_t *v = vhost_node(s);
    const char *args = v ? last_directive(v->first_child, name) : NULL;

    return args ? args : last_directive(ap_conftree, name);
}

/* The first word of args, lower case, into buf. */
static const char *first_word(const char *args, char *buf, int size)
{
    int i;

    for (i = 0; args && args[i] && !apr_isspace(args[i]) && i < size - 1;
         i++) {
        buf[i] = (char)apr_tolower(args[i]);
    }
    buf[i] = '\0';
    return buf;
}

/* SSLVerifyClient of s in the tree, or -1 if it is not set. */
static int tree_verify_client(server_rec *s)
{
    const char *args = find_directive(s, "SSLVerifyClient");
    return args ? parse_verify(args) : -1;
}

/* SSLOCSPEnable of s (on|leaf|off [no_ocsp_for_cert_ok]) as OCSP_* flags,
 * and whether SSLOCSPDefaultResponder is set for it. */
static int find_ocsp(apr_pool_t *p, server_rec *s)
{
    const char *args = find_directive(s, "SSLOCSPEnable"), *w;
    int flags = 0;

    while (args && *(w = ap_getword_white(p, &args))) {
        if (!strcasecmp(w, "on")) flags |= OCSP_CHAIN;
        else if (!strcasecmp(w, "leaf")) flags |= OCSP_LEAF;
        else if (!strcasecmp(w, "no_ocsp_for_cert_ok")) flags |= OCSP_NO_URL_OK;
    }
    if (!(flags & (OCSP_CHAIN | OCSP_LEAF))) {
        return 0;
    }
    if (find_directive(s, "SSLOCSPDefaultResponder")) {
        flags |= OCSP_DEFAULT;
    }
    return flags;
}

/* The protocol httpd will give s, decided as listen.c decides it after
 * check_config: its Protocol, else that of the Listen on one of its
 * addresses (https by default for port 443), else http. */
static const char *server_protocol(server_rec *s)
{
    const char *proto = ap_get_server_protocol(s);
    server_addr_rec *a;
    ap_listen_rec *lr;

    if (proto) {
        return proto;
    }
    for (a = s->addrs; a; a = a->next) {
        for (lr = ap_listeners; a->host_addr && lr; lr = lr->next) {
            if (apr_sockaddr_equal(lr->bind_addr, a->host_addr)
                && lr->bind_addr->port == a->host_port) {
                return lr->protocol ? lr->protocol : "http";
            }
        }
    }
    return "http";
}

/* Can mod_ssl give s TLS, by the tree?  As mod_ssl's post_config decides:
 * SSLEngine on or optional; without SSLEngine, a certificate file on a
 * server whose protocol is https (Listen 443, or Listen ... https). */
static int tree_may_have_tls(server_rec *s)
{
    char word[16];
    const char *args = find_directive(s, "SSLEngine");

    if (args) {
        first_word(args, word, sizeof(word));
        return !strcmp(word, "on") || !strcmp(word, "optional");
    }
    return find_directive(s, "SSLCertificateFile")
           && !strcasecmp(server_protocol(s), "https");
}

/* ------------------------------------------------------------------ */
/* Policy (mtls_policy.h): what only the configuration tree tells       */

/* The arguments of a section ("<Location /admin>": "/admin"). */
static const char *section_args(apr_pool_t *p, const ap_directive_t *d)
{
    const char *a = d->args ? d->args : "";
    apr_size_t n = strlen(a);

    while (n && (a[n - 1] == '>' || apr_isspace(a[n - 1]))) {
        n--;
    }
    return apr_pstrndup(p, a, n);
}

/* Each SSLVerifyClient nested in a section (<Location>, <Directory>,
 * <Files>, <If>, ...) among first and its siblings, below them too, as
 * JSON objects into o; <VirtualHost> sections are skipped (their own
 * server's).  where/section: the innermost enclosing section. */
static void tree_locations(apr_pool_t *p, ap_directive_t *first,
                           const char *where, const char *section,
                           sqlite3_str *o, int *n)
{
    ap_directive_t *d;

    for (d = first; d; d = d->next) {
        if (d->directive[0] == '<') {
            if (strcasecmp(d->directive, "<VirtualHost") && d->first_child) {
                tree_locations(p, d->first_child, section_args(p, d),
                               d->directive + 1, o, n);
            }
        }
        else if (where && !strcasecmp(d->directive, "SSLVerifyClient")) {
            sqlite3_str_appendall(o, (*n)++ ? ",{\"where\":" : "{\"where\":");
            mtls_json_str(o, where, -1);
            sqlite3_str_appendall(o, ",\"section\":");
            mtls_json_str(o, section, -1);
            sqlite3_str_appendall(o, ",\"mode\":");
            mtls_json_str(o, mtls_verify_mode_name(parse_verify(
                              d->args ? d->args : "")), -1);
            sqlite3_str_appendall(o, ",\"config\":");
            mtls_json_str(o, apr_psprintf(p, "%s:%d", d->filename
                                          ? d->filename : "", d->line_num),
                          -1);
            sqlite3_str_appendchar(o, 1, '}');
        }
    }
}

/* s's addresses as a JSON array: "ip:port", '*' for any. */
static const char *policy_addresses(apr_pool_t *p, server_rec *s)
{
    sqlite3_str *o = sqlite3_str_new(NULL);
    server_addr_rec *a;
    const char *out;
    int n = 0;

    sqlite3_str_appendchar(o, 1, '[');
    for (a = s->addrs; a; a = a->next) {
        char *ip = NULL;
        const char *host = "*";
        if (a->host_addr && apr_sockaddr_ip_get(&ip, a->host_addr)
            == APR_SUCCESS && ip && strcmp(ip, "0.0.0.0") && strcmp(ip, "::")) {
            host = a->host_addr->family == APR_INET6
                   ? apr_psprintf(p, "[%s]", ip) : ip;
        }
        if (n++) sqlite3_str_appendchar(o, 1, ',');
        mtls_json_str(o, a->host_port ? apr_psprintf(p, "%s:%u", host,
                                                     a->host_port)
                                      : apr_psprintf(p, "%s:*", host), -1);
    }
    sqlite3_str_appendchar(o, 1, ']');
    out = apr_pstrdup(p, sqlite3_str_value(o) ? sqlite3_str_value(o) : "[]");
    sqlite3_free(sqlite3_str_finish(o));
    return out;
}

/* The canonical policy text of audited server v (sqlite3_malloc'd). */
static char *policy_of(apr_pool_t *p, server_rec *v)
{
    srv_conf_t *sc = srv_conf(v);
    mtls_policy_conf_t pc;
    ap_directive_t *vn = vhost_node(v);
    sqlite3_str *loc = sqlite3_str_new(NULL);
    const char *a, *locations;
    char word[64];
    int n = 0;
    char *out;

    memset(&pc, 0, sizeof(pc));
    pc.vhost = v->server_hostname ? v->server_hostname : "";
    pc.addresses = policy_addresses(p, v);
    pc.config = v->defn_name ? apr_psprintf(p, "%s:%u", v->defn_name,
                                            v->defn_line_number) : NULL;
    pc.verify_mode = mtls_verify_mode_name(sc->verify_cfg < 0 ? MTLS_VM_NONE
                                           : sc->verify_cfg);
    /* mod_ssl checks the depth in its verify callback (default 1); the
     * SSL_CTX holds one only if something set it there. */
    a = find_directive(v, "SSLVerifyDepth");
    pc.verify_depth = SSL_CTX_get_verify_depth(sc->ssl_ctx) >= 0
                      ? SSL_CTX_get_verify_depth(sc->ssl_ctx)
                      : a ? atoi(a) : 1;
    sqlite3_str_appendchar(loc, 1, '[');
    if (vn) {
        tree_locations(p, vn->first_child, NULL, NULL, loc, &n);
    }
    tree_locations(p, ap_conftree, NULL, NULL, loc, &n);
    sqlite3_str_appendchar(loc, 1, ']');
    locations = apr_pstrdup(p, sqlite3_str_value(loc));
    sqlite3_free(sqlite3_str_finish(loc));
    pc.locations = locations;
    pc.ocsp_enabled = sc->ocsp_cfg != 0;
    pc.ocsp_responder = pc.ocsp_enabled
        ? find_directive(v, "SSLOCSPDefaultResponder") : NULL;
    if (pc.ocsp_responder) {
        pc.ocsp_responder = ap_getword_conf(p, &pc.ocsp_responder);
    }
    a = find_directive(v, "SSLOCSPOverrideResponder");
    pc.ocsp_override = pc.ocsp_enabled && a
                       && !strcmp(first_word(a, word, sizeof(word)), "on");
    /* SSLSessionCache is a server config directive: its type. */
    a = last_directive(ap_conftree, "SSLSessionCache");
    if (a) {
        int i;
        first_word(a, word, sizeof(word));
        for (i = 0; word[i] && word[i] != ':' && word[i] != '('; i++) {
        }
        word[i] = '\0';
        pc.session_cache = strcmp(word, "none") && strcmp(word, "nonenotnull")
                           ? apr_pstrdup(p, word) : NULL;
    }
    {
        const char **dirs = apr_pcalloc(p, 3 * sizeof(*dirs));
        int k = 0;
        if ((a = find_directive(v, "SSLCACertificatePath"))) {
            dirs[k++] = ap_server_root_relative(p, ap_getword_conf(p, &a));
        }
        if ((a = find_directive(v, "SSLCARevocationPath"))) {
            dirs[k++] = ap_server_root_relative(p, ap_getword_conf(p, &a));
        }
        pc.dirs = dirs;
    }
    pc.srp = find_directive(v, "SSLSRPVerifierFile") != NULL;
    out = mtls_policy_canonical(sc->ssl_ctx, &pc);
    return out;
}

/* ------------------------------------------------------------------ */
/* Records                                                              */

static mtls_conn_t *conn_state(const SSL *ssl)
{
    return g.ssl_idx >= 0 ? SSL_get_ex_data(ssl, g.ssl_idx) : NULL;
}

/* The state of the connection c's requests arrive on: c's own, or for an
 * HTTP/2 stream (a secondary connection) that of c->master, which carries
 * the TLS. */
static mtls_conn_t *request_conn_state(const conn_rec *c)
{
    return ap_get_module_config((c->master ? c->master : c)->conn_config,
                                &mtls_audit_module);
}

/* The spin lock of cs's link, audited and refuse: taken by the primary
 * connection's thread when it swaps them (finalize, conn_cleanup) and by
 * the threads of HTTP/2 streams when they read them; an HTTP/1 request
 * runs in the connection's own thread and reads them without it.  Held
 * for a few instructions, so a waiter yields rather than sleeps. */
static void conn_lock(mtls_conn_t *cs)
{
    while (apr_atomic_cas32(&cs->lock, 1, 0) != 0) {
        apr_thread_yield();
    }
}

static void conn_unlock(mtls_conn_t *cs)
{
    apr_atomic_set32(&cs->lock, 0);
}

static void open_record(mtls_conn_t *cs, int kind)
{
    conn_rec *c = cs->c;
    mtls_item_t *item = mtls_writer_item(g.writer, MTLS_ITEM_HANDSHAKE);
    mtls_handshake_t *hs;

    if (!item) {                /* it comes with its link */
        return;
    }
    hs = &item->u.hs;
    hs->time_us = mtls_now_us();
    hs->kind = kind;
    hs->pid = g.pid;
    mtls_strlcpy(hs->client_addr, c->client_ip, sizeof(hs->client_addr));
    hs->client_port = c->client_addr ? c->client_addr->port : -1;
    hs->local_port = c->local_addr ? c->local_addr->port : -1;
    cs->rec = item;
    cs->start_mono = mtls_mono_us();
    cs->cert_msg = 0;
    cs->eof = 0;
    cs->hello_sent = kind == MTLS_HS_POST_HANDSHAKE;
    cs->records++;
}

/* Remember what only the live SSL* can tell: the vhost, SNI, version,
 * cipher, resumption, and a peer certificate we did not verify ourselves
 * (a resumed session). */
static void note_ssl(mtls_conn_t *cs, const SSL *ssl)
{
    mtls_handshake_t *hs = &cs->rec->u.hs;
    const SSL_CIPHER *cipher;
    server_rec *s;
    const char *sni;
    int v;

    s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g.ctx_idx);
    if (s) {
        cs->srv = s;
    }
    if (!hs->sni[0] && (sni = SSL_get_servername(ssl,
                                                 TLSEXT_NAMETYPE_host_name))) {
        mtls_strlcpy(hs->sni, sni, sizeof(hs->sni));
    }
    v = SSL_version(ssl);       /* before ServerHello: the highest enabled */
    if (cs->hello_sent && v >= SSL3_VERSION && v <= TLS1_3_VERSION) {
        hs->tls_version = v;
    }
    cipher = SSL_get_current_cipher(ssl);
    if (!cipher) {
        cipher = SSL_get_pending_cipher(ssl);   /* failed TLS 1.2 */
    }
    if (cipher) {
        mtls_strlcpy(hs->cipher, SSL_CIPHER_get_name(cipher),
                     sizeof(hs->cipher));
    }
    hs->resumed = SSL_session_reused((SSL *)ssl) ? 1 : 0;
    v = SSL_get_verify_mode(ssl);
    if (!(v & SSL_VERIFY_PEER)) {
        hs->verify_mode = MTLS_VM_NONE;
    }
    else if (v & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) {
        hs->verify_mode = MTLS_VM_REQUIRE;
    }
    else if (cs->srv && hs->kind == MTLS_HS_INITIAL
             && srv_conf(cs->srv)->verify_cfg == MTLS_VM_OPTIONAL_NO_CA) {
        hs->verify_mode = MTLS_VM_OPTIONAL_NO_CA;
    }
    else {
        hs->verify_mode = MTLS_VM_OPTIONAL;
    }
    if (!hs->has_leaf && hs->resumed) {
        X509 *peer = SSL_get0_peer_certificate(ssl);
        if (peer) {
            mtls_certs_set(cs->rec, peer, NULL);
            hs->has_leaf = 1;
            hs->chain_length = 1;
            hs->verify_result = SSL_get_verify_result(ssl);
        }
    }
}

/* Errors mod_ssl forgives under optional_no_ca (ssl_verify_error_is_optional). */
static int error_is_optional(long e)
{
    return e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        || e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        || e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        || e == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        || e == X509_V_ERR_CERT_UNTRUSTED;
}

static int decide_outcome(mtls_conn_t *cs, fin_e why)
{
    mtls_handshake_t *hs = &cs->rec->u.hs;
    int bad_cert = hs->has_leaf && hs->verify_result > 0;

    if (why == FIN_DONE) {
        /* mod_ssl closes a completed handshake whose verification failed,
         * except what optional_no_ca forgives. */
        if (bad_cert && !(hs->verify_mode == MTLS_VM_OPTIONAL_NO_CA
                          && error_is_optional(hs->verify_result))) {
            return MTLS_OUT_REJECTED;
        }
        return MTLS_OUT_ACCEPTED;
    }
    if (hs->alert == 116 || (cs->cert_msg == 1
                             && hs->verify_mode == MTLS_VM_REQUIRE)) {
        return MTLS_OUT_NO_CERT;
    }
    if (bad_cert) {
        return MTLS_OUT_REJECTED;
    }
    if (cs->eof || why == FIN_CLOSED) {
        return MTLS_OUT_ABORTED;
    }
    return MTLS_OUT_FAILED;
}

/* The bytes the connection sent after the first record header, as far as
 * they came: looked at without consuming them, in the core's input filter
 * (below mod_ssl's), where they wait unread.  Their length, or -1 if none
 * can be read at once or more than fit in size. */
static long peek_rest(conn_rec *c, char *buf, apr_size_t size)
{
    apr_size_t len = size;
    apr_bucket_brigade *bb;
    ap_filter_t *f;
    long n = -1;

    for (f = c->input_filters; f && f->frec != ap_core_input_filter_handle;
         f = f->next) {
    }
    if (!f) {
        return -1;
    }
    bb = apr_brigade_create(c->pool, c->bucket_alloc);
    if (ap_get_brigade(f, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ,
                       size) == APR_SUCCESS
        && apr_brigade_flatten(bb, buf, &len) == APR_SUCCESS && len < size) {
        n = (long)len;
    }
    apr_brigade_destroy(bb);
    return n;
}

/* The MPM's internal dummy connection (server/mpm_unix.c): to wake a
 * child, the parent connects to one of its listeners from the same host
 * and sends a TLS 1.0 close_notify alert (a listener whose protocol is
 * https) or the plaintext request "OPTIONS * HTTP/1.0" ending
 * "(internal dummy connection)", then closes.  No client made it and it
 * carries no handshake: it is not recorded.  Only exactly those bytes
 * from the server's own address.  Called at the first record header
 * (hdr, its 5 bytes): OpenSSL has read no more, the rest waits below. */
static int is_dummy_connection(conn_rec *c, const unsigned char *hdr)
{
    static const unsigned char alert[7] = { 0x15, 0x03, 0x01, 0x00, 0x02,
                                            0x01, 0x00 };
    static const char head[] = "OPTIONS * HTTP/1.0\r\nUser-Agent: ";
    static const char tail[] = " (internal dummy connection)\r\n\r\n";
    const long hl = sizeof(head) - 1, tl = sizeof(tail) - 1;
    char buf[1024];
    long n, i;

    if ((memcmp(hdr, alert, 5) && memcmp(hdr, head, 5))
        || !c->client_addr || !c->local_addr
        || !apr_sockaddr_equal(c->client_addr, c->local_addr)) {
        return 0;
    }
    memcpy(buf, hdr, 5);
    if ((n = peek_rest(c, buf + 5, sizeof(buf) - 5)) < 0) {
        return 0;
    }
    n += 5;
    if (n == (long)sizeof(alert)) {
        return !memcmp(buf, alert, sizeof(alert));
    }
    if (n < hl + tl || memcmp(buf, head, hl)
        || memcmp(buf + n - tl, tail, tl)) {
        return 0;
    }
    for (i = hl; i < n - tl; i++) {     /* one header line: the banner */
        if (buf[i] == '\r' || buf[i] == '\n') {
            return 0;
        }
    }
    return 1;
}

/* Close the open record and hand it to the writer (or drop it if its vhost
 * does not audit, or it is the MPM's dummy connection).  ssl is NULL at
 * connection close: it is gone by then. */
static void finalize(mtls_conn_t *cs, const SSL *ssl, fin_e why)
{
    mtls_item_t *item = cs->rec;
    mtls_handshake_t *hs = &item->u.hs;
    mtls_link_t *link = NULL, *old;
    int audited, refuse = 0, dummy;
    server_rec *s;
    srv_conf_t *sc;

    if (ssl) {
        note_ssl(cs, ssl);
    }
    s = cs->srv ? cs->srv : cs->c->base_server;
    sc = srv_conf(s);
    /* The dummy connection's bytes, and nothing OpenSSL took for more. */
    dummy = cs->dummy && cs->records == 1 && cs->headers == 1
            && hs->kind == MTLS_HS_INITIAL;
    hs->handshake_us = mtls_mono_us() - cs->start_mono;
    hs->outcome = decide_outcome(cs, why);
    if (!hs->chain_length && hs->has_leaf) {
        hs->chain_length = 1;
    }
    mtls_strlcpy(hs->server_name, s->server_hostname,
                 sizeof(hs->server_name));
    cs->rec = NULL;
    if (why == FIN_DONE) {
        cs->hs_done++;
    }
    audited = sc->audit && !dummy;
    if (dummy) {
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, cs->c, MTLS_LOG_TAG
                      " the MPM's internal dummy connection: not recorded");
    }
    if (audited) {
        mtls_metrics_handshake(g.metrics, sc->vhost_ix, hs->outcome);
    }
    if (!audited) {
        mtls_item_free(item);
    }
    else if (!g.writer) {
        if (g.metrics) {
            mtls_metrics_add(&g.metrics->lost[MTLS_LOSS_NO_WRITER], 1);
        }
        if (!g.lost_noted) {
            g.lost_noted = 1;
            ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, cs->c, MTLS_LOG_TAG
                          " no writer in this process: records are lost");
        }
        link = mtls_link_ref(item->link);
        mtls_item_free(item);
        refuse = 1;
    }
    else {
        /* Our reference first: the writer may store the item and drop its
         * own before we are back.  The record is queued before requests
         * can see its link, so they follow it in the queue. */
        link = mtls_link_ref(item->link);
        if (mtls_writer_push(g.writer, item) != 0) {
            refuse = 1;
        }
        else if (srv_conf(g.main_server)->fail_closed == 1
                 && !mtls_writer_healthy(g.writer)) {
            refuse = 1;     /* queued, but the database is failing */
        }
    }
    /* Requests of HTTP/2 streams may be reading these on other threads. */
    conn_lock(cs);
    old = cs->link;
    cs->link = link;
    cs->audited = audited;
    cs->refuse |= refuse;
    conn_unlock(cs);
    mtls_link_unref(old);
}

/* ------------------------------------------------------------------ */
/* OpenSSL callbacks                                                    */

/* The client's Certificate message: does it hold any certificate? */
static int cert_msg_kind(const SSL *ssl, const unsigned char *p, size_t len)
{
    size_t off = 4;

    if (SSL_version(ssl) == TLS1_3_VERSION) {
        if (len < 5) {
            return 1;
        }
        off = 5 + p[4];              /* skip certificate_request_context */
    }
    if (len < off + 3) {
        return 1;
    }
    return (p[off] | p[off + 1] | p[off + 2]) ? 2 : 1;
}

/* Called for every record and message, for the whole connection: arg is
 * the connection's state (SSL_set_msg_callback_arg), not looked up in the
 * SSL's ex_data each time. */
static void msg_cb(int write_p, int version, int content_type,
                   const void *buf, size_t len, SSL *ssl, void *arg)
{
    mtls_conn_t *cs = arg;
    const unsigned char *p = buf;
    (void)version;

    if (!cs) {
        return;
    }
    if (!write_p) {
        if (content_type == SSL3_RT_HEADER && ++cs->headers == 1
            && len == 5) {
            cs->dummy = is_dummy_connection(cs->c, p);
        }
        if (!cs->rec) {
            if (content_type == SSL3_RT_HEADER && cs->records == 0) {
                open_record(cs, MTLS_HS_INITIAL);
            }
            else if (content_type == SSL3_RT_HANDSHAKE && len > 0
                     && p[0] == SSL3_MT_CLIENT_HELLO) {
                open_record(cs, cs->records ? MTLS_HS_RENEGOTIATION
                                            : MTLS_HS_INITIAL);
            }
        }
        if (!cs->rec) {
            return;
        }
        if (content_type == SSL3_RT_HANDSHAKE && len >= 4
            && p[0] == SSL3_MT_CERTIFICATE) {
            cs->cert_msg = cert_msg_kind(ssl, p, len);
        }
        else if (content_type == SSL3_RT_ALERT && len >= 2
                 && p[0] == SSL3_AL_FATAL) {
            cs->rec->u.hs.alert_received = p[1];
        }
        else if (content_type == SSL3_RT_HANDSHAKE && len > 0
                 && p[0] == SSL3_MT_FINISHED
                 && cs->rec->u.hs.kind == MTLS_HS_POST_HANDSHAKE) {
            /* OpenSSL signals no HANDSHAKE_DONE after post-handshake auth;
             * the client's Finished ends it (its certificate was verified
             * on arrival, and a failure would have ended the record). */
            finalize(cs, ssl, FIN_DONE);
        }
    }
    else if (content_type == SSL3_RT_HANDSHAKE && len > 0) {
        if (p[0] == SSL3_MT_SERVER_HELLO && cs->rec) {
            cs->hello_sent = 1;
        }
        else if (p[0] == SSL3_MT_CERTIFICATE_REQUEST && !cs->rec
                 && cs->hs_done > 0 && SSL_version(ssl) == TLS1_3_VERSION) {
            open_record(cs, MTLS_HS_POST_HANDSHAKE);
        }
    }
}

static void info_cb(const SSL *ssl, int where, int ret)
{
    void (*ctx_cb)(const SSL *, int, int);
    mtls_conn_t *cs;

    ctx_cb = SSL_CTX_get_info_callback(SSL_get_SSL_CTX(ssl));
    if (ctx_cb) {
        ctx_cb(ssl, where, ret);
    }
    if (!(cs = conn_state(ssl)) || !cs->rec) {
        return;
    }
    if (where & SSL_CB_HANDSHAKE_DONE) {
        finalize(cs, ssl, FIN_DONE);
    }
    else if ((where & SSL_CB_ALERT) && (ret >> 8) == SSL3_AL_FATAL) {
        if (where & SSL_CB_WRITE) {
            unsigned long e = ERR_peek_last_error();
            cs->rec->u.hs.alert = ret & 0xff;
            /* OpenSSL "sends" decode_error when the peer hung up. */
            if (ERR_GET_LIB(e) == ERR_LIB_SSL
                && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                cs->eof = 1;
            }
            finalize(cs, ssl, FIN_ALERT_SENT);
        }
        else {
            cs->rec->u.hs.alert_received = ret & 0xff;
            finalize(cs, ssl, FIN_ALERT_RECV);
        }
    }
    else if ((where & SSL_CB_EXIT) && ret <= 0) {
        /* OpenSSL clears the error queue when a handshake step starts, and
         * a step that only waits for data queues no error: an error here
         * is this handshake's fatal one. */
        unsigned long e = ERR_peek_last_error();
        if (e) {
            if (ERR_GET_LIB(e) == ERR_LIB_SSL
                && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                cs->eof = 1;
            }
            finalize(cs, ssl, FIN_ERROR);
        }
    }
    else {
        note_ssl(cs, ssl);
    }
}

/* ------------------------------------------------------------------ */
/* The revocation check                                                 */

/* A CRL error OpenSSL reports to the verify callback, as a status; 0 for
 * an error that is not about a CRL. */
static int crl_status(int err)
{
    switch (err) {
    case X509_V_ERR_CERT_REVOKED:
        return MTLS_RS_REVOKED;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        return MTLS_RS_UNKNOWN;
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
        return MTLS_RS_BAD_RESPONSE;
    default:
        return 0;
    }
}

/* The status a message of mod_ssl's OCSP check gives (its AH number;
 * ssl_engine_ocsp.c, ssl_util_ocsp.c), or 0 for another message.  All are
 * logged at level error but 03239 "good" (info). */
static int ocsp_message_status(const char *msg)
{
    static const struct { const char *ah; int status; } map[] = {
        { "AH01972", MTLS_RS_UNREACHABLE },   /* could not resolve */
        { "AH01974", MTLS_RS_UNREACHABLE },   /* could not connect */
        { "AH01976", MTLS_RS_UNREACHABLE },   /* failed to send request */
        { "AH01977", MTLS_RS_UNREACHABLE },   /* failed reading line */
        { "AH01978", MTLS_RS_UNREACHABLE },   /* (timeout) */
        { "AH02321", MTLS_RS_UNREACHABLE },   /* empty response */
        { "AH01985", MTLS_RS_UNREACHABLE },   /* error reading response */
        { "AH01979", MTLS_RS_BAD_RESPONSE },  /* header line too long */
        { "AH01980", MTLS_RS_BAD_RESPONSE },  /* bad response (HTTP) */
        { "AH01982", MTLS_RS_BAD_RESPONSE },  /* too many headers */
        { "AH01983", MTLS_RS_BAD_RESPONSE },  /* could not read header */
        { "AH01986", MTLS_RS_BAD_RESPONSE },  /* response too large */
        { "AH01988", MTLS_RS_BAD_RESPONSE },  /* failed to decode */
        { "AH01922", MTLS_RS_BAD_RESPONSE },  /* not successful */
        { "AH01923", MTLS_RS_BAD_RESPONSE },  /* no basic response */
        { "AH01924", MTLS_RS_BAD_RESPONSE },  /* bad nonce */
        { "AH01925", MTLS_RS_BAD_RESPONSE },  /* signature did not verify */
        { "AH02272", MTLS_RS_BAD_RESPONSE },  /* no status for the cert */
        { "AH02273", MTLS_RS_BAD_RESPONSE },  /* outside validity period */
        { "AH01921", MTLS_RS_ERROR },         /* could not build request */
        { "AH01989", MTLS_RS_ERROR },         /* could not serialize it */
        { "AH02038", MTLS_RS_ERROR },         /* optional_no_ca: no check */
    };
    apr_size_t i;

    if (strncmp(msg, "AH0", 3) != 0) {
        return 0;
    }
    if (!strncmp(msg, "AH03239", 7)) {        /* validation completed */
        return strstr(msg, "status: good") ? MTLS_RS_GOOD
             : strstr(msg, "status: revoked") ? MTLS_RS_REVOKED
             : MTLS_RS_UNKNOWN;
    }
    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (!strncmp(msg, map[i].ah, 7)) {
            return map[i].status;
        }
    }
    return 0;
}

/* Reads mod_ssl's messages while it runs an OCSP check on this thread
 * (tls_ocsp set): the first that says something gives the cause.  Every
 * other message costs one thread-local read. */
static void error_log_hook(const ap_errorlog_info *info, const char *msg)
{
    int st;

    if (!tls_ocsp || tls_ocsp_cause || !msg
        || info->module_index != g.ssl_module) {
        return;
    }
    if ((st = ocsp_message_status(msg))) {
        tls_ocsp_cause = st;
    }
}

/* Would mod_ssl run its OCSP check for the current certificate of sctx
 * (ok, at this depth)?  As modssl_verify_ocsp decides: not for a
 * self-issued certificate, nor, with no_ocsp_for_cert_ok, for one without
 * a responder to ask. */
static int ocsp_applies(const mtls_conn_t *cs, X509_STORE_CTX *sctx)
{
    X509 *cert;
    int depth = X509_STORE_CTX_get_error_depth(sctx);

    if (!(cs->ocsp_cfg & OCSP_CHAIN)
        && !((cs->ocsp_cfg & OCSP_LEAF) && depth == 0)) {
        return 0;
    }
    if (!(cert = X509_STORE_CTX_get_current_cert(sctx))
        || X509_check_issued(cert, cert) == X509_V_OK) {
        return 0;
    }
    if ((cs->ocsp_cfg & OCSP_NO_URL_OK) && !(cs->ocsp_cfg & OCSP_DEFAULT)) {
        STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(cert);
        int n = urls ? sk_OPENSSL_STRING_num(urls) : 0;
        X509_email_free(urls);
        return n > 0;
    }
    return 1;
}

/* Note a status of method in the record: a revoked certificate, or a
 * failed check, is not overwritten by a later "good". */
static void note_revocation(mtls_handshake_t *hs, int method, int status)
{
    if (status == MTLS_RS_GOOD && hs->revocation_status > MTLS_RS_GOOD) {
        return;
    }
    if (hs->revocation_status == MTLS_RS_REVOKED) {
        return;
    }
    hs->revocation_method = method;
    hs->revocation_status = status;
}

/* The verify callback while X509_verify_cert runs for an audited
 * connection: mod_ssl's, seen from both sides.  A CRL error comes in
 * from OpenSSL; an OCSP check is done by mod_ssl in between and leaves
 * its result in the context's error. */
static int verify_wrap_cb(int ok, X509_STORE_CTX *sctx)
{
    mtls_conn_t *cs = tls_verifying;
    mtls_handshake_t *hs;
    int st, ocsp, err;

    if (!cs || !cs->verify_cb || !cs->rec) {    /* cannot happen */
        return cs && cs->verify_cb ? cs->verify_cb(ok, sctx) : ok;
    }
    hs = &cs->rec->u.hs;
    if (!ok && (st = crl_status(X509_STORE_CTX_get_error(sctx)))) {
        note_revocation(hs, MTLS_REV_CRL, st);
    }
    if (!(ocsp = ok && cs->ocsp_cfg && ocsp_applies(cs, sctx))) {
        return cs->verify_cb(ok, sctx);
    }
    tls_ocsp = cs;
    tls_ocsp_cause = 0;
    ok = cs->verify_cb(ok, sctx);
    tls_ocsp = NULL;
    err = X509_STORE_CTX_get_error(sctx);
    if (ok && err == X509_V_OK) {
        st = MTLS_RS_GOOD;
    }
    else if (err == X509_V_ERR_CERT_REVOKED) {
        st = MTLS_RS_REVOKED;
    }
    else if (tls_ocsp_cause > MTLS_RS_REVOKED) {
        st = tls_ocsp_cause;
    }
    else {
        st = MTLS_RS_ERROR;     /* failed, and said nothing we could read */
    }
    note_revocation(hs, MTLS_REV_OCSP, st);
    return ok;
}

/* Wraps X509_verify_cert on every vhost's SSL_CTX: sees every chain a
 * client presents, whatever CTX SNI chose and whenever it happens. */
static int cert_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx,
                                          SSL_get_ex_data_X509_STORE_CTX_idx());
    mtls_conn_t *cs = ssl ? conn_state(ssl) : NULL;
    mtls_handshake_t *hs;
    STACK_OF(X509) *presented;
    X509 *leaf;
    apr_int64_t t0;
    int ok;
    (void)arg;

    if (!cs || !cs->rec) {
        return X509_verify_cert(sctx);
    }
    /* The revocation check: wrap the verify callback (mod_ssl's) for
     * this call, with the vhost's SSLOCSPEnable. */
    hs = &cs->rec->u.hs;
    hs->revocation_method = MTLS_REV_NONE;
    hs->revocation_status = MTLS_RS_NONE;
    {
        server_rec *s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g.ctx_idx);
        cs->ocsp_cfg = s ? srv_conf(s)->ocsp_cfg : 0;
    }
    cs->verify_cb = X509_STORE_CTX_get_verify_cb(sctx);
    if (cs->verify_cb) {
        X509_STORE_CTX_set_verify_cb(sctx, verify_wrap_cb);
    }
    tls_verifying = cs;
    t0 = mtls_mono_us();
    ok = X509_verify_cert(sctx);
    hs->verify_us = mtls_mono_us() - t0;
    tls_verifying = NULL;
    tls_ocsp = NULL;
    if (cs->verify_cb) {
        X509_STORE_CTX_set_verify_cb(sctx, cs->verify_cb);
        cs->verify_cb = NULL;
    }
    hs->verify_result = X509_STORE_CTX_get_error(sctx);
    /* CRLs checked (SSLCARevocationCheck sets these flags on the store)
     * and none said anything against a chain that verified: good. */
    if (!hs->revocation_method && hs->verify_result == X509_V_OK
        && (X509_VERIFY_PARAM_get_flags(X509_STORE_CTX_get0_param(sctx))
            & X509_V_FLAG_CRL_CHECK)) {
        note_revocation(hs, MTLS_REV_CRL, MTLS_RS_GOOD);
    }
    if (hs->verify_result != X509_V_OK) {
        hs->verify_depth = X509_STORE_CTX_get_error_depth(sctx);
    }
    else {
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
        hs->verify_depth = chain ? sk_X509_num(chain) - 1 : 0;
    }
    /* Copies of the DER, not references: the X509s then die with the
     * connection, in this thread (see mtls_certs_t). */
    leaf = X509_STORE_CTX_get0_cert(sctx);
    presented = X509_STORE_CTX_get0_untrusted(sctx);
    if (leaf || presented) {
        mtls_certs_set(cs->rec, leaf, presented);
        hs->has_leaf = leaf != NULL;
        if (presented) {
            hs->chain_length = sk_X509_num(presented);
        }
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* Hooks                                                                */

/* mod_ssl runs this from its post_config (before ours), on every pass,
 * for exactly the servers it gave TLS: what they are, and the client
 * verification mod_ssl put on their SSL_CTX, comes from here. */
static int ssl_init_server(server_rec *s, apr_pool_t *p, int is_proxy,
                           SSL_CTX *ctx)
{
    srv_conf_t *sc = srv_conf(s);
    int mode;

    (void)p;
    if (is_proxy || g.ctx_idx < 0) {
        return DECLINED;
    }
    sc->tls = 1;
    mode = SSL_CTX_get_verify_mode(ctx);
    if (!(mode & SSL_VERIFY_PEER)) {
        sc->verify_cfg = MTLS_VM_NONE;
    }
    else if (mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) {
        sc->verify_cfg = MTLS_VM_REQUIRE;
    }
    else {      /* optional or optional_no_ca: only the tree can tell */
        sc->verify_cfg = tree_verify_client(s) == MTLS_VM_OPTIONAL_NO_CA
                         ? MTLS_VM_OPTIONAL_NO_CA : MTLS_VM_OPTIONAL;
    }
    sc->ssl_ctx = ctx;
    SSL_CTX_set_ex_data(ctx, g.ctx_idx, s);
    SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, NULL);
    return OK;
}

static apr_status_t conn_cleanup(void *data)
{
    mtls_conn_t *cs = data;
    mtls_link_t *old;

    if (cs->rec) {
        finalize(cs, NULL, FIN_CLOSED);
    }
    conn_lock(cs);
    old = cs->link;
    cs->link = NULL;
    conn_unlock(cs);
    mtls_link_unref(old);
    return APR_SUCCESS;
}

static apr_status_t free_refused_ssl(void *data)
{
    SSL_free(data);
    return APR_SUCCESS;
}

static int ssl_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy)
{
    mtls_conn_t *cs;

    if (is_proxy || !g.any_engine || g.ssl_idx < 0) {
        return DECLINED;
    }
    /* Fail closed: while records cannot be queued or written, refuse new
     * connections before their handshake.  mod_ssl then aborts the
     * connection without the cleanup that would free ssl: ours does. */
    if (srv_conf(g.main_server)->fail_closed == 1
        && (!g.writer || !mtls_writer_healthy(g.writer))) {
        if (!g.refusing) {
            g.refusing = 1;
            ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, MTLS_LOG_TAG
                          " refusing new connections: their records cannot "
                          "be written (MTLSAuditFailMode closed)");
        }
        apr_pool_cleanup_register(c->pool, ssl, free_refused_ssl,
                                  apr_pool_cleanup_null);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    if (g.refusing) {
        g.refusing = 0;
        ap_log_cerror(APLOG_MARK, APLOG_NOTICE, 0, c, MTLS_LOG_TAG
                      " accepting connections again: records are written");
    }
    cs = apr_pcalloc(c->pool, sizeof(*cs));
    cs->c = c;
    SSL_set_ex_data(ssl, g.ssl_idx, cs);
    SSL_set_msg_callback(ssl, msg_cb);
    SSL_set_msg_callback_arg(ssl, cs);
    SSL_set_info_callback(ssl, info_cb);
    ap_set_module_config(c->conn_config, &mtls_audit_module, cs);
    apr_pool_cleanup_register(c->pool, cs, conn_cleanup,
                              apr_pool_cleanup_null);
    return OK;
}

/* Fail closed: a connection whose record could not be queued serves
 * nothing: every request on it (every stream of an HTTP/2 connection) is
 * answered 503, and an HTTP/1 connection is closed after it. */
static int post_read_request(request_rec *r)
{
    conn_rec *c = r->connection;
    mtls_conn_t *cs = request_conn_state(c);
    int refuse;

    if (!cs || srv_conf(g.main_server)->fail_closed != 1) {
        return DECLINED;
    }
    if (c->master) {
        conn_lock(cs);
        refuse = cs->refuse;
        conn_unlock(cs);
    }
    else {
        refuse = cs->refuse;
    }
    if (!refuse) {
        return DECLINED;
    }
    c->keepalive = AP_CONN_CLOSE;
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, MTLS_LOG_TAG " refusing a "
                  "request: its handshake could not be recorded "
                  "(MTLSAuditFailMode closed)");
    return HTTP_SERVICE_UNAVAILABLE;
}

/* A new reference to the link of the handshake the requests on c (c's
 * own state cs) belong to, or NULL when they are not recorded. */
static mtls_link_t *request_link(mtls_conn_t *cs, const conn_rec *c)
{
    mtls_link_t *link;

    if (!c->master) {           /* HTTP/1: the connection's own thread */
        return cs->audited ? mtls_link_ref(cs->link) : NULL;
    }
    conn_lock(cs);              /* an HTTP/2 stream: see conn_lock */
    link = cs->audited ? mtls_link_ref(cs->link) : NULL;
    conn_unlock(cs);
    return link;
}

static int log_transaction(request_rec *r)
{
    mtls_conn_t *cs = request_conn_state(r->connection);
    request_rec *last = r;
    mtls_link_t *link;
    mtls_item_t *item;
    const char *path;
    apr_size_t n;

    if (!cs || !g.writer || srv_conf(r->server)->requests == 0
        || !(link = request_link(cs, r->connection))) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (!(item = mtls_writer_item(g.writer, MTLS_ITEM_REQUEST))) {
        mtls_link_unref(link);
        return DECLINED;
    }
    item->link = link;
    item->u.rq.time_us = r->request_time;
    mtls_strlcpy(item->u.rq.method, r->method, sizeof(item->u.rq.method));
    /* The path as sent, without query string or fragment: queries carry
     * card numbers and health data more often than paths do. */
    path = r->unparsed_uri ? r->unparsed_uri : "";
    n = strcspn(path, "?#");
    if (n > MAX_PATH_LEN) {
        n = MAX_PATH_LEN;
    }
    item->u.rq.path = mtls_item_mem(item, n + 1);
    if (item->u.rq.path) {
        memcpy(item->u.rq.path, path, n);
        item->u.rq.path[n] = '\0';
    }
    item->u.rq.status = last->status;
    item->u.rq.bytes_sent = last->bytes_sent;
    item->u.rq.duration_us = apr_time_now() - r->request_time;
    if (g.metrics) {
        mtls_metrics_add(&g.metrics->requests, 1);
    }
    mtls_writer_push(g.writer, item);
    return DECLINED;
}

/* Create dir (and parents) 0750 and give it to the run user. */
static apr_status_t make_private_dir(apr_pool_t *p, const char *dir)
{
    apr_status_t rv;

    rv = apr_dir_make_recursive(dir, APR_FPROT_UREAD | APR_FPROT_UWRITE
                                | APR_FPROT_UEXECUTE | APR_FPROT_GREAD
                                | APR_FPROT_GEXECUTE, p);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        return rv;
    }
    return APR_SUCCESS;
}

/* Can the run user create files in a directory with these attributes? */
static int run_user_writes(const struct stat *sb)
{
    if (sb->st_uid == ap_unixd_config.user_id) {
        return (sb->st_mode & S_IWUSR) && (sb->st_mode & S_IXUSR);
    }
    if (sb->st_gid == ap_unixd_config.group_id) {
        return (sb->st_mode & S_IWGRP) && (sb->st_mode & S_IXGRP);
    }
    return 0;
}

/* Refuse a database that others could replace, that belongs to someone
 * else, or that the children could not write: a directory writable by
 * others, a file owned by another user, an existing directory the run
 * user cannot write in (SQLite creates its -wal and -shm files there).
 * A missing directory is fine: it is created for the run user.  One line
 * naming the directive and where it was set. */
static apr_status_t check_location(server_rec *s, const char *at,
                                   const char *dir, const char *path)
{
    struct stat sb;

    if (stat(dir, &sb) == 0 && (sb.st_mode & S_IWOTH)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s): its directory %s is "
                     "writable by others (mode %04o), so anyone could remove "
                     "or replace the audit log: make it 0750 or choose "
                     "another directory", path, at, dir,
                     (unsigned)(sb.st_mode & 07777));
        return APR_EACCES;
    }
    if (stat(dir, &sb) == 0 && !run_user_writes(&sb)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s): the user httpd runs as "
                     "(uid %u) cannot write in its directory %s (owner uid "
                     "%u, group %u, mode %04o): give the directory to that "
                     "user with mode 0750, or choose a directory that does "
                     "not exist yet", path, at,
                     (unsigned)ap_unixd_config.user_id, dir,
                     (unsigned)sb.st_uid, (unsigned)sb.st_gid,
                     (unsigned)(sb.st_mode & 07777));
        return APR_EACCES;
    }
    if (stat(path, &sb) == 0 && sb.st_uid != 0
        && sb.st_uid != ap_unixd_config.user_id) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s) is owned by uid %u, neither "
                     "root nor the user httpd runs as (uid %u): refusing to "
                     "write an audit log someone else owns", path, at,
                     (unsigned)sb.st_uid, (unsigned)ap_unixd_config.user_id);
        return APR_EACCES;
    }
    return APR_SUCCESS;
}

/* The database path, absolute, and where it was configured. */
static const char *db_path_of(apr_pool_t *p, srv_conf_t *msc,
                              const char **at)
{
    *at = msc->db_at ? msc->db_at : "the default";
    return ap_server_root_relative(p, msc->db_path ? msc->db_path
                                                   : DEFAULT_DB);
}

/* The one line for MTLSAuditEngine On written in virtual host v, which
 * has no TLS. */
static void no_tls_error(server_rec *s, server_rec *v, srv_conf_t *sc)
{
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                 " MTLSAuditEngine On (%s): the virtual host %s (%s:%u) has "
                 "no 'SSLEngine on', so it makes no TLS handshake to record",
                 sc->engine_at, v->server_hostname ? v->server_hostname : "",
                 v->defn_name ? v->defn_name : "?", v->defn_line_number);
}

/* Does path hold a strftime conversion (not just "%%")? */
static int is_pattern(const char *path)
{
    const char *p;

    for (p = path; (p = strchr(p, '%')) != NULL; p += 2) {
        if (p[1] != '%') {
            return p[1] != '\0';
        }
    }
    return 0;
}

/* MTLSAuditDatabase as a pattern and MTLSAuditRotate, together. */
static apr_status_t check_rotation(server_rec *s, apr_pool_t *p,
                                   const char *path, const char *at)
{
    srv_conf_t *msc = srv_conf(s);
    const char *dir = ap_make_dirstr_parent(p, path);
    char name[MAX_PATH_LEN];
    int rotating = msc->rotate > 0;

    if (is_pattern(path) && !rotating) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s) is a strftime pattern, but "
                     "MTLSAuditRotate is off%s%s: nothing would seal one file "
                     "and begin the next when the name changes; set "
                     "MTLSAuditRotate daily, weekly, monthly or a SIZE, or "
                     "write %%%% for a %%", path, at,
                     msc->rotate_at ? " at " : "",
                     msc->rotate_at ? msc->rotate_at : "");
        return APR_EINVAL;
    }
    if (!rotating) {
        return APR_SUCCESS;
    }
    if (is_pattern(dir)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s): a strftime pattern may be "
                     "in the file's name only, not in its directory (all "
                     "the files of a rotation live in one directory)",
                     path, at);
        return APR_EINVAL;
    }
    if (mtls_store_name(path, mtls_now_us(), name, sizeof(name)) != 0
        || !*ap_stripprefix(name, dir)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s): the pattern gives no file "
                     "name (MTLSAuditRotate at %s)", path, at,
                     msc->rotate_at);
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

/* After the configuration is read, at every start and at configtest:
 * what would make auditing fail is refused here, one line each, naming
 * the directive and where it was set. */
static int check_config(apr_pool_t *pconf, apr_pool_t *plog,
                        apr_pool_t *ptemp, server_rec *s)
{
    const char *first_at = NULL, *path, *at;
    int bad = 0, any_ssl = 0;
    server_rec *v;
    (void)pconf;
    (void)plog;

    for (v = s; v; v = v->next) {
        srv_conf_t *sc = srv_conf(v);
        if (sc->engine != 1) {
            continue;
        }
        if (!first_at) {
            first_at = sc->engine_at ? sc->engine_at : "?";
        }
        /* An On written in a virtual host that cannot have TLS is an
         * error; one inherited from the server config just skips it. */
        if (tree_may_have_tls(v)) {
            any_ssl = 1;
        }
        else if (v->is_virtual && sc->engine_here) {
            no_tls_error(s, v, sc);
            bad = 1;
        }
    }
    if (!first_at) {
        return OK;
    }
    if (!ap_find_linked_module("mod_ssl.c")) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditEngine On (%s) needs mod_ssl, which is not "
                     "loaded (a2enmod ssl)", first_at);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!any_ssl && !bad) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, MTLS_LOG_TAG
                     " MTLSAuditEngine On (%s), but no server has "
                     "'SSLEngine on': there is nothing to audit", first_at);
    }
    if (srv_conf(s)->mirror && srv_conf(s)->mirror[0] != '|') {
        const char *m = ap_server_root_relative(ptemp, srv_conf(s)->mirror);
        struct stat sb;
        if (stat(ap_make_dirstr_parent(ptemp, m), &sb) != 0) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, MTLS_LOG_TAG
                         " MTLSAuditMirror %s (%s): its directory does not "
                         "exist", m, srv_conf(s)->mirror_at);
            bad = 1;
        }
    }
    path = db_path_of(ptemp, srv_conf(s), &at);
    if (check_rotation(s, ptemp, path, at) != APR_SUCCESS) {
        bad = 1;
    }
    else if (check_location(s, at, ap_make_dirstr_parent(ptemp, path), path)
             != APR_SUCCESS) {
        bad = 1;
    }
    return bad ? HTTP_INTERNAL_SERVER_ERROR : OK;
}

/* The policy rows of the audited servers (mtls_policy.h) into items,
 * after the n already there; returns the new count.  A policy that cannot
 * be read or compared is logged and left out: the start goes on. */
static int policy_items(apr_pool_t *p, server_rec *s, sqlite3 *db,
                        mtls_item_t **items, int n, apr_int64_t now)
{
    server_rec *v;

    for (v = s; v; v = v->next) {
        srv_conf_t *sc = srv_conf(v);
        char err[256], *canonical, *detail = NULL;
        mtls_item_t *it;
        if (!sc->audit || !sc->ssl_ctx) {
            continue;
        }
        if (!(canonical = policy_of(p, v))
            || mtls_policy_detail(db, canonical, &detail, err, sizeof(err))
               != SQLITE_OK
            || !(it = mtls_item_new(MTLS_ITEM_EVENT))) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, v, MTLS_LOG_TAG " cannot "
                         "record the policy of %s: %s", v->server_hostname,
                         canonical && !detail ? err : "out of memory");
            sqlite3_free(canonical);
            sqlite3_free(detail);
            continue;
        }
        it->u.ev.time_us = now;
        mtls_strlcpy(it->u.ev.kind, "policy", sizeof(it->u.ev.kind));
        it->u.ev.pid = (int)getpid();
        it->u.ev.server_version = strdup(ap_get_server_description());
        it->u.ev.detail = strdup(detail);
        items[n++] = it;
        sqlite3_free(canonical);
        sqlite3_free(detail);
    }
    return n;
}

/* Write one lifecycle event from the parent; with p, the policy rows of
 * the audited servers after it, in the same transaction. */
static void write_event(server_rec *s, const char *kind, const char *detail,
                        apr_pool_t *p)
{
    mtls_store_t *st;
    mtls_item_t *ev, **items = NULL;
    char err[256];
    int rc, n = 0, i;

    rc = mtls_store_open(g.db_path, 0, DEFAULT_BUSY_MS, &st, err,
                         sizeof(err));
    if (rc != SQLITE_OK) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, MTLS_LOG_TAG " cannot "
                     "record the %s event: %s", kind, err);
        return;
    }
    mtls_store_set_key(st, &g.key);
    if ((ev = mtls_item_new(MTLS_ITEM_EVENT))) {
        ev->u.ev.time_us = mtls_now_us();
        mtls_strlcpy(ev->u.ev.kind, kind, sizeof(ev->u.ev.kind));
        ev->u.ev.pid = (int)getpid();
        ev->u.ev.server_version = strdup(ap_get_server_description());
        ev->u.ev.detail = detail ? strdup(detail) : NULL;
        if (p) {
            server_rec *v;
            for (v = s; v; v = v->next) {
                n++;
            }
            items = apr_palloc(p, sizeof(*items) * (apr_size_t)(n + 1));
            items[0] = ev;
            n = policy_items(p, s, mtls_store_db(st), items, 1,
                             ev->u.ev.time_us);
        }
        else {
            items = &ev;
            n = 1;
        }
        if (mtls_store_write(st, items, n, err, sizeof(err)) != SQLITE_OK) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, MTLS_LOG_TAG " cannot "
                         "record the %s event: %s", kind, err);
        }
        else if (g.mirror_fd > 0) {
            int e;
            if (mtls_mirror_written(st, g.mirror_fd, g.mirror_format,
                                    mtls_store_path(st), &e)) {
                ap_log_error(APLOG_MARK, APLOG_WARNING, e, s, MTLS_LOG_TAG
                             " mirror: cannot write the %s event (it is in "
                             "the database)", kind);
            }
        }
        for (i = 0; i < n; i++) {
            mtls_item_free(items[i]);
        }
    }
    /* The heads, after the event, go to the log: an anchor kept outside
     * the database for 'mtls-audit verify --anchor'. */
    {
        mtls_anchor_t a;
        char line[1024];
        if (mtls_anchor_read(mtls_store_db(st), &a) == SQLITE_OK) {
            mtls_anchor_format(mtls_store_path(st), &a, line,
                               sizeof(line));
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, MTLS_LOG_TAG " %s "
                         "(%s)", line, kind);
        }
    }
    mtls_store_close(st);
}

/* Is this the first real configuration of this httpd?  The process pool
 * survives restarts; the config generation counts the dry run too. */
static int first_start(server_rec *s)
{
    static const char key[] = "mtls_audit_started";
    void *seen = NULL;

    apr_pool_userdata_get(&seen, key, s->process->pool);
    if (seen) {
        return 0;
    }
    apr_pool_userdata_set((void *)1, key, apr_pool_cleanup_null,
                          s->process->pool);
    return 1;
}

/* The counters that let a surviving child count what a killed one lost,
 * and the metrics: anonymous shared memory from the process pool, made
 * once, before the first fork, kept across restarts.  Keyed by its size:
 * a module of another layout loaded by a restart (an upgrade) makes its
 * own table instead of reading this one (its counters start from 0). */
static void shared_slots(server_rec *s)
{
    char key[64];               /* (userdata_set copies it) */
    apr_size_t size = mtls_slots_size(1024);
    apr_shm_t *shm = NULL;
    void *seen = NULL;
    apr_status_t rv;

    apr_snprintf(key, sizeof(key), "mtls_audit_slots:%" APR_SIZE_T_FMT,
                 size);
    apr_pool_userdata_get(&seen, key, s->process->pool);
    if (seen) {
        g.slots = seen;
        return;
    }
    rv = apr_shm_create(&shm, size, NULL, s->process->pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, MTLS_LOG_TAG " no "
                     "shared memory for the per-child counters: records "
                     "lost with a killed child will not be counted");
        return;
    }
    memset(apr_shm_baseaddr_get(shm), 0, size);
    g.slots = mtls_slots_init(apr_shm_baseaddr_get(shm), 1024);
    apr_pool_userdata_set(g.slots, key, apr_pool_cleanup_null,
                          s->process->pool);
}

/* pconf is cleared on every restart (main state DESTROY_CONFIG, and a
 * "reload" event follows) and destroyed on stop (any other state). */
static apr_status_t parent_cleanup(void *data)
{
    server_rec *s = data;

    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_DESTROY_CONFIG) {
        write_event(s, "stop", NULL, NULL);
    }
    mtls_chain_key_clear(&g.key);
    return APR_SUCCESS;
}

/* MTLSAuditMirror: a file opened for appending, or a program fed through
 * httpd's reliable piped logs (restarted by httpd when it dies), exactly
 * as CustomLog does ("|" and "||" without a shell, "|$" with one).
 * Opened by the parent, as root, once per configuration; the children
 * inherit the descriptor, which does not block (see mtls_writer.c). */
static apr_status_t open_mirror(apr_pool_t *pconf, server_rec *s)
{
    srv_conf_t *msc = srv_conf(s);
    const char *m = msc->mirror;
    apr_file_t *f = NULL;
    apr_os_file_t fd;
    apr_status_t rv;
    int flags;

    g.mirror_fd = 0;
    g.mirror_format = msc->mirror_format > 0 ? msc->mirror_format
                                             : MTLS_JSON_NATIVE;
    if (!m) {
        return APR_SUCCESS;
    }
    if (m[0] == '|') {
        apr_cmdtype_e type = APR_PROGRAM_ENV;
        piped_log *pl;
        m++;
        if (*m == '$') {
            type = APR_SHELLCMD_ENV;
            m++;
        }
        else if (*m == '|') {
            m++;
        }
        if (!(pl = ap_open_piped_log_ex(pconf, m, type))) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                         " MTLSAuditMirror %s (%s): cannot start the "
                         "program", msc->mirror, msc->mirror_at);
            return APR_EGENERAL;
        }
        f = ap_piped_log_write_fd(pl);
    }
    else {
        const char *path = ap_server_root_relative(pconf, m);
        rv = apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE
                           | APR_FOPEN_APPEND, APR_FPROT_UREAD
                           | APR_FPROT_UWRITE | APR_FPROT_GREAD, pconf);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, MTLS_LOG_TAG
                         " MTLSAuditMirror %s (%s): cannot open it", path,
                         msc->mirror_at);
            return rv;
        }
    }
    apr_os_file_get(&fd, f);
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0) {
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    g.mirror_fd = fd;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Metrics: the mtls-audit-metrics handler and mod_status               */

#define METRICS_HANDLER "mtls-audit-metrics"
#define CERT_QUERY_MS   100     /* patience of the certificate query */

/* What a scrape shows: the shared counters summed, and what the file
 * and a read-only query say. */
typedef struct {
    mtls_metrics_sum_t sum;
    apr_int64_t        now_us;
    apr_int64_t        since_write_s;   /* -1: no table */
    apr_int64_t        db_bytes;        /* -1: cannot stat */
    int                certs_ok;        /* the query answered */
    apr_int64_t        certs, soonest;  /* its answer */
} scrape_t;

static void scrape(request_rec *r, scrape_t *sc)
{
    struct stat sb;
    char err[256], path[MAX_PATH_LEN];

    memset(sc, 0, sizeof(*sc));
    mtls_slots_sum(g.slots, &sc->sum);
    sc->now_us = mtls_now_us();
    sc->since_write_s = -1;
    if (g.slots) {
        apr_int64_t last = sc->sum.last_write_us ? sc->sum.last_write_us
                                                 : g.slots->created_us;
        sc->since_write_s = sc->now_us > last
                            ? (sc->now_us - last) / 1000000 : 0;
    }
    /* With MTLSAuditRotate: the file this child's writer writes now. */
    if (g.db_path && g.writer && g.db_pattern) {
        mtls_writer_path(g.writer, path, sizeof(path));
    }
    else {
        mtls_strlcpy(path, g.db_path ? g.db_path : "", sizeof(path));
    }
    sc->db_bytes = path[0] && stat(path, &sb) == 0
                   ? (apr_int64_t)sb.st_size : -1;
    /* A distinct count needs the set of certificates, which shared memory
     * cannot hold: one read-only query over the last day's handshakes
     * (time index), in this request's thread, never the writer's; its
     * answer is shared by all processes for MTLS_CERTS_TTL_S, so that
     * however many scrapers (and mod_status pages) there are, it runs at
     * most that often: over a million handshakes a day it takes a second
     * or two. */
    if (g.db_path && mtls_slots_certs_due(g.slots, sc->now_us)) {
        apr_int64_t certs = 0, soonest = 0;
        int rc = mtls_store_cert_stats(path,
                                       sc->now_us - APR_INT64_C(86400000000),
                                       CERT_QUERY_MS, &certs, &soonest, err,
                                       sizeof(err));
        if (rc != SQLITE_OK) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, MTLS_LOG_TAG
                          " metrics: cannot count the certificates in %s: "
                          "%s", path, err);
        }
        mtls_slots_certs_set(g.slots, sc->now_us, rc == SQLITE_OK, certs,
                             soonest);
    }
    sc->certs_ok = mtls_slots_certs(g.slots, &sc->certs, &sc->soonest);
}

/* name as a label value: \ " and newline escaped. */
static const char *label_value(apr_pool_t *p, const char *name)
{
    char *out = apr_palloc(p, 2 * strlen(name) + 1), *o = out;

    for (; *name; name++) {
        if (*name == '\\' || *name == '"') {
            *o++ = '\\';
            *o++ = *name;
        }
        else if (*name == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        }
        else {
            *o++ = *name;
        }
    }
    *o = '\0';
    return out;
}

static const char *vhost_label(apr_pool_t *p, int v)
{
    if (v == MTLS_VHOSTS - 1) {
        return "(other)";
    }
    return label_value(p, g.slots->vhost[v]);
}

static void head(request_rec *r, const char *name, const char *type,
                 const char *help)
{
    ap_rprintf(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The Prometheus text exposition format, version 0.0.4. */
static void write_prometheus(request_rec *r, const scrape_t *sc)
{
    static const char *const types[4] = { NULL, "handshake", "request",
                                          "event" };
    /* mtls_write_bucket_us in seconds (APR's %g drops the leading 0) */
    static const char *const le[MTLS_WRITE_BUCKETS] = {
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
        "0.1", "0.25", "0.5", "1", "5" };
    const mtls_metrics_sum_t *m = &sc->sum;
    apr_uint64_t cum = 0;
    int v, o, i;

    head(r, "mtls_audit_handshakes_total", "counter",
         "Client-certificate handshakes of audited vhosts, by outcome.");
    for (v = 0; g.slots && v < MTLS_VHOSTS; v++) {
        apr_uint64_t any = 0;
        for (o = 0; o < MTLS_OUTCOMES; o++) {
            any += m->handshakes[v][o];
        }
        if (v >= (int)g.slots->vhosts && !any) {
            continue;           /* no such row (or "other" unused) */
        }
        for (o = 0; o < MTLS_OUTCOMES; o++) {
            ap_rprintf(r, "mtls_audit_handshakes_total{vhost=\"%s\","
                       "outcome=\"%s\"} %" APR_UINT64_T_FMT "\n",
                       vhost_label(r->pool, v), mtls_outcome_name(o + 1),
                       m->handshakes[v][o]);
        }
    }
    head(r, "mtls_audit_requests_total", "counter",
         "Requests recorded (handed to the writers).");
    ap_rprintf(r, "mtls_audit_requests_total %" APR_UINT64_T_FMT "\n",
               m->requests);
    head(r, "mtls_audit_records_written_total", "counter",
         "Records stored in the database by the writers, by type.");
    for (i = 1; i < 4; i++) {
        ap_rprintf(r, "mtls_audit_records_written_total{type=\"%s\"} %"
                   APR_UINT64_T_FMT "\n", types[i], m->written[i]);
    }
    head(r, "mtls_audit_records_lost_total", "counter",
         "Records lost (counted in gap events, but no_writer), by cause.");
    for (i = 0; i < MTLS_LOSS_N; i++) {
        ap_rprintf(r, "mtls_audit_records_lost_total{cause=\"%s\"} %"
                   APR_UINT64_T_FMT "\n", mtls_loss_name(i), m->lost[i]);
    }
    head(r, "mtls_audit_queue_depth", "gauge",
         "Records queued and not yet written, summed over the children.");
    ap_rprintf(r, "mtls_audit_queue_depth %" APR_UINT64_T_FMT "\n",
               m->depth);
    head(r, "mtls_audit_queue_depth_max", "gauge",
         "The highest depth any one child's queue reached "
         "(compare with MTLSAuditQueueSize).");
    ap_rprintf(r, "mtls_audit_queue_depth_max %" APR_UINT64_T_FMT "\n",
               m->depth_max);
    head(r, "mtls_audit_write_transactions_total", "counter",
         "Write transactions of the writers, by result.");
    ap_rprintf(r, "mtls_audit_write_transactions_total{result=\"ok\"} %"
               APR_UINT64_T_FMT "\n", m->tx_ok);
    ap_rprintf(r, "mtls_audit_write_transactions_total{result=\"failed\"} %"
               APR_UINT64_T_FMT "\n", m->tx_failed);
    head(r, "mtls_audit_write_duration_seconds", "histogram",
         "Duration of the write transactions.");
    for (i = 0; i < MTLS_WRITE_BUCKETS; i++) {
        cum += m->tx_bucket[i];
        ap_rprintf(r, "mtls_audit_write_duration_seconds_bucket{le=\"%s\"} %"
                   APR_UINT64_T_FMT "\n", le[i], cum);
    }
    cum += m->tx_bucket[MTLS_WRITE_BUCKETS];
    ap_rprintf(r, "mtls_audit_write_duration_seconds_bucket{le=\"+Inf\"} %"
               APR_UINT64_T_FMT "\n", cum);
    ap_rprintf(r, "mtls_audit_write_duration_seconds_sum %.6f\n",
               (double)m->tx_sum_us / 1e6);
    ap_rprintf(r, "mtls_audit_write_duration_seconds_count %"
               APR_UINT64_T_FMT "\n", cum);
    if (sc->since_write_s >= 0) {
        head(r, "mtls_audit_seconds_since_last_write", "gauge",
             "Seconds since a writer last stored records (since the "
             "server started, when none has).");
        ap_rprintf(r, "mtls_audit_seconds_since_last_write %" APR_INT64_T_FMT
                   "\n", sc->since_write_s);
    }
    if (sc->db_bytes >= 0) {
        head(r, "mtls_audit_database_bytes", "gauge",
             "Size of the database file (without its -wal).");
        ap_rprintf(r, "mtls_audit_database_bytes %" APR_INT64_T_FMT "\n",
                   sc->db_bytes);
    }
    if (sc->certs_ok) {
        head(r, "mtls_audit_client_certificates", "gauge",
             "Distinct client certificates accepted in the last 24 hours.");
        ap_rprintf(r, "mtls_audit_client_certificates %" APR_INT64_T_FMT
                   "\n", sc->certs);
        if (sc->certs > 0) {
            head(r, "mtls_audit_client_certificate_soonest_expiry_seconds",
                 "gauge", "Soonest not_after (Unix time) of the client "
                 "certificates accepted in the last 24 hours.");
            ap_rprintf(r, "mtls_audit_client_certificate_soonest_expiry_"
                       "seconds %" APR_INT64_T_FMT "\n", sc->soonest);
        }
    }
    head(r, "mtls_audit_processes", "gauge",
         "Processes holding a slot of the shared counters now.");
    ap_rprintf(r, "mtls_audit_processes %u\n", sc->sum.processes);
}

/* SetHandler mtls-audit-metrics: an ordinary handler (Require and the
 * rest of the <Location> apply before it runs). */
static int metrics_handler(request_rec *r)
{
    scrape_t sc;

    if (!r->handler || strcmp(r->handler, METRICS_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed |= (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        return OK;
    }
    scrape(r, &sc);
    write_prometheus(r, &sc);
    return OK;
}

/* mod_status's page (HTML) and its ?auto form ("Key: value" lines, one
 * per figure, the vhosts' handshakes summed). */
static int status_hook(request_rec *r, int flags)
{
    static const char *const outs[MTLS_OUTCOMES] = {
        "Accepted", "Rejected", "NoCertificate", "Failed", "Aborted" };
    static const char *const losses[MTLS_LOSS_N] = {
        "QueueFull", "WriterStopped", "WriteFailed", "ProcessDied",
        "NoWriter" };
    const mtls_metrics_sum_t *m;
    scrape_t sc;
    apr_uint64_t by_out[MTLS_OUTCOMES] = { 0 };
    int v, o, i, html = !(flags & AP_STATUS_SHORT);

    if (!g.slots) {
        return OK;
    }
    scrape(r, &sc);
    m = &sc.sum;
    for (v = 0; v < MTLS_VHOSTS; v++) {
        for (o = 0; o < MTLS_OUTCOMES; o++) {
            by_out[o] += m->handshakes[v][o];
        }
    }
    if (html) {
        ap_rputs("<hr />\n<h2>mod_mtls_audit</h2>\n<dl>\n", r);
    }
#define FIG(key, fmt, val) \
    ap_rprintf(r, html ? "<dt>MtlsAudit%s: " fmt "</dt>\n" \
                       : "MtlsAudit%s: " fmt "\n", key, val)
    for (o = 0; o < MTLS_OUTCOMES; o++) {
        FIG(apr_pstrcat(r->pool, "Handshakes", outs[o], NULL),
            "%" APR_UINT64_T_FMT, by_out[o]);
    }
    FIG("Requests", "%" APR_UINT64_T_FMT, m->requests);
    FIG("RecordsWrittenHandshakes", "%" APR_UINT64_T_FMT,
        m->written[MTLS_ITEM_HANDSHAKE]);
    FIG("RecordsWrittenRequests", "%" APR_UINT64_T_FMT,
        m->written[MTLS_ITEM_REQUEST]);
    FIG("RecordsWrittenEvents", "%" APR_UINT64_T_FMT,
        m->written[MTLS_ITEM_EVENT]);
    for (i = 0; i < MTLS_LOSS_N; i++) {
        FIG(apr_pstrcat(r->pool, "RecordsLost", losses[i], NULL),
            "%" APR_UINT64_T_FMT, m->lost[i]);
    }
    FIG("QueueDepth", "%" APR_UINT64_T_FMT, m->depth);
    FIG("QueueDepthMax", "%" APR_UINT64_T_FMT, m->depth_max);
    FIG("WriteTransactions", "%" APR_UINT64_T_FMT, m->tx_ok);
    FIG("WriteTransactionsFailed", "%" APR_UINT64_T_FMT, m->tx_failed);
    FIG("WriteSeconds", "%.6f", (double)m->tx_sum_us / 1e6);
    FIG("SecondsSinceLastWrite", "%" APR_INT64_T_FMT, sc.since_write_s);
    FIG("DatabaseBytes", "%" APR_INT64_T_FMT, sc.db_bytes);
    if (sc.certs_ok) {
        FIG("ClientCertificates", "%" APR_INT64_T_FMT, sc.certs);
        FIG("ClientCertificateSoonestExpiry", "%" APR_INT64_T_FMT,
            sc.soonest);
    }
#undef FIG
    if (html) {
        ap_rputs("</dl>\n<table border=\"0\"><tr><th>vhost</th>", r);
        for (o = 0; o < MTLS_OUTCOMES; o++) {
            ap_rprintf(r, "<th>%s</th>", mtls_outcome_name(o + 1));
        }
        ap_rputs("</tr>\n", r);
        for (v = 0; v < MTLS_VHOSTS; v++) {
            if (v >= (int)g.slots->vhosts && !m->handshakes[v][0]
                && !m->handshakes[v][1] && !m->handshakes[v][2]
                && !m->handshakes[v][3] && !m->handshakes[v][4]) {
                continue;
            }
            ap_rprintf(r, "<tr><td>%s</td>", ap_escape_html(r->pool,
                       v == MTLS_VHOSTS - 1 ? "(other)" : g.slots->vhost[v]));
            for (o = 0; o < MTLS_OUTCOMES; o++) {
                ap_rprintf(r, "<td>%" APR_UINT64_T_FMT "</td>",
                           m->handshakes[v][o]);
            }
            ap_rputs("</tr>\n", r);
        }
        ap_rputs("</table>\n", r);
    }
    return OK;
}

/* With MTLSAuditRotate: the file to write among those g.db_path (the
 * pattern) names -- the newest unsealed one, or a new one -- rotated now
 * when it is due (the server was down across a boundary).  Sets
 * g.db_pattern and g.db_path. */
static apr_status_t find_live(apr_pool_t *pconf, server_rec *s,
                              const char *at)
{
    srv_conf_t *msc = srv_conf(s);
    apr_int64_t now = mtls_now_us();
    char live[MAX_PATH_LEN], err[512];
    mtls_store_t *st;

    g.db_pattern = g.db_path;
    if (!mtls_store_find_live(g.db_pattern, live, sizeof(live))) {
        if (mtls_store_name(g.db_pattern, now, live, sizeof(live)) != 0) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                         " MTLSAuditDatabase %s (%s): cannot name a file",
                         g.db_pattern, at);
            return APR_EINVAL;
        }
        g.db_path = apr_pstrdup(pconf, live);
        return APR_SUCCESS;
    }
    g.db_path = apr_pstrdup(pconf, live);
    if (mtls_store_open(live, 0, DEFAULT_BUSY_MS, &st, err, sizeof(err))
        != SQLITE_OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s: %s", live, err);
        return APR_EGENERAL;
    }
    mtls_store_set_key(st, g.key.key ? &g.key : NULL);
    if (mtls_store_rotate_due(st, msc->rotate, msc->rotate_size, now)) {
        char next[MAX_PATH_LEN];
        if (mtls_store_name(g.db_pattern, now, next, sizeof(next)) != 0
            || mtls_store_rotate(st, next, err, sizeof(err)) != SQLITE_OK) {
            /* Written on: the next write past the boundary tries again. */
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, MTLS_LOG_TAG
                         " cannot rotate %s at start (MTLSAuditRotate %s): "
                         "%s", live, msc->rotate_at, err);
        }
        else {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, MTLS_LOG_TAG
                         " %s was due for rotation (MTLSAuditRotate %s): "
                         "sealed, recording goes on in %s", live,
                         msc->rotate_at, mtls_store_path(st));
            g.db_path = apr_pstrdup(pconf, mtls_store_path(st));
        }
    }
    /* The sealed file's summaries and hash: recorded here if its sealer
     * is done within 2 s, else finished by the first child that writes
     * (mtls_store_finish_previous); the start does not wait for a fill
     * of minutes, and no thread of ours lives on into the fork. */
    mtls_store_close(st);
    return APR_SUCCESS;
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog,
                       apr_pool_t *ptemp, server_rec *s)
{
    srv_conf_t *msc = srv_conf(s);
    server_rec *v;
    const char *dir, *err, *at, *audited;
    apr_status_t rv;
    char errbuf[256];
    mtls_store_t *st;
    struct stat sb;
    int created;
    (void)plog;

    g.main_server = s;
    mtls_log_set(log_to_httpd, NULL);
    /* mod_ssl's post_config, before this one, called ssl_init_server for
     * every server it gave TLS: On (written here or inherited from the
     * server config) audits those; an On written in a virtual host
     * without TLS is refused, as check_config does from the tree. */
    g.any_engine = 0;
    audited = NULL;
    for (v = s; v; v = v->next) {
        srv_conf_t *sc = srv_conf(v);
        sc->audit = sc->engine == 1 && sc->tls;
        if (sc->audit) {
            const char *at_v = v->defn_name
                ? apr_psprintf(ptemp, "%s:%u", v->defn_name,
                               v->defn_line_number) : "the server config";
            g.any_engine = 1;
            audited = apr_psprintf(ptemp, "%s%s%s (%s)", audited ? audited
                                   : "", audited ? ", " : "",
                                   v->server_hostname ? v->server_hostname
                                   : "", at_v);
        }
        else if (sc->engine == 1 && v->is_virtual && sc->engine_here) {
            no_tls_error(s, v, sc);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        sc->ocsp_cfg = find_ocsp(ptemp, v);
    }
    {
        module *ssl = ap_find_linked_module("mod_ssl.c");
        g.ssl_module = ssl ? ssl->module_index : -1;
    }
    /* The first pass only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG
        || !g.any_engine) {
        return OK;
    }
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, MTLS_LOG_TAG " auditing "
                 "the TLS handshakes of: %s", audited);
    g.db_path = db_path_of(pconf, msc, &at);
    mtls_chain_key_clear(&g.key);
    if (msc->key_file
        && mtls_chain_key_load(msc->key_file, &g.key, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditChainKey %s: %s", msc->key_file, err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    dir = ap_make_dirstr_parent(ptemp, g.db_path);
    /* check_config refused a directory the run user cannot write; one we
     * create is given to it below, never one that was there. */
    created = stat(dir, &sb) != 0;
    if ((rv = make_private_dir(ptemp, dir)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s (%s): cannot create the directory "
                     "%s", g.db_path, at, dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g.db_pattern = NULL;
    if (msc->rotate > 0 && find_live(pconf, s, at) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (mtls_store_open(g.db_path, 0, DEFAULT_BUSY_MS, &st, errbuf,
                        sizeof(errbuf)) != SQLITE_OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, MTLS_LOG_TAG
                     " MTLSAuditDatabase %s: %s", g.db_path, errbuf);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    mtls_store_close(st);
    /* Children run as the run user: the directory and file are theirs,
     * and nobody else's. */
    if (geteuid() == 0) {
        const char *wal = apr_pstrcat(ptemp, g.db_path, "-wal", NULL);
        const char *shm = apr_pstrcat(ptemp, g.db_path, "-shm", NULL);
        if ((created && chown(dir, ap_unixd_config.user_id,
                              ap_unixd_config.group_id))
            || chown(g.db_path, ap_unixd_config.user_id,
                     ap_unixd_config.group_id)) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, MTLS_LOG_TAG
                         " cannot give %s to the run user", g.db_path);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        /* Left behind by a crash, they would lock the children out. */
        if (chown(wal, ap_unixd_config.user_id, ap_unixd_config.group_id)
            && errno != ENOENT) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, MTLS_LOG_TAG
                         " cannot give %s to the run user", wal);
        }
        if (chown(shm, ap_unixd_config.user_id, ap_unixd_config.group_id)
            && errno != ENOENT) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, MTLS_LOG_TAG
                         " cannot give %s to the run user", shm);
        }
    }
    if (created) {
        chmod(dir, 0750);
    }
    chmod(g.db_path, 0640);
    if (!g.slots) {
        shared_slots(s);
    }
    /* Each vhost's row in the metrics, by name: the same row after a
     * restart that keeps the name. */
    for (v = s; v; v = v->next) {
        srv_conf_t *sc = srv_conf(v);
        sc->vhost_ix = sc->audit ? mtls_slots_vhost(g.slots,
                                                    v->server_hostname) : -1;
    }
    if (open_mirror(pconf, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    write_event(s, first_start(s) ? "start" : "reload", NULL, ptemp);
    apr_pool_cleanup_register(pconf, s, parent_cleanup,
                              apr_pool_cleanup_null);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, MTLS_LOG_TAG " auditing to %s "
                 "(mod_mtls_audit %s, %s)", g.db_path, MTLS_VERSION,
                 OpenSSL_version(OPENSSL_VERSION));
    return OK;
}

static apr_status_t child_cleanup(void *data)
{
    mtls_writer_t *w = g.writer;
    (void)data;

    g.writer = NULL;
    mtls_writer_stop(w);
    return APR_SUCCESS;
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    srv_conf_t *msc = srv_conf(s);
    mtls_writer_conf_t wc;
    char err[256];

    g.pid = (int)getpid();
    if (!g.any_engine || !g.db_path) {
        return;
    }
    memset(&wc, 0, sizeof(wc));
    wc.path = g.db_path;
    wc.store_flags = msc->store_certs == 0 ? MTLS_STORE_NO_DER : 0;
    wc.busy_timeout_ms = msc->busy_ms > 0 ? msc->busy_ms : DEFAULT_BUSY_MS;
    wc.key = g.key.key ? &g.key : NULL;
    wc.queue_max = msc->queue_size > 0 ? msc->queue_size : DEFAULT_QUEUE;
    wc.flush_ms = msc->flush_ms > 0 ? msc->flush_ms : DEFAULT_FLUSH_MS;
    wc.batch_max = BATCH_MAX;
    wc.retries = WRITE_RETRIES;
    wc.pid = g.pid;
    wc.anchor_s = msc->anchor_s >= 0 ? msc->anchor_s : DEFAULT_ANCHOR_S;
    wc.slots = g.slots;
    wc.mirror_fd = g.mirror_fd;
    wc.mirror_format = g.mirror_format;
    if (g.db_pattern) {
        wc.rotate = msc->rotate;
        wc.rotate_size = msc->rotate_size;
        wc.pattern = g.db_pattern;
    }
    g.metrics = mtls_slots_metrics(g.slots, NULL);     /* until a slot */
    if (mtls_writer_start(&wc, &g.writer, err, sizeof(err)) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, MTLS_LOG_TAG " cannot "
                     "start the writer on %s: %s", g.db_path, err);
        return;
    }
    g.metrics = mtls_writer_metrics(g.writer);
    if (err[0]) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, MTLS_LOG_TAG " cannot "
                     "open %s yet (%s): records are counted as lost until it "
                     "can be", g.db_path, err);
    }
    apr_pool_cleanup_register(pchild, NULL, child_cleanup,
                              apr_pool_cleanup_null);
}

static void register_hooks(apr_pool_t *p)
{
    static const char *const after_ssl[] = { "mod_ssl.c", NULL };
    (void)p;

    /* Our ex_data slots must exist before mod_ssl's post_config calls
     * init_server; once per process is enough. */
    if (g.ssl_idx < 0) {
        g.ssl_idx = SSL_get_ex_new_index(0, "mod_mtls_audit", NULL, NULL,
                                         NULL);
        g.ctx_idx = SSL_CTX_get_ex_new_index(0, "mod_mtls_audit", NULL,
                                             NULL, NULL);
    }

    /* Creates the database and opens the mirror; after mod_ssl so that its
     * configuration is complete. */
    ap_hook_post_config(post_config, after_ssl, NULL, APR_HOOK_MIDDLE);
    /* Refuses a configuration that cannot audit, at start and at
     * configtest alike. */
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* Starts this child's writer: after the switch to the run user. */
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    /* Refuses requests on connections we failed to record (fail closed);
     * first, so nothing else runs for them. */
    ap_hook_post_read_request(post_read_request, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    /* Records each request once its status and size are final. */
    ap_hook_log_transaction(log_transaction, NULL, NULL, APR_HOOK_MIDDLE);
    /* SetHandler mtls-audit-metrics: the Prometheus text format. */
    ap_hook_handler(metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* The same figures on mod_status's page and in its ?auto form. */
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
    /* Reads why mod_ssl's OCSP check failed, while it runs (see DESIGN). */
    ap_hook_error_log(error_log_hook, NULL, NULL, APR_HOOK_MIDDLE);
    /* mod_ssl's hooks: one per SSL_CTX at start-up, one per connection
     * before its handshake. */
    APR_OPTIONAL_HOOK(ssl, init_server, ssl_init_server, NULL, NULL,
                      APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, pre_handshake, ssl_pre_handshake, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(mtls_audit) = {
    STANDARD20_MODULE_STUFF,
    NULL,               /* per-directory config: none */
    NULL,
    create_srv,         /* per-server config */
    merge_srv,
    cmds,
    register_hooks,
    /* Every vhost gets its own merged config, even one that sets none of
     * our directives: tls, audit and verify_cfg are per vhost (without
     * this flag such vhosts share the main server's struct). */
    AP_MODULE_FLAG_ALWAYS_MERGE
};
