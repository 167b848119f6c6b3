import Foundation
import GuestLink
import NIOCore
import NIOPosix
import NetworkPolicy
import Testing

@testable import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Discards what it reads.
final class Sink: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// Raw HTTP/2 bytes, written by hand: what a hostile guest could send.
enum RawHTTP2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let emptySettings: [UInt8] = [0, 0, 0, 0x04, 0, 0, 0, 0, 0]

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [
            UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags,
            UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF),
        ] + payload
    }

    /// HPACK literal header fields without indexing, new names (RFC 7541 §6.2.2).
    static func headerBlock(_ fields: [(String, String)]) -> [UInt8] {
        var block: [UInt8] = []
        for (name, value) in fields {
            block += [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
        }
        return block
    }

    static func egressHeaders(stream: UInt32, host: String, port: UInt16) -> [UInt8] {
        frame(
            type: 0x01, flags: 0x04, stream: stream,
            payload: headerBlock([
                (":method", "POST"), (":scheme", "http"), (":authority", "host"), (":path", "/v1/tcp"),
                ("airlock-host", host), ("airlock-ip", "198.18.0.1"), ("airlock-port", String(port)),
            ]))
    }
}

@Suite("A hostile guest", .serialized)
struct HostileGuestTests {
    /// A raw connection to `server` over a socket pair; returns the client channel and the
    /// task serving the other end (its result: how the connection ended).
    func rawConnection(to server: EgressServer) async throws -> (any Channel, Task<Result<Void, any Error>, Never>) {
        let (a, b) = try socketPair()
        let serving = Task { () -> Result<Void, any Error> in
            do { return .success(try await server.serve(connectedSocket: a)) } catch { return .failure(error) }
        }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(Sink()) }
            .withConnectedSocket(b).get()
        return (channel, serving)
    }

    func server(_ records: Records) throws -> EgressServer {
        EgressServer(
            configuration: .init(
                rules: try rules([("e", allow: ["echo.test"], deny: [], allowPrivate: true)]),
                resolver: StaticResolver(["echo.test": ["127.0.0.1"]])),
            logger: testLogger, records: records.sink)
    }

    func expectWorks(_ guest: FakeGuest, echo: TestServer) async throws {
        let answer = try await guest.exchange(host: "echo.test", port: echo.port, send: "still here")
        #expect(answer.status == "200")
        #expect(answer.text == "still here")
    }

    static let garbageInputs: [[UInt8]] = [
        Array("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8),
        [UInt8](repeating: 0xFF, count: 4096),
        RawHTTP2.preface + RawHTTP2.emptySettings + [UInt8](repeating: 0xA5, count: 4096),
        RawHTTP2.preface + RawHTTP2.emptySettings + RawHTTP2.frame(type: 0x00, flags: 0, stream: 0, payload: [1, 2, 3]),  // DATA on stream 0
        // bad HPACK
        RawHTTP2.preface + RawHTTP2.emptySettings + RawHTTP2.frame(type: 0x01, flags: 0x04, stream: 1, payload: [0xFF, 0xFF, 0xFF, 0xFF]),
        // window too big
        RawHTTP2.preface + RawHTTP2.emptySettings + RawHTTP2.frame(type: 0x04, flags: 0, stream: 0, payload: [0, 4, 0xFF, 0xFF, 0xFF, 0xFF]),
        RawHTTP2.preface + RawHTTP2.emptySettings + RawHTTP2.frame(type: 0x04, flags: 0, stream: 0, payload: [0, 3, 0, 0, 0]),  // SETTINGS of 5 bytes
    ]

    @Test("garbage instead of HTTP/2, or garbage frames after a valid start, end only that connection", arguments: 0..<7)
    func garbage(input: Int) async throws {
        let bytes = Self.garbageInputs[input]
        try await within {
            let records = Records()
            let server = try server(records)
            let echo = try await TestServer.echo()
            let good = try await FakeGuest(server: server)
            try await expectWorks(good, echo: echo)

            let (raw, serving) = try await rawConnection(to: server)
            try await raw.writeAndFlush(ByteBuffer(bytes: bytes))
            // The hostile connection ends (with an error) by itself; nothing else does.
            let outcome = await serving.value
            if case .success = outcome { Issue.record("the garbage connection ended without an error") }
            try await expectWorks(good, echo: echo)
            // A new guest connection works too.
            let other = try await FakeGuest(server: server)
            try await expectWorks(other, echo: echo)
            try? await raw.close()
            await other.close()
            await good.close()
            await echo.close()
        }
    }

    @Test("thousands of streams: at most maxConcurrentStreams are served at once, the rest reset; others unaffected")
    func streamFlood() async throws {
        try await within(60) {
            let records = Records()
            var configuration = EgressConfiguration(rules: try rules([]), resolver: StaticResolver([:]))
            configuration.limits.maxConcurrentStreams = 64
            configuration.limits.sniffTimeout = .milliseconds(500)
            let server = EgressServer(configuration: configuration, logger: testLogger, records: records.sink)
            let echoRecords = Records()
            let echoServer = try self.server(echoRecords)
            let echo = try await TestServer.echo()
            let good = try await FakeGuest(server: echoServer)
            try await expectWorks(good, echo: echo)
            let before = openDescriptors()

            // 3,000 streams at once to a denied name on port 80: each waits (sniffing) for a
            // request that never comes, so they pile up. The guest never acknowledges SETTINGS,
            // so the HTTP/2 limit doesn't bind: the server's own count must.
            let (raw, serving) = try await rawConnection(to: server)
            var bytes = RawHTTP2.preface + RawHTTP2.emptySettings
            for index in 0..<3000 { bytes += RawHTTP2.egressHeaders(stream: UInt32(2 * index + 1), host: "denied.test", port: 80) }
            // The server may end this connection part way (its reset-flood protection): fine.
            try? await raw.writeAndFlush(ByteBuffer(bytes: bytes))
            try await expectWorks(good, echo: echo)
            // Streams are judged as their sniff deadlines pass: wait until some are.
            let overBudget = "over this sandbox's limit of 64 connections open at once"
            for _ in 0..<100 where !records.all.contains(where: { $0.reason != overBudget }) { try await Task.sleep(for: .milliseconds(50)) }
            let judged = records.all.filter { $0.reason != overBudget }.count
            #expect(judged <= 64 * 2, "\(judged) streams were served; the limit is 64 at once")
            // Those over the budget are recorded as refused, with the limit.
            #expect(records.all.contains { $0.verdict == .refused && $0.reason == overBudget })
            if judged == 0 {
                // No stream got as far as a decision: then the server must have ended the
                // flooding connection by itself (else this waits until `within` fails the test).
                _ = await serving.value
                try? await raw.close()
            } else {
                try? await raw.close()
                _ = await serving.value
            }
            var after = openDescriptors()
            for _ in 0..<100 where after > before {
                try await Task.sleep(for: .milliseconds(20))
                after = openDescriptors()
            }
            #expect(after <= before, "descriptors before \(before), after \(after)")
            try await expectWorks(good, echo: echo)
            await good.close()
            await echo.close()
        }
    }
}
