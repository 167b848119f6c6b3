import AirlockSystem
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TLS interception end to end: the guest's programs trust the project's CA without being
/// told (curl through the system bundle, Python through SSL_CERT_FILE), the host verifies the
/// upstream against its own trust (here the test servers' made-up CA, through the test-only
/// variable), one connection carries requests for its own name only, a passthrough rule
/// keeps the upstream's certificate, TLS that is not HTTP is relayed.
@Suite(
    "TLS interception (VM)", .tags(.vm), .serialized, .timeLimit(.minutes(3)),
    .enabled(if: VMEnvironment.available, VMEnvironment.skipReason))
struct InterceptionVMTests {
    @Test(
        "interception: curl and Python trust the project's CA; Host must be the connection's name (421); an upstream the host cannot verify is a 502 naming it; passthrough keeps the upstream's certificate; non-HTTP TLS is relayed"
    )
    func interception() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        let port = servers.tls
        try """
        [network.rules.api]
        allow = ["api.test:\(port)", "allowed.test:\(port)", "bad.test:\(port)"]
        allow_private = true

        [network.rules.direct]
        allow = ["pass.test:\(port)"]
        passthrough = true
        allow_private = true
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let script = """
            echo "curl|$(curl -sS https://api.test:\(port)/from-curl 2>&1 | tr '\\n' ' ')"
            echo "h2|$(curl -sS -o /dev/null -w '%{http_version}' https://api.test:\(port)/ 2>&1)"
            echo "misdirected|$(curl -sS -o /dev/null -w '%{http_code}' -H 'Host: allowed.test:\(port)' https://api.test:\(port)/ 2>&1)"
            echo "bad|$(curl -sS -w ' %{http_code}' https://bad.test:\(port)/ 2>&1 | tr '\\n' ' ')"
            echo "pass-issuer|$(openssl s_client -connect pass.test:\(port) -servername pass.test </dev/null 2>/dev/null | grep -m1 '^issuer=')"
            echo "pass-curl|$(curl -sS https://pass.test:\(port)/ 2>&1 | head -c 80 | tr '\\n' ' ')"
            echo "env|$NODE_EXTRA_CA_CERTS $SSL_CERT_FILE $REQUESTS_CA_BUNDLE"
            python3 - <<'EOF'
            import socket, ssl
            context = ssl.create_default_context()
            with socket.create_connection(("api.test", \(port)), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="api.test") as sock:
                    print("python-issuer|" + dict(x[0] for x in sock.getpeercert()["issuer"])["commonName"])
                    sock.sendall(b"PING raw\\n")
                    print("raw|" + sock.recv(100).decode().strip())
            EOF
            """
        let names = ["api.test", "allowed.test", "bad.test", "pass.test"].map { "\($0)=127.0.0.1" }.joined(separator: ",")
        let result = try CLI.run(
            ["start", "--", "sh", "-c", script], in: project,
            environment: ["AIRLOCK_TEST_ONLY_RESOLVE": names, "AIRLOCK_TEST_ONLY_UPSTREAM_CA": servers.ca])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = Self.labelled(result.stdout)
        let output = result.stdout
        #expect(lines["curl"]?.contains("hello over tls host=api.test:\(port) path=/from-curl") == true, "no -k, and it verifies: \(output)")
        #expect(lines["h2"] == "2", "HTTP/2 to the guest by ALPN (the upstream speaks HTTP/1.1): \(output)")
        #expect(lines["misdirected"] == "421", "\(output)")
        #expect(
            lines["bad"]?.contains("502") == true && lines["bad"]?.contains("bad.test") == true,
            "the upstream's certificate names api.test, not bad.test: \(output)")
        #expect(lines["pass-issuer"]?.contains("airlock test upstream CA") == true, "passthrough: the server's own certificate: \(output)")
        #expect(lines["pass-curl"]?.contains("hello over tls") != true, "the guest does not trust the server's own CA: \(output)")
        #expect(lines["env"] == "/run/airlock/ca.pem /run/airlock/ca-bundle.pem /run/airlock/ca-bundle.pem", "\(output)")
        #expect(lines["python-issuer"]?.hasPrefix("airlock CA for ") == true, "\(output)")
        #expect(lines["raw"] == "echo PING raw", "TLS that is not HTTP is relayed: \(output)")

        // The CA's key stays in the project's own state, 0600; the clone never sees it.
        let ca = project.path + "/.airlock/ca.pem"
        #expect(((try? FileManager.default.attributesOfItem(atPath: ca)[.posixPermissions]) as? Int) == 0o600)
        #expect(try FileSystem.readText(ca)?.contains("PRIVATE KEY") == true)
        let log = try CLI.run(["network", "log", "--json"], in: project)
        #expect(log.stdout.contains("intercepted"), "\(log.stdout.prefix(2000))")
    }

    /// Whether the allocated parts of the sparse file at `path` hold `needle`.
    static func sparseFile(_ path: String, contains needle: [UInt8]) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: off_t = 0
        while true {
            let data = lseek(fd, offset, 3 /* SEEK_DATA */)
            guard data >= 0 else { return false }
            let hole = lseek(fd, data, 4 /* SEEK_HOLE */)
            var position = data
            var carry: [UInt8] = []
            while position < hole {
                let count = pread(fd, &buffer, min(buffer.count, Int(hole - position)), position)
                guard count > 0 else { break }
                let window = carry + buffer[0..<count]
                if window.firstRange(of: needle) != nil { return true }
                carry = Array(window.suffix(needle.count - 1))
                position += off_t(count)
            }
            offset = hole
        }
    }

    /// The issue's own test: a token the VM must never hold, put into requests to its host only.
    @Test(
        "masked values: the VM holds a surrogate only (environment of every process, state disk); the bound host receives the real value, another host the surrogate; an answer echoing the real value is cut off; a request carrying it is blocked; all audited"
    )
    func maskedValues() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        let port = servers.tls
        let token = "tok-live-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"
        try """
        [env]
        TOKEN = { value = "${HOST_TOKEN}", mask = true }

