import AirlockSystem
import GuestLink
import Logging
import Middleware
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy
import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// `airlock-netbench front <upstream port> <CA directory> <upstream CA file> intercept|middleware|passthrough`:
/// listens on 127.0.0.1 (its port is the first line of stdout) and carries each connection
/// as the guest agent does, one egress stream to the EgressServer for bench.test:<upstream
/// port>, so that an HTTPS load generator on the host meets what a program in the VM meets:
/// the relay (passthrough), or the host ending TLS and making each request anew (intercept),
/// with a Lua middleware putting a token into each request, as the agents' presets do
/// (middleware).
/// Runs until killed.
func runFront(_ arguments: [String]) async throws {
    guard arguments.count == 4, let upstream = UInt16(arguments[0]), ["intercept", "middleware", "passthrough"].contains(arguments[3]) else {
        fatalError("usage: airlock-netbench front <upstream port> <CA directory> <upstream CA file> intercept|middleware|passthrough")
    }
    let pattern = try HostPattern(parsing: "bench.test")
    let passthrough = arguments[3] == "passthrough"
    let rules = NetworkRules(
        policy: .denyByDefault,
        rules: [
            NetworkRule(name: "bench", allow: passthrough ? [] : [pattern], passthrough: passthrough ? [pattern] : [], allowPrivate: true)
        ])
    let token = MiddlewareScript(
        name: "bench-token", source: #"req:setHeader("Authorization", "Bearer " .. env.TOKEN)"#,
        environment: ["TOKEN": "bench-token-0123456789abcdef"])
    let interception = try Interception(
        authority: try CertificateAuthority.loadOrCreate(path: arguments[1] + "/ca.pem", project: "bench"),
        middleware: arguments[3] == "middleware" ? [InterceptionMiddleware(script: token, targets: [pattern])] : [],
        extraUpstreamRootsPEM: try FileSystem.readText(arguments[2]))
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let egress = EgressServer(
        configuration: .init(rules: rules, resolver: StaticResolver(["bench.test": ["127.0.0.1"]]), interception: interception), logger: logger,
        records: { _ in })
    var fds: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { fatalError("socketpair") }
    let hostSide = fds[0]
    let serving = Task { try await egress.serve(connectedSocket: hostSide) }
    defer { serving.cancel() }
    let link = try await LinkClient.connect(connectedSocket: fds[1])
    let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 1024)
        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .bind(host: "127.0.0.1", port: 0) { child in
            child.eventLoop.makeCompletedFuture {
                try ByteChannel(wrappingChannelSynchronously: child, configuration: .init(isOutboundHalfClosureEnabled: true))
            }
        }
    let line = Array("\(listener.channel.localAddress?.port ?? 0)\n".utf8)
    _ = line.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    let opening = HTTP2Frame.FramePayload.headers(.init(headers: EgressRequest(host: "bench.test", ip: "198.18.0.1", port: upstream).headers))
    try await withThrowingDiscardingTaskGroup { group in
        try await listener.executeThenClose { connections in
            for try await connection in connections {
                group.addTask { await carry(connection, opening: opening, link: link) }
            }
        }
    }
}

/// One connection as one egress stream, as the guest agent's `EgressProxy.carry` does.
func carry(_ tcp: ByteChannel, opening: HTTP2Frame.FramePayload, link: LinkClient) async {
    try? await tcp.executeThenClose { tcpIn, tcpOut in
        let stream = try await link.openStream()
        try await stream.executeThenClose { streamIn, streamOut in
            try await streamOut.write(opening)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in tcpIn { try await streamOut.write(.data(.init(data: .byteBuffer(chunk)))) }
                    try await streamOut.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
                }
                group.addTask {
                    for try await frame in streamIn {
                        switch frame {
                        case .headers(let headers):
                            guard headers.headers.first(name: ":status") == "200" else { throw CancellationError() }
                            if headers.endStream { return tcpOut.finish() }
                        case .data(let data):
                            if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 { try await tcpOut.write(bytes) }
                            if data.endStream { return tcpOut.finish() }
                        default:
                            continue
                        }
                    }
                }
                while try await group.next() != nil {}
            }
        }
    }
}
