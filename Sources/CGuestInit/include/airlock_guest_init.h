#ifndef AIRLOCK_GUEST_INIT_H
#define AIRLOCK_GUEST_INIT_H

/// Whether the early constructor mounted /proc (the guest's PID 1 only).
int airlock_guest_proc_mounted(void);

#endif
