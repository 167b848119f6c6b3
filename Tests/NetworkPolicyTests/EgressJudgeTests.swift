import NetworkPolicy
import Testing

/// Rules from (name, allow, deny, passthrough, allow_private).
func judge(
    _ rules: [(String, allow: [String], deny: [String], passthrough: [String], allowPrivate: Bool)], policy: PolicyMode = .denyByDefault,
    guestForwards: [GuestForward] = [], socketForwards: [UnixSocketForward] = []
) throws -> EgressJudge {
    let parsed = try rules.map { rule in
        NetworkRule(
            name: rule.0, allow: try rule.allow.map(HostPattern.init(parsing:)), deny: try rule.deny.map(HostPattern.init(parsing:)),
            passthrough: try rule.passthrough.map(HostPattern.init(parsing:)), allowPrivate: rule.allowPrivate)
    }
    return EgressJudge(rules: NetworkRules(policy: policy, rules: parsed), guestForwards: guestForwards, socketForwards: socketForwards)
}

func ips(_ texts: String...) -> [IPAddress] { texts.compactMap(IPAddress.init) }

/// One row: a connection, what the host's resolver says, and what must come of it.
struct JudgeCase: CustomTestStringConvertible, Sendable {
    enum Expected: Sendable, Equatable {
        /// Denied in step 1 (no name resolved): the reason contains `reason`, the fix `fix`.
        case denied(reason: String, fix: String)
        /// Allowed in step 1, refused in step 2.
        case refused(reason: String, fix: String)
        /// Dialled at these addresses, with this verdict.
        case connects([String], Decision.Verdict)
    }

    var name: String
    var host: String
    var port: UInt16 = 443
    var sniffed: [String] = []
    /// The only names step 1 may ask to resolve.
    var mayResolve: [String] = []
    var resolved: [String: [String]] = [:]
    var expected: Expected

    var testDescription: String { name }
}

@Suite("The egress judge, on its own")
struct EgressJudgeTests {
    static let rules: [(String, allow: [String], deny: [String], passthrough: [String], allowPrivate: Bool)] = [
        ("web", ["web.test", "both.test", "*.cdn.test", "198.51.100.7:443"], ["web.test:8443", "both.test", "evil.test", "203.0.113.9"], [], false),
        ("inner", ["inner.test", "127.0.0.1:9000"], [], [], true),
        ("pass", [], [], ["pinned.test"], false),
    ]

