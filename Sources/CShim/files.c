#define _GNU_SOURCE
#include "airlock_files.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int airlock_open_beneath(int dirfd, const char *path, int flags, unsigned int mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(flags | O_CLOEXEC | O_NOFOLLOW);
    if (flags & O_CREAT) how.mode = mode;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    long fd;
    // EAGAIN: the kernel saw a concurrent rename during resolution. Retry a bounded number of
    // times, so a guest renaming in a loop can fail the open but not hang the host.
    int attempts = 0;
    do {
        fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    } while (fd < 0 && (errno == EINTR || (errno == EAGAIN && ++attempts < 64)));
    return fd < 0 ? -errno : (int)fd;
}

long long airlock_copy_file_range(int in, int out, long long length) {
    ssize_t n;
    do {
        n = copy_file_range(in, NULL, out, NULL, (size_t)length, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (long long)n;
}
