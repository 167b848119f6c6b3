import NetworkPolicy
import Testing

@Suite("Network rules")
struct NetworkRulesTests {
    static func rules(_ policy: PolicyMode) throws -> NetworkRules {
        func p(_ list: [String]) throws -> [HostPattern] { try list.map { try HostPattern(parsing: $0) } }
        return NetworkRules(
            policy: policy,
            rules: [
                NetworkRule(
                    name: "web", allow: try p(["example.com:443", "*.example.org", "both.test", "10.1.2.3:5432"]),
                    deny: try p(["evil.example.org", "both.test", "example.com:80"])),
                NetworkRule(name: "db", allow: try p(["db.internal:5432", "10.9.9.9:5432"]), allowPrivate: true),
                NetworkRule(name: "raw", deny: try p(["6.6.6.6"]), passthrough: try p(["pinned.example.net:443", "pass.test"])),
                NetworkRule(name: "zz-allow", allow: try p(["pass.test"])),
            ])
    }

    @Test(
        "one subject: policy × rules",
        arguments: [
            // policy, host, ip, port, verdict, rule
            (PolicyMode.denyByDefault, "example.com", nil, 443, Decision.Verdict.allow, "web"),
            (.denyByDefault, "EXAMPLE.COM.", nil, 443, .allow, "web"),
            (.denyByDefault, "example.com", nil, 8443, .deny, nil),  // port not allowed
            (.denyByDefault, "example.com", nil, 80, .deny, "web"),  // denied port of an allowed name
            (.denyByDefault, "api.example.org", nil, 1, .allow, "web"),
            (.denyByDefault, "evil.example.org", nil, 443, .deny, "web"),  // deny beats the *.suffix allow
            (.denyByDefault, "both.test", nil, 443, .deny, "web"),  // in allow and deny: deny wins
            (.denyByDefault, "unknown.test", nil, 443, .deny, nil),
            (.denyByDefault, "pinned.example.net", nil, 443, .passthrough, "raw"),
            (.denyByDefault, "pass.test", nil, 443, .passthrough, "raw"),  // passthrough beats allow
            (.denyByDefault, "db.internal", nil, 5432, .allow, "db"),
            (.denyByDefault, nil, "10.1.2.3", 5432, .allow, "web"),
            (.denyByDefault, nil, "10.1.2.4", 5432, .deny, nil),
            (.denyByDefault, nil, "6.6.6.6", 443, .deny, "raw"),
            (.allowByDefault, "unknown.test", nil, 443, .allow, nil),
            (.allowByDefault, "both.test", nil, 443, .deny, "web"),
            (.allowByDefault, "example.com", nil, 80, .deny, "web"),
            (.allowByDefault, nil, "6.6.6.6", 1, .deny, "raw"),
            (.allowByDefault, nil, "1.1.1.1", 1, .allow, nil),
            (.allowAlways, "both.test", nil, 443, .allow, nil),  // rules ignored
            (.allowAlways, nil, "6.6.6.6", 443, .allow, nil),
            (.denyAlways, "example.com", nil, 443, .deny, nil),  // rules ignored
            (.denyAlways, nil, "10.1.2.3", 5432, .deny, nil),
        ] as [(PolicyMode, String?, String?, UInt16, Decision.Verdict, String?)])
    func single(policy: PolicyMode, host: String?, ip: String?, port: UInt16, verdict: Decision.Verdict, rule: String?) throws {
        let decision = try Self.rules(policy).decide(host: host, ip: ip, port: port)
        #expect(decision.verdict == verdict, "\(decision)")
        #expect(decision.rule == rule, "\(decision)")
    }