        [network.rules.api]
        allow = ["api.test:\(port)"]
        allow_private = true
        inject = ["TOKEN"]

        [network.rules.other]
        allow = ["allowed.test:\(port)"]
        allow_private = true
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let script = """
            echo "surrogate|$TOKEN"
            printf '%s' '\(token)' > /tmp/pattern
            echo "environ|$(sudo sh -c 'grep -l -a -F -f /tmp/pattern /proc/[0-9]*/environ 2>/dev/null | wc -l')"
            echo "bound|$(curl -sS -H "Authorization: Bearer $TOKEN" https://api.test:\(port)/bound 2>&1 | tr '\\n' ' ')"
            echo "other|$(curl -sS -H "Authorization: Bearer $TOKEN" https://allowed.test:\(port)/other 2>&1 | tr '\\n' ' ')"
            echo "leak|$(curl -sS -w ' %{http_code}' -H 'X-Api-Key: \(token)' https://allowed.test:\(port)/leak 2>&1 | tr '\\n' ' ')"
            echo "$TOKEN" > ~/kept-surrogate; sync
            """
        let names = ["api.test", "allowed.test"].map { "\($0)=127.0.0.1" }.joined(separator: ",")
        let result = try CLI.run(
            ["start", "--", "sh", "-c", script], in: project,
            environment: ["AIRLOCK_TEST_ONLY_RESOLVE": names, "AIRLOCK_TEST_ONLY_UPSTREAM_CA": servers.ca, "HOST_TOKEN": token])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = Self.labelled(result.stdout)
        let output = result.stdout
        let surrogate = try #require(lines["surrogate"])
        #expect(surrogate.count == token.count && surrogate != token && surrogate.hasPrefix("tok-live-"), "\(output)")
        #expect(!output.contains(token), "the real value never reached the VM's output: \(output)")
        #expect(lines["environ"] == "0", "no process in the VM has the real value in its environment: \(output)")
        // The bound host got the real value; its echo of it never reached the VM (cut off).
        let received = (try FileSystem.readText(servers.received)) ?? ""
        #expect(received.contains("api.test:\(port) /bound Bearer \(token)"), "\(received)")
        #expect(lines["bound"]?.contains("hello over tls") != true, "the answer that echoed the real value was cut off: \(output)")
        // Another host: the surrogate, as sent, and its echo reaches the VM.
        #expect(received.contains("allowed.test:\(port) /other Bearer \(surrogate)"), "\(received)")
        #expect(lines["other"]?.contains("authorization=Bearer \(surrogate)") == true, "\(output)")
        // The real value sent from the VM: blocked before it left.
        #expect(lines["leak"]?.hasSuffix(" 403") == true, "\(output)")
        #expect(!received.contains("/leak"), "\(received)")

        // The state disk holds the surrogate the agent wrote, never the real value.
        let disk = project.path + "/.airlock/default/disk.img"
        #expect(!Self.sparseFile(disk, contains: Array(token.utf8)), "the real value is not on the state disk")
        #expect(Self.sparseFile(disk, contains: Array(surrogate.utf8)), "the surrogate the agent wrote is")

