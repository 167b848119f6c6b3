import AirlockSystem
// FoundationEssentials for the JSON encoder only (no ICU).
import FoundationEssentials
import NetworkProxy
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One line of a sandbox's audit trail (`.airlock/<name>/audit.jsonl`).
public struct AuditEvent: Sendable, Codable, Equatable {
    public enum Value: Sendable, Codable, Equatable {
        case text(String)
        case number(Int64)
        case list([String])

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(Int64.self) {
                self = .number(number)
            } else if let list = try? container.decode([String].self) {
                self = .list(list)
            } else {
                self = .text(try container.decode(String.self))
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let text): try container.encode(text)
            case .number(let number): try container.encode(number)
            case .list(let list): try container.encode(list)
            }
        }
    }

    /// Seconds since the epoch, with milliseconds.
    public var time: Double
    public var sandbox: String
    /// `session.start`, `fetch`, `merge`, `review`, `security`, …
    public var event: String
    public var details: [String: Value]

    public init(sandbox: String, event: String, details: [String: Value], time: Double? = nil) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.time = time ?? (Double(now.tv_sec) + Double(now.tv_nsec / 1_000_000) / 1000)
        self.sandbox = sandbox
        self.event = event
        self.details = details
    }

    /// The event with its texts passed through `redact` (`MaskedSecret.redact`: a real value
    /// someone typed into a command line).
    public func redacting(_ redact: (String) -> String) -> AuditEvent {
        var redacted = self
        redacted.details = details.mapValues { value in
            switch value {
            case .text(let text): .text(redact(text))
            case .list(let items): .list(items.map(redact))
            case .number: value
            }
        }
        return redacted
    }
}

/// Appends events as JSON Lines, within a total size: the log is `audit.jsonl` and, once that
/// reaches half the limit, it becomes `audit.1.jsonl` (replacing the one before, whose events
/// are dropped) and a new `audit.jsonl` starts with an `audit.rotated` event that counts them.
/// Each event is one `write` on an `O_APPEND` descriptor, so concurrent writers (the session's
/// owner, a `fetch` in another terminal) never interleave; rotation is under `flock`.
public struct AuditLog: Sendable {
    public let path: String
    /// The most both files hold together (bytes).
    public let limit: Int64

    /// 64 MiB: a few hundred thousand events, of which the guest can cause only the network
    /// ones, and identical denials are coalesced (`AuditCoalescer`).
    public static let defaultLimit: Int64 = 64 << 20

    public init(path: String, limit: Int64 = AuditLog.defaultLimit) {
        self.path = path
        self.limit = limit
    }

    /// The file before the current one: `audit.1.jsonl` beside `audit.jsonl`.
    public var previousPath: String {
        path.hasSuffix(".jsonl") ? String(path.dropLast(".jsonl".count)) + ".1.jsonl" : path + ".1"
    }

    public func append(_ event: AuditEvent) throws {
        let bytes = try Self.line(event)
        var fd = try open()
        defer { close(fd) }
        if Self.size(fd) + Int64(bytes.count) > limit / 2 {
            flock(fd, LOCK_EX)
            // Another writer may have rotated while this one waited.
            var current = stat()
            var opened = stat()
            fstat(fd, &opened)
            if stat(path, &current) == 0, current.st_ino == opened.st_ino, Int64(opened.st_size) + Int64(bytes.count) > limit / 2 {
                try rotate()
            }
            flock(fd, LOCK_UN)
            close(fd)
            fd = try open()
        }
        try Self.write(bytes, to: fd, path: path)
    }

    /// `audit.jsonl` becomes `audit.1.jsonl`; the new one starts by counting what was dropped.
    private func rotate() throws {
        var dropped: (events: Int64, bytes: Int64) = (0, 0)
        let old = Glibc.open(previousPath, O_RDONLY | O_CLOEXEC)
        if old >= 0 {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(old, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                dropped.bytes += Int64(count)
                dropped.events += Int64(buffer[0..<count].lazy.filter { $0 == UInt8(ascii: "\n") }.count)
            }
            close(old)
        }
        guard rename(path, previousPath) == 0 else { throw SandboxError("cannot rotate the audit log", cause: SystemError.last("rename", path)) }
        let fd = try open()
        defer { close(fd) }
        let record = AuditEvent(
            sandbox: "", event: "audit.rotated",
            details: ["dropped_events": .number(dropped.events), "dropped_bytes": .number(dropped.bytes), "limit_bytes": .number(limit)])
        try Self.write(try Self.line(record), to: fd, path: path)
    }

    private func open() throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SandboxError("cannot write the audit log", cause: SystemError.last("open", path)) }
        return fd
    }

    private static func size(_ fd: Int32) -> Int64 {
        var info = stat()
        return fstat(fd, &info) == 0 ? Int64(info.st_size) : 0
    }

    private static func line(_ event: AuditEvent) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(event)) + [UInt8(ascii: "\n")]
    }

    private static func write(_ bytes: [UInt8], to fd: Int32, path: String) throws {
        // One write: O_APPEND keeps concurrent writers' lines whole.
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw SandboxError("cannot write the audit log", cause: SystemError.last("write", path)) }
    }
}

