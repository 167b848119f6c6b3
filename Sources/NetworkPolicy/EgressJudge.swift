/// The security decision for one connection the guest makes, without any I/O: the proxy reads
/// the request and the first bytes, asks the judge, resolves only what the judge says may be
/// resolved, asks again with the addresses, and then connects or refuses.
///
/// Two steps, so that a name that is denied never causes a DNS query:
/// 1. `judge(_:sniffed:)`: the target (a name from the guest's DNS, or an IP literal) and the
///    names the connection carries (TLS SNI, HTTP Host) give a denial (reason, rule, and the
///    `airlock.toml` change that would allow it), or `Pending`: allowed so far, with the names
///    whose addresses the host must resolve.
/// 2. `settle(_:resolved:)`: the addresses the host resolved give the addresses that may be
///    dialled, or a refusal (a private address without `allow_private`, an address a deny
///    pattern names, an IP literal its names do not resolve to).
///
/// Guest port forwards (`host.airlock.internal:<port>`) and Unix-socket forwards are judged
/// here too: only configured entries lead anywhere.
public struct EgressJudge: Sendable {
    public var rules: NetworkRules
    /// By guest port.
    public var guestForwards: [UInt16: GuestForward]
    /// By entry name: the only host sockets a guest can reach.
    public var socketForwards: [String: UnixSocketForward]

