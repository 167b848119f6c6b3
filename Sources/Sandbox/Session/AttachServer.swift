import GuestLink
import NIOCore
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Lets other airlock processes (`exec`, a second `start`, `stop`) reach a running sandbox:
/// a Unix socket (0600, in a 0700 directory) speaking the same HTTP/2 as the guest link. Each
/// stream a client opens is relayed, frame for frame, to a new stream on the guest link.
public final class AttachServer: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    public static func start(path: String, relayingTo link: LinkClient, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton)
        async throws -> AttachServer
    {
        unlink(path)
        let server = try await ServerBootstrap(group: group)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                        stream.eventLoop.makeCompletedFuture { try LinkStream(wrappingChannelSynchronously: stream) }
                    }
                }
            }
        chmod(path, 0o600)
        let accepting = Task {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await multiplexer in connections {
                        group.addTask {
                            try? await withThrowingDiscardingTaskGroup { streams in
                                for try await stream in multiplexer.inbound {
                                    streams.addTask { try? await relay(stream, to: link) }
                                }
                            }
                        }
                    }
                }
            }
        }
        _ = accepting
        return AttachServer(channel: server.channel)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Copies every HEADERS and DATA frame of `stream` to a new stream on `link`, and back.
func relay(_ stream: LinkStream, to link: LinkClient) async throws {
    let guest = try await link.openStream()
    try await stream.executeThenClose { clientIn, clientOut in
        try await guest.executeThenClose { guestIn, guestOut in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await frame in clientIn {
                        switch frame {
                        case .headers, .data: try await guestOut.write(frame)
                        default: continue
                        }
                    }
                }
                group.addTask {
                    for try await frame in guestIn {
                        switch frame {
                        case .headers, .data: try await clientOut.write(frame)
                        default: continue
                        }
                    }
                }
                // When the guest's side ends, the session is over; so is the client's side.
                try await group.next()
                try await group.next()
            }
        }
    }
}