/// Reads an append-only JSON Lines file from where it left off, 64 KiB at a time (the whole
/// file is never in memory); a torn last line waits for its end. A file that shrank or was
/// replaced (rotated) is read again from the start.
public struct AuditTail {
    public let path: String
    private var offset: Int64 = 0
    private var inode: ino_t = 0
    private var partial: [UInt8] = []

    public init(path: String) {
        self.path = path
    }

    /// Calls `body` with the new complete events, a batch per chunk read.
    public mutating func readNew(_ body: ([AuditEvent]) -> Void) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var status = stat()
        if fstat(fd, &status) == 0, Int64(status.st_size) < offset || (inode != 0 && status.st_ino != inode) {
            offset = 0
            partial = []
        }
        inode = status.st_ino
        let decoder = JSONDecoder()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            offset += Int64(count)
            partial += buffer[0..<count]
            guard let lastNewline = partial.lastIndex(of: UInt8(ascii: "\n")) else { continue }
            let events = partial[...lastNewline].split(separator: UInt8(ascii: "\n")).compactMap {
                try? decoder.decode(AuditEvent.self, from: Data($0))
            }
            partial.removeSubrange(...lastNewline)
            if !events.isEmpty { body(events) }
        }
    }
}

/// Keeps a flood of identical denials (the same destination, rule, verdict and reason) from
/// growing the audit log: the first is written; those within `window` after it are counted,
/// and written as one event with `repeated` (how many; its time is the last one's) when the
/// window has passed and another comes, or at `flush`. At most `capacity` destinations
/// are tracked; the oldest is flushed to make room. Allowed connections are never coalesced.
public final class AuditCoalescer: Sendable {
    private struct Pending {
        var event: AuditEvent
        var count: Int64
        var last: Double
    }

    private let window: Double
    private let capacity: Int
    private let state = Mutex<(pending: [String: Pending], order: [String])>(([:], []))

    public init(window: Duration = .seconds(60), capacity: Int = 1024) {
        self.window = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        self.capacity = capacity
    }

    /// What to write for `event` now (possibly nothing, or an older count and the event).
    public func admit(_ event: AuditEvent) -> [AuditEvent] {
        guard event.event == ConnectionRecord.event, case .text(let verdict)? = event.details["verdict"],
            !["allow", "passthrough", "forward"].contains(verdict)
        else { return [event] }
        let key = ["name", "ip", "port", "socket", "rule", "verdict", "reason", "direction"].map { "\(event.details[$0].map { "\($0)" } ?? "-")" }
            .joined(separator: "|")
        return state.withLock { state in
            var out: [AuditEvent] = []
            if var pending = state.pending[key] {
                if event.time - pending.event.time < window {
                    pending.count += 1
                    pending.last = event.time
                    state.pending[key] = pending
                    return []
                }
                out += Self.summary(pending)
                state.order.removeAll { $0 == key }
            } else if state.pending.count >= capacity, let oldest = state.order.first {
                state.order.removeFirst()
                out += state.pending.removeValue(forKey: oldest).map(Self.summary) ?? []
            }
            state.pending[key] = Pending(event: event, count: 0, last: event.time)
            state.order.append(key)
            return out + [event]
        }
    }

    /// The counts not written yet (at the end of a session).
    public func flush() -> [AuditEvent] {
        state.withLock { state in
            let out = state.order.compactMap { state.pending[$0] }.flatMap(Self.summary)
            state = ([:], [])
            return out
        }
    }

    private static func summary(_ pending: Pending) -> [AuditEvent] {
        guard pending.count > 0 else { return [] }
        var details = pending.event.details
        details["repeated"] = .number(pending.count)
        return [AuditEvent(sandbox: pending.event.sandbox, event: pending.event.event, details: details, time: pending.last)]
    }
}

extension AuditEvent {
    /// The audit line of one request through an intercepted connection (event `request`),
    /// and, when airlock stopped a real value going out or coming in, the security event.
    public static func records(sandbox: String, request: InterceptedRequest) -> [AuditEvent] {
        var details: [String: Value] = [
            "method": .text(request.method), "host": .text(request.host), "path": .text(request.path),
            "bytes_up": .number(request.bytesUp), "bytes_down": .number(request.bytesDown),
        ]
        if let status = request.status { details["status"] = .number(Int64(status)) }
        if !request.injected.isEmpty { details["injected"] = .list(request.injected) }
        if !request.middleware.isEmpty { details["middleware"] = .list(request.middleware) }
        if let stopped = request.stopped { details["stopped"] = .text(stopped) }
        let line = AuditEvent(sandbox: sandbox, event: "request", details: details)
        guard let security = request.security else { return [line] }
        return [line, AuditEvent(sandbox: sandbox, event: security, details: details)]
    }

    /// The audit line of one judged connection (event `network`).
    public init(sandbox: String, connection: ConnectionRecord) {
        self.init(
            sandbox: sandbox, event: ConnectionRecord.event,
            details: connection.details.mapValues { value in
                switch value {
                case .text(let text): .text(text)
                case .number(let number): .number(number)
                }
            })
    }
}
