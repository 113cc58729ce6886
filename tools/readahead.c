/*
 * readahead.c -- a VFS for the report's read-only connections that reads
 * the main database file in windows of RA_SIZE bytes; see readahead.h.
 *
 * A year's report reads a few gigabytes of pages in file order.  SQLite
 * asks for them one page (4 KB) at a time: on this kind of virtual
 * machine a system call costs more than copying the page it returns, so
 * one pread of 256 KB serves 64 pages.  Pages it does not hold, and every
 * other file (the WAL, its index), go straight to the default VFS.
 *
 * The window is dropped whenever a lock changes (the file's or the WAL
 * index's): within a read transaction the database file's pages that the
 * transaction reads from it do not change (a checkpoint only copies into
 * it frames that every reader sees in the WAL instead), but between two
 * transactions they may.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "readahead.h"

#define RA_SIZE   (256 * 1024)

typedef struct {
    sqlite3_file   base;
    sqlite3_file  *real;        /* the default VFS's file, right after us */
    unsigned char *buf;         /* NULL: not the main database file */
    sqlite3_int64  start;       /* file offset of buf[0] */
    int            len;         /* bytes valid in buf */
} ra_file;

static sqlite3_vfs ra_vfs;
static sqlite3_vfs *ra_real;

#define REAL(f)  (((ra_file *)(f))->real)
#define RM(f)    (REAL(f)->pMethods)

static void ra_drop(sqlite3_file *f)
{
    ((ra_file *)f)->len = 0;
}

static int ra_close(sqlite3_file *f)
{
    ra_file *p = (ra_file *)f;
    int rc = RM(f)->xClose(p->real);

    free(p->buf);
    p->buf = NULL;
    return rc;
}

static int ra_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
    ra_file *p = (ra_file *)f;

    if (p->buf && amt <= RA_SIZE / 4) {
        if (off < p->start || off + amt > p->start + p->len) {
            sqlite3_int64 size, start = off - off % RA_SIZE;
            int len;

            p->len = 0;
            if (RM(f)->xFileSize(p->real, &size) == SQLITE_OK
                && off + amt <= size) {
                len = size - start < RA_SIZE ? (int)(size - start) : RA_SIZE;
                if (off + amt <= start + len
                    && RM(f)->xRead(p->real, p->buf, len, start)
                       == SQLITE_OK) {
                    p->start = start;
                    p->len = len;
                }
            }
        }
        if (off >= p->start && off + amt <= p->start + p->len) {
            memcpy(out, p->buf + (off - p->start), (size_t)amt);
            return SQLITE_OK;
        }
    }
    return RM(f)->xRead(p->real, out, amt, off);
}

static int ra_write(sqlite3_file *f, const void *in, int amt,
                    sqlite3_int64 off)
{
    ra_drop(f);
    return RM(f)->xWrite(REAL(f), in, amt, off);
}

static int ra_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    ra_drop(f);
    return RM(f)->xTruncate(REAL(f), size);
}

static int ra_sync(sqlite3_file *f, int flags)
{
    return RM(f)->xSync(REAL(f), flags);
}

static int ra_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return RM(f)->xFileSize(REAL(f), size);
}

static int ra_lock(sqlite3_file *f, int level)
{
    ra_drop(f);
    return RM(f)->xLock(REAL(f), level);
}

static int ra_unlock(sqlite3_file *f, int level)
{
    ra_drop(f);
    return RM(f)->xUnlock(REAL(f), level);
}

static int ra_check_reserved(sqlite3_file *f, int *out)
{
    return RM(f)->xCheckReservedLock(REAL(f), out);
}

static int ra_file_control(sqlite3_file *f, int op, void *arg)
{
    return RM(f)->xFileControl(REAL(f), op, arg);
}

static int ra_sector_size(sqlite3_file *f)
{
    return RM(f)->xSectorSize(REAL(f));
}

static int ra_device(sqlite3_file *f)
{
    return RM(f)->xDeviceCharacteristics(REAL(f));
}

