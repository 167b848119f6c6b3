#include "airlock_guest_init.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int proc_mounted = 0;

/// The Swift runtime reads /proc/self/exe while it starts, before main: as PID 1 of a fresh
/// VM there is no /proc yet, and without it the runtime aborts ("Unable to obtain Swift runtime
/// path"). This constructor runs first and mounts it. Only linked into airlock-guest.
__attribute__((constructor(101))) static void airlock_guest_mount_proc(void) {
    if (getpid() != 1) return;
    mkdir("/proc", 0555);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) proc_mounted = 1;
}

int airlock_guest_proc_mounted(void) { return proc_mounted; }
