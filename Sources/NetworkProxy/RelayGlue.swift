import NIOCore
import NIOHTTP2

/// What a glued relay carried, and how it ended.
struct RelayTotals: Sendable {
    var up: Int64 = 0
    var down: Int64 = 0
    /// nil: both sides ended cleanly (END_STREAM and EOF both ways).
    var failure: (any Error)?
}

/// The event-loop half of `Relay.glue`: copies bytes between an egress stream channel (HTTP/2
/// DATA frames) and an upstream socket channel without leaving the event loop they share.
/// Two handlers (`RelayStreamSide`, `RelayUpstreamSide`) forward each side's reads as the
/// other side's writes; each side reads only while the other is writable (NIO's "glue"
/// pattern), so back-pressure is the HTTP/2 flow-control window one way and the socket's
/// send buffer the other.
///
/// Half-close: END_STREAM from the guest flushes every byte, then shuts the upstream's output;
/// EOF from the upstream sends END_STREAM. A RST_STREAM, a stream or socket error, or either
/// side closing before its end was seen closes both (the stream is reset).
///
/// Hand-over from the async stream handler, which may hold frames it read but did not
/// consume yet: `install` adds the handlers and fires `.relayStarted` into the async channel
/// behind them; frames arriving after that are held here. The async side consumes its frames
/// up to the marker and passes them to `go`, which writes them, then the held ones, in order.
///
/// Every method runs on the event loop of both channels (`install` checks they share it).
final class RelayGlue {
    private enum Phase { case draining, relaying, finished }

    private var phase = Phase.draining
    private var held: [HTTP2Frame.FramePayload] = []
    fileprivate var streamContext: ChannelHandlerContext?
    fileprivate var upstreamContext: ChannelHandlerContext?
    private let stream: any Channel
    private let upstream: any Channel
    /// The stream asked to read while the upstream could not take more.
    private var streamReadPending = true
    /// The upstream's next read waits until the stream is writable.
    private var upstreamReadPaused = false
    /// END_STREAM (or trailers with it) from the guest.
    private var guestEnded = false
    /// EOF from the upstream.
    private var upstreamEnded = false
    /// Every guest byte written and the upstream's output shut down.
    private var upDone = false
    /// END_STREAM written to the stream.
    private var downDone = false
    private var totals = RelayTotals()
    private let promise: EventLoopPromise<RelayTotals>

    private init(stream: any Channel, upstream: any Channel) {
        self.stream = stream
        self.upstream = upstream
        self.promise = stream.eventLoop.makePromise()
    }

    /// Adds the two handlers (the stream's right behind its `SniffDeadlineHandler`) and fires
    /// `.relayStarted` to the async channel. On the shared event loop.
    static func install(stream: any Channel, upstream: any Channel) throws -> RelayGlue {
        stream.eventLoop.preconditionInEventLoop()
        guard stream.eventLoop === upstream.eventLoop else { throw RelayError("the upstream is on another event loop") }
        let glue = RelayGlue(stream: stream, upstream: upstream)
        guard stream.isActive else { throw RelayReset() }
        guard upstream.isActive else { throw RelayError("the upstream closed before the relay started") }
        let sniff = try stream.pipeline.syncOperations.handler(type: SniffDeadlineHandler.self)
        try stream.pipeline.syncOperations.addHandler(RelayStreamSide(glue), position: .after(sniff))
        try upstream.pipeline.syncOperations.addHandler(RelayUpstreamSide(glue))
        if let context = glue.streamContext {
            context.fireChannelRead(NIOAny(EgressStreamInput.relayStarted))
            context.fireChannelReadComplete()
        }
        return glue
    }

