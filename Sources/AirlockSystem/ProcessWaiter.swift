#if canImport(Glibc)
import Glibc
#endif

/// Starts a child process on a thread of its own and waits for it there.
///
/// Both on one dedicated thread, for two reasons: `waitpid` blocks (the cooperative pool must
/// not), and `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the
/// process: a VMM forked from a pool thread would be killed whenever the pool retires that
/// thread. This thread lives exactly as long as the child.
public final class ProcessWaiter: @unchecked Sendable {
    // @unchecked: `pid`, `status` and `waiters` are only touched with `mutex` held (`pid` is
    // written once by the thread before `init` returns and read-only afterwards).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let started = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var spawnResult: pid_t?
    private var status: Int32?
    private var waiters: [Int: CheckedContinuation<Int32?, Never>] = [:]
    private var nextWaiter = 0
    private let spawn: @Sendable () -> pid_t

    /// The child's pid.
    public var pid: pid_t { spawnResult ?? -1 }

    /// Runs `spawn` (returning a pid, or -errno) on the new thread; throws when it failed.
    public init(spawning spawn: @escaping @Sendable () -> pid_t) throws(SystemError) {
        self.spawn = spawn
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(started, nil)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(
            &thread, nil,
            { argument in
                // `argument` is the waiter retained just above; released when the thread ends.
                let waiter = Unmanaged<ProcessWaiter>.fromOpaque(argument!).takeRetainedValue()
                waiter.run()
                return nil
            }, box)
        pthread_detach(thread)
        pthread_mutex_lock(mutex)
        while spawnResult == nil { pthread_cond_wait(started, mutex) }
        let result = spawnResult ?? -1
        pthread_mutex_unlock(mutex)
        guard result > 0 else { throw SystemError("spawn", "", errno: -result) }
    }

    private func run() {
        let pid = spawn()
        pthread_mutex_lock(mutex)
        spawnResult = pid
        pthread_cond_signal(started)
        pthread_mutex_unlock(mutex)
        guard pid > 0 else { return }
        let raw = Syscall.waitStatus(pid)
        pthread_mutex_lock(mutex)
        status = raw
        let resumed = waiters.values
        waiters = [:]
        pthread_mutex_unlock(mutex)
        for waiter in resumed { waiter.resume(returning: raw) }
    }

    /// The wait status once the process has ended, or nil if the waiting task is cancelled
    /// first (so a race against a deadline ends when the deadline does).
    public func wait() async -> Int32? {
        pthread_mutex_lock(mutex)
        nextWaiter += 1
        let id = nextWaiter
        pthread_mutex_unlock(mutex)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int32?, Never>) in
                pthread_mutex_lock(mutex)
                if let status {
                    pthread_mutex_unlock(mutex)
                    continuation.resume(returning: status)
                } else if Task.isCancelled {
                    pthread_mutex_unlock(mutex)
                    continuation.resume(returning: nil)
                } else {
                    waiters[id] = continuation
                    pthread_mutex_unlock(mutex)
                }
            }
        } onCancel: {
            pthread_mutex_lock(mutex)
            let waiter = waiters.removeValue(forKey: id)
            pthread_mutex_unlock(mutex)
            waiter?.resume(returning: nil)
        }
    }

    /// Whether it has ended (non-blocking).
    public var hasExited: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return status != nil
    }
}
