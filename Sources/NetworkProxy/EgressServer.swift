import GuestLink
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy

/// Bounds on what one guest may make the host hold. Everything from the guest is hostile.
/// What the host buffers for a sandbox is bounded by construction: per stream, the guest's
/// data up to the stream's flow-control window, the upstream's up to the outbound watermark
/// and one upstream read (256 KiB each); at most `maxConcurrentStreams` streams: 256 × 768 KiB
/// = 192 MiB at the very worst, a few MiB in practice.
public struct EgressLimits: Sendable {
    /// Streams (connections, forwards included) open at once, over every egress connection of
    /// the sandbox; more are reset and recorded.
    public var maxConcurrentStreams = 256
    /// New streams a second, and how many may come at once: more are reset and recorded.
    public var maxNewStreamsPerSecond = 200
    public var newStreamBurst = 400
    /// Upstream bytes waiting for the guest to take them, per stream: above it the upstream
    /// is not read.
    public var outboundHighWatermark = 256 << 10
    /// HPACK-decoded header list size of one request.
    public var maxHeaderListSize = 16 * 1024
    /// HTTP/2 flow-control window per stream: the most the guest can send ahead of the
    /// upstream reading it.
    public var streamWindow = 256 << 10
    /// The connection-wide window.
    public var connectionWindow = 8 << 20
    /// Largest DATA frame the guest may send.
    public var maxFrameSize = 1 << 16
    /// How long to wait for the first bytes (TLS ClientHello, HTTP request head) when the
    /// decision needs them.
    public var sniffTimeout = TimeAmount.milliseconds(300)
    public var connectTimeout = TimeAmount.seconds(10)
    /// RST_STREAMs the guest may send in 10 s before its connection is ended.
    public var maxResetsPerWindow = 5000

    public init() {}
}

/// What an `EgressServer` needs to judge and carry connections.
public struct EgressConfiguration: Sendable {
    /// Every decision: the rules, and the forwards the configuration names.
    public var judge: EgressJudge
    /// The host's resolver by default; tests install a `StaticResolver`.
    public var resolver: any Resolver
    public var limits: EgressLimits
    /// TLS interception (nil: every TLS connection is relayed as it is).
    public var interception: Interception?
    /// Opens an address the guest asked for (`BrowseRequest`) in the user's browser; nil when
    /// it did, else the refusal. nil: the guest's browse requests are refused.
    public var browse: (@Sendable (String) async -> String?)?

    public init(
        rules: NetworkRules, resolver: any Resolver = SystemResolver(), guestForwards: [GuestForward] = [], socketForwards: [UnixSocketForward] = [],
        limits: EgressLimits = .init(), interception: Interception? = nil
    ) {
        self.judge = EgressJudge(rules: rules, guestForwards: guestForwards, socketForwards: socketForwards)
        self.resolver = resolver
        self.limits = limits
        self.interception = interception
    }
}

/// The host side of the guest→host egress connection: an HTTP/2 server whose every stream is
/// one TCP connection the guest captured (`EgressRequest`). Judges it with `EgressJudge`,
/// resolves and connects allowed ones, relays bytes both ways with back-pressure, and reports
/// each as a `ConnectionRecord`.
///
/// One `EgressServer` may serve any number of egress connections (one per sandbox is usual);
/// a failing connection (malformed frames, a flood of streams) ends only itself.
public final class EgressServer: Sendable {
    public typealias Multiplexer = NIOHTTP2Handler.AsyncStreamMultiplexer<EgressStream>

    /// One egress connection's pipeline: its streams, and the protocol error that ended it.
    public struct Connection: Sendable {
        public let multiplexer: Multiplexer
        public let channel: any Channel
        let failure: NIOLockedValueBox<(any Error)?>
        let keeper: StreamKeeper
    }

    public let configuration: EgressConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let sink: ConnectionRecordSink
    /// The sandbox's streams, over all its egress connections.
    let budget: ConnectionBudget

