// The forwards a sandbox's configuration names: the only ways through besides the rules.

/// A `[network.ports.<name>] host = ["4000:5000"]` forward, host side: an egress request for
/// `EgressRequest.forwardHost` port 5000 is connected to the host's 127.0.0.1:4000.
public struct GuestForward: Sendable, Equatable {
    public var guestPort: UInt16
    public var hostPort: UInt16
    /// The `[network.ports.<entry>]` table it comes from.
    public var entry: String

    public init(guestPort: UInt16, hostPort: UInt16, entry: String) {
        self.guestPort = guestPort
        self.hostPort = hostPort
        self.entry = entry
    }
}

/// A `[network.sockets.<name>]` forward, host side: a `SocketRequest` naming `entry` is
/// connected to the host's Unix socket `hostPath` (the guest listens at `guestPath`).
public struct UnixSocketForward: Sendable, Equatable {
    public var entry: String
    /// Absolute (`~` already expanded).
    public var hostPath: String
    public var guestPath: String

    public init(entry: String, hostPath: String, guestPath: String) {
        self.entry = entry
        self.hostPath = hostPath
        self.guestPath = guestPath
    }
}

/// A `[network.ports.<name>] guest = ["9000:3000"]` forward: the host listens on
/// 127.0.0.1:9000 and carries each connection to the guest's 127.0.0.1:3000.
public struct HostForward: Sendable, Equatable {
    /// 0 picks a free port (tests); `PortForwarder.boundPorts` tells which.
    public var listenPort: UInt16
    public var guestPort: UInt16
    public var entry: String

    public init(listenPort: UInt16, guestPort: UInt16, entry: String) {
        self.listenPort = listenPort
        self.guestPort = guestPort
        self.entry = entry
    }
}
