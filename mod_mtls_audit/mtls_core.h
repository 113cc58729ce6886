/*
 * mtls_core.h -- the core of mod_mtls_audit, shared by the module and the
 * mtls-audit tool.
 *
 * DESIGN
 * The core knows APR, OpenSSL and SQLite, never httpd.  The module (glue in
 * mod_mtls_audit.c) watches mod_ssl's handshakes and fills an mtls_item_t;
 * it hands the item to the per-child writer (mtls_writer.c), which owns it
 * from then on.  The writer turns certificates into text (mtls_cert.c) and
 * stores batches of items in SQLite (mtls_store.c), each row chained to the
 * previous one of its table by a hash (mtls_chain.c).  The tool links the
 * same files to read, verify and report.
 *
 * The core never calls ap_log_*: it reports through mtls_log(), which the
 * module points at the error log and the tool at stderr.
 */
#ifndef MTLS_CORE_H
#define MTLS_CORE_H

#include <apr.h>
#include <apr_pools.h>
#include <openssl/x509.h>

#define MTLS_VERSION      "0.1.0"
#define MTLS_LOG_TAG      "mtls_audit:"   /* prefix of every message we log */

/* Log levels, in the order of syslog/httpd. */
#define MTLS_LOG_ERR      3
#define MTLS_LOG_WARNING  4
#define MTLS_LOG_NOTICE   5
#define MTLS_LOG_INFO     6
#define MTLS_LOG_DEBUG    7

typedef void mtls_log_fn(void *baton, int level, const char *msg);

/* Point the core's logging at fn (NULL: stderr).  Not thread-safe: call
 * once at start-up. */
void mtls_log_set(mtls_log_fn *fn, void *baton);
void mtls_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Outcomes, as stored in handshakes.outcome. */
typedef enum {
    MTLS_OUT_ACCEPTED = 1,
    MTLS_OUT_REJECTED = 2,
    MTLS_OUT_NO_CERT  = 3,
    MTLS_OUT_FAILED   = 4,
    MTLS_OUT_ABORTED  = 5
} mtls_outcome_e;

/* Verify modes, as mod_ssl's SSLVerifyClient names them. */
typedef enum {
    MTLS_VM_NONE = 0,
    MTLS_VM_REQUIRE = 1,
    MTLS_VM_OPTIONAL = 2,
    MTLS_VM_OPTIONAL_NO_CA = 3
} mtls_verify_mode_e;

/* What started a handshake record. */
typedef enum {
    MTLS_HS_INITIAL = 0,
    MTLS_HS_RENEGOTIATION = 1,
    MTLS_HS_POST_HANDSHAKE = 2
} mtls_hs_kind_e;

/* The revocation check of a handshake (handshakes.revocation_method and
 * revocation_status, schema 3).  0: none ran / nothing known. */
typedef enum {
    MTLS_REV_NONE = 0,
    MTLS_REV_CRL  = 1,               /* SSLCARevocationCheck, in OpenSSL */
    MTLS_REV_OCSP = 2                /* SSLOCSPEnable, in mod_ssl */
} mtls_rev_method_e;

typedef enum {
    MTLS_RS_NONE = 0,
    MTLS_RS_GOOD,
    MTLS_RS_REVOKED,
    MTLS_RS_UNKNOWN,                 /* the responder or the CRLs know
                                        nothing of the certificate */
    MTLS_RS_UNREACHABLE,             /* no answer from the responder */
    MTLS_RS_BAD_RESPONSE,            /* an answer (or a CRL) that failed
                                        its checks */
    MTLS_RS_ERROR                    /* the check failed, cause not logged */
} mtls_rev_status_e;

/* "crl", "ocsp", "good", "revoked", ...; NULL for 0. */
const char *mtls_rev_method_name(int method);
const char *mtls_rev_status_name(int status);

const char *mtls_outcome_name(int outcome);
const char *mtls_verify_mode_name(int mode);
const char *mtls_tls_version_name(int version);  /* NULL if unknown */
const char *mtls_alert_name(int alert);          /* NULL if unknown */

/* Microseconds: wall clock since the epoch, and a monotonic clock. */
apr_int64_t mtls_now_us(void);
apr_int64_t mtls_mono_us(void);

/*
 * A link ties the requests of a connection to the row of its handshake.
 * The module creates it with the handshake record; the writer sets rowid
 * when it stores that record, and reads it for the requests that follow.
 * All of a connection's items go through one writer in order, so rowid is
 * only ever touched by the writer thread; the reference count is atomic
 * (the streams of an HTTP/2 connection take references on several threads
 * at once, each while the connection still holds its own).
 */
typedef struct mtls_link {
    volatile apr_uint32_t refs;     /* references: the conn and queued items */
    apr_int64_t           rowid;    /* handshakes.id once stored, else 0 */
    struct mtls_link     *next;     /* kept for reuse (mtls_writer_item) */
} mtls_link_t;

mtls_link_t *mtls_link_new(void);
/* l (memory of a link no longer referenced) as new: one reference. */
mtls_link_t *mtls_link_init(mtls_link_t *l);
mtls_link_t *mtls_link_ref(mtls_link_t *l);
/* Drop a reference; 1 when it was the last (the caller then owns l's
 * memory), else 0. */
int          mtls_link_drop(mtls_link_t *l);
/* Drop a reference, freeing l with the last. */
void         mtls_link_unref(mtls_link_t *l);

typedef enum {
    MTLS_ITEM_HANDSHAKE = 1,
    MTLS_ITEM_REQUEST   = 2,
    MTLS_ITEM_EVENT     = 3
} mtls_item_type_e;

