#define _GNU_SOURCE
#include "airlock_guest_init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int proc_mounted = 0;

/// The Swift runtime reads /proc/self/exe while it starts, before main: as PID 1 of a fresh
/// VM there is no /proc yet, and without it the runtime aborts ("Unable to obtain Swift runtime
/// path"). This constructor runs first and mounts it. Only linked into airlock-guest.
/// It also turns transparent huge pages off for PID 1, before any thread exists: the guest
/// kernel's THP mode is "always", and the agent's idle thread stacks each took a 2 MB page
/// (4 of its 6 MB). The processes it starts get them back (airlock_spawn_options.huge_pages).
__attribute__((constructor(101))) static void airlock_guest_before_runtime(void) {
    if (getpid() != 1) return;
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    mkdir("/proc", 0555);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) proc_mounted = 1;
}

int airlock_guest_proc_mounted(void) { return proc_mounted; }

int airlock_guest_open_direct(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    return fd >= 0 ? fd : -errno;
}

int airlock_guest_flush_block_device(int fd) {
    return ioctl(fd, BLKFLSBUF, 0) == 0 ? 0 : -errno;
}

int airlock_guest_reseed(const void *bytes, int size) {
    if (size < 0 || size > 256) return -EINVAL;
    struct rand_pool_info *pool = malloc(sizeof *pool + (size_t)size);
    if (!pool) return -ENOMEM;
    pool->entropy_count = size * 8;
    pool->buf_size = size;
    memcpy(pool->buf, bytes, (size_t)size);
    int result = 0;
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        result = -errno;
    } else {
        if (ioctl(fd, RNDADDENTROPY, pool) != 0 || ioctl(fd, RNDRESEEDCRNG) != 0) result = -errno;
        close(fd);
    }
    free(pool);
    return result;
}
