import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy
import Testing

@testable import NetworkProxy

/// The guest's side of `/v1/forward`, for the test: an HTTP/2 server on the control connection
/// that connects each forward to 127.0.0.1:<airlock-port> (here: the test's own loopback).
enum FakeGuestControl {
    typealias Stream = NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>

    static func serve(_ fd: Int32) async throws {
        let multiplexer = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).withConnectedSocket(fd) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                    stream.eventLoop.makeCompletedFuture { try Stream(wrappingChannelSynchronously: stream) }
                }
            }
        }
        try await withThrowingDiscardingTaskGroup { group in
            for try await stream in multiplexer.inbound {
                group.addTask { try? await handle(stream) }
            }
        }
    }

    static func handle(_ stream: Stream) async throws {
        try await stream.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard case .headers(let headers)? = try await frames.next() else { return }
            let request = try ForwardRequest(headers: headers.headers)
            let upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>
            do {
                upstream = try await connectTCP(
                    to: try SocketAddress(ipAddress: "127.0.0.1", port: Int(request.port)),
                    group: MultiThreadedEventLoopGroup.singleton, timeout: .seconds(2))
            } catch {
                try await outbound.write(
                    .headers(.init(headers: [":status": "502", ForwardRequest.reasonHeader: "nothing listens on \(request.port)"], endStream: true)))
                return
            }
            try await outbound.write(.headers(.init(headers: [":status": "200"])))
            _ = await Relay.run(
                frames: &frames, frame: { $0 }, guestFinished: false, initial: ByteBuffer(), stream: stream.channel,
                outbound: outbound, upstream: upstream,
                record: ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .forward, reason: ""), progress: { _ in })
            await Relay.settle(stream.channel, timeout: .seconds(10))
        }
    }
}

