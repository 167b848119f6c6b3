import GuestLink
import NIOCore
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

typealias StreamChannel = NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>

/// Serves the control connection: the host opens HTTP/2 streams, each a request.
struct LinkServer {
    let group: MultiThreadedEventLoopGroup

    /// Serves the connected stream socket `fd` (bridged to the virtio-serial port) until the
    /// host goes away.
    func serve(socket fd: Int32) async throws {
        let multiplexer = try await ClientBootstrap(group: group)
            .withConnectedSocket(fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                        mode: .server,
                        configuration: .init(connection: .init(), stream: .init())
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try StreamChannel(wrappingChannelSynchronously: stream)
                        }
                    }
                }
            }
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
                        try await RootBuilder.build(spec)
                        try await Self.respond(outbound, status: "200", body: ByteBuffer())
                    } catch {
                        System.log("setup failed: \(error)")
                        try await Self.respond(outbound, status: "500", body: ByteBuffer(string: "\(error)"))
                    }
                case LinkNames.Path.exec:
                    var session = ExecSession(inbound: frames, outbound: outbound)
                    try await session.run()
                case LinkNames.Path.powerOff:
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

    static func collectBody(_ frames: inout NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator, limit: Int) async throws -> ByteBuffer {
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
