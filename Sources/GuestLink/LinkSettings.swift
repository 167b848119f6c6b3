import NIOHTTP2

/// The HTTP/2 settings of the control link, the same on both ends. Large frames and windows:
/// a link carries bulk data (the setup with the synthesized /etc, session input and output,
/// forwarded connections), and the default 64 KiB window would make every stream wait for a
/// round trip per 64 KiB, which under TCG costs milliseconds each. Flow control still bounds
/// what the peer may send ahead: 4 MiB per stream, 16 MiB per connection.
public enum LinkSettings {
    public static var configuration: NIOHTTP2Handler.Configuration {
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
}
