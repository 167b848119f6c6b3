#define _GNU_SOURCE
#include "airlock_oci.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

int airlock_oci_fsetxattr(int fd, const char *name, const void *value, size_t size) {
    int result;
    do {
        result = fsetxattr(fd, name, value, size, 0);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

long airlock_oci_fgetxattr(int fd, const char *name, void *value, size_t size) {
    ssize_t result;
    do {
        result = fgetxattr(fd, name, value, size);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : (long)result;
}

long airlock_oci_flistxattr(int fd, char *list, size_t size) {
    ssize_t result;
    do {
        result = flistxattr(fd, list, size);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : (long)result;
}

long airlock_oci_lgetxattr(const char *path, const char *name, void *value, size_t size) {
    ssize_t result;
    do {
        result = lgetxattr(path, name, value, size);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : (long)result;
}

unsigned long long airlock_oci_makedev(unsigned int major, unsigned int minor) {
    return (unsigned long long)makedev(major, minor);
}
