/*
 * libFuzzer target: what a user types on the mtls-audit command line --
 * dates (--since/--until), counts (--limit, --expiring), addresses and
 * CIDR blocks (--client) -- and the text the reports scan (card numbers in
 * paths, suite names).  The input is split at the first NUL into two
 * strings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

int tool_in_cidr(const char *addr, const char *cidr);
int tool_valid_cidr(const char *cidr);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *a = malloc(size + 1), *b;
    apr_int64_t t;
    long n;
    const char *why;
    char buf[32];

    if (!a) return 0;
    memcpy(a, data, size);
    a[size] = '\0';
    b = a + strlen(a);
    if (b < a + size) b++;          /* second string after the NUL */
    if (parse_time(a, &t) == 0) {
        format_time(t, buf);
    }
    parse_count(a, &n);
    tool_valid_cidr(a);
    tool_in_cidr(a, b);
    tool_in_cidr(b, a);
    has_pan(a);
    grade_suite((int)(size & 0xffff), a, &why);
    cipher_is_aead(b);
    free(a);
    return 0;
}
