import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2

/// Copies bytes between an HTTP/2 stream (DATA frames) and a TCP connection, both ways, with
/// back-pressure on both: each write waits for the other side's flow control (HTTP/2 window,
/// socket writability) and each side reads only as fast as the other takes.
///
/// Half-close: END_STREAM from the stream shuts down the TCP connection's output; EOF from the
/// TCP connection sends END_STREAM. A reset or error on either side closes both (the stream
/// is reset, the TCP connection closed).
enum Relay {
    static func run<Frames: AsyncIteratorProtocol>(
        frames: inout Frames,
        frame: (Frames.Element) -> HTTP2Frame.FramePayload?,
        guestFinished: Bool,
        initial: ByteBuffer,
        stream: any Channel,
        outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>,
        upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        record: ConnectionRecord,
        progress: (ConnectionRecord) -> Void
    ) async -> ConnectionRecord {
        var record = record
        let down = NIOLockedValueBox<Int64>(0)
        var up: Int64 = 0
        let tcp = upstream.channel
        do {
            try await upstream.executeThenClose { tcpIn, tcpOut in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Upstream → stream.
                    group.addTask {
                        do {
                            for try await buffer in tcpIn {
                                down.withLockedValue { $0 += Int64(buffer.readableBytes) }
                                try await outbound.write(.data(.init(data: .byteBuffer(buffer))))
                            }
                            try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
                        } catch {
                            stream.close(promise: nil)
                            throw error
                        }
                    }
                    // Stream → upstream.
                    do {
                        if initial.readableBytes > 0 {
                            up += Int64(initial.readableBytes)
                            try await tcpOut.write(initial)
                        }
                        var finished = guestFinished
                        while !finished, let element = try await frames.next() {
                            guard let payload = frame(element) else { continue }
                            switch payload {
                            case .data(let data):
                                if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 {
                                    up += Int64(bytes.readableBytes)
                                    try await tcpOut.write(bytes)
                                }
                                finished = data.endStream
                            case .headers(let headers):
                                finished = headers.endStream
                            case .rstStream:
                                throw RelayReset()
                            default:
                                continue
                            }
                        }
                        // The stream closed without END_STREAM: the guest side was reset.
                        guard finished else { throw RelayReset() }
                        // Half-close only once every byte is written: an output close that
                        // escalates to a full one (the upstream already sent EOF) would drop
                        // writes still pending. Writes complete in order, so an empty one
                        // completes after all before it.
                        try await tcp.writeAndFlush(ByteBuffer())
                        try await tcp.close(mode: .output)
                    } catch {
                        tcp.close(promise: nil)
                        throw error
                    }
                    try await group.waitForAll()
                }
            }
        } catch {
            if !(error is RelayReset) { record.reason += "; ended with \(error)" }
        }
        record.bytesUp = up
        record.bytesDown = down.withLockedValue { $0 }
        progress(record)
        return record
    }

    /// The egress relay: `Relay.run`'s behaviour without leaving the event loop. `upstream`
    /// must be on the stream's event loop, connected with `autoRead` off and nothing in its
    /// pipeline (`EgressStreamHandler.connectGlued`); the stream is an `EgressStream` whose
    /// iterator is `frames`. Answers `response` first, then relays until both sides ended or
    /// one failed (see `RelayGlue`). The upstream is closed when this returns.
    static func glue(
        frames: inout NIOAsyncChannelInboundStream<EgressStreamInput>.AsyncIterator,
        response: HTTP2Frame.FramePayload,
        guestFinished: Bool,
        initial: ByteBuffer,
        stream: any Channel,
        upstream: any Channel,
        record: ConnectionRecord,
        progress: (ConnectionRecord) -> Void
    ) async -> ConnectionRecord {
        var record = record
        var totals = RelayTotals()
        do {
            let glue = try await stream.eventLoop.submit {
                NIOLoopBound(try RelayGlue.install(stream: stream, upstream: upstream), eventLoop: stream.eventLoop)
            }.get()
            // Frames the async channel read before the glue took over, up to its marker. Their
            // number is bounded by the stream's flow-control window.
            // A stream that ends before the marker is closed: the glue saw that, and `go` ends.
            var early: [HTTP2Frame.FramePayload] = []
            do {
                while let element = try await frames.next() {
                    if case .relayStarted = element { break }
                    if case .frame(let payload) = element { early.append(payload) }
                }
            } catch {}
            let handover = early
            totals = try await stream.eventLoop.flatSubmit {
                glue.value.go(response: response, initial: initial, early: handover, guestEnded: guestFinished)
            }.get()
        } catch {
            upstream.close(promise: nil)
            stream.close(promise: nil)
            totals.failure = error
        }
        if let failure = totals.failure, !(failure is RelayReset) { record.reason += "; ended with \(failure)" }
        record.bytesUp = totals.up
        record.bytesDown = totals.down
        progress(record)
        return record
    }

    /// Waits until `stream` closes by itself (both sides sent END_STREAM and every frame is
    /// out), at most `timeout`; then closes it. Closing an HTTP/2 stream channel with frames
    /// still queued resets the stream and drops them.
    static func settle(_ stream: any Channel, timeout: TimeAmount) async {
        let timer = stream.eventLoop.scheduleTask(in: timeout) { stream.close(promise: nil) }
        try? await stream.closeFuture.get()
        timer.cancel()
    }
}

struct RelayReset: Error, CustomStringConvertible {
    var description: String { "the connection was reset" }
}