@Suite("Host port forwards", .serialized)
struct PortForwarderTests {
    /// Connects to 127.0.0.1:port, sends `text`, half-closes, reads to EOF.
    func roundTrip(port: UInt16, text: String) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: Int(port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            if !text.isEmpty { try await outbound.write(ByteBuffer(string: text)) }
            outbound.finish()
            var received = ""
            for try await buffer in inbound { received += String(buffer: buffer) }
            return received
        }
    }

    /// A forwarder of `forwards` (given the port of an echo server) over the control link to a
    /// fake guest, running for `body`; everything ended after it.
    func withForwarder(
        _ forwards: (UInt16) -> [HostForward], limits: ConnectionBudget.Limits = PortForwarder.limits,
        _ body: (PortForwarder, Records) async throws -> Void
    ) async throws {
        let echo = try await TestServer.echo()
        let (hostEnd, guestEnd) = try socketPair()
        let guest = Task { try? await FakeGuestControl.serve(guestEnd) }
        let link = try await LinkClient.connect(connectedSocket: hostEnd)
        let records = Records()
        let forwarder = try await PortForwarder.bind(forwards(echo.port), link: link, logger: testLogger, records: records.sink, limits: limits)
        let running = Task { await forwarder.run() }
        var failure: (any Error)?
        do { try await body(forwarder, records) } catch { failure = error }
        await forwarder.close()
        running.cancel()
        _ = await running.value
        await link.close()
        _ = await guest.value
        await echo.close()
        if let failure { throw failure }
    }

    @Test("a connection to the host's listener reaches the guest's port; nothing listening there closes it")
    func forward() async throws {
        try await within {
            let dead = try await TestServer.echo()
            let deadPort = dead.port
            await dead.close()
            try await withForwarder({
                [HostForward(listenPort: 0, guestPort: $0, entry: "echo"), HostForward(listenPort: 0, guestPort: deadPort, entry: "dead")]
            }) {
                (forwarder, records) async throws in
                let ports = forwarder.boundPorts
                #expect(ports.count == 2 && ports.allSatisfy { $0 != 0 })

                #expect(try await roundTrip(port: ports[0], text: "through the link") == "through the link")
                let big = String(repeating: "x", count: 1 << 20)
                #expect(try await roundTrip(port: ports[0], text: big) == big)
                #expect(try await roundTrip(port: ports[1], text: "nobody") == "")

                let all = await records.wait(for: 3)
                #expect(all.filter { $0.rule == "ports.echo" && $0.verdict == .forward && $0.direction == .hostForward }.count == 2)
                #expect(all.contains { $0.rule == "ports.echo" && $0.bytesUp == 1 << 20 && $0.bytesDown == 1 << 20 })
                #expect(all.contains { $0.rule == "ports.dead" && $0.verdict == .refused && $0.reason.contains("502") })
            }
        }
    }

    @Test("host forwards over the budget: a connection past the limit open at once is closed and recorded; the others go on")
    func budget() async throws {
        try await within {
            try await withForwarder(
                { [HostForward(listenPort: 0, guestPort: $0, entry: "echo")] }, limits: .init(concurrent: 2, perSecond: 100, burst: 100)
            ) {
                (forwarder, records) async throws in
                let port = forwarder.boundPorts[0]
                // Two connections held open (they send nothing and do not close), then a third.
                var held: [NIOAsyncChannel<ByteBuffer, ByteBuffer>] = []
                for _ in 0..<2 {
                    held.append(
                        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: Int(port)) {
                            channel in
                            channel.eventLoop.makeCompletedFuture {
                                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                            }
                        })
                }
                for _ in 0..<100 where forwarder.openConnections < 2 { try await Task.sleep(for: .milliseconds(20)) }
                #expect(try await roundTrip(port: port, text: "third") == "", "closed at once")
                let refused = await records.wait(for: 1)
                #expect(refused.first?.verdict == .refused && refused.first?.reason == "over this sandbox's limit of 2 connections open at once")
                #expect(refused.first?.rule == "ports.echo" && refused.first?.direction == .hostForward)
                for channel in held { try await channel.executeThenClose { _, outbound in outbound.finish() } }
                for _ in 0..<100 where forwarder.openConnections > 0 { try await Task.sleep(for: .milliseconds(20)) }
                #expect(try await roundTrip(port: port, text: "again") == "again", "room again once they closed")
            }
        }
    }

    @Test("the budget: places held open count against the limit, and new ones against the rate (a token bucket)")
    func budgetArithmetic() {
        let budget = ConnectionBudget(.init(concurrent: 3, perSecond: 10, burst: 2))
        let start = ContinuousClock.now
        #expect(budget.admit(at: start) == nil && budget.admit(at: start) == nil)
        #expect(budget.admit(at: start) == .rate(10), "the burst is spent")
        #expect(budget.admit(at: start + .milliseconds(100)) == nil, "a tenth of a second buys one")
        #expect(budget.admit(at: start + .seconds(5)) == .concurrent(3), "three are open")
        budget.release()
        #expect(budget.open == 2 && budget.admit(at: start + .seconds(5)) == nil)
        #expect(ConnectionBudget.Refusal.rate(200).reason == "over this sandbox's limit of 200 new connections a second")
    }

    @Test("listeners bind 127.0.0.1 only, and a taken port fails the start with the entry's name")
    func binding() async throws {
        try await within {
            let (hostEnd, guestEnd) = try socketPair()
            let guest = Task { try? await FakeGuestControl.serve(guestEnd) }
            let link = try await LinkClient.connect(connectedSocket: hostEnd)
            let taken = try await TestServer.echo()
            await #expect(throws: PortForwardError.self) {
                _ = try await PortForwarder.bind(
                    [HostForward(listenPort: taken.port, guestPort: 1, entry: "clash")], link: link, logger: testLogger, records: { _ in })
            }
            let forwarder = try await PortForwarder.bind(
                [HostForward(listenPort: 0, guestPort: 1, entry: "x")], link: link, logger: testLogger, records: { _ in })
            #expect(forwarder.boundAddresses.allSatisfy { $0 == "127.0.0.1" })
            await forwarder.close()
            await taken.close()
            await link.close()
            _ = await guest.value
        }
    }
}

/// A TCP connection to `address` with half-closure both ways (the stand-in guest's side).
func connectTCP(to address: SocketAddress, group: any EventLoopGroup, timeout: TimeAmount) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: group)
        .connectTimeout(timeout)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 * 1024, maximum: 256 * 1024))
        .connect(to: address) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8), isOutboundHalfClosureEnabled: true))
            }
        }
}