    /// Starts relaying: answers `response`, writes `initial` and the frames the async side
    /// read before the marker, then everything after. The future completes when the relay
    /// ended (cleanly or not); the upstream is closed by then.
    func go(response: HTTP2Frame.FramePayload, initial: ByteBuffer, early: [HTTP2Frame.FramePayload], guestEnded ended: Bool) -> EventLoopFuture<
        RelayTotals
    > {
        guard phase == .draining, let streamContext, let upstreamContext else {
            finish(failure: RelayReset())
            return promise.futureResult
        }
        phase = .relaying
        streamContext.write(NIOAny(response), promise: nil)
        streamContext.flush()
        if initial.readableBytes > 0 {
            totals.up += Int64(initial.readableBytes)
            upstreamContext.write(NIOAny(initial), promise: nil)
        }
        var pending = early + held
        held = []
        // END_STREAM seen while sniffing.
        if ended { pending.insert(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), at: 0) }
        for payload in pending where phase == .relaying { fromGuest(payload) }
        guard phase == .relaying else { return promise.futureResult }
        upstreamContext.flush()
        upstreamContext.read()
        if streamReadPending, upstream.isWritable {
            streamReadPending = false
            streamContext.read()
        }
        return promise.futureResult
    }

    // MARK: Stream side

    fileprivate func fromGuest(_ payload: HTTP2Frame.FramePayload) {
        switch phase {
        case .draining:
            held.append(payload)
            return
        case .finished:
            return
        case .relaying:
            break
        }
        switch payload {
        case .data(let data):
            if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0, !guestEnded {
                totals.up += Int64(bytes.readableBytes)
                upstreamContext?.write(NIOAny(bytes), promise: nil)
            }
            if data.endStream { guestFinished() }
        case .headers(let headers):
            if headers.endStream { guestFinished() }
        case .rstStream:
            finish(failure: RelayReset())
        default:
            break
        }
    }

    fileprivate func guestReadComplete() {
        if phase == .relaying { upstreamContext?.flush() }
    }

    /// The stream's `read`: passed on only while the upstream takes more.
    fileprivate func streamWantsRead(_ context: ChannelHandlerContext) {
        if phase == .finished || (phase == .relaying && upstream.isWritable) {
            context.read()
        } else {
            streamReadPending = true
        }
    }

    fileprivate func streamWritabilityChanged() {
        guard phase == .relaying, upstreamReadPaused, stream.isWritable else { return }
        upstreamReadPaused = false
        upstreamContext?.read()
    }

    fileprivate func streamInactive() {
        // Both ends seen: the stream closed normally; the last completions finish the relay.
        if guestEnded && upstreamEnded { return }
        finish(failure: RelayReset())
    }

    /// Half-close the upstream once every byte is written: an output close that escalates to
    /// a full one (the upstream already sent EOF) would drop writes still pending. Writes
    /// complete in order, so an empty one completes after all before it.
    private func guestFinished() {
        guard !guestEnded, let upstreamContext else { return }
        guestEnded = true
        let upstream = self.upstream
        upstreamContext.writeAndFlush(NIOAny(ByteBuffer())).flatMap {
            upstream.close(mode: .output)
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.upDone = true
                self.finishIfDone()
            case .failure(let error):
                self.finish(failure: error)
            }
        }
    }

    // MARK: Upstream side

    fileprivate func fromUpstream(_ bytes: ByteBuffer) {
        guard phase == .relaying, let streamContext else { return }
        totals.down += Int64(bytes.readableBytes)
        streamContext.write(NIOAny(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(bytes)))), promise: nil)
    }

    fileprivate func upstreamReadComplete() {
        guard phase == .relaying else { return }
        streamContext?.flush()
        guard !upstreamEnded else { return }
        if stream.isWritable {
            upstreamContext?.read()
        } else {
            upstreamReadPaused = true
        }
    }

    fileprivate func upstreamWritabilityChanged() {
        guard phase == .relaying, streamReadPending, upstream.isWritable else { return }
        streamReadPending = false
        streamContext?.read()
    }

    fileprivate func upstreamEOF() {
        guard phase == .relaying, !upstreamEnded, let streamContext else { return }
        upstreamReadPaused = false
        upstreamEnded = true
        let end = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))
        streamContext.writeAndFlush(NIOAny(end)).assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.downDone = true
                self.finishIfDone()
            case .failure(let error):
                self.finish(failure: error)
            }
        }
    }

    fileprivate func upstreamInactive() {
        guard phase == .relaying else { return }
        if guestEnded && upstreamEnded { return }
        // NIO closes a channel whose output is shut down when EOF arrives, without an
        // `inputClosed` event: with our side shut and no error, that is the upstream's EOF.
        if upDone && totals.failure == nil {
            upstreamEOF()
            return
        }
        finish(failure: totals.failure ?? RelayError("the upstream closed the connection"))
    }

    fileprivate func upstreamError(_ error: any Error) {
        if totals.failure == nil { totals.failure = error }
        upstream.close(promise: nil)
    }

    // MARK: End

    private func finishIfDone() {
        if upDone && downDone { finish(failure: nil) }
    }

    private func finish(failure: (any Error)?) {
        guard phase != .finished else { return }
        phase = .finished
        held = []
        // A clean end (every byte carried both ways) forgets an error seen on the way out.
        totals.failure = failure.map { totals.failure ?? $0 }
        upstream.close(promise: nil)
        // Resets the stream unless both sides already ended it.
        if failure != nil { stream.close(promise: nil) }
        if streamReadPending {
            streamReadPending = false
            streamContext?.read()
        }
        promise.succeed(totals)
    }
}

