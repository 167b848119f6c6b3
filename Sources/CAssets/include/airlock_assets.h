#ifndef AIRLOCK_ASSETS_H
#define AIRLOCK_ASSETS_H

#include <stddef.h>

/// The guest kernel and initramfs linked into the binary by `make release` (empty otherwise),
/// each one zstd frame, and the SHA-256 (64 hex digits) of what each unpacks to.
const unsigned char *airlock_kernel_data(size_t *size);
const unsigned char *airlock_initramfs_data(size_t *size);
const char *airlock_kernel_sha256(void);
const char *airlock_initramfs_sha256(void);

#endif
