import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// What `airlock ps` shows about a running sandbox, written by the process that runs it.
public struct SandboxState: Sendable, Equatable {
    public var pid: Int32
    public var vmmPID: Int32
    public var backend: String
    public var accelerator: String
    public var startedAt: Int64
    public var project: String

    public init(pid: Int32, vmmPID: Int32, backend: String, accelerator: String, startedAt: Int64, project: String) {
        self.pid = pid
        self.vmmPID = vmmPID
        self.backend = backend
        self.accelerator = accelerator
        self.startedAt = startedAt
        self.project = project
    }

    /// `key=value` lines: trivial to read, no parser to trust.
    public var text: String {
        "pid=\(pid)\nvmm_pid=\(vmmPID)\nbackend=\(backend)\naccelerator=\(accelerator)\nstarted_at=\(startedAt)\nproject=\(project)\n"
    }

    public init?(text: String) {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        guard let pid = values["pid"].flatMap(Int32.init), let vmm = values["vmm_pid"].flatMap(Int32.init),
            let started = values["started_at"].flatMap(Int64.init)
        else { return nil }
        self.init(
            pid: pid, vmmPID: vmm, backend: values["backend"] ?? "?", accelerator: values["accelerator"] ?? "?",
            startedAt: started, project: values["project"] ?? "")
    }
}

/// The exclusive lock a running sandbox holds; released by the kernel if the holder dies.
public final class SandboxLock: Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Takes the lock, or returns nil when another process holds it (the sandbox is running).
    public static func acquire(_ path: String) throws(SandboxError) -> SandboxLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SandboxError("cannot open the sandbox's lock", cause: SystemError.last("open", path)) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            close(fd)
            if code == EWOULDBLOCK { return nil }
            throw SandboxError("cannot take the sandbox's lock", cause: SystemError("flock", path, errno: code))
        }
        return SandboxLock(fd: fd)
    }

    /// Whether some process holds the lock at `path` (without taking it).
    public static func isHeld(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) != 0 { return errno == EWOULDBLOCK }
        flock(fd, LOCK_UN)
        return false
    }
}
