import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// PID 1 reaps every process in the VM, orphans included. One thread blocks in
/// `waitpid(-1)`; sessions ask for the status of the processes they spawned. Spawning happens
/// under the same lock, so a process that ends at once is never reaped before it is known.
final class Reaper: @unchecked Sendable {
    // @unchecked: every stored property is read and written only with `mutex` held (`waitAny`
    // is immutable and Sendable).
    static let shared = Reaper(waitAny: Reaper.waitAnyChild)

    /// The next child that ended (pid and wait status), blocking; nil when there is no child
    /// at all. `waitpid(-1)` in the guest; tests script it.
    private let waitAny: @Sendable () -> (pid: pid_t, status: Int32)?

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var spawned: Set<pid_t> = []
    private var finished: [pid_t: ExitStatus] = [:]
    private var waiters: [pid_t: CheckedContinuation<ExitStatus, Never>] = [:]
    private var started = false

    init(waitAny: @escaping @Sendable () -> (pid: pid_t, status: Int32)?) {
        self.waitAny = waitAny
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    /// Runs `spawn` (which returns a pid or -errno) so that the reaper knows the child.
    func spawn(_ spawn: () -> pid_t) -> pid_t {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        startIfNeeded()
        let pid = spawn()
        if pid > 0 {
            spawned.insert(pid)
            pthread_cond_signal(condition)
        }
        return pid
    }

    func wait(for pid: pid_t) async -> ExitStatus {
        await withCheckedContinuation { continuation in
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            if let status = finished.removeValue(forKey: pid) {
                continuation.resume(returning: status)
            } else {
                waiters[pid] = continuation
            }
        }
    }

    private func startIfNeeded() {
        guard !started else { return }
        started = true
        // The Reaper lives for the process (`shared`).
        startThread { self.loop() }
    }

    /// `waitpid(-1)`, retrying EINTR; nil on ECHILD.
    static func waitAnyChild() -> (pid: pid_t, status: Int32)? {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, 0)
            if pid >= 0 { return (pid, status) }
            if errno != EINTR { return nil }
        }
    }

    private func loop() -> Never {
        while true {
            guard let (pid, status) = waitAny() else {
                // No child at all: sleep until one is spawned.
                pthread_mutex_lock(mutex)
                while spawned.isEmpty { pthread_cond_wait(condition, mutex) }
                pthread_mutex_unlock(mutex)
                continue
            }
            pthread_mutex_lock(mutex)
            if spawned.remove(pid) != nil {
                let exit = ExitStatus(waitStatus: status)
                if let waiter = waiters.removeValue(forKey: pid) {
                    waiter.resume(returning: exit)
                } else {
                    finished[pid] = exit
                }
            }
            pthread_mutex_unlock(mutex)
        }
    }
}
