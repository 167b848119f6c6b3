import AirlockSystem
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The host side of Cloud Hypervisor's hybrid vsock: the guest's vsock device is a Unix
/// socket on the host.
///
/// Host → guest: connect to that socket, send `CONNECT <port>\n`, read `OK <n>\n` (n is a
/// host-side port number CH picked; any number is accepted), then the socket is the stream.
/// Until the guest listens, CH closes the connection (or it stays silent while the guest's
/// driver is not up), so `connect` retries until its deadline.
public enum HybridVsock {
    /// Why one handshake attempt failed.
    public indirect enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The Unix socket refused the connection or is not there.
        case connect(socket: String, reason: String)
        /// The connection ended (EOF or reset) before the `OK` line: nothing listens on the
        /// port in the guest yet.
        case closed(socket: String, port: UInt32)
        /// No `OK` line within the read deadline.
        case silent(socket: String, port: UInt32, after: Duration)
        /// Something other than `OK <number>` came back.
        case unexpectedAnswer(socket: String, port: UInt32, answer: String)
        /// Retried until the overall deadline; `last` is the last attempt's failure.
        case gaveUp(after: Duration, last: Failure)

        public var description: String {
            switch self {
            case .connect(let socket, let reason):
                "cannot connect to the VM's vsock socket \(socket): \(reason)"
            case .closed(let socket, let port):
                "the guest closed vsock port \(port) (through \(socket)) before accepting it: nothing listens there yet"
            case .silent(let socket, let port, let duration):
                "no answer to CONNECT \(port) on \(socket) within \(duration.text)"
            case .unexpectedAnswer(let socket, let port, let answer):
                "\(socket) answered CONNECT \(port) with \(answer.debugDescription) instead of OK <port>: is this Cloud Hypervisor's vsock socket?"
            case .gaveUp(let duration, let last):
                "the guest did not accept the link within \(duration.text) (last attempt: \(last))"
            }
        }

        /// Worth another try while the guest boots.
        var isTransient: Bool {
            switch self {
            case .connect, .closed, .silent: true
            case .unexpectedAnswer, .gaveUp: false
            }
        }
    }

    /// The longest line accepted as an answer (`OK 4294967295\n` is 14 bytes).
    static let maximumLineLength = 64

    /// Connects to `port` in the guest through the vsock socket `socket`, retrying transient
    /// failures every `pause` until `timeout` has passed; returns the connected descriptor
    /// (blocking mode, close-on-exec), positioned right after the `OK` line.
    ///
    /// The blocking socket calls run on NIO's blocking thread pool, never on the cooperative pool.
    public static func connect(
        socket: String, port: UInt32, timeout: Duration, readTimeout: Duration = .seconds(2), pause: Duration = .milliseconds(50),
        threadPool: NIOThreadPool = .singleton
    ) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            let attemptTimeout = max(.milliseconds(50), min(readTimeout, remaining))
            do {
                return try await threadPool.runIfActive {
                    try handshake(socket: socket, port: port, readTimeout: attemptTimeout)
                }
            } catch let failure as Failure where failure.isTransient {
                if ContinuousClock.now + .milliseconds(1) >= deadline { throw Failure.gaveUp(after: timeout, last: failure) }
                try await Task.sleep(for: pause)
            }
        }
    }

    /// One attempt, blocking for at most about `readTimeout`.
    public static func handshake(socket path: String, port: UInt32, readTimeout: Duration) throws(Failure) -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .connect(socket: path, reason: errorText(errno)) }
        var keep = false
        defer { if !keep { close(fd) } }

        // A full backlog would block connect(2) indefinitely; SO_SNDTIMEO bounds that wait too.
        var limit = timeval(tv_sec: Int(readTimeout.components.seconds), tv_usec: Int(readTimeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnixAddress(path) { address, length in
            var result: Int32
            repeat { result = Glibc.connect(fd, address, length) } while result < 0 && errno == EINTR
            return result == 0 ? 0 : errno
        }
        guard let connected else { throw .connect(socket: path, reason: "the path is too long for a Unix socket") }
        guard connected == 0 else { throw .connect(socket: path, reason: errorText(connected)) }

        let deadline = ContinuousClock.now + readTimeout
        let request = Array("CONNECT \(port)\n".utf8)
        var sent = 0
        while sent < request.count {
            guard wait(fd, for: Int16(POLLOUT), until: deadline) else { throw .silent(socket: path, port: port, after: readTimeout) }
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == EPIPE || errno == ECONNRESET { throw .closed(socket: path, port: port) }
                throw .connect(socket: path, reason: errorText(errno))
            }
            sent += n
        }

        // Byte by byte: whatever follows the newline is the guest's, and must stay in the socket.
        var line: [UInt8] = []
        while true {
            guard wait(fd, for: Int16(POLLIN), until: deadline) else { throw .silent(socket: path, port: port, after: readTimeout) }
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, 0)
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == ECONNRESET { throw .closed(socket: path, port: port) }
                throw .connect(socket: path, reason: errorText(errno))
            }
            if n == 0 {
                if line.isEmpty { throw .closed(socket: path, port: port) }
                throw .unexpectedAnswer(socket: path, port: port, answer: String(decoding: line, as: UTF8.self))
            }
            if byte == UInt8(ascii: "\n") { break }
            line.append(byte)
            if line.count > maximumLineLength {
                throw .unexpectedAnswer(socket: path, port: port, answer: String(decoding: line.prefix(32), as: UTF8.self) + "…")
            }
        }
        guard isOK(line) else { throw .unexpectedAnswer(socket: path, port: port, answer: String(decoding: line, as: UTF8.self)) }
        keep = true
        return fd
    }

    /// `OK <decimal number>`, nothing else.
    static func isOK(_ line: [UInt8]) -> Bool {
        let prefix = Array("OK ".utf8)
        guard line.count > prefix.count, line.count <= prefix.count + 10, Array(line.prefix(prefix.count)) == prefix else { return false }
        return line.dropFirst(prefix.count).allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// The path of the Unix socket CH connects to when the guest connects to the host (CID 2)
    /// on `port`.
    public static func listenerPath(vsockSocket: String, port: UInt32) -> String {
        "\(vsockSocket)_\(port)"
    }

    static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return false }
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let result = poll(&entry, 1, Int32(min(remaining.milliseconds + 1, 60_000)))
            if result > 0 { return true }  // readable, writable, or an error/hang-up the next call reports
            if result < 0 && errno != EINTR { return true }
        }
    }
}

/// A Unix socket on which the guest's connections to the host (CID 2) on one vsock port
/// arrive: Cloud Hypervisor connects to `<vsock socket>_<port>` for each, so it must be
/// listening before the VM boots. Each accepted connection is set up by `initializer`.
public final class HybridVsockListener: Sendable {
    public let path: String
    public let port: UInt32
    private let channel: any Channel

    private init(path: String, port: UInt32, channel: any Channel) {
        self.path = path
        self.port = port
        self.channel = channel
    }

    /// Binds `<vsockSocket>_<port>` (an old socket file there is replaced), mode 0600.
    public static func bind(
        vsockSocket: String, port: UInt32, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> HybridVsockListener {
        let path = HybridVsock.listenerPath(vsockSocket: vsockSocket, port: port)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 16)
            .childChannelInitializer(initializer)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        chmod(path, 0o600)
        return HybridVsockListener(path: path, port: port, channel: channel)
    }

    /// Stops accepting and removes the socket file.
    public func close() async {
        try? await channel.close()
        unlink(path)
    }
}
