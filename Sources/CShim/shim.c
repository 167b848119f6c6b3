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

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static void child_fail(int report_fd) {
    int error = errno;
    ssize_t ignored = write(report_fd, &error, sizeof error);
    (void)ignored;
    _exit(127);
}

pid_t airlock_spawn(const char *path, char *const argv[], char *const envp[],
                    int stdin_fd, int stdout_fd, int stderr_fd, int flags) {
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
        if ((flags & AIRLOCK_SPAWN_SETSID) && setsid() < 0) child_fail(report[1]);
        if (flags & AIRLOCK_SPAWN_PDEATHSIG) {
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(report[1]);
            // The parent may have died before prctl took effect.
            if (getppid() != parent) _exit(137);
        }
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
        execve(path, argv, envp);
        child_fail(report[1]);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        return -fork_errno;
    }
    int child_errno = 0;
    ssize_t n;
    do {
        n = read(report[0], &child_errno, sizeof child_errno);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof child_errno) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -child_errno;
    }
    return pid;
}
