import AirlockSystem
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The guest's side of every outgoing TCP connection. nftables redirects each connection to
/// 127.0.0.1:`GuestNetwork.proxyPort`; the proxy reads where it was going (SO_ORIGINAL_DST),
/// turns a fake address back into the name the program looked up, and carries the connection
/// to the host as one stream of the egress link (`EgressRequest`). The host decides; a
/// refusal resets the connection, so the program sees "connection reset".
enum EgressProxy {
    typealias TCPChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    struct Refused: Error {}

    /// Binds the proxy's port, then serves it in the background for the life of the VM.
    static func start(link: EgressLink) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: "127.0.0.1", port: Int(GuestNetwork.proxyPort)) { child in
                child.eventLoop.makeCompletedFuture {
                    try TCPChannel(wrappingChannelSynchronously: child, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        System.log("egress proxy on 127.0.0.1:\(GuestNetwork.proxyPort)")
        Task {
            do {
                try await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { connections in
                        for try await connection in connections {
                            group.addTask { await handle(connection, link: link) }
                        }
                    }
                }
            } catch {
                System.log("egress proxy stopped: \(error)")
            }
        }
    }

    private static func handle(_ tcp: TCPChannel, link: EgressLink) async {
        let destination: (ip: String, port: UInt16)
        do {
            destination = try await originalDestination(tcp.channel)
        } catch {
            await carry(tcp, opening: nil, link: link)
            return
        }
        let host = FakeAddresses.shared.name(for: destination.ip) ?? destination.ip
        // A fake address nobody was given (guessed or stale): there is nothing to ask for.
        let opening = host == destination.ip && isFake(destination.ip) ? nil : EgressRequest(host: host, ip: destination.ip, port: destination.port)
        await carry(tcp, opening: opening.map { .headers(.init(headers: $0.headers)) }, link: link)
    }

    /// Carries `tcp` (a TCP or Unix connection) to the host as one egress stream opened with
    /// `opening` (the HEADERS of an `EgressRequest` or a `SocketRequest`); nil resets it. Every
    /// way out closes `tcp` through its `executeThenClose` (NIO stops the process for an async
    /// channel dropped unfinished), with a reset when the host refused or could not be reached.
    static func carry(_ tcp: TCPChannel, opening: HTTP2Frame.FramePayload?, link: EgressLink) async {
        do {
            try await tcp.executeThenClose { tcpIn, tcpOut in
                do {
                    guard let opening else { throw Refused() }
                    let stream = try await link.openStream()
                    try await stream.executeThenClose { streamIn, streamOut in
                        try await streamOut.write(opening)
                        try await relay(tcp.channel, tcpIn: tcpIn, tcpOut: tcpOut, streamIn: streamIn, streamOut: streamOut)
                    }
                } catch {
                    // Refused by the host, the stream was reset, or no link: the program sees a reset.
                    try? await setLingerZero(tcp.channel)
                    throw error
                }
            }
        } catch {
            if !(error is Refused) { System.log("egress connection failed: \(error)") }
        }
    }

    /// Carries bytes both ways until both have ended; a refusal or a reset from the host resets
    /// `channel` at once (the program may be waiting for bytes that never come, sending nothing).
    static func relay(
        _ channel: any Channel, tcpIn: NIOAsyncChannelInboundStream<ByteBuffer>, tcpOut: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        streamIn: NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>, streamOut: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // The program's bytes, then its FIN as END_STREAM.
                for try await chunk in tcpIn {
                    try await streamOut.write(.data(.init(data: .byteBuffer(chunk))))
                }
                try await streamOut.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
            }
            group.addTask {
                for try await frame in streamIn {
                    switch frame {
                    case .headers(let headers):
                        if let status = headers.headers.first(name: ":status"), status != "200" { throw Refused() }
                        if headers.endStream {
                            tcpOut.finish()
                            return
                        }
                    case .data(let data):
                        if case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 { try await tcpOut.write(bytes) }
                        if data.endStream {
                            tcpOut.finish()
                            return
                        }
                    default:
                        continue
                    }
                }
                throw Refused()  // the stream ended without END_STREAM: reset
            }
            do {
                // Not waitForAll: it waits for every task before it throws the first error.
                while try await group.next() != nil {}
            } catch {
                try? await setLingerZero(channel)
                try? await channel.close()
                throw error
            }
        }
    }

    /// Where the program connected before nftables redirected it (IPv4; IPv6 is off).
    private static func originalDestination(_ channel: any Channel) async throws -> (String, UInt16) {
        guard let provider = channel as? SocketOptionProvider else { throw Refused() }
        let address: sockaddr_in = try await provider.unsafeGetSocketOption(
            level: NIOBSDSocket.OptionLevel(rawValue: CInt(SOL_IP)), name: NIOBSDSocket.Option(rawValue: 80 /* SO_ORIGINAL_DST */)
        ).get()
        var raw = address.sin_addr
        var text = [CChar](repeating: 0, count: 64)
        guard inet_ntop(AF_INET, &raw, &text, 64) != nil else { throw Refused() }
        return (String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self), UInt16(bigEndian: address.sin_port))
    }

    private static func isFake(_ ip: String) -> Bool {
        var parsed = in_addr()
        guard inet_pton(AF_INET, ip, &parsed) == 1 else { return false }
        let value = UInt32(bigEndian: parsed.s_addr)
        return value >= GuestNetwork.fakeRange.first && value < GuestNetwork.fakeRange.first + GuestNetwork.fakeRange.count
    }

    /// Closing after this sends RST instead of FIN.
    static func setLingerZero(_ channel: any Channel) async throws {
        guard let provider = channel as? SocketOptionProvider else { return }
        try await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
    }
}

