import Foundation
import NIOCore
import NIOPosix
import NetworkPolicy
import Synchronization
import Testing

@testable import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Real TLS: `openssl s_server` with a certificate made here, `curl` as the program in the
/// guest, connecting to an IP literal (as a program that resolved the name itself would) and
/// sending an SNI of its choice.
@Suite("TLS to IP literals", .serialized, .enabled(if: which("openssl") != nil && which("curl") != nil, "needs the openssl and curl programs"))
struct TLSTests {
    /// A TLS server on 127.0.0.1 with a self-signed certificate for good.test.
    final class TLSServer {
        let directory: String
        let process: Process
        let port: Int

        init() async throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-tls-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try await makeCertificate(in: directory, names: ["good.test"])
            port = try await freePort()
            guard
                let process = try launchProgram(
                    [
                        "openssl", "s_server", "-accept", "127.0.0.1:\(port)", "-cert", "cert.pem", "-key", "key.pem",
                        "-www", "-quiet",
                    ], directory: directory)
            else { throw TestFailure("no openssl") }
            self.process = process
            do {
                try await waitForListener(port: port)
            } catch {
                kill(process.processIdentifier, SIGKILL)
                throw TestFailure("openssl s_server never listened on \(port)")
            }
        }

        func stop() {
            // s_server ignores SIGTERM.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// curl to https://<sni>:<port>/ whose TCP connection the guest captures as a connection to
    /// 127.0.0.1:<port>. Returns curl's exit status and output.
    func curl(sni: String?, through capturePort: Int, port: Int) async throws -> (status: Int32, output: String) {
        var arguments = ["curl", "-sS", "-k", "--max-time", "10"]
        if let sni {
            arguments += ["--connect-to", "\(sni):\(port):127.0.0.1:\(capturePort)", "https://\(sni):\(port)/"]
        } else {
            arguments += ["https://127.0.0.1:\(capturePort)/"]
        }
        guard let result = try await runProgram(arguments, timeout: .seconds(15)) else { throw TestFailure("no curl") }
        return result
    }

    @Test("an IP literal with an SNI is judged by both: allowed name and IP → through; denied or unknown SNI → blocked")
    func literalWithSNI() async throws {
        try await within(90) {
            let tls = try await TLSServer()
            defer { tls.stop() }
            let port = tls.port
            let records = Records()
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([
                        ("site", allow: ["good.test:\(port)", "127.0.0.1:\(port)"], deny: ["evil.test"], allowPrivate: true)
                    ])), logger: testLogger, records: records.sink)
            let guest = try await FakeGuest(server: server)
            let capture = try await guest.capture(host: "127.0.0.1", ip: "127.0.0.1", port: UInt16(port))

            let good = try await curl(sni: "good.test", through: capture.port, port: port)
            #expect(good.status == 0, "\(good.output)")
            #expect(good.output.contains("s_server"), "\(good.output)")

            let evil = try await curl(sni: "evil.test", through: capture.port, port: port)
            #expect(evil.status != 0)
            #expect(!evil.output.contains("s_server"))

            let unknown = try await curl(sni: "unknown.test", through: capture.port, port: port)
            #expect(unknown.status != 0)

            // No SNI at all (curl sends none to an IP): judged by the IP, which is allowed.
            let bare = try await curl(sni: nil, through: capture.port, port: port)
            #expect(bare.status == 0, "\(bare.output)")

            let all = await records.wait(for: 4)
            #expect(all.contains { $0.name == "good.test" && $0.verdict == .allow && $0.bytesDown > 0 })
            #expect(all.contains { $0.name == "evil.test" && $0.verdict == .deny && $0.reason.contains("deny \"evil.test\"") })
            #expect(all.contains { $0.name == "unknown.test" && $0.verdict == .deny && $0.reason.contains("deny-by-default") })
            capture.task.cancel()
            await guest.close()
        }
    }

    @Test("an allowed SNI does not open an IP literal the name does not resolve to")
    func nameDoesNotOpenForeignLiteral() async throws {
        try await within(60) {
            let records = Records()
            // 192.0.2.1 (TEST-NET-1): refused before any connection, so nothing leaves.
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([("site", allow: ["good.test"], deny: [], allowPrivate: false)]),
                    resolver: StaticResolver(["good.test": ["127.0.0.1"]])),
                logger: testLogger, records: records.sink)
            let guest = try await FakeGuest(server: server)
            let capture = try await guest.capture(host: "192.0.2.1", ip: "192.0.2.1", port: 443)
            let result = try await curl(sni: "good.test", through: capture.port, port: 443)
            #expect(result.status != 0)
            let record = try #require(await records.wait(for: 1).first)
            #expect(record.verdict == .refused && record.bytesDown == 0)
            #expect(record.reason.contains("192.0.2.1 is not an address of good.test (it resolves to 127.0.0.1)"), "\(record.reason)")
            capture.task.cancel()
            await guest.close()
        }
    }

    @Test("an allowed SNI does not open a private IP literal that no rule names")
    func nameDoesNotOpenPrivateLiteral() async throws {
        try await within(60) {
            let tls = try await TLSServer()
            defer { tls.stop() }
            let port = tls.port
            let records = Records()
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([
                        ("site", allow: ["good.test:\(port)"], deny: [], allowPrivate: true)
                    ])), logger: testLogger, records: records.sink)
            let guest = try await FakeGuest(server: server)
            let capture = try await guest.capture(host: "127.0.0.1", ip: "127.0.0.1", port: UInt16(port))
            let result = try await curl(sni: "good.test", through: capture.port, port: port)
            #expect(result.status != 0)
            let record = try #require(await records.wait(for: 1).first)
            #expect(record.verdict == .refused)
            // good.test does not resolve to 127.0.0.1 here (no resolver entry): refused for that,
            // before the address's own check (a literal only a rule naming it can open).
            #expect(record.reason.contains("127.0.0.1 is not an address of good.test"), "\(record.reason)")
            capture.task.cancel()
            await guest.close()
        }
    }

    /// A TLS client that connects, waits past the sniff deadline (as curl does while it reads its
    /// CA bundle on a slow machine), then verifies the server against the project's CA only.
    static let lateHello = """
        import socket, ssl, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        time.sleep(float(sys.argv[3]))
        c = ssl.create_default_context(cafile=sys.argv[2]).wrap_socket(s, server_hostname="good.test")
        issuer = dict(x[0] for x in c.getpeercert()["issuer"])["commonName"]
        c.sendall(b"GET / HTTP/1.1\\r\\nHost: good.test:" + sys.argv[4].encode() + b"\\r\\nConnection: close\\r\\n\\r\\n")
        print(issuer + "|" + c.recv(64).split(b"\\r\\n")[0].decode())
        """

    /// A client of a server that speaks first: reads before it writes.
    static let listener = """
        import socket, sys
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        first = s.recv(100).decode().strip()
        s.sendall(b"ping\\n")
        print(first + "|" + s.recv(100).decode().strip())
        """

    @Test(
        "interception: a client that says nothing until after the sniff deadline still gets the project CA's leaf; a server that speaks first is heard first",
        .enabled(if: which("python3") != nil, "needs python3"))
    func silentUntilTheDeadline() async throws {
        try await within(90) {
            let tls = try await TLSServer()
            defer { tls.stop() }
            let banner = try await TestServer.banner("220 banner.test ready\r\n")
            let authority = try CertificateAuthority.loadOrCreate(path: tls.directory + "/state/ca.pem", project: "/tmp/project")
            try authority.certificatePEM.write(toFile: tls.directory + "/ca-cert.pem", atomically: true, encoding: .utf8)
            var limits = EgressLimits()
            limits.sniffTimeout = .milliseconds(100)
            let records = Records()
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([("site", allow: ["good.test:\(tls.port)", "banner.test:\(banner.port)"], deny: [], allowPrivate: true)]),
                    resolver: StaticResolver(["good.test": ["127.0.0.1"], "banner.test": ["127.0.0.1"]]), limits: limits,
                    interception: try Interception(
                        authority: authority, extraUpstreamRootsPEM: try String(contentsOfFile: tls.directory + "/cert.pem", encoding: .utf8))),
                logger: testLogger, records: records.sink)
            let guest = try await FakeGuest(server: server)
            let web = try await guest.capture(host: "good.test", ip: "198.18.0.10", port: UInt16(tls.port))
            let mail = try await guest.capture(host: "banner.test", ip: "198.18.0.11", port: banner.port)

            for wait in ["0", "0.5"] {
                let late = try #require(
                    try await runProgram(["python3", "-c", Self.lateHello, "\(web.port)", tls.directory + "/ca-cert.pem", wait, "\(tls.port)"]))
                #expect(late.status == 0 && late.output.hasPrefix("airlock CA for /tmp/project|HTTP/1.1 200"), "waited \(wait) s: \(late.output)")
            }
            let heard = try #require(try await runProgram(["python3", "-c", Self.listener, "\(mail.port)"]))
            #expect(heard.output == "220 banner.test ready|ping\n", "\(heard.output)")

            let all = await records.wait(for: 3)
            #expect(all.filter { $0.name == "good.test" && $0.reason.hasSuffix("; intercepted") }.count == 2, "\(all.map(\.reason))")
            #expect(all.contains { $0.name == "banner.test" && $0.verdict == .allow && $0.bytesDown > 0 }, "\(all.map(\.reason))")
            web.task.cancel()
            mail.task.cancel()
            await guest.close()
            await banner.close()
        }
    }
    /// An HTTPS API stand-in: answers each request with the credential headers it received,
    /// and appends them to `received` (what reached it, for the test to read).
    static let echoAPI = """
        import http.server, ssl, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("auth=%s\\nkey=%s\\n" % (self.headers.get("Authorization", ""), self.headers.get("x-api-key", ""))).encode()
                with open(sys.argv[4], "ab") as f: f.write(body)
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[2], sys.argv[3])
        s.socket = c.wrap_socket(s.socket, server_side=True)
        s.serve_forever()
        """

    @Test(
        "a service's API host: a surrogate in Authorization: Bearer or x-api-key becomes the real token upstream, an echo of it comes back as the surrogate, any other credential is 401, the real token from the VM is 403",
        .enabled(if: which("python3") != nil, "needs python3"))
    func serviceCredentials() async throws {
        try await within(90) {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-api-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try await makeCertificate(in: directory, names: ["good.test"])
            let port = try await freePort()
            let received = directory + "/received"
            let api = try #require(
                try launchProgram(
                    ["python3", "-c", Self.echoAPI, "\(port)", directory + "/cert.pem", directory + "/key.pem", received], directory: directory))
            defer { kill(api.processIdentifier, SIGKILL) }
            try await waitForListener(port: port)
            let token = MaskedSecret(name: "CLAUDE_CODE_OAUTH_TOKEN", value: "sk-ant-oat01-RealToken0123456789abcdefXYZ")
            let service = ProviderService(
                name: "anthropic", apiHosts: ["good.test"], port: port, tokenVariables: ["CLAUDE_CODE_OAUTH_TOKEN"],
                credentialHeaders: ["authorization", "x-api-key"], hint: "put it on the host")
            let authority = try CertificateAuthority.loadOrCreate(path: directory + "/state/ca.pem", project: "/tmp/project")
            final class Requests: Sendable { let list = Mutex<[InterceptedRequest]>([]) }
            let requests = Requests()
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([("api", allow: ["good.test:\(port)"], deny: [], allowPrivate: true)]),
                    resolver: StaticResolver(["good.test": ["127.0.0.1"]]),
                    interception: try Interception(
                        authority: authority, secrets: [token], services: [ServiceCredentials(service: service, tokens: [token])],
                        extraUpstreamRootsPEM: try String(contentsOfFile: directory + "/cert.pem", encoding: .utf8),
                        requests: { request in requests.list.withLock { $0.append(request) } })),
                logger: testLogger, records: Records().sink)
            let guest = try await FakeGuest(server: server)
            let capture = try await guest.capture(host: "good.test", ip: "198.18.0.10", port: UInt16(port))
            func call(_ header: String?) async throws -> String {
                var arguments = ["curl", "-sS", "-k", "--max-time", "10", "-w", "|%{http_code}"]
                if let header { arguments += ["-H", header] }
                arguments += ["--connect-to", "good.test:\(port):127.0.0.1:\(capture.port)", "https://good.test:\(port)/v1/messages"]
                return try #require(try await runProgram(arguments)).output
            }

            let bearer = try await call("Authorization: Bearer \(token.surrogate)")
            #expect(bearer == "auth=Bearer \(token.surrogate)\nkey=\n|200", "the echo carries the surrogate back: \(bearer)")
            let key = try await call("x-api-key: \(token.surrogate)")
            #expect(key == "auth=\nkey=\(token.surrogate)\n|200", "\(key)")
            let none = try await call(nil)
            #expect(none.hasSuffix("|200"), "no credential: as it is: \(none)")
            let upstream = try String(contentsOfFile: received, encoding: .utf8)
            #expect(upstream == "auth=Bearer \(token.value)\nkey=\nauth=\nkey=\(token.value)\nauth=\nkey=\n", "what the API received: \(upstream)")

            let invented = try await call("Authorization: Bearer sk-ant-oat01-InventedInTheVM000000000000000")
            #expect(invented.hasSuffix("|401") && invented.contains("takes only the credentials airlock gives"), "\(invented)")
            let partly = try await call("Authorization: Bearer \(token.surrogate)x")
            #expect(partly.hasSuffix("|401"), "only the whole surrogate: \(partly)")
            let basic = try await call("Authorization: Basic \(token.surrogate)")
            #expect(basic.hasSuffix("|401"), "only as a bearer token: \(basic)")
            let real = try await call("Authorization: Bearer \(token.value)")
            #expect(real.hasSuffix("|403"), "the real token from the VM: \(real)")
            #expect(try String(contentsOfFile: received, encoding: .utf8) == upstream, "nothing refused reached the API")

            let recorded = requests.list.withLock { $0 }
            #expect(recorded.filter { $0.injected == ["CLAUDE_CODE_OAUTH_TOKEN"] }.count == 2, "\(recorded)")
            #expect(recorded.filter { $0.security == "security.foreign-credential" }.count == 3, "\(recorded)")
            capture.task.cancel()
            await guest.close()
        }
    }
}
