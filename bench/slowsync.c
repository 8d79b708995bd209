/* LD_PRELOAD shim for `make bench` (BENCH_SLOW_SYNC_US): every fsync(2)/fdatasync(2) of the
 * processes under test sleeps SLOW_SYNC_US microseconds (default 2000) first, to show what a
 * hook costs on a host whose disk syncs slowly (ZFS sync writes, a busy RAID). It slows both
 * sides of the comparison alike: op-agent's SQLite and the baseline's sqlite3 CLI. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static void pause_us(void) {
    const char *e = getenv("SLOW_SYNC_US");
    long us = e ? atol(e) : 2000;
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}
int fsync(int fd) { static int (*r)(int); if (!r) r = dlsym(RTLD_NEXT, "fsync"); pause_us(); return r(fd); }
int fdatasync(int fd) { static int (*r)(int); if (!r) r = dlsym(RTLD_NEXT, "fdatasync"); pause_us(); return r(fd); }
