#ifndef AIRLOCK_GUEST_INIT_H
#define AIRLOCK_GUEST_INIT_H

/// Whether the early constructor mounted /proc (the guest's PID 1 only).
int airlock_guest_proc_mounted(void);

/// Opens `path` read-only with O_DIRECT (reads bypass the page cache). The fd, or -errno.
int airlock_guest_open_direct(const char *path);

/// Drops the page cache of the block device open on `fd` (BLKFLSBUF). A VM restored from a
/// boot snapshot holds blocks its snapshot boot read from a scratch disk. 0 or -errno.
int airlock_guest_flush_block_device(int fd);

/// Mixes `size` (at most 256) bytes into the kernel's entropy pool, credited, and reseeds the
/// CRNG at once (RNDADDENTROPY, RNDRESEEDCRNG): VMs restored from one boot snapshot start with
/// the same CRNG state. 0 or -errno.
int airlock_guest_reseed(const void *bytes, int size);

#endif