/*
 * The certificates of a handshake, as DER copied on the handshake path: the
 * X509 objects OpenSSL parsed then die with the connection, freed by the
 * thread that made them (freed in the writer thread, every free went to
 * another thread's malloc arena: a third of the writer's time, measured).
 * der holds n certificates back to back, len[i] bytes each (0: one that
 * could not be encoded).  Entry 0 is the leaf when leaf is set; the chain
 * as presented (leaf first) is entries chain_from..n-1, chain_from -1 when
 * it is not known (a resumed session keeps only the leaf).  At most
 * MTLS_CERTS_KEPT of a presented chain are kept; chain_length counts all.
 */
#define MTLS_CERTS_KEPT 64

typedef struct {
    unsigned char *der;             /* the item's memory (mtls_item_mem) or
                                       malloc'd; NULL when n is 0 */
    int            n;
    int            leaf;
    int            chain_from;
    apr_uint32_t   len[MTLS_CERTS_KEPT + 1];    /* last: only len[0..n)
                                                   is ever read */
} mtls_certs_t;

struct mtls_item;

/* Copy leaf (may be NULL) and the presented chain (may be NULL; when its
 * first certificate is leaf, the leaf is stored once) into the handshake
 * item's certs, replacing what they held, in the item's own memory.
 * Returns 0, or -1 out of memory (the certs are then empty). */
int  mtls_certs_set(struct mtls_item *item, X509 *leaf,
                    STACK_OF(X509) *chain);

/* Where entry i of c starts in c->der. */
const unsigned char *mtls_certs_der(const mtls_certs_t *c, int i);

typedef struct {
    apr_int64_t time_us;            /* wall clock at the first byte received */
    int   client_port;
    int   local_port;
    int   tls_version;              /* wire code, 0 when not negotiated */
    int   resumed;
    int   outcome;                  /* mtls_outcome_e */
    int   kind;                     /* mtls_hs_kind_e */
    int   verify_mode;              /* mtls_verify_mode_e */
    long  verify_result;            /* X509_V_*, -1 when nothing was verified */
    int   verify_depth;             /* -1 when nothing was verified */
    int   alert;                    /* fatal alert sent, -1 none */
    int   alert_received;           /* fatal alert received, -1 none */
    int   has_leaf;                 /* the client's certificate was seen */
    int   chain_length;             /* certificates the client presented */
    apr_int64_t handshake_us;       /* first byte to terminal event, -1 n/a */
    apr_int64_t verify_us;          /* time in X509_verify_cert, -1 n/a */
    int   pid;
    int   revocation_method;        /* mtls_rev_method_e */
    int   revocation_status;        /* mtls_rev_status_e */
    /* From here on, text and lengths of which only what is set is read:
     * mtls_item_init clears the strings' first bytes, not the kilobyte
     * they take (a reused item comes cold from the writer's core). */
    char  server_name[256];         /* vhost that owns the record */
    char  sni[256];                 /* "" when the client sent none */
    char  client_addr[64];
    char  cipher[64];               /* "" when not negotiated */
    mtls_certs_t certs;             /* their DER (mtls_certs_set); last */
} mtls_handshake_t;

typedef struct {
    apr_int64_t time_us;            /* request start */
    char  method[32];
    char *path;                     /* without the query string: the item's
                                       memory (mtls_item_mem) or malloc'd */
    int   status;
    apr_int64_t bytes_sent;
    apr_int64_t duration_us;
} mtls_request_t;

typedef struct {
    apr_int64_t time_us;
    char  kind[16];                 /* start | reload | stop | gap |
                                       reopen | access (events.kind) */
    int   pid;
    char *server_version;           /* malloc'd or NULL */
    apr_int64_t lost;               /* gap: records lost */
    apr_int64_t gap_start_us;
    apr_int64_t gap_end_us;
    char *detail;                   /* malloc'd or NULL */
} mtls_event_t;

/* One unit of work for the writer; malloc'd, freed by mtls_item_free (or
 * kept by the writer for reuse: mtls_writer_item).  An item keeps a buffer
 * of its own from one use to the next, for the DER of a handshake or the
 * path of a request: the handshake path then copies them without a malloc
 * that the writer would free into another thread's arena. */
typedef struct mtls_item {
    struct mtls_item *next;         /* queue link */
    int               type;         /* mtls_item_type_e */
    mtls_link_t      *link;         /* handshake: the link it sets;
                                       request: the link it reads */
    void             *mem;          /* kept across uses (mtls_item_mem) */
    apr_size_t        mem_cap;
    union {
        mtls_handshake_t hs;
        mtls_request_t   rq;
        mtls_event_t     ev;
    } u;
} mtls_item_t;

/* A zeroed item of the given type; NULL when out of memory. */
mtls_item_t *mtls_item_new(int type);
/* Make item (memory of sizeof(mtls_item_t), from mtls_item_new or zeroed)
 * a zeroed item of type; the memory it keeps stays. */
void         mtls_item_init(mtls_item_t *item, int type);
/* The item's own memory, at least n bytes (grown when smaller, its content
 * then lost), or NULL when out of memory.  One use at a time: the DER of a
 * handshake, or the path of a request. */
void        *mtls_item_mem(mtls_item_t *item, apr_size_t n);
/* Free what item holds (DER and strings malloc'd apart from its memory,
 * its link), not item itself nor its memory, which it keeps if at most
 * MTLS_ITEM_MEM_KEPT bytes. */
#define MTLS_ITEM_MEM_KEPT 4096
void         mtls_item_release(mtls_item_t *item);
void         mtls_item_free(mtls_item_t *item);

/* Copy at most size-1 bytes of src into dst, always terminated. */
void mtls_strlcpy(char *dst, const char *src, apr_size_t size);

#endif /* MTLS_CORE_H */
