import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

public typealias LinkStream = NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>

/// The host's side of the control connection: an HTTP/2 client over a byte stream to the
/// guest agent. One per running sandbox; sessions are streams on it.
public final class LinkClient: Sendable {
    public let channel: any Channel
    private let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>

    private init(channel: any Channel, multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>) {
        self.channel = channel
        self.multiplexer = multiplexer
    }

    /// Errors of the link itself (the session's own outcome is an exit status).
    public enum Failure: Error, Sendable, CustomStringConvertible {
        case status(path: String, status: String, message: String)
        case truncated(path: String)
        case tooLarge(path: String, limit: Int)

        public var description: String {
            switch self {
            case .status(let path, let status, let message): "the guest answered \(path) with \(status): \(message)"
            case .truncated(let path): "the guest closed \(path) without an answer"
            case .tooLarge(let path, let limit): "the guest's answer to \(path) exceeds \(limit) bytes"
            }
        }
    }

    /// Speaks HTTP/2 (as the client) on a connected channel: a Unix socket bound to the
    /// virtio-serial port, or a vsock connection.
    ///
    /// The HTTP/2 handler is in the pipeline before the connection is active, so bytes the peer
    /// sends at once (its SETTINGS) are never read before there is a handler to take them.
    public static func connect(unixSocket path: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> LinkClient
    {
        let (channel, multiplexer) = try await ClientBootstrap(group: group).connect(unixDomainSocketPath: path) { configure($0, LinkTuning.http2) }
        return LinkClient(channel: channel, multiplexer: multiplexer)
    }

    /// Speaks HTTP/2 on a stream socket that is already connected (and past any handshake of
    /// its transport, such as Cloud Hypervisor's hybrid vsock `CONNECT`/`OK`). NIO takes `fd` over
    /// and closes it with the channel.
    public static func connect(
        connectedSocket fd: Int32, configuration: NIOHTTP2Handler.Configuration = LinkTuning.http2,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LinkClient {
        let (channel, multiplexer) = try await ClientBootstrap(group: group).withConnectedSocket(fd) { configure($0, configuration) }
        return LinkClient(channel: channel, multiplexer: multiplexer)
    }

    /// Speaks HTTP/2 over an `AF_VSOCK` connection to `port` of the guest with context id `cid`
    /// (QEMU with vhost-vsock). One attempt: the caller retries while the guest boots.
    public static func connect(
        vsockCID cid: UInt32, port: UInt32, configuration: NIOHTTP2Handler.Configuration = LinkTuning.http2,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LinkClient {
        let address = VsockAddress(cid: .init(rawValue: cid), port: .init(rawValue: port))
        let (channel, multiplexer) = try await ClientBootstrap(group: group).connect(to: address) { configure($0, configuration) }
        return LinkClient(channel: channel, multiplexer: multiplexer)
    }

    /// The same pipeline for every transport, tuned by `LinkTuning`.
    private static func configure(
        _ channel: any Channel, _ configuration: NIOHTTP2Handler.Configuration
    ) -> EventLoopFuture<(any Channel, NIOHTTP2Handler.AsyncStreamMultiplexer<Void>)> {
        channel.eventLoop.makeCompletedFuture {
            LinkTuning.apply(to: channel)
            let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                mode: .client, configuration: configuration
            ) { stream in
                stream.eventLoop.makeSucceededVoidFuture()
            }
            return (channel, multiplexer)
        }
    }

    /// Opens a stream; the caller writes `requestHeaders(path:)` first.
    public func openStream() async throws -> LinkStream {
        try await multiplexer.openStream { channel in
            channel.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: channel) }
        }
    }

    /// The HEADERS frame that starts a request for `path`.
    public static func requestHeaders(path: String, endStream: Bool = false) -> HTTP2Frame.FramePayload {
        let headers: HPACKHeaders = [":method": "POST", ":scheme": "http", ":authority": "guest", ":path": path]
        return .headers(.init(headers: headers, endStream: endStream))
    }

    /// A request with a body and a bounded answer; throws unless the status is 200.
    public func call(_ path: String, body: ByteBuffer, limit: Int = 1 << 20) async throws -> ByteBuffer {
        let stream = try await openStream()
        return try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(Self.requestHeaders(path: path))
            try await outbound.write(.data(.init(data: .byteBuffer(body), endStream: true)))
            var status: String?
            var answer = ByteBuffer()
            for try await frame in inbound {
                switch frame {
                case .headers(let headers):
                    status = status ?? headers.headers.first(name: ":status")
                    if headers.endStream { return try Self.check(path, status, answer) }
                case .data(let data):
                    if case .byteBuffer(let bytes) = data.data {
                        guard answer.readableBytes + bytes.readableBytes <= limit else { throw Failure.tooLarge(path: path, limit: limit) }
                        answer.writeImmutableBuffer(bytes)
                    }
                    if data.endStream { return try Self.check(path, status, answer) }
                default:
                    continue
                }
            }
            throw Failure.truncated(path: path)
        }
    }

    private static func check(_ path: String, _ status: String?, _ body: ByteBuffer) throws -> ByteBuffer {
        guard let status else { throw Failure.truncated(path: path) }
        guard status == "200" else {
            throw Failure.status(path: path, status: status, message: String(decoding: body.readableBytesView.prefix(4096), as: UTF8.self))
        }
        return body
    }

    public func close() async {
        try? await channel.close()
    }
}
