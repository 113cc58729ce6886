/*
 * libFuzzer target: a DER certificate, as a client could present it, turned
 * into the text we store (mtls_cert_info_der: fingerprint, RFC 2253 names,
 * serial, SANs, key, signature algorithm, validity).  Hostile input must
 * never crash or leak; text must come out NUL-terminated.
 */
#include <stdint.h>
#include <string.h>

#include "mtls_cert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mtls_cert_info_t ci;

    if (mtls_cert_info_der(data, (long)size, &ci) == 0) {
        /* Touch every string so the sanitizers see any overrun. */
        volatile size_t n = strlen(ci.sha256_hex);
        if (ci.subject_dn) n += strlen(ci.subject_dn);
        if (ci.issuer_dn) n += strlen(ci.issuer_dn);
        if (ci.serial) n += strlen(ci.serial);
        if (ci.san) n += strlen(ci.san);
        n += strlen(ci.key_type) + strlen(ci.sig_alg);
        (void)n;
        mtls_cert_info_clear(&ci);
    }
    return 0;
}
