import NIOCore
import NIOHTTP2

/// Socket, channel and HTTP/2 settings for a link connection (either end): it carries bulk data in
/// frames of up to 1 MiB, so reads of up to 1 MiB (NIOHTTP2 then parses a frame without
/// gathering 64 KiB pieces), a write buffer that holds a few frames before the channel and
/// every stream on it report "not writable" (at NIO's default 64 KiB every large frame would
/// stop every relay), and socket buffers that take a frame in one write. Flow control still
/// bounds what each side sends ahead; these bound only one connection's buffering.
public enum LinkTuning {
    public static let readMaximum = 1 << 20
    public static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 1 << 20, high: 4 << 20)
    public static let socketBuffer: SocketOptionValue = 4 << 20

    /// On the channel's event loop (a channel initializer). Options a transport does not
    /// have (socket buffers on a non-socket channel) are left as they are.
    public static func apply(to channel: any Channel) {
        guard let options = channel.syncOptions else { return }
        try? options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 64 << 10, maximum: readMaximum))
        try? options.setOption(.writeBufferWaterMark, value: writeBufferWaterMark)
        try? options.setOption(.socketOption(.so_sndbuf), value: socketBuffer)
        try? options.setOption(.socketOption(.so_rcvbuf), value: socketBuffer)
    }

    /// The HTTP/2 settings, the same on both ends: 1 MiB frames, and windows of 4 MiB per
    /// stream and 16 MiB per connection. With the default 64 KiB window every stream (the
    /// setup with the synthesized /etc, session input and output, forwarded connections) would
    /// wait for a round trip per 64 KiB, which under TCG costs milliseconds each.
    public static var http2: NIOHTTP2Handler.Configuration {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1024),
            HTTP2Setting(parameter: .initialWindowSize, value: 4 << 20),
            HTTP2Setting(parameter: .maxFrameSize, value: 1 << 20),
        ]
        connection.targetWindowSize = 16 << 20
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 4 << 20
        return .init(connection: connection, stream: stream)
    }

    /// The guest's egress link to the host: as `http2`, but the host may reset streams (and
    /// streams may fail) as fast as the agent makes connections: it resets one whenever a
    /// connection ends abruptly (an upstream reset, a stream over the limit). NIO's default
    /// guard against a peer's rapid resets (200 in 30 s) would end the whole link, and with it
    /// the sandbox's network, for an agent that makes many short connections. The host is the
    /// guest's trusted end: 20,000 a second (NIO keeps one timestamp per event in the window,
    /// so the window is short).
    public static var http2ToHost: NIOHTTP2Handler.Configuration {
        var configuration = http2
        configuration.stream.streamResetFrameRateLimit.maximumCount = 20_000
        configuration.stream.streamResetFrameRateLimit.windowLength = .seconds(1)
        configuration.stream.streamErrorRateLimit.maximumCount = 20_000
        configuration.stream.streamErrorRateLimit.windowLength = .seconds(1)
        return configuration
    }
}
