#include "airlock_assets.h"

extern const unsigned char airlock_kernel_start[], airlock_kernel_end[];
extern const unsigned char airlock_initramfs_start[], airlock_initramfs_end[];
extern const char airlock_kernel_digest[], airlock_initramfs_digest[];

const unsigned char *airlock_kernel_data(size_t *size) {
    *size = (size_t)(airlock_kernel_end - airlock_kernel_start);
    return airlock_kernel_start;
}

const unsigned char *airlock_initramfs_data(size_t *size) {
    *size = (size_t)(airlock_initramfs_end - airlock_initramfs_start);
    return airlock_initramfs_start;
}

const char *airlock_kernel_sha256(void) { return airlock_kernel_digest; }
const char *airlock_initramfs_sha256(void) { return airlock_initramfs_digest; }