    @Test(
        "name and IP together: denied if either is denied; an allowed name needs no IP rule",
        arguments: [
            // policy, name, ip, port, allowed, rule
            (PolicyMode.denyByDefault, "example.com", "93.184.216.34", 443, true, "web"),  // IP's default denial doesn't count
            (.denyByDefault, "example.com", "6.6.6.6", 443, false, "raw"),  // IP explicitly denied
            (.denyByDefault, "evil.example.org", "10.1.2.3", 5432, false, "web"),  // name denied, IP allowed
            (.denyByDefault, "unknown.test", "10.1.2.3", 5432, false, nil),  // name not allowed: the IP rule can't help
            (.allowByDefault, "unknown.test", "1.2.3.4", 443, true, nil),
            (.allowByDefault, "both.test", "1.2.3.4", 443, false, "web"),
            (.allowByDefault, "unknown.test", "6.6.6.6", 443, false, "raw"),
            (.denyAlways, "example.com", "1.2.3.4", 443, false, nil),
            (.allowAlways, "both.test", "6.6.6.6", 443, true, nil),
        ] as [(PolicyMode, String, String, UInt16, Bool, String?)])
    func both(policy: PolicyMode, name: String, ip: String, port: UInt16, allowed: Bool, rule: String?) throws {
        let decision = try Self.rules(policy).decide(host: name, ip: ip, port: port)
        #expect(decision.isAllowed == allowed, "\(decision)")
        #expect(decision.rule == rule, "\(decision)")
    }

    @Test("allow_private comes from the rule; for an IP literal only from a rule naming the IP")
    func allowPrivate() throws {
        let rules = try Self.rules(.denyByDefault)
        #expect(rules.decide(host: "db.internal", ip: nil, port: 5432).allowPrivate)
        #expect(!rules.decide(host: "example.com", ip: nil, port: 443).allowPrivate)
        #expect(rules.decide(host: nil, ip: "10.9.9.9", port: 5432).allowPrivate)
        #expect(!rules.decide(host: nil, ip: "10.1.2.3", port: 5432).allowPrivate)
        // A name whose rule allows private addresses carries no permission to an arbitrary
        // private literal (the metadata address here).
        let trick = rules.decide(host: "db.internal", ip: "169.254.169.254", port: 5432)
        #expect(trick.isAllowed && !trick.allowPrivate)
        // The name's rule and an IP rule that both allow private: open.
        #expect(rules.decide(host: "db.internal", ip: "10.9.9.9", port: 5432).allowPrivate)
        // allow-always opens nothing private.
        #expect(!(try Self.rules(.allowAlways)).decide(host: "db.internal", ip: nil, port: 5432).allowPrivate)
    }

    @Test("several allowing rules: one with allow_private is preferred")
    func preferPrivate() throws {
        let rules = NetworkRules(
            policy: .denyByDefault,
            rules: [
                NetworkRule(name: "a", allow: [try HostPattern(parsing: "svc.test")]),
                NetworkRule(name: "b", allow: [try HostPattern(parsing: "svc.test:8080")], allowPrivate: true),
            ])
        #expect(rules.decide(host: "svc.test", ip: nil, port: 8080).rule == "b")
        #expect(rules.decide(host: "svc.test", ip: nil, port: 8080).allowPrivate)
        #expect(rules.decide(host: "svc.test", ip: nil, port: 80).rule == "a")
    }

    @Test("resolved addresses: only explicit deny patterns count")
    func explicitDeny() throws {
        let rules = try Self.rules(.denyByDefault)
        #expect(rules.explicitlyDenied(ip: "6.6.6.6", port: 443)?.rule == "raw")
        #expect(rules.explicitlyDenied(ip: "1.2.3.4", port: 443) == nil)
        #expect(try Self.rules(.denyAlways).explicitlyDenied(ip: "1.2.3.4", port: 443) != nil)
        #expect(try Self.rules(.allowAlways).explicitlyDenied(ip: "6.6.6.6", port: 443) == nil)
    }

    @Test("no destination at all is denied")
    func nothing() throws {
        #expect(!(try Self.rules(.allowAlways)).decide(host: nil, ip: nil, port: 1).isAllowed)
        #expect(!(try Self.rules(.allowAlways)).decide(host: "", ip: nil, port: 1).isAllowed)
    }

