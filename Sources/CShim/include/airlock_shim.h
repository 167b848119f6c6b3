#ifndef AIRLOCK_SHIM_H
#define AIRLOCK_SHIM_H

#include <sys/types.h>

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

#endif
