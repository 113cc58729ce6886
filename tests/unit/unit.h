/* Shared helpers of the unit tests. */
#ifndef MTLS_UNIT_H
#define MTLS_UNIT_H

#include <openssl/x509.h>

#include "mtls_core.h"
#include "mtls_cert.h"
#include "mtls_chain.h"
#include "mtls_store.h"
#include "mtls_writer.h"

extern char unit_dir[256];

void add_cert_tests(void);
void add_chain_tests(void);
void add_store_tests(void);
void add_writer_tests(void);
void add_json_tests(void);
void add_policy_tests(void);

/* A certificate made with OpenSSL for the tests.  subject is a list of
 * "field", "value" pairs ending in NULL (UTF-8); key "ec" or "rsa";
 * issuer_key signs it (NULL: self-signed); sans a comma list for
 * X509V3_EXT_conf_nid or NULL.  Free with X509_free. */
X509 *unit_cert(const char *const *subject, const char *key_kind,
                long serial, const char *not_before, const char *not_after,
                const char *sans, EVP_PKEY **key_out);

/* A fresh database path in the scratch directory. */
const char *unit_db(const char *name);

/* A handshake item with a certificate (owned by the item). */
mtls_item_t *unit_handshake(X509 *leaf, int outcome);

#endif
