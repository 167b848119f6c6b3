import NIOCore

/// Socket and channel settings for a link connection (either end): it carries bulk data in
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
}