    static let cases: [JudgeCase] = [
        // Names: judged by name first; a denied name is never resolved.
        .init(
            name: "a name no rule allows", host: "other.test",
            expected: .denied(reason: "other.test:443 denied by the policy deny-by-default", fix: "allow = [\"other.test:443\"]")),
        .init(
            name: "a denied port of an allowed name", host: "web.test", port: 8443,
            expected: .denied(reason: "deny \"web.test:8443\"", fix: "remove \"web.test:8443\" from `deny` in [network.rules.web]")),
        .init(
            name: "a name in both allow and deny: deny wins", host: "both.test",
            expected: .denied(reason: "deny \"both.test\"", fix: "deny wins over allow")),
        .init(
            name: "an allowed name with a public address", host: "web.test", mayResolve: ["web.test"], resolved: ["web.test": ["93.184.216.34"]],
            expected: .connects(["93.184.216.34"], .allow)),
        .init(
            name: "a suffix pattern", host: "img.cdn.test", mayResolve: ["img.cdn.test"], resolved: ["img.cdn.test": ["93.184.216.35"]],
            expected: .connects(["93.184.216.35"], .allow)),
        .init(
            name: "passthrough is its own verdict", host: "pinned.test", mayResolve: ["pinned.test"], resolved: ["pinned.test": ["93.184.216.36"]],
            expected: .connects(["93.184.216.36"], .passthrough)),
        // DNS rebinding into the host's networks.
        .init(
            name: "an allowed name resolving to loopback, without allow_private", host: "web.test", mayResolve: ["web.test"],
            resolved: ["web.test": ["127.0.0.1"]],
            expected: .refused(
                reason: "resolves only to loopback/private/link-local addresses (127.0.0.1)", fix: "add allow_private = true to [network.rules.web]")),
        .init(
            name: "an allowed name resolving to the metadata address", host: "web.test", mayResolve: ["web.test"],
            resolved: ["web.test": ["169.254.169.254"]], expected: .refused(reason: "169.254.169.254", fix: "allow_private = true")),
        .init(
            name: "private and public addresses: only the public ones are dialled", host: "web.test", mayResolve: ["web.test"],
            resolved: ["web.test": ["10.0.0.5", "93.184.216.34"]], expected: .connects(["93.184.216.34"], .allow)),
        .init(
            name: "allow_private opens a private address", host: "inner.test", mayResolve: ["inner.test"], resolved: ["inner.test": ["127.0.0.1"]],
            expected: .connects(["127.0.0.1"], .allow)),
        .init(
            name: "an address a deny pattern names is never dialled", host: "web.test", mayResolve: ["web.test"],
            resolved: ["web.test": ["203.0.113.9"]], expected: .refused(reason: "web.test resolves to 203.0.113.9", fix: "remove the deny pattern")),
        .init(
            name: "a name that does not resolve", host: "web.test", mayResolve: ["web.test"], resolved: [:],
            expected: .refused(reason: "web.test has no address", fix: "")),
        // A name carrying another name (SNI/Host on 80 and 443).
        .init(
            name: "an allowed name whose SNI is denied", host: "web.test", sniffed: ["evil.test"],
            expected: .denied(reason: "evil.test:443 denied by [network.rules.web] deny \"evil.test\"", fix: "")),
        .init(
            name: "an allowed name whose SNI is unknown (domain fronting)", host: "web.test", sniffed: ["other.test"],
            expected: .denied(reason: "other.test:443 denied by the policy deny-by-default", fix: "")),
        .init(
            name: "an allowed name whose SNI is itself", host: "web.test", sniffed: ["web.test"], mayResolve: ["web.test"],
            resolved: ["web.test": ["93.184.216.34"]], expected: .connects(["93.184.216.34"], .allow)),
        // IP literals: judged by the IP and the names they carry together.
        .init(
            name: "a literal no rule names, no SNI", host: "192.0.2.1",
            expected: .denied(reason: "192.0.2.1:443 denied by the policy deny-by-default", fix: "")),
        .init(name: "a literal a rule allows, no SNI", host: "198.51.100.7", expected: .connects(["198.51.100.7"], .allow)),
        .init(
            name: "an allowed literal carrying a denied SNI", host: "198.51.100.7", sniffed: ["evil.test"],
            expected: .denied(reason: "evil.test:443 denied by [network.rules.web] deny \"evil.test\"", fix: "")),
        .init(
            name: "an allowed literal carrying an unknown SNI", host: "198.51.100.7", sniffed: ["other.test"],
            expected: .denied(reason: "other.test:443 denied by the policy deny-by-default", fix: "")),
        .init(
            name: "a denied literal with an allowed SNI", host: "203.0.113.9", sniffed: ["web.test"],
            expected: .denied(reason: "203.0.113.9:443 denied by [network.rules.web] deny \"203.0.113.9\"", fix: "")),
        .init(
            name: "an unlisted literal opened by its allowed SNI, which resolves to it", host: "93.184.216.34", sniffed: ["web.test"],
            mayResolve: ["web.test"], resolved: ["web.test": ["93.184.216.34"]], expected: .connects(["93.184.216.34"], .allow)),
        .init(
            name: "an unlisted literal whose allowed SNI resolves elsewhere (exfiltration by naming a good site)", host: "192.0.2.1",
            sniffed: ["web.test"], mayResolve: ["web.test"], resolved: ["web.test": ["127.0.0.1"]],
            expected: .refused(reason: "192.0.2.1 is not an address of web.test (it resolves to 127.0.0.1)", fix: "connect by name")),
        .init(
            name: "an unlisted literal whose allowed SNI does not resolve", host: "192.0.2.1", sniffed: ["web.test"], mayResolve: ["web.test"],
            resolved: [:], expected: .refused(reason: "(it does not resolve here)", fix: "")),
        .init(
            name: "a private literal opened by an allow_private name that resolves to it: the name's allow_private does not count", host: "127.0.0.1",
            sniffed: ["inner.test"], mayResolve: ["inner.test"], resolved: ["inner.test": ["127.0.0.1"]],
            expected: .refused(reason: "127.0.0.1 is a loopback, private, link-local or metadata address", fix: "allow_private = true")),
        .init(name: "a private literal a rule names with allow_private", host: "127.0.0.1", port: 9000, expected: .connects(["127.0.0.1"], .allow)),
        .init(
            name: "the metadata address by literal", host: "169.254.169.254", port: 80,
            expected: .denied(reason: "169.254.169.254:80 denied", fix: "")),
        .init(name: "IPv6 loopback by literal", host: "::1", expected: .denied(reason: "[0:0:0:0:0:0:0:1]:443 denied", fix: "")),
    ]

