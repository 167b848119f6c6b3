import AirlockSystem
// FoundationEssentials, not Foundation: the JSON coders without ICU (tens of MB in a static binary).
import FoundationEssentials
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A minimal QMP client (QEMU's JSON control protocol) over the Unix socket QEMU listens on:
/// greeting, `qmp_capabilities`, then one command at a time. The socket I/O is blocking with
/// deadlines and runs on NIO's blocking pool (`connect`, `execute`, `takeEvent` are async),
/// never on the cooperative pool; one call at a time holds the connection (`state`).
final class QMPClient: Sendable {
    enum Failure: Error, CustomStringConvertible {
        case connect(String, Int32)
        case timeout(String)
        case closed
        case error(String)

        var description: String {
            switch self {
            case .connect(let path, let code): "cannot connect to QMP at \(path): \(errorText(code))"
            case .timeout(let what): "QMP: no answer to \(what) in time"
            case .closed: "QMP: QEMU closed the connection"
            case .error(let message): "QMP: \(message)"
            }
        }
    }

    private let fd: Int32
    /// Bytes read past the last message, and events read while waiting for replies (oldest
    /// first, see `takeEvent`). Held for the whole of each call.
    private let state = Mutex(State())

    private struct State {
        var pending: [UInt8] = []
        var events: [Message] = []
    }

    /// Connects, reads the greeting and enters command mode.
    static func connect(path: String, timeout: Duration = .seconds(5)) async throws -> QMPClient {
        try await NIOThreadPool.singleton.runIfActive { try QMPClient(path: path, timeout: timeout) }
    }

    private init(path: String, timeout: Duration) throws {
        do {
            fd = try connectUnixSocket(path)
        } catch {
            throw Failure.connect(path, error.errno)
        }
        do {
            try state.withLock { state in
                _ = try Self.readMessage(fd, &state, deadline: .now + timeout, what: "the greeting")
                _ = try Self.execute(fd, &state, "qmp_capabilities", arguments: [String: String]?.none, timeout: timeout)
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// The parts of a QMP message airlock looks at.
    struct Message: Decodable, Sendable {
        struct Failure: Decodable, Sendable {
            var desc: String?
        }

        /// An event's `data` (`VSERPORT_CHANGE`: the port's device id and whether it is open).
        struct EventData: Decodable, Sendable {
            var id: String?
            var open: Bool?
        }

        /// A command's `return` (`query-migrate`: the migration's status and error).
        struct Return: Decodable, Sendable {
            var status: String?
            var errorDescription: String?

            enum CodingKeys: String, CodingKey {
                case status
                case errorDescription = "error-desc"
            }
        }

        var event: String?
        var data: EventData?
        var error: Failure?
        var result: Return?

        enum CodingKeys: String, CodingKey {
            case event, data, error
            case result = "return"
        }
    }

    struct Command<Arguments: Encodable>: Encodable {
        var execute: String
        var arguments: Arguments?
    }

    /// Runs a command without arguments; throws its `error`.
    func execute(_ command: String, timeout: Duration = .seconds(5)) async throws {
        _ = try await execute(command, arguments: [String: String]?.none, timeout: timeout)
    }

    /// Runs `command` with `arguments`; returns its `return`, throws its `error`.
    @discardableResult
    func execute(_ command: String, arguments: (some Encodable & Sendable)?, timeout: Duration = .seconds(5)) async throws -> Message.Return? {
        try await NIOThreadPool.singleton.runIfActive {
            try self.state.withLock { state in try Self.execute(self.fd, &state, command, arguments: arguments, timeout: timeout) }
        }
    }

    /// The first event `matching` that has arrived by now (read without waiting), removed
    /// from those kept; nil when none has.
    func takeEvent(matching: @escaping @Sendable (Message) -> Bool) async throws -> Message? {
        try await NIOThreadPool.singleton.runIfActive {
            try self.state.withLock { state in
                while let message = try Self.readMessage(self.fd, &state, deadline: .now, what: "events", wait: false) {
                    state.events.append(message)
                }
                guard let index = state.events.firstIndex(where: matching) else { return nil }
                return state.events.remove(at: index)
            }
        }
    }

    private static func execute(
        _ fd: Int32, _ state: inout State, _ command: String, arguments: (some Encodable)?, timeout: Duration
    ) throws -> Message.Return? {
        var bytes = [UInt8](try JSONEncoder().encode(Command(execute: command, arguments: arguments)))
        bytes.append(UInt8(ascii: "\n"))
        do { try Syscall.sendAll(fd, bytes, subject: "QMP") } catch { throw Failure.closed }
        let deadline = ContinuousClock.now + timeout
        while true {
            let reply = try readMessage(fd, &state, deadline: deadline, what: command)
            if reply.event != nil {
                state.events.append(reply)
                continue
            }
            if let error = reply.error { throw Failure.error("\(command): \(error.desc ?? "failed")") }
            return reply.result
        }
    }

    private static func readMessage(_ fd: Int32, _ state: inout State, deadline: ContinuousClock.Instant, what: String) throws -> Message {
        // Waiting, it returns a message or throws.
        try readMessage(fd, &state, deadline: deadline, what: what, wait: true)!
    }

    /// The next message; without `wait`, nil when none is complete and the socket has
    /// nothing more to read right now.
    private static func readMessage(
        _ fd: Int32, _ state: inout State, deadline: ContinuousClock.Instant, what: String, wait: Bool
    ) throws -> Message? {
        while true {
            if let newline = state.pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(state.pending[..<newline])
                state.pending.removeSubrange(...newline)
                guard let message = try? JSONDecoder().decode(Message.self, from: Data(line)) else { continue }
                return message
            }
            let remaining = wait ? deadline - ContinuousClock.now : .zero
            guard remaining > .zero || !wait else { throw Failure.timeout(what) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, wait ? Int32(remaining.milliseconds) + 1 : 0)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                if wait { continue }
                return nil
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Failure.closed }
            state.pending += chunk[0..<n]
            guard state.pending.count < 1 << 20 else { throw Failure.error("message too large") }
        }
    }
}