    public init(
        configuration: EgressConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, records: @escaping ConnectionRecordSink
    ) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.sink = records
        let limits = configuration.limits
        budget = ConnectionBudget(
            .init(concurrent: limits.maxConcurrentStreams, perSecond: limits.maxNewStreamsPerSecond, burst: limits.newStreamBurst))
    }

    /// Serves the egress connection on a connected stream socket (an accepted vsock or Unix
    /// connection, one end of a socket pair) until the guest closes it or it fails. NIO takes
    /// `fd` over and closes it.
    public func serve(connectedSocket fd: Int32) async throws {
        let multiplexer = try await ClientBootstrap(group: group).withConnectedSocket(fd, channelInitializer: configure)
        try await serve(multiplexer)
    }

    /// Connects to a Unix socket (QEMU's chardev for the `airlock.egress` virtio-serial port)
    /// and serves the egress connection on it until it ends.
    public func serve(unixSocket path: String) async throws {
        let multiplexer = try await ClientBootstrap(group: group).connect(unixDomainSocketPath: path, channelInitializer: configure)
        try await serve(multiplexer)
    }

    /// Listens on a Unix socket (Cloud Hypervisor's hybrid vsock `<socket>_<port>`) and serves
    /// every connection made to it, each independently, until the task is cancelled.
    public func listen(unixSocket path: String) async throws {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4)
            .bind(
                unixDomainSocketPath: path, cleanupExistingSocketFile: true,
                serverBackPressureStrategy: .init(lowWatermark: 1, highWatermark: 2), childChannelInitializer: configure)
        try await server.executeThenClose { connections in
            try await withThrowingDiscardingTaskGroup { tasks in
                for try await multiplexer in connections {
                    tasks.addTask {
                        do { try await self.serve(multiplexer) } catch { self.logger.warning("egress connection ended: \(error)") }
                    }
                }
            }
        }
    }

    /// The HTTP/2 server pipeline, for a channel from any bootstrap (install it in the
    /// channel initializer, before the channel is active, so no byte is read without it).
    @Sendable
    public func configure(_ channel: any Channel) -> EventLoopFuture<Connection> {
        let limits = configuration.limits
        return channel.eventLoop.makeCompletedFuture {
            LinkTuning.apply(to: channel)
            let keeper = StreamKeeper()
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = [
                HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.maxConcurrentStreams),
                HTTP2Setting(parameter: .maxHeaderListSize, value: limits.maxHeaderListSize),
                HTTP2Setting(parameter: .initialWindowSize, value: limits.streamWindow),
                HTTP2Setting(parameter: .maxFrameSize, value: limits.maxFrameSize),
            ]
            connection.targetWindowSize = limits.connectionWindow
            var stream = NIOHTTP2Handler.StreamConfiguration()
            stream.targetWindowSize = limits.streamWindow
            stream.outboundBufferSizeHighWatermark = limits.outboundHighWatermark
            stream.outboundBufferSizeLowWatermark = limits.outboundHighWatermark / 2
            // Every TCP reset in the guest is a RST_STREAM here: NIO's rapid-reset guard (200
            // per 30 s) would end a busy but honest guest's connection. Its own connection is
            // all a flood can end anyway.
            stream.streamResetFrameRateLimit.maximumCount = limits.maxResetsPerWindow
            stream.streamResetFrameRateLimit.windowLength = .seconds(10)
            let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                mode: .server, configuration: .init(connection: connection, stream: stream)
            ) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(SniffDeadlineHandler(after: limits.sniffTimeout))
                    let wrapped = try EgressStream(wrappingChannelSynchronously: stream)
                    keeper.hold(wrapped)
                    return wrapped
                }
            }
            // The HTTP/2 handler answers a protocol error with GOAWAY and passes the error on;
            // closing is ours to do.
            let failure = NIOLockedValueBox<(any Error)?>(nil)
            try channel.pipeline.syncOperations.addHandler(CloseOnErrorHandler(failure: failure))
            return Connection(multiplexer: multiplexer, channel: channel, failure: failure, keeper: keeper)
        }
    }

    /// Serves the streams of one connection until it ends. Throws what ended the connection
    /// (a protocol error from the guest); its streams are closed either way.
    public func serve(_ connection: Connection) async throws {
        let multiplexer = connection.multiplexer
        // However serving ends (the guest closed, a protocol error, cancellation), the
        // connection and every stream on it close.
        defer { connection.channel.close(promise: nil) }
        try await withThrowingDiscardingTaskGroup { tasks in
            for try await stream in multiplexer.inbound {
                if let refusal = budget.admit() {
                    // SETTINGS_MAX_CONCURRENT_STREAMS binds only once the guest acknowledged
                    // it (and per connection); this holds before that too, for the sandbox.
                    // Closing resets the stream; the audit log coalesces a flood of records.
                    stream.channel.close(promise: nil)
                    record(ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .refused, reason: refusal.reason))
                    continue
                }
                connection.keeper.take(stream)
                tasks.addTask {
                    defer { self.budget.release() }
                    await EgressStreamHandler(server: self, stream: stream).run()
                }
            }
        }
        if let failure = connection.failure.withLockedValue({ $0 }) { throw failure }
    }

    func record(_ record: ConnectionRecord) {
        sink(record)
    }
}

