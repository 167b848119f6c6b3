import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A short temporary directory (Unix socket paths must stay under 108 bytes), removed by `remove`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/ch-test-XXXXXX".utf8CString)
        guard let base = template.withUnsafeMutableBufferPointer({ $0.baseAddress.flatMap(mkdtemp) }) else { throw POSIXError(.EIO) }
        path = String(cString: base)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A listening Unix socket whose connections are handled one after another, each by `handle`
/// on a thread of its own (plain blocking sockets: the stubs must be able to misbehave in
/// ways a well-behaved server library would not).
final class UnixStubServer: Sendable {
    let path: String
    private let listener: Int32
    private let stopped = Mutex(false)
    private let finished = Mutex(false)

    init(path: String, handle: @escaping @Sendable (Int32) -> Void) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0, listen(fd, 8) == 0 else { throw POSIXError(.EADDRINUSE) }
        listener = fd
        let thread = Thread { [self] in
            while !stopped.withLock({ $0 }) {
                var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 50) > 0 else { continue }
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { continue }
                handle(connection)
                close(connection)
            }
            close(fd)
            finished.withLock { $0 = true }
        }
        thread.start()
    }

    /// Stops accepting (a handler still running finishes first) and removes the socket.
    func stop() {
        stopped.withLock { $0 = true }
        let deadline = Date().addingTimeInterval(10)
        while !finished.withLock({ $0 }) && Date() < deadline { usleep(10_000) }
        unlink(path)
    }

    var isStopping: Bool { stopped.withLock { $0 } }

    // MARK: - Helpers for handlers

    /// Reads up to `count` bytes, waiting at most `timeout` seconds; fewer on EOF.
    static func read(_ fd: Int32, count: Int, timeout: Double = 5) -> [UInt8] {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while bytes.count < count && Date() < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 50) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: count - bytes.count)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            bytes += buffer[0..<n]
        }
        return bytes
    }

    /// Reads through the first occurrence of `terminator` (or until EOF/timeout).
    static func read(_ fd: Int32, through terminator: [UInt8], timeout: Double = 5) -> [UInt8] {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if bytes.count >= terminator.count && Array(bytes.suffix(terminator.count)) == terminator { break }
            let next = read(fd, count: 1, timeout: max(0, deadline.timeIntervalSinceNow))
            guard !next.isEmpty else { break }
            bytes += next
        }
        return bytes
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            offset += n
        }
    }

    /// Waits until the peer closes or `timeout` passes (a server that never answers).
    static func waitForClose(_ fd: Int32, timeout: Double) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, 50) > 0 {
                var byte: UInt8 = 0
                if recv(fd, &byte, 1, 0) <= 0 { return }
            }
        }
    }
}

/// One HTTP/1.1 request as the stub API server received it.
struct RecordedRequest: Sendable, Equatable {
    var method: String
    var path: String
    /// Lower-cased names.
    var headers: [String: String]
    var body: [UInt8]
}

/// What the stub API server does with a request.
enum StubReply: Sendable {
    case respond(status: Int, body: String = "")
    /// Closes the connection without answering.
    case drop
    /// Keeps the connection open and never answers.
    case silence
    /// Sends these bytes as they are.
    case raw([UInt8])
}

/// A Cloud Hypervisor API lookalike: records requests, answers as `reply` says.
final class StubAPIServer: Sendable {
    private final class Recorder: Sendable {
        let requests = Mutex<[RecordedRequest]>([])
    }

    private let server: UnixStubServer
    private let recorder: Recorder

    init(path: String, reply: @escaping @Sendable (RecordedRequest) -> StubReply) throws {
        let recorder = Recorder()
        self.recorder = recorder
        server = try UnixStubServer(path: path) { fd in
            guard let request = Self.readRequest(fd) else { return }
            recorder.requests.withLock { $0.append(request) }
            switch reply(request) {
            case .respond(let status, let body):
                var text = "HTTP/1.1 \(status) \(Self.reason(status))\r\n"
                if !body.isEmpty { text += "Content-Type: application/json\r\n" }
                text += "Content-Length: \(body.utf8.count)\r\n\r\n" + body
                UnixStubServer.write(fd, Array(text.utf8))
            case .drop:
                return
            case .silence:
                UnixStubServer.waitForClose(fd, timeout: 30)
            case .raw(let bytes):
                UnixStubServer.write(fd, bytes)
            }
        }
    }

    var requests: [RecordedRequest] { recorder.requests.withLock { $0 } }

    func stop() { server.stop() }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 204: "No Content"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 500: "Internal Server Error"
        default: "Status"
        }
    }

    /// Head, then a body by Content-Length, or chunked (recorded as received, to be flagged).
    static func readRequest(_ fd: Int32) -> RecordedRequest? {
        let head = UnixStubServer.read(fd, through: Array("\r\n\r\n".utf8))
        guard let text = String(bytes: head, encoding: .utf8), text.hasSuffix("\r\n\r\n") else { return nil }
        var lines = text.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3 else { return nil }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body: [UInt8] = []
        if let length = headers["content-length"].flatMap(Int.init), length > 0 {
            body = UnixStubServer.read(fd, count: length)
        } else if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            body = UnixStubServer.read(fd, through: Array("0\r\n\r\n".utf8))
        }
        return RecordedRequest(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers, body: body)
    }
}
