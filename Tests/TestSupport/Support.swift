import AirlockSystem
import CShim
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The test fixtures (stand-in servers, probes, image builders) in Tests/TestSupport/Fixtures.
public enum TestFixtures {
    /// `AIRLOCK_TEST_FIXTURES` when set (the bundle run as another user from a copy), else the
    /// checkout's.
    public static let directory =
        ProcessInfo.processInfo.environment["AIRLOCK_TEST_FIXTURES"].map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    public static func path(_ name: String) -> URL { directory.appendingPathComponent(name) }
}

/// Runs the built `airlock` binary as a user would, in temporary projects.
public enum CLI {
    /// The executable SwiftPM built beside the test bundle.
    public static var binary: String {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("airlock").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return "airlock"
    }

    public struct Run {
        public var status: Int32
        public var stdoutData: Data
        public var stderr: String
        public var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
    }

    /// The environment airlock runs with in a test of `directory`: the caller's, but with the
    /// user's configuration layers in the project's `.xdg` and `.home` (a developer's own
    /// `~/.airlock/config.toml` or `~/.config/airlock/config.toml` never reaches a test), and
    /// the cache where it was (kernels, images and boot snapshots are reused across tests).
    public static func environment(for directory: URL) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        if environment["XDG_CACHE_HOME"] == nil { environment["XDG_CACHE_HOME"] = (environment["HOME"] ?? NSHomeDirectory()) + "/.cache" }
        environment["HOME"] = directory.appendingPathComponent(".home").path
        environment["XDG_CONFIG_HOME"] = directory.appendingPathComponent(".xdg").path
        return environment
    }

    public static func run(_ arguments: [String], in directory: URL, environment extra: [String: String] = [:], stdin: Data? = nil) throws -> Run {
        var environment = environment(for: directory)
        environment["NO_COLOR"] = "1"
        for (key, value) in extra { environment[key] = value }
        let result = try Spawned.run([binary] + arguments, directory: directory.path, environment: environment, stdin: stdin.map { [UInt8]($0) })
        return Run(status: result.status, stdoutData: Data(result.stdout), stderr: String(decoding: result.stderr, as: UTF8.self))
    }

    public static func project(files: [String: String]) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".git/info"), withIntermediateDirectories: true)
        for (name, text) in files {
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return directory
    }

    /// Starts airlock without waiting for it (stdin from /dev/null, output discarded).
    public static func launch(_ arguments: [String], in directory: URL, environment extra: [String: String] = [:], stderr: URL? = nil) throws
        -> Process
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var environment = environment(for: directory)
        for (key, value) in extra { environment[key] = value }
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        if let stderr {
            _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: stderr)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        // As a user's shell starts it: SIGINT and SIGQUIT at their defaults, even when the
        // tests run as a background job (which inherits them ignored, as airlock then would).
        signal(SIGINT, SIG_DFL)
        signal(SIGQUIT, SIG_DFL)
        try process.run()
        return process
    }

    /// Waits until the sandbox's session is up (its state file names the VMM and a session
    /// answers); returns the VMM's pid.
    @discardableResult
    public static func waitUntilRunning(_ project: URL, name: String, process: Process, timeout: Double = 120) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        let stateFile = project.appendingPathComponent(".airlock/\(name)/state")
        var lastExec: Run?
        while Date() < deadline {
            guard process.isRunning else {
                throw NotRunning(what: "airlock exited with status \(process.terminationStatus)", project: project, name: name)
            }
            if let text = try? String(contentsOf: stateFile, encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("vmm_pid=") }),
                let pid = Int32(line.dropFirst("vmm_pid=".count))
            {
                lastExec = try? run(["exec", "--name", name, "--", "true"], in: project)
                if lastExec?.status == 0 { return pid }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let exec = lastExec.map { "the last exec ended \($0.status): \($0.stderr.suffix(500))" } ?? "no state file with vmm_pid"
        throw NotRunning(what: "not running after \(Int(timeout)) s; \(exec)", project: project, name: name)
    }

    /// A sandbox that never came up, with the end of its console log.
    public struct NotRunning: Error, CustomStringConvertible {
        public var description: String

        init(what: String, project: URL, name: String) {
            let console = (try? String(contentsOf: project.appendingPathComponent(".airlock/\(name)/console.log"), encoding: .utf8)) ?? ""
            description = "sandbox \(name): \(what)\n--- console.log (end) ---\n\(console.suffix(3000))"
        }
    }

    /// Runs each argument list at the same moment, each on a thread of its own (the calls
    /// block), and returns their results in order (nil for one that could not be run).
    public static func runConcurrently(_ commands: [[String]], in directory: URL, environment: [String: String] = [:]) -> [Run?] {
        let results = ResultsBox(count: commands.count)
        let done = DispatchGroup()
        for (index, arguments) in commands.enumerated() {
            done.enter()
            Thread.detachNewThread {
                results.set(index, try? run(arguments, in: directory, environment: environment))
                done.leave()
            }
        }
        done.wait()
        return results.values
    }

    /// Starts `run` on a thread of its own; the returned function waits for its result.
    public static func runInBackground(_ arguments: [String], in directory: URL, environment: [String: String] = [:]) -> @Sendable () -> Run? {
        let result = ResultsBox(count: 1)
        let done = DispatchGroup()
        done.enter()
        Thread.detachNewThread {
            result.set(0, try? run(arguments, in: directory, environment: environment))
            done.leave()
        }
        return {
            done.wait()
            return result.values[0]
        }
    }

    /// A process that has ended but not yet been reaped by its parent.
    public static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }
}