/// The stream's handler: frames from the guest go to the upstream; reads wait for the
/// upstream's writability.
final class RelayStreamSide: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = EgressStreamInput
    typealias InboundOut = EgressStreamInput
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let glue: RelayGlue

    init(_ glue: RelayGlue) {
        self.glue = glue
    }

    func handlerAdded(context: ChannelHandlerContext) {
        glue.streamContext = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        glue.streamContext = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .frame(let payload): glue.fromGuest(payload)
        case .sniffDeadline, .upstreamSpoke, .relayStarted: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        glue.guestReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        glue.streamWantsRead(context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        glue.streamWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        glue.streamInactive()
        context.fireChannelInactive()
    }
}

/// The upstream socket's handler: bytes go to the stream as DATA; EOF as END_STREAM.
final class RelayUpstreamSide: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let glue: RelayGlue

    init(_ glue: RelayGlue) {
        self.glue = glue
    }

    func handlerAdded(context: ChannelHandlerContext) {
        glue.upstreamContext = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        glue.upstreamContext = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        glue.fromUpstream(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        glue.upstreamReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { glue.upstreamEOF() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        glue.upstreamWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        glue.upstreamInactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        glue.upstreamError(error)
    }
}

/// On an upstream dialled before the guest said anything: reads once, holds what comes (the
/// server's first bytes, its EOF) and calls `spoke` the first time anything happens, so a
/// server that speaks first (SSH, SMTP) is relayed at once. The glue's first read releases
/// what was held, in order; from then on everything passes through. Holds one read at most
/// (the channel does not read on its own).
final class UpstreamHold: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var holding = true
    private var held: [ByteBuffer] = []
    private var heldEOF = false
    private var spoke: (() -> Void)?

    init(spoke: @escaping () -> Void) {
        self.spoke = spoke
    }

    func handlerAdded(context: ChannelHandlerContext) {
        context.read()
    }

    private func tell() {
        let spoke = self.spoke
        self.spoke = nil
        spoke?()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard holding else { return context.fireChannelRead(data) }
        held.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard holding else { return context.fireChannelReadComplete() }
        tell()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if holding, case ChannelEvent.inputClosed = event {
            heldEOF = true
            return tell()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        tell()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        tell()
        context.fireErrorCaught(error)
    }

    func read(context: ChannelHandlerContext) {
        guard holding else { return context.read() }
        holding = false
        spoke = nil
        guard !held.isEmpty || heldEOF else { return context.read() }
        let bytes = held
        held = []
        for buffer in bytes { context.fireChannelRead(wrapInboundOut(buffer)) }
        // The glue reads again on read-complete (through here, now passing).
        if !bytes.isEmpty { context.fireChannelReadComplete() }
        if heldEOF { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
    }
}

struct RelayError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
