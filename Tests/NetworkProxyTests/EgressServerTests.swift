import Foundation
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy
import Testing

@testable import NetworkProxy

/// The egress server end to end: a fake guest (HTTP/2 client) on a socket pair, real servers
/// on 127.0.0.1 standing in for the internet, names pointed at them by a test resolver.
@Suite("Egress server", .serialized)
struct EgressServerTests {
    struct Setup {
        let server: EgressServer
        let guest: FakeGuest
        let records: Records
    }

    func setUp(_ rules: NetworkRules, names: [String: [String]] = [:], forwards: [GuestForward] = [], sockets: [UnixSocketForward] = []) async throws
        -> Setup
    {
        let records = Records()
        let server = EgressServer(
            configuration: .init(rules: rules, resolver: StaticResolver(names), guestForwards: forwards, socketForwards: sockets),
            logger: testLogger, records: records.sink)
        return Setup(server: server, guest: try await FakeGuest(server: server), records: records)
    }

    static let get = "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"

    @Test("an allowed name whose rule has allow_private reaches the server on 127.0.0.1")
    func allowedPrivate() async throws {
        try await within {
            let web = try await TestServer.hello("web")
            let setup = try await setUp(
                try rules([("web", allow: ["web.test:\(web.port)"], deny: [], allowPrivate: true)]), names: ["web.test": ["127.0.0.1"]])
            let answer = try await setup.guest.exchange(host: "web.test", port: web.port, send: Self.get)
            #expect(answer.status == "200")
            #expect(answer.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(answer.text.hasSuffix("hello from web"))
            #expect(answer.endStream)
            let record = try #require(await setup.records.wait(for: 1).first)
            #expect(record.verdict == .allow)
            #expect(record.rule == "web")
            #expect(record.name == "web.test")
            #expect(record.ip == "127.0.0.1")
            #expect(record.bytesUp == Int64(Self.get.utf8.count))
            #expect(record.bytesDown == Int64(answer.body.count))
            await setup.guest.close()
            await web.close()
        }
    }

    @Test("the same name without allow_private is refused: it resolves to 127.0.0.1")
    func privateRefused() async throws {
        try await within {
            let web = try await TestServer.hello("web")
            let setup = try await setUp(
                try rules([("web", allow: ["web.test:\(web.port)"], deny: [], allowPrivate: false)]), names: ["web.test": ["127.0.0.1"]])
            let answer = try await setup.guest.exchange(host: "web.test", port: web.port, send: Self.get)
            #expect(answer.status == "403")
            #expect(answer.reason?.contains("resolves only to loopback/private/link-local addresses (127.0.0.1)") == true, "\(answer.reason ?? "")")
            #expect(answer.reason?.contains("allow_private = true") == true)
            #expect(!answer.text.contains("hello"))
            let record = try #require(await setup.records.wait(for: 1).first)
            #expect(record.verdict == .refused)
            // A name resolving to public and private addresses connects only to the public ones
            // (none here is reachable, so this just must not reach the local server).
            await setup.guest.close()
            await web.close()
        }
    }

