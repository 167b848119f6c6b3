import Synchronization

/// How many connections one sandbox may have open at once, and open per second (a token
/// bucket: `perSecond` tokens a second, at most `burst` saved up). Shared by every connection a
/// sandbox's `EgressServer` serves (its egress and guest port forwards), and by its
/// `PortForwarder` (host forwards) with limits of its own. A connection over either limit is
/// refused and recorded (`ConnectionRecord.Verdict.refused`, the limit in the reason); the audit
/// log coalesces a flood of those into one record with a count.
public final class ConnectionBudget: Sendable {
    public struct Limits: Sendable, Equatable {
        public var concurrent: Int
        public var perSecond: Int
        public var burst: Int

        public init(concurrent: Int, perSecond: Int, burst: Int) {
            self.concurrent = concurrent
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    public enum Refusal: Sendable, Equatable {
        case concurrent(Int)
        case rate(Int)

        /// What the record says.
        public var reason: String {
            switch self {
            case .concurrent(let limit): "over this sandbox's limit of \(limit) connections open at once"
            case .rate(let limit): "over this sandbox's limit of \(limit) new connections a second"
            }
        }
    }

    public let limits: Limits
    private struct State {
        var open = 0
        var tokens: Double
        var refilled: ContinuousClock.Instant
    }
    private let state: Mutex<State>

    public init(_ limits: Limits) {
        self.limits = limits
        state = Mutex(State(tokens: Double(limits.burst), refilled: .now))
    }

    /// Takes a place for a new connection (give it back with `release`), or says why not.
    public func admit(at now: ContinuousClock.Instant = .now) -> Refusal? {
        state.withLock { state in
            let elapsed = now - state.refilled
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            state.tokens = min(Double(limits.burst), state.tokens + max(0, seconds) * Double(limits.perSecond))
            state.refilled = max(state.refilled, now)
            if state.open >= limits.concurrent { return .concurrent(limits.concurrent) }
            if state.tokens < 1 { return .rate(limits.perSecond) }
            state.tokens -= 1
            state.open += 1
            return nil
        }
    }

    /// Gives back the place `admit` took.
    public func release() {
        state.withLock { $0.open -= 1 }
    }

    /// Connections open now.
    public var open: Int { state.withLock(\.open) }
}