static int ra_shm_map(sqlite3_file *f, int pg, int pgsz, int extend,
                      void volatile **pp)
{
    return RM(f)->xShmMap(REAL(f), pg, pgsz, extend, pp);
}

static int ra_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    ra_drop(f);
    return RM(f)->xShmLock(REAL(f), offset, n, flags);
}

static void ra_shm_barrier(sqlite3_file *f)
{
    RM(f)->xShmBarrier(REAL(f));
}

static int ra_shm_unmap(sqlite3_file *f, int del)
{
    return RM(f)->xShmUnmap(REAL(f), del);
}

/* No memory mapping through us: SQLite then reads. */
static int ra_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    (void)f;
    (void)off;
    (void)amt;
    *pp = NULL;
    return SQLITE_OK;
}

static int ra_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    (void)f;
    (void)off;
    (void)p;
    return SQLITE_OK;
}

static const sqlite3_io_methods ra_methods = {
    3, ra_close, ra_read, ra_write, ra_truncate, ra_sync, ra_file_size,
    ra_lock, ra_unlock, ra_check_reserved, ra_file_control, ra_sector_size,
    ra_device, ra_shm_map, ra_shm_lock, ra_shm_barrier, ra_shm_unmap,
    ra_fetch, ra_unfetch
};

static int ra_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags)
{
    ra_file *p = (ra_file *)f;
    int rc;

    (void)vfs;
    memset(p, 0, sizeof(*p));
    p->real = (sqlite3_file *)(p + 1);
    rc = ra_real->xOpen(ra_real, name, p->real, flags, out_flags);
    if (rc != SQLITE_OK || !p->real->pMethods) {
        f->pMethods = NULL;     /* SQLite will not close it */
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    if (p->real->pMethods->iVersion < 3) {
        p->real->pMethods->xClose(p->real);
        f->pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    if (flags & SQLITE_OPEN_MAIN_DB) {
        p->buf = malloc(RA_SIZE);       /* none: every read goes through */
    }
    f->pMethods = &ra_methods;
    return SQLITE_OK;
}

/* The rest is the default VFS's. */
static int ra_delete(sqlite3_vfs *v, const char *name, int sync)
{
    (void)v;
    return ra_real->xDelete(ra_real, name, sync);
}

static int ra_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return ra_real->xAccess(ra_real, name, flags, out);
}

static int ra_full_path(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return ra_real->xFullPathname(ra_real, name, n, out);
}

static int ra_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return ra_real->xRandomness(ra_real, n, out);
}

static int ra_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return ra_real->xSleep(ra_real, us);
}

static int ra_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return ra_real->xCurrentTime(ra_real, out);
}

static int ra_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return ra_real->xGetLastError(ra_real, n, out);
}

static int ra_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return ra_real->xCurrentTimeInt64(ra_real, out);
}

static int ra_rc;

static void ra_init(void)
{
    ra_real = sqlite3_vfs_find(NULL);
    if (!ra_real || ra_real->iVersion < 2) {
        ra_rc = SQLITE_ERROR;
        return;
    }
    memset(&ra_vfs, 0, sizeof(ra_vfs));
    ra_vfs.iVersion = 2;
    ra_vfs.szOsFile = (int)sizeof(ra_file) + ra_real->szOsFile;
    ra_vfs.mxPathname = ra_real->mxPathname;
    ra_vfs.zName = MTLS_RA_VFS;
    ra_vfs.xOpen = ra_open;
    ra_vfs.xDelete = ra_delete;
    ra_vfs.xAccess = ra_access;
    ra_vfs.xFullPathname = ra_full_path;
    ra_vfs.xRandomness = ra_random;
    ra_vfs.xSleep = ra_sleep;
    ra_vfs.xCurrentTime = ra_time;
    ra_vfs.xGetLastError = ra_last_error;
    ra_vfs.xCurrentTimeInt64 = ra_time64;
    ra_rc = sqlite3_vfs_register(&ra_vfs, 0);
}

int mtls_readahead_register(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, ra_init);
    return ra_rc;
}
