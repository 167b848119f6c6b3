import NIOCore

/// How a `[daemons.*]` process is doing, as the guest reports it (`LinkNames.Path.daemons`).
public struct DaemonStatus: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable {
        case running
        /// Waiting before its next start (after `restarts` restarts).
        case restarting
        /// Ended and not restarted: `restart = "on-failure"` after a clean exit.
        case exited
        /// Ended and not restarted: `max_restarts` reached.
        case failed
        /// Stopped with the sandbox.
        case stopped
    }

    public var name: String
    public var state: State
    /// Its process while running; 0 otherwise.
    public var pid: Int32
    public var restarts: UInt32
    /// The exit code of its last run (128 + the signal for a signal), if it has ended once.
    public var lastExit: Int32?

    public init(name: String, state: State, pid: Int32 = 0, restarts: UInt32 = 0, lastExit: Int32? = nil) {
        self.name = name
        self.state = state
        self.pid = pid
        self.restarts = restarts
        self.lastExit = lastExit
    }

    public static func encode(_ statuses: [DaemonStatus]) -> ByteBuffer {
        var writer = WireWriter()
        writer.write(UInt32(statuses.count))
        for status in statuses {
            writer.write(status.name)
            writer.write(status.state.rawValue)
            writer.write(status.pid)
            writer.write(status.restarts)
            writer.write(status.lastExit != nil)
            writer.write(status.lastExit ?? 0)
        }
        return writer.buffer
    }

    public static func decode(_ buffer: ByteBuffer) throws(WireError) -> [DaemonStatus] {
        var reader = WireReader(buffer)
        let count = Int(try reader.read(UInt32.self))
        guard count <= 64 else { throw WireError("too many daemons") }
        var statuses: [DaemonStatus] = []
        for _ in 0..<count {
            let name = try reader.readString()
            guard let state = State(rawValue: try reader.readString()) else { throw WireError("unknown daemon state") }
            let pid: Int32 = try reader.read()
            let restarts: UInt32 = try reader.read()
            let ended = try reader.readBool()
            let code: Int32 = try reader.read()
            statuses.append(DaemonStatus(name: name, state: state, pid: pid, restarts: restarts, lastExit: ended ? code : nil))
        }
        try reader.expectEnd()
        return statuses
    }
}
