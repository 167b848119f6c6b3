import Testing

@testable import NetworkProxy

/// A ClientHello as TLS stacks write it, with the server_name extension (or not), split into
/// records of at most `recordSize` bytes.
func clientHello(serverNames: [String] = [], extraExtensions: [[UInt8]] = [], recordSize: Int = 16384, sessionID: Int = 32) -> [UInt8] {
    func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    var extensions: [UInt8] = []
    if !serverNames.isEmpty {
        var list: [UInt8] = []
        for name in serverNames { list += [0] + u16(name.utf8.count) + Array(name.utf8) }
        let body = u16(list.count) + list
        extensions += u16(0) + u16(body.count) + body
    }
    // supported_versions, key_share-ish padding, ALPN: realistic bulk.
    extensions += u16(43) + u16(3) + [2, 0x03, 0x04]
    extensions += u16(16) + u16(5) + u16(3) + [2] + Array("h2".utf8)
    for extra in extraExtensions { extensions += extra }
    var hello: [UInt8] = [0x03, 0x03] + [UInt8](repeating: 7, count: 32)
    hello += [UInt8(sessionID)] + [UInt8](repeating: 1, count: sessionID)
    hello += u16(4) + [0x13, 0x01, 0x13, 0x02]
    hello += [1, 0]
    hello += u16(extensions.count) + extensions
    let handshake: [UInt8] = [0x01, UInt8(hello.count >> 16), UInt8(hello.count >> 8 & 0xFF), UInt8(hello.count & 0xFF)] + hello
    var records: [UInt8] = []
    var offset = 0
    while offset < handshake.count {
        let chunk = handshake[offset..<min(handshake.count, offset + recordSize)]
        records += [0x16, 0x03, 0x01] + u16(chunk.count) + chunk
        offset += chunk.count
    }
    return records
}

@Suite("Sniffing SNI and Host")
struct SnifferTests {
    @Test("a ClientHello gives its server name, in one record or several")
    func sni() {
        #expect(Sniffed.sniff(clientHello(serverNames: ["api.Example.com."])) == .tls(serverNames: ["api.example.com"]))
        #expect(Sniffed.sniff(clientHello(serverNames: ["a.test"], recordSize: 7)) == .tls(serverNames: ["a.test"]))
        #expect(Sniffed.sniff(clientHello()) == .tls(serverNames: []))
        #expect(Sniffed.sniff(clientHello(serverNames: ["a.test", "b.test"])) == .tls(serverNames: ["a.test", "b.test"]))
        // Big (post-quantum key shares make ClientHellos ~2 KB): still found.
        let padding: [UInt8] = [0x00, 0x15, 0x08, 0x00] + [UInt8](repeating: 0, count: 2048)
        #expect(Sniffed.sniff(clientHello(serverNames: ["big.test"], extraExtensions: [padding])) == .tls(serverNames: ["big.test"]))
    }

    @Test("every truncation of a ClientHello asks for more, never guesses")
    func truncated() {
        let hello = clientHello(serverNames: ["truncated.test"], recordSize: 50)
        for length in 0..<hello.count {
            #expect(Sniffed.sniff(Array(hello.prefix(length))) == .needMore, "length \(length)")
        }
    }

    @Test(
        "malformed ClientHellos are .other",
        arguments: [
            [0x16, 0x02, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],  // SSL 2-ish version
            [0x16, 0x03, 0x01, 0x00, 0x00],  // empty record
            [0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],  // ServerHello
            [0x16, 0x03, 0x01, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 10),  // record too long
            [0x17, 0x03, 0x03, 0x00, 0x01, 0x00],  // application data
        ] as [[UInt8]])
    func malformed(bytes: [UInt8]) {
        #expect(Sniffed.sniff(bytes) == .other)
    }

    @Test("bad names in the SNI make the hello .other (judged without a name)")
    func badNames() {
        #expect(Sniffed.sniff(clientHello(serverNames: ["bad name.test"])) == .other)
        #expect(Sniffed.sniff(clientHello(serverNames: ["a..b"])) == .other)
        #expect(Sniffed.sniff(clientHello(serverNames: [String(repeating: "a", count: 64) + ".test"])) == .other)
        // A duplicate extension.
        let dup: [UInt8] = [0x00, 0x2B, 0x00, 0x03, 0x02, 0x03, 0x04]
        #expect(Sniffed.sniff(clientHello(serverNames: ["x.test"], extraExtensions: [dup])) == .other)
    }

    @Test("fuzz: mutated and random inputs never crash and never invent a name")
    func fuzz() {
        var generator = SystemRandomNumberGenerator()
        let base = clientHello(serverNames: ["fuzz.test"])
        for _ in 0..<20_000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                bytes[index] = UInt8.random(in: 0...255, using: &generator)
            }
            if Bool.random(using: &generator) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &generator))) }
            let result = Sniffed.sniff(bytes)
            for name in result.names {
                #expect(
                    name.utf8.allSatisfy { $0 == 0x2E || $0 == 0x2D || $0 == 0x5F || ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) },
                    "\(name)")
            }
        }
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...300, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if !bytes.isEmpty && Bool.random(using: &generator) { bytes[0] = 0x16 }
            _ = Sniffed.sniff(bytes)
        }
    }

    @Test(
        "HTTP/1.x request heads give their Host",
        arguments: [
            ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", ["example.com"]),
            ("GET / HTTP/1.1\r\nhOsT:   Example.COM:8080  \r\nAccept: */*\r\n\r\n", ["example.com"]),
            ("POST /x HTTP/1.0\r\nHost: [::1]:80\r\n\r\nbody", ["::1"]),
            ("GET http://abs.test:81/p HTTP/1.1\r\nUser-Agent: x\r\n\r\n", ["abs.test"]),
            ("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", ["a.test", "b.test"]),  // both judged
            ("CONNECT x.test:443 HTTP/1.1\r\nHost: x.test:443\r\n\r\n", ["x.test"]),
            ("GET / HTTP/1.1\r\n\r\n", []),
        ] as [(String, [String])])
    func http(text: String, hosts: [String]) {
        guard case .http(let found, _) = Sniffed.sniff(Array(text.utf8)) else {
            Issue.record("not parsed as HTTP: \(text)")
            return
        }
        #expect(found == hosts)
    }

    @Test(
        "incomplete heads ask for more; non-HTTP text is .other",
        arguments: [
            ("GET", Sniffed.needMore), ("GET / HTTP/1.1\r\nHost: a", .needMore), ("GET / HTTP/1.1\r\nHost: a.test\r\n", .needMore),
            ("SSH-2.0-OpenSSH\r\n", .other), ("GET / HTTP/2.0\r\n\r\n", .other), ("get / HTTP/1.1\r\n\r\n", .other),
            ("GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", .other), ("GET / HTTP/1.1\r\nno colon\r\n\r\n", .other),
            ("GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", .other), ("\u{0}\u{1}", .other), ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", .other),
        ] as [(String, Sniffed)])
    func httpIncomplete(text: String, expected: Sniffed) {
        #expect(Sniffed.sniff(Array(text.utf8)) == expected)
    }

    @Test("a head that never ends within the limit is .other")
    func httpTooLong() {
        let text = "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: Sniffed.limit) + "\r\n"
        #expect(Sniffed.sniff(Array(text.utf8)) == .other)
    }
}
