import NetworkPolicy

/// One judged connection, reported when it ends (denied ones at once): what the audit log
/// keeps as a `network` event.
public struct ConnectionRecord: Sendable, Equatable {
    public enum Verdict: String, Sendable {
        case allow, deny, passthrough
        /// A `[network.ports.<name>]` or `[network.sockets.<name>]` forward (no rule applies).
        case forward
        /// Allowed by the rules but not carried: the name resolved only to private addresses,
        /// resolution or the upstream connection failed.
        case refused
        /// Not a valid request from the guest.
        case invalid
    }

    /// The host name: the guest's DNS name, or the SNI/Host sniffed from a connection to an
    /// IP literal.
    public var name: String?
    /// The address connected to (or, for a denied connection to an IP literal, the literal).
    public var ip: String?
    public var port: UInt16
    /// The host's Unix socket of a `[network.sockets.<name>]` forward (then `port` is 0).
    public var socket: String?
    public var rule: String?
    public var verdict: Verdict
    public var reason: String
    /// Guest → upstream, upstream → guest.
    public var bytesUp: Int64
    public var bytesDown: Int64
    public var durationMilliseconds: Int64
    /// Whether `direction` is a host forward (host → guest) rather than the guest's egress.
    public var direction: Direction

    public enum Direction: String, Sendable {
        case egress
        case hostForward = "host-forward"
    }

    public init(
        name: String?, ip: String?, port: UInt16, rule: String?, verdict: Verdict, reason: String,
        bytesUp: Int64 = 0, bytesDown: Int64 = 0, durationMilliseconds: Int64 = 0, direction: Direction = .egress
    ) {
        self.name = name
        self.ip = ip
        self.port = port
        self.rule = rule
        self.verdict = verdict
        self.reason = reason
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.durationMilliseconds = durationMilliseconds
        self.direction = direction
    }

    /// The audit event's details: `name`, `ip`, `port`, `rule`, `verdict`, `reason`,
    /// `bytes_up`, `bytes_down`, `duration_ms`, `direction`, `socket` (absent keys: unknown).
    public var details: [String: DetailValue] {
        var details: [String: DetailValue] = [
            "port": .number(Int64(port)), "verdict": .text(verdict.rawValue), "reason": .text(reason),
            "bytes_up": .number(bytesUp), "bytes_down": .number(bytesDown), "duration_ms": .number(durationMilliseconds),
            "direction": .text(direction.rawValue),
        ]
        if let name { details["name"] = .text(name) }
        if let ip { details["ip"] = .text(ip) }
        if let rule { details["rule"] = .text(rule) }
        if let socket { details["socket"] = .text(socket) }
        return details
    }

    public enum DetailValue: Sendable, Equatable {
        case text(String)
        case number(Int64)
    }

    /// The audit event's name.
    public static let event = "network"
}

/// Where records go: the runner appends them to the sandbox's audit log. Called from NIO
/// event loops and tasks; must not block for long.
public typealias ConnectionRecordSink = @Sendable (ConnectionRecord) -> Void