/// Holds every stream the HTTP/2 handler creates until `serve` takes it. A stream nobody
/// takes (refused over the limit, or opened while the connection winds down, when the stream
/// sequence no longer delivers) is closed and its async channel finished when the stream
/// closes: an `NIOAsyncChannel` dropped unfinished stops the process (a precondition in NIO),
/// and the guest must never be able to cause that.
final class StreamKeeper: Sendable {
    private let held = NIOLockedValueBox<[ObjectIdentifier: EgressStream]>([:])

    func hold(_ stream: EgressStream) {
        let id = ObjectIdentifier(stream.channel)
        held.withLockedValue { $0[id] = stream }
        stream.channel.closeFuture.whenComplete { _ in
            if let orphan = self.held.withLockedValue({ $0.removeValue(forKey: id) }) {
                Task { try? await orphan.executeThenClose { _, _ in } }
            }
        }
    }

    func take(_ stream: EgressStream) {
        _ = held.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(stream.channel)) }
    }
}

/// Closes the connection on the first connection-level error that reaches the end of its
/// pipeline (a protocol error from the guest, a socket error) and keeps it for `serve` to
/// throw. NIOHTTP2 reports stream errors the same way after resetting just that stream; the
/// common ones (frames for a stream already reset or unknown) leave the connection alone.
/// An error misjudged as connection-level only ends this guest's own connection.
final class CloseOnErrorHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = Never
    let failure: NIOLockedValueBox<(any Error)?>

    init(failure: NIOLockedValueBox<(any Error)?>) {
        self.failure = failure
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamClosed || error is NIOHTTP2Errors.NoSuchStream { return }
        failure.withLockedValue { $0 = $0 ?? error }
        context.close(promise: nil)
    }
}

/// What the stream's async channel reads: the guest's frames, and once, the moment the sniff
/// deadline passed.
public enum EgressStreamInput: Sendable {
    case frame(HTTP2Frame.FramePayload)
    case sniffDeadline
    /// The upstream, dialled before the guest said anything, said something first
    /// (`UpstreamHold` holds it).
    case upstreamSpoke
    /// The relay took the stream over: frames after this one go straight to the upstream.
    case relayStarted
}

public typealias EgressStream = NIOAsyncChannel<EgressStreamInput, HTTP2Frame.FramePayload>

/// Wraps each inbound frame and, `after` the stream opened, injects `.sniffDeadline` once, so
/// the handler can wait for the first bytes with a deadline without racing tasks over one
/// iterator; `signal` injects other events the same way.
final class SniffDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = EgressStreamInput

    private let delay: TimeAmount
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(after delay: TimeAmount) {
        self.delay = delay
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            signal(.sniffDeadline)
        }
    }

    /// Hands `input` to the async channel, behind the frames already read. On the event loop.
    func signal(_ input: EgressStreamInput) {
        // The async channel hands reads over on read-complete.
        context?.fireChannelRead(NIOAny(input))
        context?.fireChannelReadComplete()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(.frame(unwrapInboundIn(data))))
    }
}
