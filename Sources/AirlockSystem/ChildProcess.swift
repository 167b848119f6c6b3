import CShim

#if canImport(Glibc)
import Glibc
#endif

/// Short-lived helper programs: version probes (run with a deadline and bounded output) and
/// filters fed from airlock (`tar2sqfs`).
public enum ChildProcess {
    public struct Output: Sendable {
        public var status: Int32
        /// stdout and stderr interleaved, at most `limit` bytes.
        public var text: String
    }

    public enum Failure: Error, Sendable, CustomStringConvertible {
        case spawn(path: String, errno: Int32)
        case timedOut(path: String, after: Duration)

        public var description: String {
            switch self {
            case .spawn(let path, let code): "cannot run \(path): \(errorText(code))"
            case .timedOut(let path, let duration): "\(path) did not finish within \(duration.text)"
            }
        }
    }

    /// Runs `path` (absolute) with `arguments`, stdin from /dev/null, and returns its exit status
    /// and output. Kills it with SIGKILL at the deadline.
    public static func capture(
        _ path: String, _ arguments: [String], environment: [String: String] = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"],
        timeout: Duration = .seconds(5), limit: Int = 64 << 10
    ) throws(Failure) -> Output {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw .spawn(path: path, errno: errno) }
        // The child only gets these through dup2; mark them so no other child inherits them.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let pid = spawn(path, arguments, environment: environment, stdin: devNull, output: fds[1])
        close(fds[1])
        if devNull >= 0 { close(devNull) }
        guard pid > 0 else {
            close(fds[0])
            throw .spawn(path: path, errno: -pid)
        }
        defer { close(fds[0]) }

        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        let deadline = ContinuousClock.now + timeout
        var timedOut = false
        while true {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                timedOut = true
                break
            }
            var poller = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining.milliseconds, 1000)) + 1)
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if bytes.count < limit { bytes += buffer[0..<min(n, limit - bytes.count)] }
        }
        if timedOut { kill(pid, SIGKILL) }
        let status = Syscall.waitStatus(pid)
        if timedOut { throw .timedOut(path: path, after: timeout) }
        return Output(status: ExitStatus(waitStatus: status).code, text: String(decoding: bytes, as: UTF8.self))
    }

    /// Runs `path` with `arguments`, its stdin a pipe that `input` writes to (on the calling
    /// thread; the pipe is closed when it returns or throws), its output written to `log`.
    /// Returns the exit status (128 + the signal when one ended it) once it has exited. An
    /// error `input` throws is rethrown after that when the child succeeded; when it failed,
    /// its status (and log) tell more than the broken pipe `input` met. Blocking.
    public static func feed(
        _ path: String, _ arguments: [String], log: String, environment: [String: String] = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"],
        input: (Int32) throws -> Void
    ) throws -> Int32 {
        var fds: [Int32] = [0, 0]
        guard airlock_pipe(&fds) == 0 else { throw Failure.spawn(path: path, errno: errno) }
        let logFD = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        let pid = spawn(path, arguments, environment: environment, stdin: fds[0], output: logFD)
        close(fds[0])
        if logFD >= 0 { close(logFD) }
        guard pid > 0 else {
            close(fds[1])
            throw Failure.spawn(path: path, errno: -pid)
        }
        // A child that exits early closes the pipe: writes then fail with EPIPE, not a signal.
        signal(SIGPIPE, SIG_IGN)
        var inputError: (any Error)?
        do {
            try input(fds[1])
        } catch {
            inputError = error
        }
        close(fds[1])
        let code = ExitStatus(waitStatus: Syscall.waitStatus(pid)).code
        if code == 0, let inputError { throw inputError }
        return code
    }

    /// `airlock_spawn` with PDEATHSIG, stdout and stderr both on `output`: the pid or -errno.
    private static func spawn(_ path: String, _ arguments: [String], environment: [String: String], stdin: Int32, output: Int32) -> pid_t {
        withCStrings([path] + arguments) { argv in
            withCStrings(environment.map { "\($0.key)=\($0.value)" }.sorted()) { envp in
                airlock_spawn(path, argv, envp, stdin, output, output, Int32(AIRLOCK_SPAWN_PDEATHSIG))
            }
        }
    }
}