    @Test("messages name the rule or the policy, and the fix")
    func messages() throws {
        let rules = try Self.rules(.denyByDefault)
        let byRule = rules.decide(host: "both.test", ip: nil, port: 443)
        #expect(byRule.description == "both.test:443 denied by [network.rules.web] deny \"both.test\"")
        #expect(byRule.fix.contains("remove \"both.test\" from `deny` in [network.rules.web]"))
        let byPolicy = rules.decide(host: "unknown.test", ip: nil, port: 443)
        #expect(byPolicy.description == "unknown.test:443 denied by the policy deny-by-default (no rule allows it)")
        #expect(byPolicy.fix == "add [network.rules.<name>] allow = [\"unknown.test:443\"] to airlock.toml")
        #expect(rules.decide(host: nil, ip: "::1", port: 80).fix.contains("[\"[::1]:80\"]"))
        #expect(try Self.rules(.denyAlways).decide(host: "x.test", ip: nil, port: 1).fix.contains("deny-by-default"))
    }

    @Test("decisions don't depend on the order rules are given in")
    func order() throws {
        let a = NetworkRule(name: "a", allow: [try HostPattern(parsing: "x.test")])
        let b = NetworkRule(name: "b", allow: [try HostPattern(parsing: "x.test")])
        #expect(NetworkRules(policy: .denyByDefault, rules: [a, b]) == NetworkRules(policy: .denyByDefault, rules: [b, a]))
        #expect(NetworkRules(policy: .denyByDefault, rules: [b, a]).decide(host: "x.test", ip: nil, port: 1).rule == "a")
    }
}

@Suite("Private addresses")
struct PrivateAddressTests {
    @Test(
        "private, loopback, link-local, metadata, CGNAT, unspecified",
        arguments: [
            "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1",
            "192.168.255.255", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3",
            "224.0.0.1", "255.255.255.255", "240.0.0.1", "198.18.0.1", "192.0.0.8",
            "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "ff02::1", "[::1]",
            "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:7f00:1", "64:ff9b::10.0.0.1", "::127.0.0.1",
            "0:0:0:0:0:0:0:1", "0000:0000:0000:0000:0000:0000:0000:0001", "2002:7f00:1::", "fec0::1",
            // Not an address at all: never connected to, so judged private.
            "localhost", "", "1.2.3", "01.2.3.4", "1.2.3.256", "::g", "1::2::3", "12345::", "1.2.3.4.5", "::ffff:1.2.3",
        ])
    func privateAddresses(ip: String) {
        #expect(isPrivate(ip), "\(ip)")
    }

    @Test(
        "public addresses",
        arguments: [
            "1.1.1.1", "8.8.8.8", "93.184.216.34", "172.15.255.255", "172.32.0.1", "192.169.0.1", "100.63.255.255",
            "100.128.0.1", "169.253.255.255", "11.0.0.1", "126.255.255.255", "128.0.0.1", "223.255.255.255",
            "2606:4700::1111", "2001:4860:4860::8888", "::ffff:1.1.1.1", "64:ff9b::8.8.8.8", "[2606:4700::1111]", "fbff::1", "fe7f::1",
        ])
    func publicAddresses(ip: String) {
        #expect(!isPrivate(ip), "\(ip)")
        #expect(IPAddress(ip) != nil)
    }

    @Test(
        "parsing round trip",
        arguments: [
            ("::1", "0:0:0:0:0:0:0:1"), ("1.2.3.4", "1.2.3.4"), ("::ffff:1.2.3.4", "0:0:0:0:0:ffff:102:304"),
            ("2001:db8::", "2001:db8:0:0:0:0:0:0"), ("a:b:c:d:e:f:1:2", "a:b:c:d:e:f:1:2"), ("ABCD::EF", "abcd:0:0:0:0:0:0:ef"),
        ])
    func parse(text: String, expected: String) {
        #expect(IPAddress(text)?.description == expected)
    }

    @Test(
        "malformed IPv6 never parses",
        arguments: [
            ":1", "1:", ":::", "1:2:3:4:5:6:7:8:9", "1::2:3:4:5:6:7:8", "::1.2.3.4:5", "1:2:3:4:5:6:1.2.3.4:7", "[::1", "::ffff:01.2.3.4", "12345::1",
        ])
    func malformed(text: String) {
        #expect(IPAddress(text) == nil, "\(text)")
    }
}
