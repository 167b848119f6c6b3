#ifndef AIRLOCK_OCI_H
#define AIRLOCK_OCI_H

#include <stddef.h>

/// fsetxattr(2) / fgetxattr(2) / flistxattr(2) / lgetxattr(2), retrying EINTR; 0 / the size, or -errno.
int airlock_oci_fsetxattr(int fd, const char *name, const void *value, size_t size);
long airlock_oci_fgetxattr(int fd, const char *name, void *value, size_t size);
long airlock_oci_flistxattr(int fd, char *list, size_t size);
long airlock_oci_lgetxattr(const char *path, const char *name, void *value, size_t size);

/// makedev(3) (a macro in glibc): the kernel's 64-bit encoding of a device number.
unsigned long long airlock_oci_makedev(unsigned int major, unsigned int minor);

#endif
