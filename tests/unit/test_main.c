/*
 * Unit tests of the core (no httpd): certificates to text, the store, the
 * hash chain, the writer queue.  Certificates are generated here with
 * OpenSSL; databases are real SQLite files in a scratch directory.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_general.h>

#include "unit.h"

char unit_dir[256];

static int quiet_log_count;
static void quiet_log(void *baton, int level, const char *msg)
{
    (void)baton;
    (void)level;
    (void)msg;
    __atomic_add_fetch(&quiet_log_count, 1, __ATOMIC_RELAXED);  /* any thread */
}

int main(void)
{
    int failures;

    apr_initialize();
    snprintf(unit_dir, sizeof(unit_dir), "/tmp/mtls-unit-XXXXXX");
    if (!mkdtemp(unit_dir)) {
        perror("mkdtemp");
        return 2;
    }
    mtls_log_set(quiet_log, NULL);
    if (CU_initialize_registry() != CUE_SUCCESS) {
        return 2;
    }
    add_cert_tests();
    add_chain_tests();
    add_store_tests();
    add_writer_tests();
    add_json_tests();
    add_policy_tests();
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = (int)CU_get_number_of_failures();
    if (CU_get_error() != CUE_SUCCESS) {
        failures++;
    }
    CU_cleanup_registry();
    if (!failures) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", unit_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", unit_dir);
        }
    }
    apr_terminate();
    return failures ? 1 : 0;
}
