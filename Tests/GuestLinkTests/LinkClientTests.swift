import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in guest: an HTTP/2 server on a Unix socket answering each request with `respond`.
struct StubGuest {
    let path: String
    let channel: any Channel

    static func start(respond: @escaping @Sendable (String, ByteBuffer) -> (String, ByteBuffer)) async throws -> StubGuest {
        let path = "/tmp/airlock-link-test-\(getpid())-\(Int.random(in: 0..<1_000_000)).sock"
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                        stream.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: stream) }
                    }
                }
            }
        Task {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await multiplexer in connections {
                        group.addTask {
                            try await withThrowingDiscardingTaskGroup { streams in
                                for try await stream in multiplexer.inbound {
                                    streams.addTask {
                                        try await stream.executeThenClose { inbound, outbound in
                                            var path = ""
                                            var body = ByteBuffer()
                                            for try await frame in inbound {
                                                if case .headers(let headers) = frame { path = headers.headers.first(name: ":path") ?? "" }
                                                if case .data(let data) = frame {
                                                    if case .byteBuffer(let bytes) = data.data { body.writeImmutableBuffer(bytes) }
                                                    if data.endStream { break }
                                                }
                                            }
                                            let (status, answer) = respond(path, body)
                                            try await outbound.write(.headers(.init(headers: [":status": status])))
                                            try await outbound.write(.data(.init(data: .byteBuffer(answer), endStream: true)))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return StubGuest(path: path, channel: server.channel)
    }

    func stop() async {
        try? await channel.close()
        unlink(path)
    }
}

@Suite("Link client")
struct LinkClientTests {
    @Test("a request and its answer")
    func call() async throws {
        let guest = try await StubGuest.start { path, body in ("200", ByteBuffer(string: "\(path):\(body.readableBytes)")) }
        defer { Task { await guest.stop() } }
        let client = try await LinkClient.connect(unixSocket: guest.path)
        let answer = try await client.call("/v1/setup", body: ByteBuffer(string: "abc"))
        #expect(String(buffer: answer) == "/v1/setup:3")
        await client.close()
    }

    @Test("a non-200 answer is an error carrying the guest's message")
    func failure() async throws {
        let guest = try await StubGuest.start { _, _ in ("500", ByteBuffer(string: "mount failed")) }
        defer { Task { await guest.stop() } }
        let client = try await LinkClient.connect(unixSocket: guest.path)
        await #expect(throws: LinkClient.Failure.self) { _ = try await client.call("/v1/setup", body: ByteBuffer()) }
        await client.close()
    }

    @Test("an answer over the limit is refused")
    func tooLarge() async throws {
        let guest = try await StubGuest.start { _, _ in ("200", ByteBuffer(repeating: 0x41, count: 100_000)) }
        defer { Task { await guest.stop() } }
        let client = try await LinkClient.connect(unixSocket: guest.path)
        await #expect(throws: LinkClient.Failure.self) { _ = try await client.call("/x", body: ByteBuffer(), limit: 1000) }
        await client.close()
    }
}
