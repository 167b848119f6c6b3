import GuestLink
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy

/// Opens a request stream towards the guest on the control connection (`LinkClient`).
public protocol GuestStreamOpener: Sendable {
    func openStream() async throws -> LinkStream
}

extension LinkClient: GuestStreamOpener {}

/// The host side of host → guest port forwards: one listener per forward, on 127.0.0.1 only;
/// each accepted connection becomes a `ForwardRequest` stream on the control connection.
public final class PortForwarder: Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    typealias Listener = NIOAsyncChannel<Connection, Never>

    private let listeners: [(forward: HostForward, server: Listener)]
    private let link: any GuestStreamOpener
    private let logger: Logger
    private let sink: ConnectionRecordSink
    /// Host connections carried at once and new a second, over all of the sandbox's forwards:
    /// more are closed and recorded.
    public static let limits = ConnectionBudget.Limits(concurrent: 256, perSecond: 100, burst: 200)
    private let budget: ConnectionBudget
    /// How long the guest may take to answer a forward request.
    public static let answerTimeout = TimeAmount.seconds(10)

    /// Host connections carried now.
    public var openConnections: Int { budget.open }

    /// The port each forward listens on, in the order given.
    public var boundPorts: [UInt16] {
        listeners.map { UInt16(truncatingIfNeeded: $0.server.channel.localAddress?.port ?? 0) }
    }

    /// The address each forward listens on (always 127.0.0.1).
    public var boundAddresses: [String] {
        listeners.map { $0.server.channel.localAddress?.ipAddress ?? "" }
    }

    private init(
        listeners: [(forward: HostForward, server: Listener)], link: any GuestStreamOpener, logger: Logger, sink: @escaping ConnectionRecordSink,
        limits: ConnectionBudget.Limits
    ) {
        self.listeners = listeners
        self.link = link
        self.logger = logger
        self.sink = sink
        self.budget = ConnectionBudget(limits)
    }

    /// Binds every listener on 127.0.0.1 at once, so a taken port fails the start with a
    /// clear error; `run()` then serves them.
    public static func bind(
        _ forwards: [HostForward], link: any GuestStreamOpener,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, records: @escaping ConnectionRecordSink, limits: ConnectionBudget.Limits = PortForwarder.limits
    ) async throws -> PortForwarder {
        var listeners: [(forward: HostForward, server: Listener)] = []
        do {
            for forward in forwards {
                let server: Listener
                do {
                    server = try await ServerBootstrap(group: group)
                        .serverChannelOption(.backlog, value: 64)
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .childChannelOption(.allowRemoteHalfClosure, value: true)
                        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                        .bind(host: "127.0.0.1", port: Int(forward.listenPort)) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try Connection(
                                    wrappingChannelSynchronously: channel,
                                    configuration: .init(
                                        backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8), isOutboundHalfClosureEnabled: true))
                            }
                        }
                } catch {
                    throw PortForwardError(message: "cannot listen on 127.0.0.1:\(forward.listenPort) for [network.ports.\(forward.entry)]: \(error)")
                }
                listeners.append((forward, server))
            }
        } catch {
            for listener in listeners { try? await listener.server.channel.close() }
            throw error
        }
        return PortForwarder(listeners: listeners, link: link, logger: logger, sink: records, limits: limits)
    }

    /// Accepts and carries connections until the task is cancelled or `close()` is called.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for listener in listeners {
                group.addTask {
                    do {
                        try await listener.server.executeThenClose { connections in
                            try await withThrowingDiscardingTaskGroup { tasks in
                                for try await connection in connections {
                                    if let refusal = self.budget.admit() {
                                        tasks.addTask { await self.refuse(connection, listener.forward, refusal) }
                                        continue
                                    }
                                    tasks.addTask {
                                        defer { self.budget.release() }
                                        await self.carry(connection, listener.forward)
                                    }
                                }
                            }
                        }
                    } catch {
                        self.logger.debug("port forward \(listener.forward.listenPort) stopped: \(error)")
                    }
                }
            }
        }
    }

    /// Stops listening (connections already carried go on until they end).
    public func close() async {
        for listener in listeners { try? await listener.server.channel.close() }
    }

    /// Closes a connection over the budget (through `executeThenClose`: an async channel
    /// dropped unfinished stops the process), and records it.
    private func refuse(_ connection: Connection, _ forward: HostForward, _ refusal: ConnectionBudget.Refusal) async {
        try? await connection.executeThenClose { _, _ in }
        sink(
            ConnectionRecord(
                name: nil, ip: "127.0.0.1", port: forward.listenPort, rule: "ports.\(forward.entry)", verdict: .refused, reason: refusal.reason,
                direction: .hostForward))
    }

    private func carry(_ connection: Connection, _ forward: HostForward) async {
        let started = ContinuousClock.now
        var record = ConnectionRecord(
            name: nil, ip: "127.0.0.1", port: forward.listenPort, rule: "ports.\(forward.entry)",
            verdict: .forward, reason: "host 127.0.0.1:\(forward.listenPort) → guest port \(forward.guestPort)",
            direction: .hostForward)
        do {
            let stream = try await link.openStream()
            let channel = stream.channel
            try await stream.executeThenClose { inbound, outbound in
                try await outbound.write(.headers(.init(headers: ForwardRequest(port: forward.guestPort).headers)))
                var frames = inbound.makeAsyncIterator()
                // The answer has a deadline: closing the stream ends the wait.
                let timer = channel.eventLoop.scheduleTask(in: Self.answerTimeout) { channel.close(promise: nil) }
                let answer = try await frames.next()
                timer.cancel()
                guard case .headers(let headers)? = answer, headers.headers.first(name: ":status") == "200" else {
                    var reason = "the guest did not answer"
                    if case .headers(let headers)? = answer {
                        reason =
                            "the guest answered \(headers.headers.first(name: ":status") ?? "?"): "
                            + (headers.headers.first(name: ForwardRequest.reasonHeader) ?? "no reason given")
                    }
                    record.verdict = .refused
                    record.reason = "guest port \(forward.guestPort): \(reason)"
                    try? await connection.channel.close()
                    return
                }
                record = await Relay.run(
                    frames: &frames, frame: { $0 }, guestFinished: headers.endStream, initial: ByteBuffer(),
                    stream: channel, outbound: outbound, upstream: connection, record: record, progress: { _ in })
                await Relay.settle(channel, timeout: .seconds(30))
            }
        } catch {
            record.verdict = .refused
            record.reason = "guest port \(forward.guestPort): \(error)"
            try? await connection.channel.close()
        }
        let elapsed = ContinuousClock.now - started
        record.durationMilliseconds = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
        sink(record)
    }
}

public struct PortForwardError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
