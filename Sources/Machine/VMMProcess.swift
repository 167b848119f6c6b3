import AirlockSystem
import CShim

#if canImport(Glibc)
import Glibc
#endif

/// How both backends run their helper processes (the VMM itself, virtiofsd): in a session of
/// their own, with `PDEATHSIG` (they die with airlock, even after `kill -9`), in a `VMMJail`
/// (a seccomp filter, no new privileges, limits), a minimal environment, stdin from /dev/null
/// and their output appended to a log; ended by signals to the process and its group and
/// always reaped.
public enum VMMProcess {
    /// The environment a helper gets: nothing of the user's.
    static let environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"]

    /// Starts `path` with `arguments` (never through a shell), its stdout and stderr appended
    /// to `log`. With `views`, in a mount namespace of its own where each view is shown at its
    /// mount point.
    public static func spawn(
        _ path: String, _ arguments: [String], log: String, views: [(ShareView, at: String)] = [], jail: VMMJail = .vmm
    ) throws -> ProcessWaiter {
        let logFD = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { if logFD >= 0 { close(logFD) } }
        return try spawn(path, arguments, output: logFD, views: views, jail: jail)
    }

    /// The same with stdout and stderr to `output` (a `ConsoleRecorder`'s pipe).
    public static func spawn(
        _ path: String, _ arguments: [String], output logFD: Int32, views: [(ShareView, at: String)] = [], jail: VMMJail = .vmm
    ) throws -> ProcessWaiter {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        let failed = FailedStep()
        // Built before the fork (libseccomp allocates; the child may only make system calls).
        let program = try jail.program()
        let limits = jail.limits()
        let rules = jail.landlockRules()
        do {
            // ProcessWaiter runs the closure on its own thread and returns only after it ran,
            // so the descriptors closed by the `defer` above are still open while it runs.
            return try ProcessWaiter {
                withCStrings([path] + arguments) { args in
                    withCStrings(environment) { env in
                        program.withUnsafeBytes { filter in
                            limits.withUnsafeBufferPointer { rlimits in
                                let flags = Int32(AIRLOCK_SPAWN_SETSID | AIRLOCK_SPAWN_PDEATHSIG)
                                var options = airlock_spawn_options()
                                options.no_new_privs = 1
                                options.seccomp_filter = filter.baseAddress
                                options.seccomp_filter_size = UInt(filter.count)
                                options.rlimits = rlimits.baseAddress
                                options.rlimit_count = Int32(rlimits.count)
                                return withLandlockRules(rules) { landlock, landlockCount in
                                    options.landlock = landlock
                                    options.landlock_count = landlockCount
                                    guard !views.isEmpty else {
                                        return airlock_spawn_ex(path, args, env, devNull, logFD, logFD, flags, &options, &failed.step)
                                    }
                                    return ShareView.withSpawnMounts(views) { mounts, count in
                                        options.mounts = mounts
                                        options.mount_count = count
                                        return airlock_spawn_ex(path, args, env, devNull, logFD, logFD, flags, &options, &failed.step)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } catch {
            let step = failed.step.map { String(cString: $0) }
            if let step, ["unshare", "uid_map/gid_map", "mount"].contains(step) {
                throw MachineError(
                    "cannot give \(path) a mount namespace of its own for its view of \(views.map(\.0.source).joined(separator: ", ")) (\(step): \(errorText(error.errno)))",
                    hint: "`airlock doctor` says whether this host allows it (user namespaces)")
            }
            if let step, ["seccomp", "setrlimit", "prctl", "landlock"].contains(step) {
                throw MachineError(
                    "cannot jail \(path) (\(step): \(errorText(error.errno)))",
                    hint: "`airlock doctor` says what the VMM jail can apply on this host (seccomp filters)")
            }
            throw MachineError("cannot start \(path)", cause: SystemError(step ?? "spawn", path, errno: error.errno))
        }
    }

    /// Runs `body` with the C form of `rules`, valid only during the call.
    private static func withLandlockRules<R>(
        _ rules: [(path: String, access: Int32)], _ body: (UnsafePointer<airlock_landlock_rule>?, Int32) -> R
    ) -> R {
        let paths = rules.map { strdup($0.path) }
        defer { for path in paths { free(path) } }
        let entries = rules.indices.map { airlock_landlock_rule(path: paths[$0], access: rules[$0].access) }
        return entries.withUnsafeBufferPointer { body($0.baseAddress, Int32($0.count)) }
    }

    /// Where airlock_spawn_ex names the step that failed (a static string), written on the
    /// waiter's thread before `ProcessWaiter.init` returns.
    private final class FailedStep: @unchecked Sendable {
        var step: UnsafePointer<CChar>?
    }

    /// SIGTERM at once, then SIGKILL after `grace`, to the process and its group; then reaped.
    public static func terminate(_ process: ProcessWaiter, grace: Duration) async {
        for signal in [SIGTERM, SIGKILL] {
            if await exited(process, within: signal == SIGTERM ? .zero : grace) { return }
            kill(-process.pid, signal)
            kill(process.pid, signal)
        }
        _ = await process.wait()
    }

    /// Whether the process ends within `duration`. Both racers end on cancellation, so the
    /// group returns as soon as the first is done.
    public static func exited(_ process: ProcessWaiter, within duration: Duration) async -> Bool {
        if process.hasExited { return true }
        if duration == .zero { return false }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { await process.wait() != nil }
            group.addTask {
                try? await Task.sleep(for: duration)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Where a VM's helper processes write (virtiofsd, Cloud Hypervisor): `vmm.log` beside the
    /// console log, which the VMM itself writes.
    public static func log(for spec: MachineSpec) -> String {
        let directory = spec.consoleLog.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (directory.isEmpty ? "." : directory) + "/vmm.log"
    }
}
