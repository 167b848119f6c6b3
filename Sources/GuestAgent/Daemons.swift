import AirlockSystem
import CShim
import GuestLink

#if canImport(Glibc)
import Glibc
#endif

/// `[daemons.*]`: processes the VM runs beside its sessions, as the Rust airlock's daemons do.
///
/// Each starts once the root is built, before the first session, in the root as the agent's
/// user, in a session of its own, with stdin on /dev/null and its output appended to
/// `/airlock/daemons/<name>/stdout.log` and `stderr.log` in the root (emptied at each boot, kept
/// across restarts). When it ends it is started again, `restart = "always"` whatever its exit
/// and `"on-failure"` only after a failure, up to `max_restarts` times (0: no limit), waiting one
/// second more before each restart than before the last. Before power-off every daemon gets its
/// signal, and SIGKILL after its timeout (0: none).
actor Daemons {
    static let shared = Daemons()
    static let logDirectory = "/airlock/daemons"

    private var order: [String] = []
    private var specs: [String: SetupSpec.Daemon] = [:]
    private var statuses: [String: DaemonStatus] = [:]
    private var supervisors: [Task<Void, Never>] = []
    private var stopping = false

    func start(_ daemons: [SetupSpec.Daemon], user: UInt32, group: UInt32) {
        for daemon in daemons where specs[daemon.name] == nil {
            order.append(daemon.name)
            specs[daemon.name] = daemon
            statuses[daemon.name] = DaemonStatus(name: daemon.name, state: .running)
            supervisors.append(Task { await self.supervise(daemon, user: user, group: group) })
        }
        if !daemons.isEmpty { System.log("daemons: " + daemons.map(\.name).joined(separator: ", ")) }
    }

    var all: [DaemonStatus] { order.compactMap { statuses[$0] } }

    private func supervise(_ daemon: SetupSpec.Daemon, user: UInt32, group: UInt32) async {
        let directory = RootBuilder.root + Self.logDirectory + "/" + daemon.name
        var restarts: UInt32 = 0
        var fresh = true
        while !stopping {
            let started = Self.spawn(daemon, directory: directory, truncate: fresh, user: user, group: group)
            fresh = false
            let code: Int32
            switch started {
            case .success(let pid):
                statuses[daemon.name]?.pid = pid
                statuses[daemon.name]?.state = .running
                code = await Reaper.shared.wait(for: pid).code
                statuses[daemon.name]?.pid = 0
            case .failure(let error):
                System.log("daemon \(daemon.name): \(error)")
                code = 127
            }
            statuses[daemon.name]?.lastExit = code
            if stopping { break }
            if daemon.restart == .onFailure && code == 0 {
                statuses[daemon.name]?.state = .exited
                return
            }
            if daemon.maxRestarts > 0 && restarts >= daemon.maxRestarts {
                System.log("daemon \(daemon.name): exit \(code), not restarted after \(restarts) restarts")
                statuses[daemon.name]?.state = .failed
                return
            }
            restarts += 1
            statuses[daemon.name]?.restarts = restarts
            statuses[daemon.name]?.state = .restarting
            try? await Task.sleep(for: .seconds(Int(restarts)))
        }
        statuses[daemon.name]?.state = .stopped
    }

    private static func spawn(_ daemon: SetupSpec.Daemon, directory: String, truncate: Bool, user: UInt32, group: UInt32) -> Result<
        pid_t, any Error
    > {
        do {
            try FileSystem.makeDirectories(directory)
            let flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (truncate ? O_TRUNC : 0)
            let output = open(directory + "/stdout.log", flags, 0o644)
            let errors = open(directory + "/stderr.log", flags, 0o644)
            let input = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { for fd in [output, errors, input] where fd >= 0 { close(fd) } }
            guard output >= 0, errors >= 0, input >= 0 else { throw SystemError.last("open", directory) }
            var options = airlock_spawn_options()
            if user != 0 || group != 0 {
                options.set_ids = 1
                options.uid = user
                options.gid = group
            }
            do {
                return .success(
                    try ProcessRunner.spawn(
                        daemon.arguments, environment: daemon.environment, stdin: input, stdout: output, stderr: errors, options: options,
                        root: RootBuilder.root, workingDirectory: daemon.workingDirectory, flags: Int32(AIRLOCK_SPAWN_SETSID)))
            } catch {
                _ = try? Syscall.writeAll(errors, Array("airlock: \(error)\n".utf8), subject: "stderr.log")
                throw error
            }
        } catch {
            return .failure(error)
        }
    }

    /// Sends each running daemon its signal, then SIGKILL to those still running after their
    /// timeout; returns when all have ended.
    func stopAll() async {
        guard !stopping else { return }
        stopping = true
        for supervisor in supervisors { supervisor.cancel() }  // ends the waits between restarts
        let started = ContinuousClock.now
        var killed: Set<String> = []
        for name in order {
            if let pid = statuses[name]?.pid, pid > 0, let signal = specs[name]?.signal { kill(-pid, signal) }
        }
        while order.contains(where: { (statuses[$0]?.pid ?? 0) > 0 }) {
            for name in order where !killed.contains(name) {
                guard let pid = statuses[name]?.pid, pid > 0, let timeout = specs[name]?.timeout, timeout > 0,
                    ContinuousClock.now - started >= .seconds(Int(timeout))
                else { continue }
                System.log("daemon \(name): still running \(timeout) s after its signal; killed")
                kill(-pid, SIGKILL)
                killed.insert(name)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        for supervisor in supervisors { await supervisor.value }
        if !order.isEmpty { System.log("daemons stopped") }
    }
}
