import AirlockSystem
import Foundation
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization
import Testing

@testable import Sandbox

/// A stand-in guest link: an HTTP/2 server on a Unix socket that answers every stream with
/// 200 and echoes its DATA back, upper-cased, until the stream ends.
final class EchoGuest: Sendable {
    let path: String
    private let server: NIOAsyncChannel<NIOHTTP2Handler.AsyncStreamMultiplexer<LinkStream>, Never>
    private let task: Task<Void, Never>

    init(path: String) async throws {
        self.path = path
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                        stream.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: stream) }
                    }
                }
            }
        self.server = server
        task = Task {
            try? await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await multiplexer in connections {
                        group.addTask {
                            try await withThrowingDiscardingTaskGroup { streams in
                                for try await stream in multiplexer.inbound {
                                    streams.addTask { try? await Self.echo(stream) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    static func echo(_ stream: LinkStream) async throws {
        try await stream.executeThenClose { inbound, outbound in
            for try await frame in inbound {
                switch frame {
                case .headers(let headers):
                    try await outbound.write(.headers(.init(headers: [":status": "200", "x-path": headers.headers.first(name: ":path") ?? "?"])))
                case .data(let data):
                    guard case .byteBuffer(let bytes) = data.data else { continue }
                    let upper = String(decoding: bytes.readableBytesView, as: UTF8.self).uppercased()
                    try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: upper)), endStream: data.endStream)))
                    if data.endStream { return }
                default:
                    continue
                }
            }
        }
    }

    func close() async {
        try? await server.channel.close()
        task.cancel()
    }
}

@Suite("The control socket of a running sandbox", .serialized, .timeLimit(.minutes(1)))
struct ControlServerTests {
    struct Running {
        let directory: String
        let guest: EchoGuest
        let link: LinkClient
        let server: ControlServer
        let serving: Task<Void, Never>
        let events: EventHub
        let stops: Counter

        var socket: String { directory + "/sandbox.sock" }

        func close() async {
            await server.close()
            serving.cancel()
            events.finish()
            await link.close()
            await guest.close()
            try? FileSystem.removeTree(directory)
        }
    }

    static func status() throws -> SandboxStatus {
        SandboxStatus(
            paths: try SandboxPaths(project: Project(root: "/p", gitCommonDir: nil), name: "default"),
            state: SandboxState(pid: 42, vmmPID: 43, backend: "qemu", accelerator: "tcg", startedAt: 0, project: "/p"))
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func increment() { value.withLock { $0 += 1 } }
        var count: Int { value.withLock { $0 } }
    }

    func start() async throws -> Running {
        let directory = NSTemporaryDirectory() + "airlock-control-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let guest = try await EchoGuest(path: directory + "/guest.sock")
        let link = try await LinkClient.connect(unixSocket: guest.path)
        let events = EventHub()
        let stops = Counter()
        let status = try Self.status()
        let server = try await ControlServer.bind(
            path: directory + "/sandbox.sock", link: link, handlers: .init(state: { status }, stop: { stops.increment() }, events: events))
        let serving = Task { await server.run() }
        return Running(directory: directory, guest: guest, link: link, server: server, serving: serving, events: events, stops: stops)
    }

    @Test("the socket is 0600; state answers JSON; an unknown path is 404; stop runs the handler after answering")
    func stateAndStop() async throws {
        let running = try await start()
        defer { Task { await running.close() } }
        #expect(FileSystem.status(running.socket).map { $0.st_mode & 0o777 } == 0o600)
        let client = try await LinkClient.connect(unixSocket: running.socket)
        let body = try await client.call(ControlServer.Path.state, body: .init())
        let status = try JSONDecoder().decode(SandboxStatus.self, from: Data(body.readableBytesView))
        var expected = try Self.status()
        #expect(status.uptimeSeconds.map { $0 <= expected.uptimeSeconds! } == true)  // taken before it
        expected.uptimeSeconds = status.uptimeSeconds
        #expect(status == expected)
        #expect(status.vmmPID == 43 && status.state == "running")
        await #expect(throws: LinkClient.Failure.self) { _ = try await client.call("/v1/nothing", body: .init()) }
        #expect(running.stops.count == 0)
        _ = try await client.call(ControlServer.Path.stop, body: .init())
        for _ in 0..<100 where running.stops.count == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(running.stops.count == 1)
        await client.close()
    }

    @Test("exec streams are relayed frame for frame to the guest link, and its answer back")
    func relay() async throws {
        let running = try await start()
        defer { Task { await running.close() } }
        let client = try await LinkClient.connect(unixSocket: running.socket)
        let answer = try await client.call(ControlServer.Path.exec, body: ByteBuffer(string: "hello guest"))
        #expect(String(decoding: answer.readableBytesView, as: UTF8.self) == "HELLO GUEST")
        await client.close()
    }

    @Test("events reach every subscriber as JSON lines; a subscriber that does not read holds back nobody and is bounded")
    func events() async throws {
        let running = try await start()
        defer { Task { await running.close() } }
        let client = try await LinkClient.connect(unixSocket: running.socket)
        let stream = try await client.openStream()
        let lines = try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(LinkClient.requestHeaders(path: ControlServer.Path.events, endStream: false))
            var received = ""
            var published = false
            for try await frame in inbound {
                switch frame {
                case .headers:
                    // Subscribed once the answer's head is out; then publish.
                    if !published {
                        published = true
                        try await Task.sleep(for: .milliseconds(100))
                        running.events.publish(AuditEvent(sandbox: "default", event: "network", details: ["name": .text("a.test")]))
                        running.events.publish(AuditEvent(sandbox: "default", event: "session.end", details: ["exit": .number(0)]))
                    }
                case .data(let data):
                    if case .byteBuffer(let bytes) = data.data { received += String(decoding: bytes.readableBytesView, as: UTF8.self) }
                    if received.split(separator: "\n").count >= 2 { return received.split(separator: "\n").map(String.init) }
                default:
                    continue
                }
            }
            return received.split(separator: "\n").map(String.init)
        }
        #expect(lines.count == 2)
        #expect(lines.first?.contains("\"event\":\"network\"") == true && lines.first?.contains("a.test") == true)
        #expect(lines.last?.contains("session.end") == true)
        await client.close()

        // A subscriber that never reads: publishing does not wait for it, and it keeps at most
        // the backlog.
        let hub = EventHub()
        let idle = hub.subscribe()
        let started = ContinuousClock.now
        for index in 0..<(EventHub.backlog * 5) {
            hub.publish(AuditEvent(sandbox: "default", event: "network", details: ["n": .number(Int64(index))]))
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        hub.finish()
        var kept = 0
        for await _ in idle { kept += 1 }
        #expect(kept == EventHub.backlog)
    }
}