/// Each slot written by one thread, all read after every thread is done.
final class ResultsBox: @unchecked Sendable {
    // @unchecked: writes go through `lock`; `values` is read after the DispatchGroup wait.
    private let lock = NSLock()
    private var slots: [CLI.Run?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: CLI.Run?) {
        lock.lock()
        slots[index] = value
        lock.unlock()
    }

    var values: [CLI.Run?] {
        lock.lock()
        defer { lock.unlock() }
        return slots
    }
}

/// Written by one reader thread, read after the semaphore says it is done.
public final class DataBox: @unchecked Sendable {
    public var data = Data()
}
/// Runs a program with pipes for stdin, stdout and stderr, all drained with poll(2), and reaps
/// it with waitpid. Written here rather than with Foundation's Process, whose exit monitoring
/// on Linux can miss a child that ends at once (the test then hangs in waitUntilExit).
public enum Spawned {
    public struct Result {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: [UInt8]
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String

        public init(description: String) {
            self.description = description
        }
    }

    public static func run(_ arguments: [String], directory: String, environment: [String: String], stdin input: [UInt8]?, timeout: Double = 600)
        throws
        -> Result
    {
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard airlock_pipe(&inPipe) == 0, airlock_pipe(&outPipe) == 0, airlock_pipe(&errPipe) == 0 else { throw Failure(description: "pipe failed") }
        let path = arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/" + arguments[0]
        var options = airlock_spawn_options()
        let pid = withCStrings(arguments) { argv in
            withCStrings(environment.map { "\($0.key)=\($0.value)" }) { envp in
                directory.withCString { cwd in
                    options.cwd = cwd
                    return airlock_spawn_ex(path, argv, envp, inPipe[0], outPipe[1], errPipe[1], 0, &options, nil)
                }
            }
        }
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        guard pid > 0 else {
            for fd in [inPipe[1], outPipe[0], errPipe[0]] { close(fd) }
            throw Failure(description: "cannot run \(path): \(String(cString: strerror(-pid)))")
        }
        var pending = input ?? []
        var writeFD: Int32 = inPipe[1]
        if pending.isEmpty {
            close(writeFD)
            writeFD = -1
        } else {
            _ = fcntl(writeFD, F_SETFL, fcntl(writeFD, F_GETFL) | O_NONBLOCK)
        }
        var result = Result(status: -1, stdout: [], stderr: [])
        var open: [Int32: Bool] = [outPipe[0]: true, errPipe[0]: true]
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while open.values.contains(true) || writeFD >= 0 {
            guard Date() < deadline else {
                kill(pid, SIGKILL)
                break
            }
            var fds = open.filter(\.value).map { pollfd(fd: $0.key, events: Int16(POLLIN), revents: 0) }
            if writeFD >= 0 { fds.append(pollfd(fd: writeFD, events: Int16(POLLOUT), revents: 0)) }
            guard poll(&fds, nfds_t(fds.count), 1000) > 0 else { continue }
            for entry in fds where entry.revents != 0 {
                if entry.fd == writeFD {
                    let n = pending.withUnsafeBytes { write(writeFD, $0.baseAddress, $0.count) }
                    if n > 0 { pending.removeFirst(n) }
                    if n < 0 && errno != EAGAIN || pending.isEmpty {
                        close(writeFD)
                        writeFD = -1
                    }
                    continue
                }
                let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if entry.fd == outPipe[0] { result.stdout += buffer[0..<n] } else { result.stderr += buffer[0..<n] }
                } else if n == 0 || errno != EINTR {
                    open[entry.fd] = false
                }
            }
        }
        for fd in [outPipe[0], errPipe[0]] { close(fd) }
        if writeFD >= 0 { close(writeFD) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        result.status = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return result
    }
}

/// HTTP and TLS servers on 127.0.0.1 (Fixtures/test-servers.py) for the network tests.
public struct TestServers {
    public let process: Process
    public let input: Pipe
    public let http: Int
    public let tls: Int
    /// A Unix socket echo server (echoes until EOF, then shuts its side).
    public let unix: String
    /// The made-up CA of the TLS server's certificate (for `AIRLOCK_TEST_ONLY_UPSTREAM_CA`).
    public let ca: String
    /// What the TLS server received, a line per request: host, path, authorization.
    public var received: String { (ca as NSString).deletingLastPathComponent + "/received.log" }

    public static func start(in directory: URL) throws -> TestServers {
        let script = TestFixtures.path("test-servers.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script.path]
        process.currentDirectoryURL = directory
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line says where they listen (read byte by byte: no buffering past it).
        var line = [UInt8]()
        while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") { line.append(byte) }
        var values: [String: String] = [:]
        for part in String(decoding: line, as: UTF8.self).split(separator: " ") {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { values[String(pair[0])] = String(pair[1]) }
        }
        guard let http = values["http"].flatMap({ Int($0) }), let tls = values["tls"].flatMap({ Int($0) }), let unix = values["unix"],
            let ca = values["ca"]
        else {
            process.terminate()
            throw Spawned.Failure(description: "the test servers did not start (said: \(String(decoding: line, as: UTF8.self)))")
        }
        return TestServers(process: process, input: input, http: http, tls: tls, unix: unix, ca: ca)
    }

    public func stop() {
        try? input.fileHandleForWriting.close()
        process.terminate()
    }
}
