import NetworkPolicy
import Testing

@Suite("Network patterns")
struct HostPatternTests {
    @Test(
        "matching table",
        arguments: [
            // pattern, host, port, matches
            ("example.com", "example.com", 443, true),
            ("example.com", "EXAMPLE.com.", 80, true),
            ("example.com", "www.example.com", 443, false),
            ("example.com:443", "example.com", 443, true),
            ("example.com:443", "example.com", 80, false),
            ("*.example.com", "api.example.com", 443, true),
            ("*.example.com", "a.b.example.com", 1, true),
            ("*.example.com", "example.com", 443, false),
            ("*.example.com", "badexample.com", 443, false),
            ("*.example.com:443", "api.example.com", 8443, false),
            ("*:22", "anything.org", 22, true),
            ("*:22", "anything.org", 23, false),
            ("*", "x", 1, true),
            ("10.0.0.1:80", "10.0.0.1", 80, true),
            ("[::1]:80", "::1", 80, true),
            ("[::1]:80", "[::1]", 80, true),
            ("Example.COM.", "example.com", 1, true),
        ] as [(String, String, UInt16, Bool)])
    func matches(pattern: String, host: String, port: UInt16, expected: Bool) throws {
        #expect(try HostPattern(parsing: pattern).matches(host: host, port: port) == expected)
    }

    @Test(
        "malformed patterns",
        arguments: [
            "", " ", "https://x.com", "x.com/path", "x .com", "x.com:", "x.com:65536", "x.com:0", "x.com:-1", "*x.com", "a.*.com",
            "*.", "a..b", "::1", "[::1", "[zz]:80", "[::1]x", "-a.com", "a-.com", String(repeating: "a", count: 64) + ".com",
        ])
    func malformed(pattern: String) {
        #expect(throws: PatternError.self) { try HostPattern(parsing: pattern) }
    }
}
