import AirlockSystem
// FoundationEssentials for the JSON encoder only (no ICU).
import FoundationEssentials
import NetworkProxy

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
}

/// Appends events as JSON Lines. Each event is one `write` on an `O_APPEND` descriptor, so
/// concurrent writers (the session's owner, a `fetch` in another terminal) never interleave.
public struct AuditLog: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public func append(_ event: AuditEvent) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = Array(try encoder.encode(event))
        bytes.append(UInt8(ascii: "\n"))
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SandboxError("cannot write the audit log", cause: SystemError.last("open", path)) }
        defer { close(fd) }
        // One write: O_APPEND keeps concurrent writers' lines whole.
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw SandboxError("cannot write the audit log", cause: SystemError.last("write", path)) }
    }

    /// Every event in the log; lines that don't parse are skipped (a torn last line).
    public func read() -> [AuditEvent] {
        guard let text = (try? FileSystem.readText(path, limit: 256 << 20)) ?? nil else { return [] }
        let decoder = JSONDecoder()
        return text.split(separator: "\n").compactMap { try? decoder.decode(AuditEvent.self, from: Data($0.utf8)) }
    }
}

extension AuditEvent {
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
