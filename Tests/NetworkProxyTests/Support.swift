import AirlockSystem
import Foundation
import GuestLink
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy

@testable import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Fails a test that takes longer than `seconds` instead of hanging the run.
func within<T: Sendable>(_ seconds: Int64 = 30, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withDeadline(.seconds(seconds), what: "the test", body)
}

/// Collects the records an EgressServer reports.
final class Records: Sendable {
    private let box = NIOLockedValueBox<[ConnectionRecord]>([])
    var all: [ConnectionRecord] { box.withLockedValue { $0 } }
    var sink: ConnectionRecordSink { { record in self.box.withLockedValue { $0.append(record) } } }

    /// Waits (bounded) until `count` records arrived.
    func wait(for count: Int, seconds: Double = 10) async -> [ConnectionRecord] {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while all.count < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return all
    }
}

func rules(_ entries: [(String, allow: [String], deny: [String], allowPrivate: Bool)], policy: PolicyMode = .denyByDefault) throws -> NetworkRules {
    NetworkRules(
        policy: policy,
        rules: try entries.map { entry in
            NetworkRule(
                name: entry.0, allow: try entry.allow.map { try HostPattern(parsing: $0) },
                deny: try entry.deny.map { try HostPattern(parsing: $0) }, allowPrivate: entry.allowPrivate)
        })
}

let testLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

/// A connected pair of Unix stream sockets.
func socketPair() throws -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
        throw POSIXError(.init(rawValue: errno) ?? .EIO)
    }
    return (fds[0], fds[1])
}

func openDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// The guest's side of the egress connection: an HTTP/2 client over a socket pair whose other
/// end an `EgressServer` serves.
final class FakeGuest: Sendable {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    let serving: Task<Result<Void, any Error>, Never>

    struct Answer: Sendable {
        var status: String?
        var reason: String?
        var body: [UInt8]
        var endStream: Bool
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    init(server: EgressServer) async throws {
        let (a, b) = try socketPair()
        serving = Task {
            do { return .success(try await server.serve(connectedSocket: a)) } catch { return .failure(error) }
        }
        let (channel, multiplexer) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .withConnectedSocket(b) { channel in
                channel.eventLoop.makeCompletedFuture {
                    var connection = NIOHTTP2Handler.ConnectionConfiguration()
                    connection.initialSettings = [
                        HTTP2Setting(parameter: .maxConcurrentStreams, value: 1024),
                        HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
                        HTTP2Setting(parameter: .maxFrameSize, value: 1 << 16),
                    ]
                    connection.targetWindowSize = 8 << 20
                    var stream = NIOHTTP2Handler.StreamConfiguration()
                    stream.targetWindowSize = 1 << 20
                    let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                        mode: .client, configuration: .init(connection: connection, stream: stream)
                    ) { $0.eventLoop.makeSucceededVoidFuture() }
                    return (channel as any Channel, multiplexer)
                }
            }
        self.channel = channel
        self.multiplexer = multiplexer
    }

    /// A new stream; the caller writes `request(host:ip:port:)` first.
    func open() async throws -> LinkStream {
        try await multiplexer.openStream { channel in
            channel.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: channel) }
        }
    }

    static func request(host: String, ip: String, port: UInt16) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: EgressRequest(host: host, ip: ip, port: port).headers))
    }

    /// Opens a stream, sends `data` (then END_STREAM when `finish`), reads the whole answer.
    func exchange(host: String, ip: String = "198.18.0.10", port: UInt16, send data: String = "", finish: Bool = true) async throws -> Answer {
        let stream = try await open()
        return try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(Self.request(host: host, ip: ip, port: port))
            if !data.isEmpty || finish {
                try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: data)), endStream: finish)))
            }
            return try await Self.read(inbound)
        }
    }

    /// `exchange` for a stream opened with any HEADERS (a `SocketRequest`, a hostile one).
    func exchange(opening: HTTP2Frame.FramePayload, send data: String, finish: Bool = true) async throws -> Answer {
        let stream = try await open()
        return try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(opening)
            try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: data)), endStream: finish)))
            return try await Self.read(inbound)
        }
    }

    static func read(_ inbound: NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>) async throws -> Answer {
        var answer = Answer(status: nil, reason: nil, body: [], endStream: false)
        for try await frame in inbound {
            switch frame {
            case .headers(let headers):
                answer.status = answer.status ?? headers.headers.first(name: ":status")
                answer.reason = answer.reason ?? headers.headers.first(name: EgressRequest.reasonHeader)
                if headers.endStream {
                    answer.endStream = true
                    return answer
                }
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { answer.body += bytes.readableBytesView }
                if data.endStream {
                    answer.endStream = true
                    return answer
                }
            default:
                continue
            }
        }
        return answer
    }

    /// Listens on 127.0.0.1 like the guest's capture: every connection accepted becomes an egress
    /// stream for `host`/`ip`/`port`, relayed when the host answers 200.
    func capture(host: String, ip: String, port: UInt16) async throws -> (port: Int, task: Task<Void, Never>) {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let localPort = server.channel.localAddress?.port ?? 0
        let task = Task {
            _ = try? await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask {
                            let stream = try await self.open()
                            try await stream.executeThenClose { inbound, outbound in
                                try await outbound.write(Self.request(host: host, ip: ip, port: port))
                                // Like the guest: the connection's bytes go at once, before the answer.
                                var frames = inbound.makeAsyncIterator()
                                _ = await Relay.run(
                                    frames: &frames, frame: { $0 }, guestFinished: false, initial: ByteBuffer(),
                                    stream: stream.channel, outbound: outbound, upstream: connection,
                                    record: ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .allow, reason: ""),
                                    progress: { _ in })
                                await Relay.settle(stream.channel, timeout: .seconds(30))
                            }
                        }
                    }
                }
            }
        }
        return (localPort, task)
    }

    func close() async {
        try? await channel.close()
        _ = await serving.value
    }
}

