// FoundationEssentials, not Foundation: the JSON coders without ICU (tens of MB in a static binary).
import FoundationEssentials
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// A minimal QMP client (QEMU's JSON control protocol) over the Unix socket QEMU listens on:
/// greeting, `qmp_capabilities`, then one command at a time. Blocking with deadlines; callers
/// run it off the cooperative pool.
final class QMPClient {
    enum Failure: Error, CustomStringConvertible {
        case connect(String, Int32)
        case timeout(String)
        case closed
        case error(String)

        var description: String {
            switch self {
            case .connect(let path, let code): "cannot connect to QMP at \(path): \(String(cString: strerror(code)))"
            case .timeout(let what): "QMP: no answer to \(what) in time"
            case .closed: "QMP: QEMU closed the connection"
            case .error(let message): "QMP: \(message)"
            }
        }
    }

    private let fd: Int32
    private var pending: [UInt8] = []

    /// Connects, reads the greeting and enters command mode.
    init(path: String, timeout: Double = 5) throws {
        fd = try connectUnixSocket(path)
        do {
            _ = try readMessage(deadline: monotonicSeconds() + timeout, what: "the greeting")
            try execute("qmp_capabilities", timeout: timeout)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// The parts of a QMP message airlock looks at.
    struct Message: Decodable {
        struct Failure: Decodable {
            var desc: String?
        }

        /// An event's `data` (`VSERPORT_CHANGE`: the port's device id and whether it is open).
        struct EventData: Decodable {
            var id: String?
            var open: Bool?
        }

        /// A command's `return` (`query-migrate`: the migration's status and error).
        struct Return: Decodable {
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

    /// Events read while waiting for replies, oldest first (see `takeEvent`).
    private var events: [Message] = []

    /// Runs a command without arguments; throws its `error`.
    func execute(_ command: String, timeout: Double = 5) throws {
        _ = try execute(command, arguments: [String: String]?.none, timeout: timeout)
    }

    /// Runs `command` with `arguments`; returns its `return`, throws its `error`.
    @discardableResult
    func execute(_ command: String, arguments: (some Encodable)?, timeout: Double = 5) throws -> Message.Return? {
        var bytes = [UInt8](try JSONEncoder().encode(Command(execute: command, arguments: arguments)))
        bytes.append(UInt8(ascii: "\n"))
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure.closed
            }
            offset += n
        }
        let deadline = monotonicSeconds() + timeout
        while true {
            let reply = try readMessage(deadline: deadline, what: command)
            if reply.event != nil {
                events.append(reply)
                continue
            }
            if let error = reply.error { throw Failure.error("\(command): \(error.desc ?? "failed")") }
            return reply.result
        }
    }

    /// The first event `matching` that has arrived by now (read without waiting), removed
    /// from those kept; nil when none has.
    func takeEvent(matching: (Message) -> Bool) throws -> Message? {
        while let message = try readMessage(deadline: 0, what: "events", wait: false) {
            events.append(message)
        }
        guard let index = events.firstIndex(where: matching) else { return nil }
        return events.remove(at: index)
    }

    private func readMessage(deadline: Double, what: String) throws -> Message {
        // Waiting, it returns a message or throws.
        try readMessage(deadline: deadline, what: what, wait: true)!
    }

    /// The next message; without `wait`, nil when none is complete and the socket has
    /// nothing more to read right now.
    private func readMessage(deadline: Double, what: String, wait: Bool) throws -> Message? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                guard let message = try? JSONDecoder().decode(Message.self, from: Data(line)) else { continue }
                return message
            }
            let remaining = wait ? deadline - monotonicSeconds() : 0
            guard remaining > 0 || !wait else { throw Failure.timeout(what) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, wait ? Int32(remaining * 1000) + 1 : 0)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                if wait { continue }
                return nil
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Failure.closed }
            pending += chunk[0..<n]
            guard pending.count < 1 << 20 else { throw Failure.error("message too large") }
        }
    }
}

/// A connected, blocking, close-on-exec Unix stream socket.
func connectUnixSocket(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw QMPClient.Failure.connect(path, errno) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        close(fd)
        throw QMPClient.Failure.connect(path, ENAMETOOLONG)
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard result == 0 else {
        let code = errno
        close(fd)
        throw QMPClient.Failure.connect(path, code)
    }
    return fd
}