    @Test("connections against one rule set", arguments: cases)
    func table(_ row: JudgeCase) throws {
        let judge = try judge(Self.rules)
        let target = EgressJudge.Target(host: row.host, port: row.port)
        switch judge.judge(target, sniffed: row.sniffed) {
        case .deny(let denial):
            guard case .denied(let reason, let fix) = row.expected else {
                Issue.record("denied in step 1: \(denial.reason)")
                return
            }
            #expect(denial.kind == .denied)
            #expect(denial.reason.contains(reason), "\(denial.reason)")
            #expect(denial.fix.contains(fix), "\(denial.fix)")
        case .resolve(let pending):
            // Step 1 never asks for a name it did not allow.
            #expect(Set(pending.namesToResolve).isSubset(of: Set(row.mayResolve)), "asked to resolve \(pending.namesToResolve)")
            var resolved: [String: [IPAddress]] = [:]
            for name in pending.namesToResolve { resolved[name] = (row.resolved[name] ?? []).compactMap(IPAddress.init) }
            switch judge.settle(pending, resolved: resolved) {
            case .refuse(let denial):
                guard case .refused(let reason, let fix) = row.expected else {
                    Issue.record("refused in step 2: \(denial.reason)")
                    return
                }
                #expect(denial.kind == .refused)
                #expect(denial.reason.contains(reason), "\(denial.reason)")
                #expect(denial.fix.contains(fix), "\(denial.fix)")
            case .connect(let addresses, let decision, _):
                guard case .connects(let expected, let verdict) = row.expected else {
                    Issue.record("connects to \(addresses)")
                    return
                }
                #expect(addresses.map(\.description) == expected)
                #expect(decision.verdict == verdict)
            }
        }
    }

    @Test("what must be sniffed first: literals, ports 80 and 443, and denials (for the explaining page)")
    func sniffing() throws {
        let judge = try judge(Self.rules)
        #expect(judge.needsSniff(.init(host: "192.0.2.1", port: 22)))
        #expect(judge.needsSniff(.init(host: "web.test", port: 80)))
        #expect(judge.needsSniff(.init(host: "web.test", port: 443)))
        #expect(judge.needsSniff(.init(host: "other.test", port: 22)))
        #expect(!judge.needsSniff(.init(host: "web.test", port: 22)))
    }

    @Test("the shown name is the target's, or the first sniffed for a literal")
    func shownNames() throws {
        let judge = try judge(Self.rules)
        guard case .resolve(let pending) = judge.judge(.init(host: "93.184.216.34", port: 443), sniffed: ["web.test"]) else {
            Issue.record("expected step 2")
            return
        }
        #expect(pending.shownName == "web.test")
        guard case .deny(let denial) = judge.judge(.init(host: "other.test", port: 443), sniffed: []) else {
            Issue.record("expected a denial")
            return
        }
        #expect(denial.shownName == "other.test" && denial.rule == nil)
    }

    @Test("policies: allow-always allows any name without a rule; deny-always denies even what a rule allows")
    func policies() throws {
        let open = try judge(Self.rules, policy: .allowAlways)
        guard case .resolve = open.judge(.init(host: "anything.test", port: 22), sniffed: []) else {
            Issue.record("allow-always must allow")
            return
        }
        let closed = try judge(Self.rules, policy: .denyAlways)
        guard case .deny(let denial) = closed.judge(.init(host: "web.test", port: 443), sniffed: []) else {
            Issue.record("deny-always must deny")
            return
        }
        #expect(denial.reason.contains("deny-always") && denial.fix.contains("deny-by-default"))
        // allow-by-default still honours explicit denials, of names and of resolved addresses.
        let lenient = try judge(Self.rules, policy: .allowByDefault)
        guard case .deny = lenient.judge(.init(host: "evil.test", port: 443), sniffed: []) else {
            Issue.record("a deny pattern wins under allow-by-default")
            return
        }
        guard case .resolve(let pending) = lenient.judge(.init(host: "new.test", port: 443), sniffed: []) else {
            Issue.record("allow-by-default allows unknown names")
            return
        }
        guard case .refuse(let refusal) = lenient.settle(pending, resolved: ["new.test": ips("203.0.113.9")]) else {
            Issue.record("an address a deny pattern names is refused under allow-by-default")
            return
        }
        #expect(refusal.reason.contains("deny \"203.0.113.9\""))
    }

    @Test("forwards: only configured guest ports and socket entries lead anywhere")
    func forwards() throws {
        let judge = try judge(
            [], guestForwards: [.init(guestPort: 5000, hostPort: 4000, entry: "db")],
            socketForwards: [.init(entry: "ssh", hostPath: "/run/user/1/agent.sock", guestPath: "/run/airlock/ssh.sock")])
        #expect(judge.judgeForward(host: "host.airlock.internal", port: 5000) == .forward(.init(guestPort: 5000, hostPort: 4000, entry: "db")))
        guard case .deny(let reason, let fix) = judge.judgeForward(host: "host.airlock.internal", port: 5001) else {
            Issue.record("an unconfigured port must be denied")
            return
        }
        #expect(reason == "no port forward to the host for host.airlock.internal:5001" && fix.contains("host = [\"<host port>:5001\"]"))
        guard case .forward(let socket) = judge.judgeSocket(named: "ssh") else {
            Issue.record("a configured socket forward")
            return
        }
        #expect(socket.hostPath == "/run/user/1/agent.sock")
        guard case .deny(let why, _) = judge.judgeSocket(named: "docker") else {
            Issue.record("an unknown socket must be denied")
            return
        }
        #expect(why.contains("\"docker\""))
    }
}
