import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// The Rust virtiofsd serving a VM's shares over vhost-user, one process per share, run the
/// same way for both backends (Cloud Hypervisor always; QEMU when virtiofsd is installed).
///
/// Each runs as a `VMMProcess` (own session, PDEATHSIG, minimal environment) with fixed flags;
/// it is ready once its socket file exists, never probed by connecting (virtiofsd takes its
/// first connection as its VMM's and serves no other). It ends by itself when its VMM goes;
/// `stop` signals the ones that do not and reaps them all.
public enum Virtiofsd {
    /// One share and the socket its virtiofsd listens on.
    public struct Served: Sendable, Equatable {
        public var share: MachineSpec.Share
        public var socket: String

        public init(share: MachineSpec.Share, socket: String) {
            self.share = share
            self.socket = socket
        }
    }

    /// The socket for the share at `index` of `MachineSpec.shares`.
    public static func socketPath(runtimeDirectory: String, index: Int) -> String {
        runtimeDirectory + "/fs\(index).sock"
    }

    /// The arguments for one share. Fixed flags only: nothing here comes from the user but the
    /// directory itself, passed as `--shared-dir=` so no path can read as an option. The
    /// default sandbox (`namespace`: pivot_root into the share, own pid/net namespaces) stays
    /// on; `--announce-submounts` gives each file system under the share its own device number
    /// (the host root shares cross mount points).
    public static func arguments(socket: String, share: MachineSpec.Share) -> [String] {
        var arguments = [
            "--socket-path=\(socket)",
            "--shared-dir=\(share.hostPath)",
            "--cache=auto",
            "--announce-submounts",
            "--log-level=warn",
        ]
        if share.readOnly { arguments.append("--readonly") }
        return arguments
    }

    /// Starts `binary` once per share, each ready (its socket exists) before the next starts,
    /// its output appended to `log`. When one fails, those already started are ended and the
    /// error names the share and carries the log's last lines.
    public static func start(_ binary: String, serving shares: [Served], log: String, timeout: Duration = .seconds(5)) async throws -> [ProcessWaiter]
    {
        var started: [ProcessWaiter] = []
        do {
            for served in shares {
                unlink(served.socket)
                let process = try VMMProcess.spawn(
                    binary, arguments(socket: served.socket, share: served.share), log: log,
                    views: served.share.view.map { [($0, served.share.hostPath)] } ?? [], jail: .fileServer)
                started.append(process)
                try await waitForSocketFile(served.socket, of: process, timeout: timeout) {
                    MachineError("virtiofsd for \(served.share.hostPath) \($0)", consoleTail: FileSystem.tailLines(of: log))
                }
            }
            return started
        } catch {
            await stop(started)
            throw error
        }
    }

    /// Ends the processes: each gets a moment to go by itself (its VMM has gone), then SIGTERM,
    /// then SIGKILL; all reaped.
    public static func stop(_ processes: [ProcessWaiter]) async {
        for process in processes {
            if await !VMMProcess.exited(process, within: .milliseconds(500)) { await VMMProcess.terminate(process, grace: .seconds(1)) }
        }
    }

    /// Waits until `path` is a socket; fails when the process exits first or the deadline passes.
    public static func waitForSocketFile(
        _ path: String, of process: ProcessWaiter, timeout: Duration, failure: (String) -> MachineError
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            var info = stat()
            if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK { return }
            if process.hasExited { throw failure("exited before creating its socket \(path)") }
            if ContinuousClock.now > deadline { throw failure("did not create its socket \(path) within \(timeout.text)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
