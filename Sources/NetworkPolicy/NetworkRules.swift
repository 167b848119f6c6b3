/// One `[network.rules.<name>]` table: its patterns and whether its allowed destinations may
/// be private addresses.
public struct NetworkRule: Sendable, Equatable {
    public var name: String
    public var allow: [HostPattern]
    public var deny: [HostPattern]
    public var passthrough: [HostPattern]
    /// Allowed destinations of this rule may be (or resolve to) loopback, private, link-local
    /// or metadata addresses.
    public var allowPrivate: Bool

    public init(name: String, allow: [HostPattern] = [], deny: [HostPattern] = [], passthrough: [HostPattern] = [], allowPrivate: Bool = false) {
        self.name = name
        self.allow = allow
        self.deny = deny
        self.passthrough = passthrough
        self.allowPrivate = allowPrivate
    }
}

/// The answer for one destination.
public struct Decision: Sendable, Equatable, CustomStringConvertible {
    public enum Verdict: String, Sendable, Codable {
        /// Relayed.
        case allow
        /// Refused.
        case deny
        /// Relayed and never inspected (no TLS interception, no middleware).
        case passthrough
    }

    public var verdict: Verdict
    /// The rule that decided (`nil` when the policy's default or an `*-always` policy did).
    public var rule: String?
    /// The pattern of `rule` that matched.
    public var pattern: String?
    /// The policy in force.
    public var policy: PolicyMode
    /// Whether the destination may be (or resolve to) a private address: the deciding allow
    /// rule says `allow_private = true`. For a connection to an IP literal only a rule that
    /// names that IP counts (see `NetworkRules.decide`).
    public var allowPrivate: Bool
    /// What was judged: the name or IP that decided, with the port, written as a pattern
    /// (`example.com:443`, `[::1]:80`).
    public var subject: String

    public var isAllowed: Bool { verdict != .deny }

    public init(verdict: Verdict, rule: String?, pattern: String?, policy: PolicyMode, allowPrivate: Bool, subject: String) {
        self.verdict = verdict
        self.rule = rule
        self.pattern = pattern
        self.policy = policy
        self.allowPrivate = allowPrivate
        self.subject = subject
    }

    /// One line for people and agents: `denied by [network.rules.web] deny "evil.com"`.
    public var description: String {
        let word =
            switch verdict {
            case .allow: "allowed"
            case .deny: "denied"
            case .passthrough: "passed through"
            }
        if let rule, let pattern {
            let list = verdict == .deny ? "deny" : verdict == .passthrough ? "passthrough" : "allow"
            return "\(subject) \(word) by [network.rules.\(rule)] \(list) \"\(pattern)\""
        }
        switch policy {
        case .allowAlways, .denyAlways: return "\(subject) \(word) by the policy \(policy.rawValue)"
        case .allowByDefault: return "\(subject) \(word) by the policy allow-by-default (no rule denies it)"
        case .denyByDefault: return "\(subject) \(word) by the policy deny-by-default (no rule allows it)"
        }
    }

    /// For a denial: the configuration change that would allow the subject.
    public var fix: String {
        if let rule, let pattern, verdict == .deny {
            return "remove \"\(pattern)\" from `deny` in [network.rules.\(rule)] of airlock.toml (deny wins over allow)"
        }
        if policy == .denyAlways {
            return "set `policy = \"deny-by-default\"` in [network] and add [network.rules.<name>] allow = [\"\(subject)\"] to airlock.toml"
        }
        return "add [network.rules.<name>] allow = [\"\(subject)\"] to airlock.toml"
    }
}

/// The policy and every enabled rule of a sandbox, ready to judge destinations. Pure.
///
/// Semantics:
/// - `allow-always` / `deny-always`: every destination is allowed / denied; rules are ignored.
/// - `allow-by-default`: allowed unless a `deny` pattern matches.
/// - `deny-by-default`: denied unless an `allow` or `passthrough` pattern matches.
/// - A matching `deny` wins over any `allow` or `passthrough`; `passthrough` wins over `allow`.
/// - Several matching rules: the first by rule name decides, preferring one with
///   `allow_private = true` among allowing rules.
public struct NetworkRules: Sendable, Equatable {
    public var policy: PolicyMode
    /// Sorted by name, so decisions never depend on dictionary order.
    public private(set) var rules: [NetworkRule]