    public init(rules: NetworkRules, guestForwards: [GuestForward] = [], socketForwards: [UnixSocketForward] = []) {
        self.rules = rules
        self.guestForwards = Dictionary(guestForwards.map { ($0.guestPort, $0) }, uniquingKeysWith: { first, _ in first })
        self.socketForwards = Dictionary(socketForwards.map { ($0.entry, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Where the guest's connection goes: the name its DNS gave a fake address for, or the IP
    /// literal it dialled.
    public struct Target: Sendable, Equatable {
        public var host: String
        public var port: UInt16
        /// Set when `host` is an IP literal.
        public var literal: IPAddress?

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
            self.literal = IPAddress(host)
        }

        /// The name, when the target is one.
        public var name: String? { literal == nil ? host : nil }
    }

    /// Why a connection does not go through, and how the user would let it.
    public struct Denial: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// The policy or a rule denies it.
            case denied
            /// Allowed by the rules, but unsafe or impossible (a private address, an IP that is
            /// not its names' address).
            case refused
        }

        public var kind: Kind
        public var reason: String
        /// The configuration change that would allow it.
        public var fix: String
        /// The `[network.rules.<name>]` that decided, when one did.
        public var rule: String?
        /// The name shown for the connection (the target's, or the first sniffed).
        public var shownName: String?
    }

    /// Allowed by the rules; the addresses are still to be judged.
    public struct Pending: Sendable, Equatable {
        public var target: Target
        public var decision: Decision
        /// The names carried by the connection that are not the target.
        public var sniffed: [String]
        /// The names the host must resolve before `settle`: the target's name, or, for an IP
        /// literal that only its names opened, those names.
        public var namesToResolve: [String]
        public var shownName: String?
    }

    public enum Verdict: Sendable, Equatable {
        case deny(Denial)
        case resolve(Pending)
    }

    public enum Outcome: Sendable, Equatable {
        /// Dial these, in order, under `decision` (its verdict says allow or passthrough).
        case connect([IPAddress], Decision, shownName: String?)
        case refuse(Denial)
    }

    /// Whether the first bytes must be read before `judge`: for an IP literal (its names decide
    /// with it), on ports 80 and 443 (a name may carry another name), and for a denial (an HTTP
    /// request gets a page that says why).
    public func needsSniff(_ target: Target) -> Bool {
        target.literal != nil || target.port == 80 || target.port == 443
            || !rules.decide(host: target.name, ip: target.literal?.description, port: target.port).isAllowed
    }

    /// Step 1: by the target and the names the connection carries. Never needs an address.
    public func judge(_ target: Target, sniffed names: [String]) -> Verdict {
        let literal = target.literal?.description
        let others = names.filter { $0 != target.host }
        var decision = rules.decide(host: target.name, ip: literal, port: target.port)
        if let literal, let first = others.first {
            // Judged by IP and name together (see `NetworkRules.decide`): the first denial, or
            // the first name's allowance.
            let judged = others.map { rules.decide(host: $0, ip: literal, port: target.port) }
            decision = judged.first(where: { !$0.isAllowed }) ?? rules.decide(host: first, ip: literal, port: target.port)
        } else if decision.isAllowed {
            // A name that also carries another SNI/Host: that one must be allowed too.
            if let denied = others.lazy.map({ rules.decide(host: $0, ip: nil, port: target.port) }).first(where: { !$0.isAllowed }) {
                decision = denied
            }
        }
        let shownName = target.name ?? others.first
        guard decision.isAllowed else {
            return .deny(Denial(kind: .denied, reason: decision.description, fix: decision.fix, rule: decision.rule, shownName: shownName))
        }
        var namesToResolve: [String] = []
        if let name = target.name {
            namesToResolve = [name]
        } else if !others.isEmpty, !rules.decide(host: nil, ip: literal, port: target.port).isAllowed {
            // An IP literal that only its names opened (no rule or policy allows the address
            // itself) must be an address of each of those names.
            namesToResolve = others
        }
        return .resolve(Pending(target: target, decision: decision, sniffed: others, namesToResolve: namesToResolve, shownName: shownName))
    }

    /// Step 2: by the addresses the host resolved (`resolved[name]`, for each name of
    /// `pending.namesToResolve`; a name that did not resolve has none).
    public func settle(_ pending: Pending, resolved: [String: [IPAddress]]) -> Outcome {
        let target = pending.target
        let decision = pending.decision
        let refuse = { (reason: String, fix: String) in
            Outcome.refuse(Denial(kind: .refused, reason: reason, fix: fix, rule: decision.rule, shownName: pending.shownName))
        }
        if let literal = target.literal {
            for name in pending.namesToResolve {
                let ips = resolved[name] ?? []
                guard !ips.contains(literal) else { continue }
                let shown = ips.prefix(4).map(\.description).joined(separator: ", ")
                return refuse(
                    "\(literal) is not an address of \(name)" + (ips.isEmpty ? " (it does not resolve here)" : " (it resolves to \(shown))")
                        + "; a connection to an IP literal is opened by the names it carries only when they resolve to it",
                    "connect by name, or add [network.rules.<name>] allow = [\"\(literal):\(target.port)\"] to airlock.toml if that address is meant to be reachable"
                )
            }
            if literal.isPrivate, !decision.allowPrivate {
                return refuse(
                    "\(literal) is a loopback, private, link-local or metadata address; only a rule that names it with allow_private = true opens it",
                    "add [network.rules.<name>] allow = [\"\(decision.subject)\"] and allow_private = true to airlock.toml")
            }
            return .connect([literal], decision, shownName: pending.shownName)
        }
        // A name: its addresses that are not private (unless the rule allows it) and not named
        // by a deny pattern.
        var addresses: [IPAddress] = []
        var refusedPrivate: [IPAddress] = []
        var denied: String?
        for address in resolved[target.host] ?? [] {
            if let explicit = rules.explicitlyDenied(ip: address.description, port: target.port) {
                denied = "\(target.host) resolves to \(address): \(explicit.description)"
                continue
            }
            if address.isPrivate, !decision.allowPrivate {
                refusedPrivate.append(address)
                continue
            }
            addresses.append(address)
        }
        guard addresses.isEmpty else { return .connect(addresses, decision, shownName: pending.shownName) }
        if !refusedPrivate.isEmpty {
            let rule = decision.rule.map { "[network.rules.\($0)]" } ?? "a rule allowing it"
            return refuse(
                "\(target.host) resolves only to loopback/private/link-local addresses (\(refusedPrivate.prefix(4).map(\.description).joined(separator: ", "))); refused without allow_private = true",
                "add allow_private = true to \(rule) in airlock.toml if \(target.host) is meant to reach a private network")
        }
        return refuse(denied ?? "\(target.host) has no address", "remove the deny pattern naming that address")
    }

    // MARK: Forwards

    public enum ForwardVerdict: Sendable, Equatable {
        case forward(GuestForward)
        case deny(reason: String, fix: String)
    }

    /// The forward host (`host.airlock.internal`) on `port`: the host's 127.0.0.1 port of a
    /// configured guest forward, and nothing else.
    public func judgeForward(host: String, port: UInt16) -> ForwardVerdict {
        guard let forward = guestForwards[port] else {
            return .deny(
                reason: "no port forward to the host for \(host):\(port)",
                fix: "add [network.ports.<name>] host = [\"<host port>:\(port)\"] to airlock.toml")
        }
        return .forward(forward)
    }

    public enum SocketVerdict: Sendable, Equatable {
        case forward(UnixSocketForward)
        case deny(reason: String, fix: String)
    }

    /// A Unix-socket forward the guest names: only a configured entry's host socket.
    public func judgeSocket(named name: String) -> SocketVerdict {
        guard let forward = socketForwards[name] else {
            return .deny(
                reason: "no Unix-socket forward named \"\(name)\"",
                fix: "add [network.sockets.\(name)] host = \"<host socket>\" guest = \"<guest path>\" to airlock.toml")
        }
        return .forward(forward)
    }
}