/// The guest's end of the egress connection: an HTTP/2 client (GuestLink's `LinkClient`) over
/// the `airlock.egress` virtio-serial port, else vsock to the host (CID 2). Connected on first
/// use; a vsock connection that died is made again, a serial port only once.
actor EgressLink {
    /// The connection made or being made: every stream waits for the same one (the actor is
    /// reentrant across the connect's awaits, and a serial port can be opened only once).
    private var connection: Task<LinkClient, any Error>?
    private var serialUsed = false

    func openStream() async throws -> LinkStream {
        try await client().openStream()
    }

    private func client() async throws -> LinkClient {
        if let connection {
            if let client = try? await connection.value, client.channel.isActive { return client }
            // It failed or ended: another (vsock), unless someone already started one.
            if self.connection == connection { self.connection = nil }
        }
        if let connection { return try await connection.value }
        let made = Task { try await connect() }
        connection = made
        return try await made.value
    }

    private func connect() async throws -> LinkClient {
        let client: LinkClient
        if let port = EarlyInit.virtioPort(named: LinkNames.egressPort, timeout: 0) {
            guard !serialUsed else { throw SystemError("egress", port, errno: ECONNRESET) }
            serialUsed = true
            let fd = open(port, O_RDWR | O_CLOEXEC | O_NOCTTY)
            guard fd >= 0 else { throw SystemError("open", port, errno: errno) }
            guard let socket = PortBridge.start(port: fd) else { throw SystemError("bridge", port, errno: EIO) }
            client = try await LinkClient.connect(connectedSocket: socket, configuration: LinkTuning.http2ToHost)
        } else {
            client = try await LinkClient.connect(vsockCID: 2, port: LinkNames.egressVsockPort, configuration: LinkTuning.http2ToHost)
        }
        // Why it ended, for the console: the sandbox's network ends with it on a serial port.
        try? await client.channel.pipeline.addHandler(LinkErrorLogger(), position: .first).get()
        client.channel.closeFuture.whenComplete { _ in System.log("the egress link to the host closed") }
        return client
    }
}

/// Logs the error that ends the egress link (a protocol error NIO found, say).
private final class LinkErrorLogger: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        System.log("egress link: \(error)")
        context.fireErrorCaught(error)
    }
}
