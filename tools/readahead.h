/*
 * readahead.h -- a VFS named "mtls-ra" over the default one, for
 * connections that read a database file from end to end (the report,
 * verify's chain walks): it reads the main database file in 256 KB
 * windows instead of a page at a time.  Open with
 * "file:PATH?mode=ro&vfs=mtls-ra" (or mtls_store_open's MTLS_STORE_SCAN)
 * after mtls_readahead_register() returned SQLITE_OK.
 */
#ifndef MTLS_READAHEAD_H
#define MTLS_READAHEAD_H

#include <sqlite3.h>

#include "mtls_store.h"

#define MTLS_RA_VFS MTLS_STORE_SCAN_VFS

/* Register the VFS once (not as the default).  SQLITE_OK or an error. */
int mtls_readahead_register(void);

#endif /* MTLS_READAHEAD_H */
