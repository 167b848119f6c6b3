#define _GNU_SOURCE
#include "airlock_shim.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/reboot.h>
#include <time.h>
#include <x86intrin.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vm_sockets.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static const char *const steps[] = {
    "fork", "setsid", "prctl", "dup2", "unshare", "uid_map/gid_map", "mount", "ioctl(TIOCSCTTY)", "chroot", "chdir", "setgroups/setgid/setuid", "setrlimit", "landlock", "seccomp", "exec"};
enum { STEP_FORK, STEP_SETSID, STEP_PRCTL, STEP_DUP2, STEP_UNSHARE, STEP_ID_MAP, STEP_MOUNT, STEP_CTTY, STEP_CHROOT, STEP_CHDIR, STEP_IDS, STEP_RLIMIT, STEP_LANDLOCK, STEP_SECCOMP, STEP_EXEC };

static void child_fail_step(int report_fd, int step) {
    int report[2] = {errno, step};
    ssize_t ignored = write(report_fd, report, sizeof report);
    (void)ignored;
    _exit(127);
}
#define child_fail(fd) child_fail_step(fd, step)

/// "/proc/self/fd/<fd>" into `buffer` (at least 32 bytes). Async-signal-safe.
static const char *fd_path(int fd, char *buffer) {
    static const char prefix[] = "/proc/self/fd/";
    memcpy(buffer, prefix, sizeof prefix - 1);
    char digits[12];
    int count = 0;
    do {
        digits[count++] = (char)('0' + fd % 10);
        fd /= 10;
    } while (fd > 0 && count < 11);
    char *out = buffer + sizeof prefix - 1;
    while (count > 0) *out++ = digits[--count];
    *out = 0;
    return buffer;
}

/// Writes `id id 1` (or `deny`, when `id` is negative) to /proc/self/<file>. Async-signal-safe.
static int write_id_map(const char *file, long id) {
    char line[48];
    int length = 0;
    if (id < 0) {
        memcpy(line, "deny", 4);
        length = 4;
    } else {
        char digits[24];
        int count = 0;
        do {
            digits[count++] = (char)('0' + id % 10);
            id /= 10;
        } while (id > 0);
        for (int copy = 0; copy < 2; copy++) {
            for (int i = count - 1; i >= 0; i--) line[length++] = digits[i];
            line[length++] = ' ';
        }
        line[length++] = '1';
    }
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t written = write(fd, line, (size_t)length);
    int saved = errno;
    close(fd);
    errno = saved;
    return written == length ? 0 : -1;
}