        // Audited: each request, the names of what was injected (never a value), the security events.
        let audit = (try FileSystem.readText(project.path + "/.airlock/default/audit.jsonl", limit: 16 << 20)) ?? ""
        #expect(!audit.contains(token), "no value in the audit log")
        #expect(audit.contains("‹masked TOKEN›"), "the command line that carried it is audited redacted")
        #expect(audit.contains(#""event":"request""#) && audit.contains(#""injected":["TOKEN"]"#), "\(audit.suffix(3000))")
        #expect(audit.contains(#""event":"security.secret-reflected""#), "\(audit.suffix(3000))")
        #expect(audit.contains(#""event":"security.secret-leak""#), "\(audit.suffix(3000))")
    }

    /// `label|value` lines of a script's output, by label.
    static func labelled(_ output: String) -> [String: String] {
        var lines: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 { lines[String(parts[0])] = String(parts[1]) }
        }
        return lines
    }

    /// The issue's own middleware test: a token from the vault put into requests on the host.
    @Test(
        "middleware: a token from the vault goes into requests on the host (the VM never holds it; the answer echoing it is cut off, as is one a script slips a vault value into); deny() is a 403; send() and an edited answer; a failing script is a 502 naming it"
    )
    func middleware() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        let port = servers.tls
        let token = "tok-vault-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"
        let data = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path]
        let other = "other-vault-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"
        for (name, value) in [("VAULT_TOKEN", token), ("VAULT_OTHER", other)] {
            let add = try CLI.run(["secrets", "add", name, "--stdin"], in: project, environment: data, stdin: Data(value.utf8))
            #expect(add.status == 0, "\(add.stderr)")
        }
        try """
        [network.rules.api]
        allow = ["api.test:\(port)", "allowed.test:\(port)"]
        allow_private = true

        [network.middleware.auth]
        target = ["api.test:\(port)"]
        env.TOKEN = "${VAULT_TOKEN}"
        script = '''
        if req.path:find("^/admin") then req:deny() end
        req:setHeader("Authorization", "Bearer " .. env.TOKEN)
        '''

        [network.middleware.edit]
        target = ["allowed.test:\(port)"]
        env.OTHER = "${VAULT_OTHER}"
        script = '''
        if req.path == "/broken" then error("no such thing") end
        local res = req:send()
        res:setHeader("X-Sandbox", "true")
        if req.path == "/slip" then res:setBody("oops " .. env.OTHER) else res:setBody(res:body():text():upper()) end
        '''
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let script = """
            echo "auth|$(curl -sS https://api.test:\(port)/auth 2>&1 | tr '\\n' ' ')"
            echo "admin|$(curl -sS -o /dev/null -w '%{http_code}' https://api.test:\(port)/admin/users 2>&1)"
            echo "edited|$(curl -sS -D - https://allowed.test:\(port)/edit 2>&1 | tr -d '\\r' | tr '\\n' ' ')"
            echo "broken|$(curl -sS -w ' %{http_code}' https://allowed.test:\(port)/broken 2>&1 | tr '\\n' ' ')"
            echo "slip|$(curl -sS https://allowed.test:\(port)/slip 2>&1 | tr '\\n' ' ')"
            printf '%s' tok-vault- > /tmp/pattern
            echo "environ|$(sudo sh -c 'grep -l -a -F -f /tmp/pattern /proc/[0-9]*/environ 2>/dev/null | wc -l')"
            """
        let names = ["api.test", "allowed.test"].map { "\($0)=127.0.0.1" }.joined(separator: ",")
        var environment = data
        environment["AIRLOCK_TEST_ONLY_RESOLVE"] = names
        environment["AIRLOCK_TEST_ONLY_UPSTREAM_CA"] = servers.ca
        let result = try CLI.run(["start", "--", "sh", "-c", script], in: project, environment: environment)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = Self.labelled(result.stdout)
        let output = result.stdout
        #expect(!output.contains(token), "the real value never reached the VM: \(output)")
        // A vault value a script slipped into an answer is cut off too (every vault value the
        // configuration reads and the VM does not hold is watched for).
        #expect(!output.contains(other) && lines["slip"]?.contains("oops") != true, "\(output)")
        #expect(lines["environ"] == "0", "no process in the VM has it in its environment: \(output)")
        // The host put it in; the server's echo of it was cut off before the VM saw it.
        let received = (try FileSystem.readText(servers.received)) ?? ""
        #expect(received.contains("api.test:\(port) /auth Bearer \(token)"), "\(received)")
        #expect(lines["auth"]?.contains("hello over tls") != true, "\(output)")
        #expect(lines["admin"] == "403", "\(output)")
        #expect(!received.contains("/admin"), "a denied request never leaves: \(received)")
        let edited = lines["edited"] ?? ""
        #expect(edited.lowercased().contains("x-sandbox: true") && edited.contains("HELLO OVER TLS"), "\(output)")
        let broken = lines["broken"] ?? ""
        #expect(broken.hasSuffix(" 502") && broken.contains("the middleware edit failed: edit:1: no such thing"), "\(output)")

        let audit = (try FileSystem.readText(project.path + "/.airlock/default/audit.jsonl", limit: 16 << 20)) ?? ""
        #expect(!audit.contains(token), "no value in the audit log")
        #expect(audit.contains(#""injected":["auth.env.TOKEN"]"#) && audit.contains(#""middleware":["auth"]"#), "\(audit.suffix(3000))")
        #expect(audit.contains(#""event":"security.secret-reflected""#), "\(audit.suffix(3000))")
        #expect(audit.contains(#""middleware":["edit"]"#), "\(audit.suffix(3000))")
    }
}
