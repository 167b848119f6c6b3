import AirlockSystem
import FoundationEssentials
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The control socket of a running sandbox, served by the process that runs it: a Unix socket
/// (0600, in a 0700 directory) speaking the same HTTP/2 as the guest link, through which other
/// airlock processes reach the sandbox. One stream per request:
///
/// - `POST /v1/exec`: a session, relayed frame for frame to a new stream on the guest link
///   (`airlock exec`, a second `airlock start`); `503` once the sandbox is shutting down.
/// - `POST /v1/stop`: power the sandbox off (`airlock stop`); answered before it goes.
/// - `GET /v1/state`: the sandbox's `SandboxStatus` as JSON.
/// - `GET /v1/events`: every audit event from now on (connections, sessions), one JSON line
///   each, until the sandbox stops or the client goes; a client that reads too slowly loses
///   the oldest (at most `EventHub.backlog` wait for it).
final class ControlServer: Sendable {
    enum Path {
        static let exec = LinkNames.Path.exec
        static let stop = "/v1/stop"
        static let state = "/v1/state"
        static let events = "/v1/events"
    }

    /// What the server asks of the sandbox that runs it.
    struct Handlers: Sendable {
        var state: @Sendable () async -> SandboxStatus
        var stop: @Sendable () async -> Void
        var events: EventHub
    }

    typealias Server = NIOAsyncChannel<NIOHTTP2Handler.AsyncStreamMultiplexer<LinkStream>, Never>

    /// The answer to a session that arrives while the sandbox shuts down: the client starts the
    /// sandbox again once it is down (`SandboxManager.start`).
    static let stoppingStatus = "503"

    /// The sessions relayed now, whether new ones are taken, and who waits for none to be left.
    private struct Sessions {
        var running = 0
        var accepting = true
        var idle: [CheckedContinuation<Void, Never>] = []
    }

    private let sessions = Mutex(Sessions())
    private let server: Server
    private let link: LinkClient
    private let handlers: Handlers
    let path: String

    private init(server: Server, link: LinkClient, handlers: Handlers, path: String) {
        self.server = server
        self.link = link
        self.handlers = handlers
        self.path = path
    }

    /// Binds the socket at `path` (0600); `run` serves it.
    static func bind(path: String, link: LinkClient, handlers: Handlers, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton)
        async throws -> ControlServer
    {
        unlink(path)
        let server = try await ServerBootstrap(group: group)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                        stream.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: stream) }
                    }
                }
            }
        chmod(path, 0o600)
        return ControlServer(server: server, link: link, handlers: handlers, path: path)
    }

    /// Serves connections until the server is closed or the task cancelled.
    func run() async {
        try? await server.executeThenClose { connections in
            try await withThrowingDiscardingTaskGroup { group in
                for try await multiplexer in connections {
                    group.addTask {
                        try? await withThrowingDiscardingTaskGroup { streams in
                            for try await stream in multiplexer.inbound {
                                streams.addTask { try? await self.handle(stream) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits until no relayed session is left, then takes no new one (they get `503`): the
    /// sandbox lives until its last session ends.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = sessions.withLock { sessions in
                guard sessions.running > 0 else {
                    sessions.accepting = false
                    return true
                }
                sessions.idle.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// The sessions relayed now.
    var runningSessions: Int { sessions.withLock { $0.running } }

    private func sessionEnded() {
        let waiters = sessions.withLock { sessions in
            sessions.running -= 1
            guard sessions.running == 0, !sessions.idle.isEmpty else { return [CheckedContinuation<Void, Never>]() }
            sessions.accepting = false
            defer { sessions.idle = [] }
            return sessions.idle
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Stops accepting and removes the socket; running streams end with the guest link.
    func close() async {
        sessions.withLock { $0.accepting = false }
        try? await server.channel.close()
        unlink(path)
    }

    private func handle(_ stream: LinkStream) async throws {
        try await stream.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard case .headers(let head)? = try await frames.next() else { return }
            switch head.headers.first(name: ":path") {
            case Path.exec?:
                let admitted = sessions.withLock { sessions in
                    guard sessions.accepting else { return false }
                    sessions.running += 1
                    return true
                }
                guard admitted else {
                    try await Self.answer(outbound, status: Self.stoppingStatus, body: Array("the sandbox is shutting down".utf8))
                    return
                }
                defer { sessionEnded() }
                try await relay(head, &frames, outbound)
            case Path.stop?:
                try await Self.answer(outbound, status: "200", body: [])
                await handlers.stop()
            case Path.state?:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                try await Self.answer(outbound, status: "200", body: Array(try encoder.encode(await handlers.state())))
            case Path.events?:
                try await outbound.write(.headers(.init(headers: [":status": "200"])))
                let lines = handlers.events.subscribe()
                // Until the sandbox stops (the subscription ends) or the client goes (its
                // stream closes), whichever is first.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await line in lines { try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: line))))) }
                        try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
                    }
                    group.addTask { try await stream.channel.closeFuture.get() }
                    try await group.next()
                    group.cancelAll()
                }
            default:
                try await Self.answer(outbound, status: "404", body: [])
            }
        }
    }

    private static func answer(_ outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>, status: String, body: [UInt8]) async throws {
        try await outbound.write(.headers(.init(headers: [":status": status], endStream: body.isEmpty)))
        if !body.isEmpty { try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: body)), endStream: true))) }
    }

    /// Copies `head` and every later HEADERS and DATA frame of the client's stream to a new
    /// stream on the guest link, and the guest's back.
    private func relay(
        _ head: HTTP2Frame.FramePayload.Headers, _ frames: inout NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator,
        _ clientOut: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>
    ) async throws {
        let guest = try await link.openStream()
        try await guest.executeThenClose { guestIn, guestOut in
            try await guestOut.write(.headers(head))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await frame in guestIn {
                        switch frame {
                        case .headers, .data: try await clientOut.write(frame)
                        default: continue
                        }
                    }
                }
                while let frame = try await frames.next() {
                    switch frame {
                    case .headers, .data: try await guestOut.write(frame)
                    default: continue
                    }
                }
                // The client's side has ended; the session goes on until the guest's does.
                try await group.next()
            }
        }
    }
}

/// Hands every event of a running sandbox to the control socket's subscribers. Each has its
/// own bounded buffer (the oldest dropped when full), so a slow reader holds back nobody and
/// a chatty guest cannot grow the host's memory.
final class EventHub: Sendable {
    static let backlog = 1024

    private let subscribers = Mutex<[Int: AsyncStream<[UInt8]>.Continuation]>([:])
    private let nextID = Atomic<Int>(0)

    func subscribe() -> AsyncStream<[UInt8]> {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingNewest(Self.backlog))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = continuation }
        return stream
    }

    /// One JSON line to every subscriber.
    func publish(_ event: AuditEvent) {
        let continuations = subscribers.withLock { Array($0.values) }
        guard !continuations.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard var line = try? Array(encoder.encode(event)) else { return }
        line.append(UInt8(ascii: "\n"))
        for continuation in continuations { continuation.yield(line) }
    }

    /// Ends every subscription (the sandbox stops).
    func finish() {
        let continuations = subscribers.withLock { current in
            defer { current = [:] }
            return Array(current.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}