/// The mount flags the kernel locks in a less privileged namespace, as a remount must repeat them.
static unsigned long locked_flags(int fd) {
    struct statvfs info;
    if (fstatvfs(fd, &info) != 0) return 0;
    unsigned long flags = 0;
    if (info.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (info.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (info.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (info.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (info.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (info.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    return flags;
}

/// A mount namespace (and, for a caller that is not root, a user namespace mapping only its
/// own ids) with `mounts` applied. Runs in the forked child; sets `*step` for the report.
static int confine(const struct airlock_spawn_mount *mounts, int count, int *step) {
    uid_t uid = getuid();
    gid_t gid = getgid();
    *step = STEP_UNSHARE;
    if (unshare(CLONE_NEWNS | (uid != 0 ? CLONE_NEWUSER : 0)) != 0) return -1;
    if (uid != 0) {
        *step = STEP_ID_MAP;
        if (write_id_map("/proc/self/setgroups", -1) != 0 || write_id_map("/proc/self/uid_map", (long)uid) != 0 ||
            write_id_map("/proc/self/gid_map", (long)gid) != 0) {
            return -1;
        }
    }
    *step = STEP_MOUNT;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    for (int i = 0; i < count; i++) {
        const struct airlock_spawn_mount *m = &mounts[i];
        char target_path[32], source_path[32];
        int target = open(m->target, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (target < 0) return -1;
        int result = 0;
        if (m->kind == AIRLOCK_MOUNT_EMPTY_DIRECTORY) {
            result = mount("tmpfs", fd_path(target, target_path), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555");
        } else {
            int source = open(m->source, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (source < 0) {
                result = -1;
            } else {
                // Recursive: a bind that left out mounts below would be refused in a user
                // namespace (it could uncover what they cover).
                result = mount(fd_path(source, source_path), fd_path(target, target_path), NULL, MS_BIND | MS_REC, NULL);
                close(source);
            }
            if (result == 0 && m->kind == AIRLOCK_MOUNT_BIND_READ_ONLY) {
                // The new mount, on top of the old descriptor's.
                int mounted = open(m->target, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (mounted < 0) {
                    result = -1;
                } else {
                    result = mount(NULL, fd_path(mounted, target_path), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(mounted), NULL);
                    close(mounted);
                }
            }
        }
        int saved = errno;
        close(target);
        errno = saved;
        if (result != 0) return -1;
    }
    return 0;
}

/// Landlock's uapi as of ABI 6 (Debian 12's headers stop at ABI 2).
struct ruleset_attr {
    unsigned long long handled_access_fs;
    unsigned long long handled_access_net;
    unsigned long long scoped;
};
struct path_beneath_attr {
    unsigned long long allowed_access;
    int parent_fd;
} __attribute__((packed));
enum {
    LL_EXECUTE = 1 << 0, LL_WRITE_FILE = 1 << 1, LL_READ_FILE = 1 << 2, LL_READ_DIR = 1 << 3, LL_REMOVE_DIR = 1 << 4,
    LL_REMOVE_FILE = 1 << 5, LL_MAKE_CHAR = 1 << 6, LL_MAKE_DIR = 1 << 7, LL_MAKE_REG = 1 << 8, LL_MAKE_SOCK = 1 << 9,
    LL_MAKE_FIFO = 1 << 10, LL_MAKE_BLOCK = 1 << 11, LL_MAKE_SYM = 1 << 12, LL_REFER = 1 << 13, LL_TRUNCATE = 1 << 14,
    LL_IOCTL_DEV = 1 << 15,
    LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV,
    LL_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0, LL_SCOPE_SIGNAL = 1 << 1,
};

int airlock_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, 1U /* LANDLOCK_CREATE_RULESET_VERSION */);
    return abi > 0 ? (int)abi : 0;
}

/// Restricts this process (the forked child) to `rules`. Async-signal-safe: system calls only.
static int restrict_paths(const struct airlock_landlock_rule *rules, int count) {
    int abi = airlock_landlock_abi();
    if (abi < 1) return 0;
    unsigned long long handled = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_READ_DIR | LL_REMOVE_DIR | LL_REMOVE_FILE | LL_MAKE_CHAR |
                                 LL_MAKE_DIR | LL_MAKE_REG | LL_MAKE_SOCK | LL_MAKE_FIFO | LL_MAKE_BLOCK | LL_MAKE_SYM;
    if (abi >= 2) handled |= LL_REFER;
    if (abi >= 3) handled |= LL_TRUNCATE;
    if (abi >= 5) handled |= LL_IOCTL_DEV;
    struct ruleset_attr attr = {.handled_access_fs = handled};
    size_t size = sizeof attr.handled_access_fs;
    if (abi >= 6) {
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) return -1;
    const unsigned long long reading = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR;
    for (int i = 0; i < count; i++) {
        int fd = open(rules[i].path, O_PATH | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat info;
        unsigned long long allowed = (rules[i].access & AIRLOCK_LANDLOCK_WRITE) ? handled : reading;
        if (fstat(fd, &info) == 0 && !S_ISDIR(info.st_mode)) allowed &= LL_FILE_RIGHTS;
        struct path_beneath_attr beneath = {.allowed_access = allowed & handled, .parent_fd = fd};
        long added = syscall(SYS_landlock_add_rule, ruleset, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &beneath, 0);
        int saved = errno;
        close(fd);
        if (added != 0) {
            close(ruleset);
            errno = saved;
            return -1;
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
        int saved = errno;
        close(ruleset);
        errno = saved;
        return -1;
    }
    close(ruleset);
    return 0;
}

pid_t airlock_spawn(const char *path, char *const argv[], char *const envp[],
                    int stdin_fd, int stdout_fd, int stderr_fd, int flags) {
    return airlock_spawn_ex(path, argv, envp, stdin_fd, stdout_fd, stderr_fd, flags, NULL, NULL);
}

/// execve, searching `path` in the PATH of `envp` when it has no slash. Stack buffers only.
static void exec_searching(const char *path, char *const argv[], char *const envp[]) {
    if (strchr(path, '/') != NULL) {
        execve(path, argv, envp);
        return;
    }
    const char *search = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    for (char *const *entry = envp; entry && *entry; entry++) {
        if (strncmp(*entry, "PATH=", 5) == 0) {
            search = *entry + 5;
            break;
        }
    }
    size_t name_length = strlen(path);
    int saved = ENOENT;
    const char *start = search;
    for (;;) {
        const char *end = strchr(start, ':');
        size_t dir_length = end ? (size_t)(end - start) : strlen(start);
        char candidate[4096];
        if (dir_length + 1 + name_length + 1 <= sizeof candidate) {
            if (dir_length == 0) {
                memcpy(candidate, path, name_length + 1);
            } else {
                memcpy(candidate, start, dir_length);
                candidate[dir_length] = '/';
                memcpy(candidate + dir_length + 1, path, name_length + 1);
            }
            execve(candidate, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR) saved = errno;
        }
        if (!end) break;
        start = end + 1;
    }
    errno = saved;
}

pid_t airlock_spawn_ex(const char *path, char *const argv[], char *const envp[],
                       int stdin_fd, int stdout_fd, int stderr_fd, int flags,
                       const struct airlock_spawn_options *options, const char **failed_step) {
    int step = STEP_FORK;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    pid_t parent = getpid();

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        // Child: signal dispositions back to default, mask restored, then set-up and exec.
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
        }
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        int want_session = (flags & AIRLOCK_SPAWN_SETSID) || (options && options->controlling_terminal);
        step = STEP_SETSID;
        if (want_session && setsid() < 0) child_fail(report[1]);
        step = STEP_PRCTL;
        if (flags & AIRLOCK_SPAWN_PDEATHSIG) {
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(report[1]);
            // The parent may have died before prctl took effect.
            if (getppid() != parent) _exit(137);
        }
        step = STEP_DUP2;
        int fds[3] = {stdin_fd, stdout_fd, stderr_fd};
        for (int i = 0; i < 3; i++) {
            if (fds[i] >= 0 && fds[i] != i && dup2(fds[i], i) < 0) child_fail(report[1]);
            if (fds[i] == i) {
                int fl = fcntl(i, F_GETFD);
                if (fl >= 0) fcntl(i, F_SETFD, fl & ~FD_CLOEXEC);
            }
        }
        // Everything else closes at exec (the report pipe included, which signals success).
        if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            for (int fd = 3; fd < 65536; fd++) {
                if (fd != report[1]) {
                    int fl = fcntl(fd, F_GETFD);
                    if (fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
                }
            }
        }
        if (options && options->mount_count > 0 && confine(options->mounts, options->mount_count, &step) != 0) child_fail(report[1]);
        if (options) {
            step = STEP_CTTY;
            if (options->controlling_terminal && ioctl(0, TIOCSCTTY, 0) != 0) child_fail(report[1]);
            step = STEP_CHROOT;
            if (options->root && (chroot(options->root) != 0 || chdir("/") != 0)) child_fail(report[1]);
            step = STEP_CHDIR;
            if (options->cwd && chdir(options->cwd) != 0) child_fail(report[1]);
            step = STEP_IDS;
            if (options->set_ids) {
                if (setgroups(0, NULL) != 0) child_fail(report[1]);
                if (setgid(options->gid) != 0) child_fail(report[1]);
                if (setuid(options->uid) != 0) child_fail(report[1]);
            }
            step = STEP_RLIMIT;
            for (int i = 0; i < options->rlimit_count; i++) {
                struct rlimit limit = {.rlim_cur = options->rlimits[i].soft, .rlim_max = options->rlimits[i].hard};
                if (setrlimit(options->rlimits[i].resource, &limit) != 0) child_fail(report[1]);
            }
            step = STEP_PRCTL;
            if (options->huge_pages && prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0) != 0) child_fail(report[1]);
            if ((options->no_new_privs || options->seccomp_filter) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(report[1]);
            step = STEP_LANDLOCK;
            if (options->landlock_count > 0 && restrict_paths(options->landlock, options->landlock_count) != 0) child_fail(report[1]);
            step = STEP_SECCOMP;
            if (options->seccomp_filter) {
                struct sock_fprog program = {.len = (unsigned short)(options->seccomp_filter_size / sizeof(struct sock_filter)), .filter = (struct sock_filter *)options->seccomp_filter};
                if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0) child_fail(report[1]);
            }
        }
        step = STEP_EXEC;
        exec_searching(path, argv, envp);
        child_fail(report[1]);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        return -fork_errno;
    }
    int child_report[2] = {0, 0};
    ssize_t n;
    do {
        n = read(report[0], child_report, sizeof child_report);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof child_report) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (failed_step && child_report[1] >= 0 && child_report[1] <= STEP_EXEC) *failed_step = steps[child_report[1]];
        return -child_report[0];
    }
    return pid;
}

int airlock_finit_module(int fd) {
    return syscall(SYS_finit_module, fd, "", 0) == 0 ? 0 : -errno;
}

int airlock_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size = {.ws_row = rows, .ws_col = columns};
    return ioctl(fd, TIOCSWINSZ, &size) == 0 ? 0 : -errno;
}

int airlock_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size = {0};
    if (ioctl(fd, TIOCGWINSZ, &size) != 0) {
        *rows = 0;
        *columns = 0;
        return -errno;
    }
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

int airlock_open_pty(unsigned short rows, unsigned short columns, int *master, int *slave) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -errno;
    char name[128];
    if (grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, name, sizeof name) != 0) {
        int error = errno;
        close(m);
        return -error;
    }
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        int error = errno;
        close(m);
        return -error;
    }
    struct winsize size = {.ws_row = rows, .ws_col = columns};
    ioctl(m, TIOCSWINSZ, &size);
    *master = m;
    *slave = s;
    return 0;
}

int airlock_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

long long airlock_vsock_local_cid(void) {
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    unsigned int cid = VMADDR_CID_ANY;
    int result = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
    int error = errno;
    close(fd);
    return result == 0 ? (long long)cid : -error;
}

int airlock_power_off(void) {
    sync();
    return reboot(RB_POWER_OFF) == 0 ? 0 : -errno;
}

unsigned long airlock_tsc_khz(unsigned int milliseconds) {
    struct timespec start, now, pause = {.tv_sec = 0, .tv_nsec = (long)milliseconds * 1000000L};
    clock_gettime(CLOCK_MONOTONIC_RAW, &start);
    unsigned long long tsc_start = __rdtsc();
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {}
    unsigned long long tsc_end = __rdtsc();
    clock_gettime(CLOCK_MONOTONIC_RAW, &now);
    double seconds = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    if (seconds <= 0) return 0;
    return (unsigned long)((double)(tsc_end - tsc_start) / seconds / 1000.0 + 0.5);
}
