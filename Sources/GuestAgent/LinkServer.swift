import CShim
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

typealias StreamChannel = NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>

/// Serves the control connection: the host opens HTTP/2 streams, each a request.
struct LinkServer {
    let group: MultiThreadedEventLoopGroup

    typealias Multiplexer = NIOHTTP2Handler.AsyncStreamMultiplexer<StreamChannel>

    /// Serves the connected stream socket `fd` (bridged to the virtio-serial port) until the
    /// host goes away.
    func serve(socket fd: Int32) async throws {
        let multiplexer = try await ClientBootstrap(group: group).withConnectedSocket(fd, channelInitializer: Self.configure)
        try await serve(multiplexer)
    }

    /// Sets up NIO's event loops and one HTTP/2 server pipeline on a socket pair nobody uses,
    /// on a thread of its own while PID 1 loads the kernel modules: under TCG the first use of
    /// NIO and NIOHTTP2 costs ~0.2 s, which the control link would otherwise pay after its port
    /// appears. The pair's far end is closed at once, so the channel ends by itself.
    static func warmUp(group: MultiThreadedEventLoopGroup) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { return }
        Task {
            _ = try? await ClientBootstrap(group: group).withConnectedSocket(fds[0], channelInitializer: configure)
            close(fds[1])
        }
    }

    /// Listens on vsock `port` (any CID) and serves one host connection at a time: when a
    /// connection ends, the next one replaces it (the host reconnects after losing its
    /// connection). Returns only when listening fails.
    func serve(vsockPort port: UInt32) async throws {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4)
            .bind(
                to: VsockAddress(cid: .any, port: .init(rawValue: port)),
                serverBackPressureStrategy: .init(lowWatermark: 1, highWatermark: 2),
                childChannelInitializer: Self.configure)
        try await server.executeThenClose { connections in
            for try await multiplexer in connections {
                System.log("the host connected over vsock")
                do {
                    try await serve(multiplexer)
                    System.log("the host closed its vsock connection; waiting for the next")
                } catch {
                    System.log("vsock connection failed: \(error); waiting for the next")
                }
            }
        }
    }

    /// The HTTP/2 server pipeline, the same on every transport.
    @Sendable
    private static func configure(_ channel: any Channel) -> EventLoopFuture<Multiplexer> {
        channel.eventLoop.makeCompletedFuture {
            LinkTuning.apply(to: channel)
            return try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                mode: .server,
                configuration: LinkTuning.http2
            ) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try StreamChannel(wrappingChannelSynchronously: stream)
                }
            }
        }
    }

    /// Serves the streams of one connection until it ends.
    private func serve(_ multiplexer: Multiplexer) async throws {
        try await withThrowingDiscardingTaskGroup { tasks in
            for try await stream in multiplexer.inbound {
                tasks.addTask { await handle(stream) }
            }
        }
    }

    private func handle(_ stream: StreamChannel) async {
        do {
            try await stream.executeThenClose { inbound, outbound in
                var frames = inbound.makeAsyncIterator()
                guard case .headers(let headers)? = try await frames.next() else { return }
                let path = headers.headers.first(name: ":path") ?? ""
                switch path {
                case LinkNames.Path.setup:
                    let body = try await Self.collectBody(&frames, limit: 4 << 20)
                    System.log("setup: \(body.readableBytes) bytes")
                    do {
                        let spec = try SetupSpec(decoding: body)
                        // The network does not depend on the root: both at once (nft's start-up
                        // is slow under TCG). No session starts before both are done.
                        async let network = {
                            await EarlyInit.networkModules.wait()
                            return try await GuestNetwork.start(forwardPorts: spec.forwardPorts)
                        }()
                        await EarlyInit.fileSystemModules.wait()
                        try await RootBuilder.build(spec)
                        try Sudo.install(root: RootBuilder.root)
                        // A sign-in that cannot open the host's browser is no reason to fail the start.
                        let browser = Result { try BrowserRelay.install(root: RootBuilder.root) }
                        let link = try await network
                        switch browser {
                        case .success: BrowserRelay.start(root: RootBuilder.root, link: link)
                        case .failure(let error): System.log("browser relay: \(error)")
                        }
                        // Unix-socket forwards live in the new root: once it exists.
                        for forward in spec.forwardSockets {
                            try await GuestForwards.listen(socket: forward, root: RootBuilder.root, spec: spec, link: link)
                        }
                        System.log("setup: network ready (no card; TCP through the host)")
                        await Daemons.shared.start(spec.daemons, user: spec.user, group: spec.group)
                        // What loading modules and building the root freed goes back to the
                        // system before the first session (about 2 MB of the agent's 6).
                        malloc_trim(0)
                        try await Self.respond(outbound, status: "200", body: ByteBuffer())
                    } catch {
                        System.log("setup failed: \(error)")
                        try await Self.respond(outbound, status: "500", body: ByteBuffer(string: "\(error)"))
                    }
                case LinkNames.Path.exec:
                    var session = ExecSession(inbound: frames, outbound: outbound)
                    try await session.run()
                case ForwardRequest.path:
                    try await GuestForwards.forward(try ForwardRequest(headers: headers.headers), frames: Handoff(value: frames), outbound: outbound)
                case LinkNames.Path.daemons:
                    try await Self.respond(outbound, status: "200", body: DaemonStatus.encode(await Daemons.shared.all))
                case LinkNames.Path.powerOff:
                    await Daemons.shared.stopAll()
                    try await Self.respond(outbound, status: "200", body: ByteBuffer())
                    EarlyInit.powerOff()
                default:
                    try await Self.respond(outbound, status: "404", body: ByteBuffer(string: "no such request: \(path)"))
                }
            }
        } catch {
            System.log("stream ended with an error: \(error)")
        }
    }

    static func collectBody(_ frames: inout NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator, limit: Int) async throws
        -> ByteBuffer
    {
        var body = ByteBuffer()
        while let frame = try await frames.next() {
            switch frame {
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data {
                    guard body.readableBytes + bytes.readableBytes <= limit else { throw WireError("request body exceeds \(limit) bytes") }
                    body.writeImmutableBuffer(bytes)
                }
                if data.endStream { return body }
            case .headers(let headers) where headers.endStream:
                return body
            default:
                continue
            }
        }
        return body
    }

    static func respond(_ outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>, status: String, body: ByteBuffer) async throws {
        try await outbound.write(.headers(.init(headers: [":status": status])))
        try await outbound.write(.data(.init(data: .byteBuffer(body), endStream: true)))
    }
}
