#ifndef AIRLOCK_SHIM_H
#define AIRLOCK_SHIM_H

#include <malloc.h>
#include <sys/types.h>
#include "airlock_files.h"
#include "airlock_net.h"
#include "airlock_oci.h"

/// Flags for airlock_spawn.
enum {
    /// Start the child in its own session (setsid), so terminal signals don't reach it.
    AIRLOCK_SPAWN_SETSID = 1 << 0,
    /// Have the kernel SIGKILL the child when the spawning thread's process dies.
    AIRLOCK_SPAWN_PDEATHSIG = 1 << 1,
};

/// fork + execve with what posix_spawn cannot do (PR_SET_PDEATHSIG). In the child only
/// async-signal-safe calls run: setsid, prctl, dup2, close_range, execve. `path` must be an
/// absolute path (resolve PATH before calling). File descriptors other than the three given
/// are closed at exec. A file descriptor of -1 leaves that stream as it is in the parent.
///
/// Returns the child's pid, or -errno when fork or exec failed (exec errors are reported
/// back through a close-on-exec pipe, so a missing binary is an error here, not a dead child).
pid_t airlock_spawn(const char *path, char *const argv[], char *const envp[],
                    int stdin_fd, int stdout_fd, int stderr_fd, int flags);

/// One step of a mount namespace's set-up (`airlock_spawn_options.mounts`). Paths are
/// absolute; the last component of each is opened with O_NOFOLLOW (a symlink there fails with
/// ELOOP) and the mount is made through the descriptor.
enum {
    /// Bind `source` (with the mounts below it) onto `target`.
    AIRLOCK_MOUNT_BIND = 0,
    /// Bind `source` onto `target` likewise, then make that mount read-only (keeping the flags
    /// the kernel locks, such as nosuid and nodev; mounts below it keep their own).
    AIRLOCK_MOUNT_BIND_READ_ONLY = 1,
    /// An empty read-only tmpfs on the directory `target` (`source` unused).
    AIRLOCK_MOUNT_EMPTY_DIRECTORY = 2,
};

struct airlock_spawn_mount {
    const char *source;
    const char *target;
    int kind;
};

/// One resource limit (`airlock_spawn_options.rlimits`): RLIMIT_* with its soft and hard value.
struct airlock_spawn_rlimit {
    int resource;
    unsigned long long soft;
    unsigned long long hard;
};

/// A path a Landlock ruleset lets the child reach (`airlock_spawn_options.landlock`).
enum {
    /// Read files, list directories, run programs.
    AIRLOCK_LANDLOCK_READ = 1 << 0,
    /// Also create, write, truncate, remove, rename; use device ioctls.
    AIRLOCK_LANDLOCK_WRITE = 1 << 1,
};

struct airlock_landlock_rule {
    const char *path;
    int access;
};

/// What else the child does before exec (the guest agent; the VMM's helpers on the host).
struct airlock_spawn_options {
    /// chroot into this directory first (NULL: no chroot).
    const char *root;
    /// chdir here after the chroot (NULL: stay).
    const char *cwd;
    /// Make stdin (fd 0, a terminal) the controlling terminal; implies a new session.
    int controlling_terminal;
    /// Set PR_SET_NO_NEW_PRIVS.
    int no_new_privs;
    /// Switch to uid/gid (and drop supplementary groups) when set_ids is non-zero.
    int set_ids;
    unsigned int uid;
    unsigned int gid;
    /// When `mount_count` > 0: a mount namespace of the child's own (with a user namespace
    /// that maps only the caller's uid and gid to themselves when the caller is not root, so no
    /// privilege is needed), every mount made private, then these steps in order.
    const struct airlock_spawn_mount *mounts;
    int mount_count;
    /// Limits set (setrlimit) after the mounts, before exec; each no higher than the caller's.
    const struct airlock_spawn_rlimit *rlimits;
    int rlimit_count;
    /// When `landlock_count` > 0 and the kernel has Landlock: the child can reach only these
    /// paths (and what is beneath them) through the file system, and can neither connect to
    /// abstract Unix sockets nor signal processes outside its domain (ABI 6 and later). A path
    /// that does not exist is left out. On a kernel without Landlock nothing is applied (see
    /// airlock_landlock_abi).
    const struct airlock_landlock_rule *landlock;
    int landlock_count;
    /// A seccomp filter (`struct sock_filter` instructions, as libseccomp exports them) loaded
    /// last before exec, after PR_SET_NO_NEW_PRIVS (which it implies); NULL for none.
    const void *seccomp_filter;
    /// Its size in bytes.
    unsigned long seccomp_filter_size;
    /// Allow transparent huge pages in the child again (PR_SET_THP_DISABLE 0, which fork and
    /// exec would otherwise pass on): the guest agent turns them off for itself only.
    int huge_pages;
};

/// airlock_spawn with options. When `path` has no slash, it is searched in the PATH given in
/// `envp` (inside the new root), not in the caller's environment.
/// When it fails, `*failed_step` (if not NULL) names the step: "setsid", "chroot", "chdir",
/// "exec", … (a static string).
pid_t airlock_spawn_ex(const char *path, char *const argv[], char *const envp[],
                       int stdin_fd, int stdout_fd, int stderr_fd, int flags,
                       const struct airlock_spawn_options *options, const char **failed_step);

/// The kernel's Landlock ABI version (0 when it has none, or it is disabled).
int airlock_landlock_abi(void);

/// finit_module(2): load a kernel module from an open file. Returns 0 or -errno.
int airlock_finit_module(int fd);

/// TIOCSWINSZ on a terminal. Returns 0 or -errno.
int airlock_set_window_size(int fd, unsigned short rows, unsigned short columns);

/// TIOCGWINSZ; rows and columns are 0 when unknown. Returns 0 or -errno.
int airlock_get_window_size(int fd, unsigned short *rows, unsigned short *columns);

/// A new pseudo-terminal pair of the given size, both ends close-on-exec; the slave is not
/// made anyone's controlling terminal. Returns 0 or -errno.
int airlock_open_pty(unsigned short rows, unsigned short columns, int *master, int *slave);

/// pipe2(O_CLOEXEC). Returns 0 or -errno.
int airlock_pipe(int fds[2]);

/// The host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW over ~`milliseconds`.
/// A TCG guest needs it (tsc_early_khz=) or its boot hangs calibrating against absent timers.
unsigned long airlock_tsc_khz(unsigned int milliseconds);

/// This machine's own vsock context id (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock): in a
/// guest with a virtio-vsock device, the guest's CID. Returns the CID, 0xFFFFFFFF
/// (VMADDR_CID_ANY) when no transport is bound (the vsock module is loaded but there is no
/// device), or -errno (cast) when /dev/vsock cannot be opened; callers compare against the
/// CIDs they accept, so any failure reads as "no vsock".
long long airlock_vsock_local_cid(void);

/// sync, then reboot(RB_POWER_OFF). Returns -errno when not allowed (not PID 1 / no privilege).
int airlock_power_off(void);

#endif
