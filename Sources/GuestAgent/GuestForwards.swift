import AirlockSystem
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Port forwards, guest side.
/// - Host → guest (`[network.ports.<name>] guest = ["9000:3000"]`): the host asks on the control
///   link (`ForwardRequest`) and the guest connects to its own 127.0.0.1:3000.
/// - Guest → host (`host = ["4000:5000"]`): the guest listens on its 127.0.0.1:5000 and carries
///   each connection as an egress request for `EgressRequest.forwardHost`; the host connects it
///   to its 127.0.0.1:4000.
enum GuestForwards {
    typealias Frames = NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator

    static func listen(port: UInt16, link: EgressLink) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: "127.0.0.1", port: Int(port)) { child in
                child.eventLoop.makeCompletedFuture {
                    try EgressProxy.TCPChannel(wrappingChannelSynchronously: child, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        System.log("forwarding the guest's 127.0.0.1:\(port) to the host")
        let request = HTTP2Frame.FramePayload.headers(
            .init(headers: EgressRequest(host: EgressRequest.forwardHost, ip: "127.0.0.1", port: port).headers))
        carryEach(server, opening: request, link: link)
    }

    /// Carries each connection `server` accepts to the host as one egress stream opened with
    /// `opening`, until the server closes.
    private static func carryEach(_ server: NIOAsyncChannel<EgressProxy.TCPChannel, Never>, opening: HTTP2Frame.FramePayload, link: EgressLink) {
        Task {
            try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await EgressProxy.carry(connection, opening: opening, link: link) }
                    }
                }
            }
        }
    }

    /// Guest → host Unix socket (`[network.sockets.<name>] guest = "/run/airlock/agent.sock"`):
    /// listens at the path inside the new root `root` (missing parent directories created 0755,
    /// owned by the agent's user inside its home so that `~/.ssh` stays its own; a stale
    /// socket replaced; the socket 0666 so the agent's user can connect) and carries each
    /// connection as a `SocketRequest` naming only the entry; the host connects it to the
    /// entry's host socket.
    static func listen(socket forward: SetupSpec.SocketForward, root: String, spec: SetupSpec, link: EgressLink) async throws {
        let path = root + forward.path
        var directory = root
        for part in forward.path.split(separator: "/").dropLast() {
            directory += "/" + part
            guard mkdir(directory, 0o755) == 0 else {
                guard errno == EEXIST else { throw SystemError("mkdir", directory, errno: errno) }
                continue
            }
            let guestPath = String(directory.dropFirst(root.count))
            if guestPath.hasPrefix(spec.home + "/"), chown(directory, spec.user, spec.group) != 0 {
                throw SystemError("chown", directory, errno: errno)
            }
        }
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 128)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, serverBackPressureStrategy: nil) { child in
                child.eventLoop.makeCompletedFuture {
                    try EgressProxy.TCPChannel(wrappingChannelSynchronously: child, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        guard chmod(path, 0o666) == 0 else {
            let code = errno
            try? await server.channel.close()
            throw SystemError("chmod", path, errno: code)
        }
        System.log("forwarding the guest's \(forward.path) to the host's socket [network.sockets.\(forward.name)]")
        let opening = HTTP2Frame.FramePayload.headers(.init(headers: SocketRequest(name: forward.name).headers))
        carryEach(server, opening: opening, link: link)
    }

    /// Answers a `ForwardRequest` on its stream: connects to the guest's 127.0.0.1 port and
    /// relays, or answers 502 when nothing listens there.
    static func forward(_ request: ForwardRequest, frames: Handoff<Frames>, outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>)
        async throws
    {
        let tcp: EgressProxy.TCPChannel
        do {
            tcp = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(.seconds(5))
                .connect(host: "127.0.0.1", port: Int(request.port)) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try EgressProxy.TCPChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            try await outbound.write(
                .headers(
                    .init(
                        headers: [":status": "502", ForwardRequest.reasonHeader: "nothing listens on the guest's 127.0.0.1:\(request.port)"],
                        endStream: true)))
            return
        }
        try await outbound.write(.headers(.init(headers: [":status": "200"])))
        try await tcp.executeThenClose { tcpIn, tcpOut in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var frames = frames.value
                    while let frame = try await frames.next() {
                        guard case .data(let data) = frame else { continue }
                        if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 { try await tcpOut.write(bytes) }
                        if data.endStream {
                            tcpOut.finish()
                            return
                        }
                    }
                }
                group.addTask {
                    for try await chunk in tcpIn {
                        try await outbound.write(.data(.init(data: .byteBuffer(chunk))))
                    }
                    try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
                }
                // The host's side reset: the guest's connection is reset at once too (not
                // waitForAll, which waits for the other direction before it throws).
                do {
                    while try await group.next() != nil {}
                } catch {
                    try? await EgressProxy.setLingerZero(tcp.channel)
                    try? await tcp.channel.close()
                    throw error
                }
            }
        }
    }
}
