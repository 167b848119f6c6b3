import GuestLink
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization

/// The loopback end of a sign-in on the host: the provider sends the user's browser to
/// `http://localhost:<port>/callback?code=…`, where the CLI in the guest listens. airlock
/// listens on the host's 127.0.0.1:<port> for as long as the sign-in may take (10 minutes) and
/// carries each GET into the guest's own 127.0.0.1:<port> (a `ForwardRequest` on the control
/// link), with the real `code` replaced by a surrogate (`SignIns.surrogateCode`), cookies and
/// credentials left out. Anything but a GET of the callback path gets 405 or 404.
public final class CallbackRelay: Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    typealias Listener = NIOAsyncChannel<Connection, Never>

    let signIns: SignIns
    let logger: Logger
    private let link = Mutex<(any GuestStreamOpener)?>(nil)
    private let listeners = Mutex<[Int: Listener]>([:])
    static let open = Duration.seconds(600)
    static let headLimit = 16 << 10
    static let answerLimit = 1 << 20

    public init(signIns: SignIns, logger: Logger) {
        self.signIns = signIns
        self.logger = logger
    }

    /// The control link, once the guest is up.
    public func attach(_ link: any GuestStreamOpener) {
        self.link.withLock { $0 = link }
    }

    /// Listens on 127.0.0.1:`port` (again for a port open already: nothing new) for 10 minutes.
    public func listen(port: Int, path: String) async throws {
        guard listeners.withLock({ $0[port] == nil }) else { return }
        let server: Listener
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
                }
        } catch {
            throw InterceptionError(
                "port \(port) is in use on this computer, so the sign-in's answer cannot come back to the sandbox",
                hint: "end what listens on 127.0.0.1:\(port) and sign in again")
        }
        listeners.withLock { $0[port] = server }
        Task {
            try? await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await server.executeThenClose { connections in
                        try await withThrowingDiscardingTaskGroup { each in
                            for try await connection in connections {
                                each.addTask { await self.carry(connection, port: port, path: path) }
                            }
                        }
                    }
                }
                group.addTask { try await Task.sleep(for: Self.open) }
                _ = try await group.next()
                group.cancelAll()
            }
            try? await server.channel.close()
            _ = listeners.withLock { $0.removeValue(forKey: port) }
        }
    }

    public func close() async {
        for listener in listeners.withLock({ Array($0.values) }) { try? await listener.channel.close() }
    }

    /// The request as the guest gets it: a GET of `path` with `code` replaced; or the answer
    /// the browser gets instead.
    enum Rewritten: Equatable {
        case forward([UInt8])
        case answer(status: String, text: String)
    }

    func rewrite(_ head: String, port: Int, path: String) -> Rewritten {
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return .answer(status: "400 Bad Request", text: "not HTTP/1") }
        guard requestLine[0] == "GET" else { return .answer(status: "405 Method Not Allowed", text: "only GET") }
        let target = requestLine[1]
        let targetPath = target.prefix { $0 != "?" }
        guard targetPath == path else { return .answer(status: "404 Not Found", text: "airlock carries only \(path) to the sandbox") }
        var query = FormBody.parse(target.dropFirst(targetPath.count + 1))
        for index in query.indices where query[index].0 == "code" {
            guard let surrogate = signIns.surrogateCode(for: query[index].1, port: port) else {
                return .answer(status: "410 Gone", text: "no sign-in waits on this port; sign in again in the sandbox")
            }
            query[index].1 = surrogate
        }
        let kept = lines.filter { line in
            guard let colon = line.firstIndex(of: ":") else { return false }
            let name = line[..<colon].lowercased()
            return !["cookie", "authorization", "connection", "keep-alive", "proxy-authorization"].contains(name)
        }
        let rebuilt =
            "GET \(path)\(query.isEmpty ? "" : "?" + FormBody.encode(query)) HTTP/1.1\r\n" + kept.map { $0 + "\r\n" }.joined()
            + "Connection: close\r\n\r\n"
        return .forward(Array(rebuilt.utf8))
    }

    private func carry(_ connection: Connection, port: Int, path: String) async {
        // A browser or a guest that holds the connection open: closed after a minute.
        let channel = connection.channel
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(60)) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        try? await connection.executeThenClose { inbound, outbound in
            var head: [UInt8] = []
            var iterator = inbound.makeAsyncIterator()
            while head.count <= Self.headLimit, head.firstRange(of: Array("\r\n\r\n".utf8)) == nil, let chunk = try await iterator.next() {
                head += chunk.readableBytesView
            }
            guard let end = head.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let text = String(decoding: head[..<end.lowerBound], as: UTF8.self)
            func answer(_ status: String, _ body: String) async throws {
                let page = "airlock: \(body)\n"
                try await outbound.write(
                    ByteBuffer(
                        string:
                            "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(page.utf8.count)\r\nConnection: close\r\n\r\n\(page)"
                    ))
            }
            switch rewrite(text, port: port, path: path) {
            case .answer(let status, let body):
                try await answer(status, body)
            case .forward(let request):
                guard let link = self.link.withLock({ $0 }) else { return try await answer("503 Service Unavailable", "the sandbox is not up yet") }
                let stream = try await link.openStream()
                try await stream.executeThenClose { streamIn, streamOut in
                    try await streamOut.write(.headers(.init(headers: ForwardRequest(port: UInt16(port)).headers)))
                    var frames = streamIn.makeAsyncIterator()
                    guard case .headers(let headers)? = try await frames.next(), headers.headers.first(name: ":status") == "200" else {
                        return try await answer("502 Bad Gateway", "nothing listens on port \(port) in the sandbox any more; sign in again")
                    }
                    try await streamOut.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: request)))))
                    var carried = 0
                    while carried < Self.answerLimit, let frame = try await frames.next() {
                        guard case .data(let data) = frame else { continue }
                        if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 {
                            carried += bytes.readableBytes
                            try await outbound.write(bytes)
                        }
                        if data.endStream { break }
                    }
                }
                logger.info("a sign-in's answer reached the sandbox (port \(port))")
            }
        }
    }
}