/// A TCP server on 127.0.0.1 that echoes what it reads and closes its side after the client's.
final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // Once every echoed byte is written: NIO turns an output close after the input's
            // into a full close, which would drop writes still pending (small Unix socket
            // buffers leave many pending).
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(NIOAny(ByteBuffer()), promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// Answers any HTTP/1.1 request head with `200` and `hello from <name>`, then closes.
final class HelloHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let name: String
    var seen: [UInt8] = []

    init(name: String) { self.name = name }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        seen += unwrapInboundIn(data).readableBytesView
        guard seen.count < 65536, seen.firstRange(of: Array("\r\n\r\n".utf8)) != nil else { return }
        let body = "hello from \(name)"
        let response = "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Says `banner` as soon as a client connects (as SMTP and SSH servers do), then echoes.
final class BannerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let banner: String

    init(banner: String) { self.banner = banner }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: banner)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

final class TestServer: Sendable {
    let channel: any Channel
    var port: UInt16 { UInt16(channel.localAddress?.port ?? 0) }

    static func echo() async throws -> TestServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 512)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { $0.pipeline.addHandler(EchoHandler()) }
            .bind(host: "127.0.0.1", port: 0).get()
        return TestServer(channel: channel)
    }

    static func hello(_ name: String) async throws -> TestServer { try await serving { HelloHandler(name: name) } }

    static func banner(_ banner: String) async throws -> TestServer { try await serving { BannerHandler(banner: banner) } }

    /// A server on 127.0.0.1 whose every connection gets a handler of its own from `make`.
    private static func serving<Handler: ChannelHandler>(_ make: @escaping @Sendable () -> Handler) async throws -> TestServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(make()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TestServer(channel: channel)
    }

    init(channel: any Channel) { self.channel = channel }

    func close() async { try? await channel.close() }
}

/// Runs a program to its end with a deadline (killed after it); nil when it isn't installed.
func runProgram(_ arguments: [String], timeout: Duration = .seconds(15)) async throws -> (status: Int32, output: String)? {
    guard let path = which(arguments[0]) else { return nil }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = Array(arguments.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // The blocking read runs on a thread of its own, never on the cooperative pool.
    let reader = Task {
        await withCheckedContinuation { (continuation: CheckedContinuation<Data, Never>) in
            Thread.detachNewThread { continuation.resume(returning: pipe.fileHandleForReading.readDataToEndOfFile()) }
        }
    }
    let deadline = ContinuousClock.now + timeout
    while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    let output = await reader.value
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// A self-signed P-256 certificate for `names` (the first its subject): `directory`/cert.pem
/// and key.pem, made with openssl.
func makeCertificate(in directory: String, names: [String]) async throws {
    let made = try await runProgram([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem", "-days", "1",
        "-subj", "/CN=\(names[0])", "-addext", "subjectAltName=" + names.map { "DNS:\($0)" }.joined(separator: ","),
    ])
    guard made?.status == 0 else { throw TestFailure("openssl req failed: \(made?.output ?? "no openssl")") }
}

/// A port free on 127.0.0.1 a moment ago (bound, noted, released).
func freePort() async throws -> Int {
    let probe = try await TestServer.echo()
    let port = Int(probe.port)
    await probe.close()
    return port
}

/// Returns once something accepts on 127.0.0.1:`port` (5 s at most).
func waitForListener(port: Int) async throws {
    for _ in 0..<250 {
        if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get() {
            try? await channel.close()
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("nothing listens on 127.0.0.1:\(port)")
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Starts a program in the background (output discarded); the caller terminates it.
func launchProgram(_ arguments: [String], directory: String) throws -> Process? {
    guard let path = which(arguments[0]) else { return nil }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = Array(arguments.dropFirst())
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return process
}

func which(_ program: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(directory)/\(program)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