    @Test(
        "denied: a name no rule allows, a denied port of an allowed name, a name in both allow and deny",
        arguments: [
            ("other.test", "deny-by-default", "allow = [\"other.test:PORT\"]"),
            ("web.test", "deny \"web.test:PORT\"", "remove \"web.test:PORT\" from `deny` in [network.rules.web]"),
            ("both.test", "deny \"both.test\"", "remove \"both.test\" from `deny` in [network.rules.web]"),
        ])
    func denied(name: String, because: String, fix: String) async throws {
        try await within {
            let web = try await TestServer.hello("web")
            let port = web.port
            let setup = try await setUp(
                try rules([
                    ("web", allow: ["web.test", "both.test"], deny: ["web.test:\(port)", "both.test"], allowPrivate: true)
                ]), names: ["web.test": ["127.0.0.1"], "both.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]])
            // Plain HTTP: a 403 page the agent can read, naming the rule and the fix.
            let get = "GET /x HTTP/1.1\r\nHost: \(name)\r\nUser-Agent: t\r\n\r\n"
            let answer = try await setup.guest.exchange(host: name, port: port, send: get, finish: false)
            #expect(answer.status == "200")
            #expect(answer.text.hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
            #expect(answer.text.contains(because.replacingOccurrences(of: "PORT", with: "\(port)")), "\(answer.text)")
            #expect(answer.text.contains(fix.replacingOccurrences(of: "PORT", with: "\(port)")), "\(answer.text)")
            #expect(answer.text.contains("GET /x HTTP/1.1"))
            #expect(!answer.text.contains("hello"))
            // Anything else: 403 and the reason, then the guest resets the connection.
            let raw = try await setup.guest.exchange(host: name, port: port, send: "\u{0}\u{1}binary", finish: false)
            #expect(raw.status == "403")
            #expect(raw.body.isEmpty)
            #expect(raw.reason?.contains(because.replacingOccurrences(of: "PORT", with: "\(port)")) == true)
            let records = await setup.records.wait(for: 2)
            #expect(records.count == 2)
            #expect(records.allSatisfy { $0.verdict == .deny && $0.bytesUp == 0 })
            await setup.guest.close()
            await web.close()
        }
    }

    @Test("IP literals: denied without a rule, refused when private without allow_private, open with both")
    func literals() async throws {
        try await within {
            let web = try await TestServer.hello("web")
            let port = web.port
            let none = try await setUp(try rules([]))
            let denied = try await none.guest.exchange(host: "127.0.0.1", ip: "127.0.0.1", port: port, send: Self.get, finish: false)
            #expect(denied.status == "200")
            // Host says web.test, unknown to the rules: judged by name and IP, the name is denied first.
            #expect(denied.text.contains("web.test:\(port) denied by the policy deny-by-default"), "\(denied.text)")
            #expect(denied.text.contains("add [network.rules.<name>] allow = [\"web.test:\(port)\"]"))
            await none.guest.close()

            let noPrivate = try await setUp(try rules([("ip", allow: ["127.0.0.1:\(port)", "web.test"], deny: [], allowPrivate: false)]))
            let refused = try await noPrivate.guest.exchange(host: "127.0.0.1", ip: "127.0.0.1", port: port, send: "\u{0}x", finish: false)
            #expect(refused.status == "403")
            #expect(refused.reason?.contains("127.0.0.1 is a loopback, private, link-local or metadata address") == true, "\(refused.reason ?? "")")
            await noPrivate.guest.close()

            let open = try await setUp(try rules([("ip", allow: ["127.0.0.1:\(port)", "web.test"], deny: [], allowPrivate: true)]))
            let answer = try await open.guest.exchange(host: "127.0.0.1", ip: "127.0.0.1", port: port, send: Self.get)
            #expect(answer.text.hasSuffix("hello from web"))
            let record = try #require(await open.records.wait(for: 1).first)
            #expect(record.name == "web.test")  // the sniffed Host
            #expect(record.ip == "127.0.0.1")
            await open.guest.close()

            // An allowed literal carrying a denied Host: denied, by the name.
            let mixed = try await setUp(try rules([("ip", allow: ["127.0.0.1:\(port)"], deny: ["evil.test"], allowPrivate: true)]))
            let evil = try await mixed.guest.exchange(
                host: "127.0.0.1", ip: "127.0.0.1", port: port,
                send: "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", finish: false)
            #expect(evil.text.contains("evil.test:\(port) denied by [network.rules.ip] deny \"evil.test\""), "\(evil.text)")
            await mixed.guest.close()
            await web.close()
        }
    }

    @Test(
        "an allowed name in the Host opens an IP literal only when the name resolves to it (no exfiltration to any server by naming an allowed site)")
    func literalMustBeAnAddressOfItsName() async throws {
        try await within {
            // 192.0.2.1 (TEST-NET-1) is nobody's address: the decision must fall before any
            // connection is tried, so no traffic leaves the machine.
            let setup = try await setUp(
                try rules([("site", allow: ["good.test"], deny: [], allowPrivate: false)]), names: ["good.test": ["127.0.0.1"]])
            let http = try await setup.guest.exchange(
                host: "192.0.2.1", ip: "192.0.2.1", port: 80,
                send: "GET / HTTP/1.1\r\nHost: good.test\r\n\r\n", finish: false)
            #expect(http.text.contains("403"), "\(http.text)")
            #expect(http.text.contains("192.0.2.1 is not an address of good.test (it resolves to 127.0.0.1)"), "\(http.text)")
            let record = try #require(await setup.records.wait(for: 1).first)
            #expect(record.verdict == .refused && record.bytesUp == 0 && record.bytesDown == 0, "\(record)")
            await setup.guest.close()
        }
    }

    @Test("guest port forwards reach the host's 127.0.0.1 only as configured")
    func guestForward() async throws {
        try await within {
            let echo = try await TestServer.echo()
            let setup = try await setUp(
                try rules([], policy: .denyAlways), forwards: [GuestForward(guestPort: 5000, hostPort: echo.port, entry: "api")])
            let answer = try await setup.guest.exchange(host: EgressRequest.forwardHost, port: 5000, send: "ping")
            #expect(answer.status == "200")
            #expect(answer.text == "ping")
            let other = try await setup.guest.exchange(host: EgressRequest.forwardHost, port: 5001, send: "ping")
            #expect(other.status == "403")
            #expect(other.reason?.contains("no port forward to the host") == true)
            let records = await setup.records.wait(for: 2)
            #expect(records.contains { $0.verdict == .forward && $0.rule == "ports.api" && $0.bytesUp == 4 && $0.bytesDown == 4 })
            await setup.guest.close()
            await echo.close()
        }
    }

    @Test("Unix-socket forwards: only a configured entry's host socket, half-close both ways, each audited")
    func socketForward() async throws {
        try await within {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "airlock-sock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            ).path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/agent.sock"
            let echo = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { $0.pipeline.addHandler(EchoHandler()) }
                .bind(unixDomainSocketPath: path).get()
            let setup = try await setUp(
                try rules([], policy: .denyAlways),
                sockets: [
                    UnixSocketForward(entry: "agent", hostPath: path, guestPath: "/run/airlock/agent.sock"),
                    UnixSocketForward(entry: "gone", hostPath: directory + "/missing.sock", guestPath: "/run/airlock/gone.sock"),
                ])
            // 3 MB through the echo and back: the guest's END_STREAM reaches the socket as EOF
            // only after every byte, and the socket's EOF comes back as END_STREAM.
            let payload = String(repeating: "0123456789abcdef", count: 3 << 16)
            let answer = try await setup.guest.exchange(opening: .headers(.init(headers: SocketRequest(name: "agent").headers)), send: payload)
            #expect(answer.status == "200")
            #expect(answer.text == payload)
            #expect(answer.endStream)

            // An entry the host does not have: refused, whatever path the guest has in mind.
            let unknown = try await setup.guest.exchange(opening: .headers(.init(headers: SocketRequest(name: "other").headers)), send: "x")
            #expect(unknown.status == "403")
            #expect(unknown.reason?.contains("no Unix-socket forward named \"other\"") == true, "\(unknown.reason ?? "")")
            // A path instead of a name is not a request at all.
            var pathLike = SocketRequest(name: "a").headers
            pathLike.replaceOrAdd(name: SocketRequest.nameHeader, value: path)
            let invalid = try await setup.guest.exchange(opening: .headers(.init(headers: pathLike)), send: "x")
            #expect(invalid.status == "400")
            // A configured socket nobody listens on: 502, and the record says why.
            let missing = try await setup.guest.exchange(opening: .headers(.init(headers: SocketRequest(name: "gone").headers)), send: "x")
            #expect(missing.status == "502")

            let records = await setup.records.wait(for: 4)
            let carried = try #require(records.first { $0.rule == "sockets.agent" })
            #expect(carried.verdict == .forward && carried.socket == path)
            #expect(carried.bytesUp == Int64(payload.utf8.count) && carried.bytesDown == Int64(payload.utf8.count))
            #expect(records.contains { $0.verdict == .deny && $0.reason.contains("no Unix-socket forward named \"other\"") })
            #expect(records.contains { $0.verdict == .invalid })
            let refused = try #require(records.first { $0.rule == "sockets.gone" })
            #expect(refused.verdict == .refused)
            #expect(
                refused.reason.contains("cannot connect to the host socket \(directory)/missing.sock for [network.sockets.gone]"), "\(refused.reason)"
            )
            await setup.guest.close()
            try? await echo.close()
        }
    }

    @Test("bad requests get 400 and the stream ends")
    func badRequest() async throws {
        try await within {
            let setup = try await setUp(try rules([]))
            let stream = try await setup.guest.open()
            let answer = try await stream.executeThenClose { inbound, outbound in
                try await outbound.write(
                    .headers(
                        .init(headers: [
                            ":method": "POST", ":scheme": "http", ":authority": "h", ":path": "/v1/tcp",
                            "airlock-host": "a b", "airlock-ip": "1.2.3.4", "airlock-port": "80",
                        ])))
                return try await FakeGuest.read(inbound)
            }
            #expect(answer.status == "400")
            #expect(answer.endStream)
            #expect(await setup.records.wait(for: 1).first?.verdict == .invalid)
            await setup.guest.close()
        }
    }

    @Test("an upstream that refuses the connection gives 502")
    func upstreamDown() async throws {
        try await within {
            // A port nothing listens on: bind, note it, close.
            let gone = try await TestServer.echo()
            let port = gone.port
            await gone.close()
            let setup = try await setUp(try rules([("x", allow: ["x.test"], deny: [], allowPrivate: true)]), names: ["x.test": ["127.0.0.1"]])
            let answer = try await setup.guest.exchange(host: "x.test", port: port, send: "hi")
            #expect(answer.status == "502")
            #expect(answer.reason?.contains("cannot connect to x.test port \(port)") == true, "\(answer.reason ?? "")")
            await setup.guest.close()
        }
    }

    @Test("half-close both ways: the guest's END_STREAM reaches the server as EOF, and its EOF comes back")
    func halfClose() async throws {
        try await within {
            let echo = try await TestServer.echo()
            let setup = try await setUp(try rules([("e", allow: ["echo.test"], deny: [], allowPrivate: true)]), names: ["echo.test": ["127.0.0.1"]])
            // 3 MB: more than every window and buffer on the way.
            let payload = String(repeating: "0123456789abcdef", count: 3 << 16)
            let answer = try await setup.guest.exchange(host: "echo.test", port: echo.port, send: payload)
            #expect(answer.body.count == payload.utf8.count)
            #expect(answer.text == payload)
            #expect(answer.endStream)
            await setup.guest.close()
            await echo.close()
        }
    }

    @Test("200 concurrent connections: correct data each, no descriptor left open")
    func concurrent() async throws {
        try await within(60) {
            let echo = try await TestServer.echo()
            let setup = try await setUp(try rules([("e", allow: ["echo.test"], deny: [], allowPrivate: true)]), names: ["echo.test": ["127.0.0.1"]])
            // Warm up (thread pools, singletons) before counting descriptors.
            _ = try await setup.guest.exchange(host: "echo.test", port: echo.port, send: "warm")
            _ = await setup.records.wait(for: 1)
            let before = openDescriptors()
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        let payload = String(repeating: "connection \(index);", count: 1000)
                        let answer = try await setup.guest.exchange(host: "echo.test", port: echo.port, send: payload)
                        return answer.status == "200" && answer.text == payload && answer.endStream
                    }
                }
                var ok = 0
                for try await result in group where result { ok += 1 }
                return ok
            }
            #expect(results == 200)
            let records = await setup.records.wait(for: 201)
            #expect(records.count == 201)
            #expect(records.dropFirst().allSatisfy { $0.verdict == .allow && $0.bytesUp == $0.bytesDown && $0.bytesUp > 10_000 })
            // Upstream sockets close as each relay ends; give the event loops a moment.
            var after = openDescriptors()
            for _ in 0..<100 where after > before {
                try await Task.sleep(for: .milliseconds(20))
                after = openDescriptors()
            }
            #expect(after <= before, "descriptors before \(before), after \(after)")
            await setup.guest.close()
            await echo.close()
        }
    }
}
