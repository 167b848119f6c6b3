#ifndef AIRLOCK_FILES_H
#define AIRLOCK_FILES_H

/// fts(3), which Swift's Glibc module does not export (FileSystem.allocatedSize walks with it).
#include <fts.h>

/// openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
/// RESOLVE_NO_XDEV: opens `path` below the directory `dirfd` without following any symlink on
/// the way (not even in the last component) and without crossing a mount point. Used to read
/// directories a guest controls (the sandbox's clone) without being led outside them.
/// Image layers are written through it too. `flags` are open(2) flags; O_CLOEXEC and
/// O_NOFOLLOW are added; `mode` applies with O_CREAT. Returns the fd or -errno (-ELOOP for a
/// symlink, -EXDEV for an escape).
int airlock_open_beneath(int dirfd, const char *path, int flags, unsigned int mode);

/// O_PATH, which Swift's Glibc module does not export (it needs _GNU_SOURCE).
enum { AIRLOCK_O_PATH = 010000000 };

/// copy_file_range(2) of up to `length` bytes from the current offsets, retrying EINTR.
/// Returns the bytes copied (0 at the end of `in`) or -errno.
long long airlock_copy_file_range(int in, int out, long long length);

#endif