    public init(policy: PolicyMode, rules: [NetworkRule]) {
        self.policy = policy
        self.rules = rules.sorted { $0.name < $1.name }
    }

    /// Judges a destination by its name, its IP address, or both.
    ///
    /// - `host`: a host name the connection is for (from the guest's DNS, a TLS SNI or an HTTP
    ///   Host header); `nil` when unknown.
    /// - `ip`: the IP literal the connection goes to when the guest dialled an address; `nil`
    ///   for connections to names (the proxy resolves those itself, and checks each resolved
    ///   address with `explicitlyDenied(ip:port:)`).
    ///
    /// With both: denied if either the name or the IP is denied, except that the IP's *default*
    /// denial under `deny-by-default` does not count when the name is allowed (an explicit deny
    /// pattern naming the IP does). Private addresses: only a rule that matches the IP itself
    /// can open a private IP literal (`allowPrivate`), never the name's rule, so a trusted
    /// name cannot carry a connection to an arbitrary private address.
    public func decide(host: String?, ip: String?, port: UInt16) -> Decision {
        let name = host.map(HostPattern.normalise).flatMap { $0.isEmpty ? nil : $0 }
        let address = ip.map(HostPattern.normalise).flatMap { $0.isEmpty ? nil : $0 }
        guard name != nil || address != nil else {
            return Decision(verdict: .deny, rule: nil, pattern: nil, policy: policy, allowPrivate: false, subject: "an unknown destination")
        }
        let byName = name.map { judge($0, port: port) }
        let byIP = address.map { judge($0, port: port) }
        if let byName, byName.verdict == .deny { return byName }
        if let byIP, byIP.verdict == .deny, byName == nil || byIP.rule != nil || policy == .denyAlways { return byIP }
        guard var decision = byName else {
            // By IP alone (`byIP` is set: one of the two is).
            return byIP ?? Decision(verdict: .deny, rule: nil, pattern: nil, policy: policy, allowPrivate: false, subject: "an unknown destination")
        }
        if let byIP {
            decision.allowPrivate = byIP.rule != nil && byIP.allowPrivate
        }
        return decision
    }

    /// Whether an explicit `deny` pattern (not the policy's default) names `ip` on `port`;
    /// applied to every address an allowed name resolves to. Under `deny-always` every
    /// address is denied.
    public func explicitlyDenied(ip: String, port: UInt16) -> Decision? {
        if policy == .denyAlways { return judge(ip, port: port) }
        if policy == .allowAlways { return nil }
        let decision = judge(HostPattern.normalise(ip), port: port)
        return decision.verdict == .deny && decision.rule != nil ? decision : nil
    }

    /// One subject (a name or an IP literal) on `port`.
    private func judge(_ subject: String, port: UInt16) -> Decision {
        let label = subject.contains(":") ? "[\(subject)]:\(port)" : "\(subject):\(port)"
        switch policy {
        case .allowAlways:
            return Decision(verdict: .allow, rule: nil, pattern: nil, policy: policy, allowPrivate: false, subject: label)
        case .denyAlways:
            return Decision(verdict: .deny, rule: nil, pattern: nil, policy: policy, allowPrivate: false, subject: label)
        case .allowByDefault, .denyByDefault:
            break
        }
        for rule in rules {
            if let pattern = rule.deny.first(where: { $0.matches(host: subject, port: port) }) {
                return Decision(verdict: .deny, rule: rule.name, pattern: pattern.description, policy: policy, allowPrivate: false, subject: label)
            }
        }
        for verdict in [Decision.Verdict.passthrough, .allow] {
            var found: Decision?
            for rule in rules {
                let patterns = verdict == .passthrough ? rule.passthrough : rule.allow
                guard let pattern = patterns.first(where: { $0.matches(host: subject, port: port) }) else { continue }
                if found == nil || (rule.allowPrivate && found?.allowPrivate == false) {
                    found = Decision(
                        verdict: verdict, rule: rule.name, pattern: pattern.description, policy: policy, allowPrivate: rule.allowPrivate,
                        subject: label)
                }
            }
            if let found { return found }
        }
        let verdict: Decision.Verdict = policy == .allowByDefault ? .allow : .deny
        return Decision(verdict: verdict, rule: nil, pattern: nil, policy: policy, allowPrivate: false, subject: label)
    }
}
