import AirlockSystem
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `presets = ["claude-code"]` end to end, with stand-ins: a `claude` installed in the host
/// user's home as Claude Code's installer does it, and an API on 127.0.0.1 named
/// api.anthropic.com (test-only resolver, CA and service port) that echoes what it received.
/// In the interception suite, serialized with it: one more suite running beside the others
/// would add a VM to the ones the two cores already share.
extension InterceptionVMTests {
    @Test(
        "claude-code: the host's claude runs in the VM; its token from the vault reaches the API, never the VM (only the surrogate comes back); an invented token gets 401; its settings are kept for the next sandbox; without claude on the host, a warning and the sandbox starts"
    )
    func claudeCode() throws {
        let project = try VMEnvironment.repository()
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-home-\(UUID().uuidString.prefix(8))").path
        defer {
            _ = try? CLI.run(["rm", "--force", "--name", "second"], in: project)
            VMEnvironment.cleanUp(project)
            try? FileManager.default.removeItem(atPath: home)
        }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        let port = servers.tls
        // claude as its installer leaves it: ~/.local/bin/claude → ~/.local/share/claude/versions/X.
        let version = home + "/.local/share/claude/versions/9.9.9"
        try FileManager.default.createDirectory(atPath: home + "/.local/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: FileSystem.parent(of: version), withIntermediateDirectories: true)
        try """
        #!/bin/sh
        # A stand-in for Claude Code: its token, one API call, a setting kept in ~/.claude.
        api=https://api.anthropic.com:\(port)/v1/messages
        echo "token|$CLAUDE_CODE_OAUTH_TOKEN"
        echo "api|$(curl -sS -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" $api 2>&1 | tr '\\n' ' ')"
        echo "invented|$(curl -sS -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-ant-oat01-MadeUpInsideTheSandbox0000000000' $api)"
        echo "before|$(cat ~/.claude/settings.json 2>/dev/null)"
        echo "onboarding|$(cat ~/.claude.json)"
        echo "{\\"from\\":\\"$1\\"}" > ~/.claude/settings.json
        printf '%s' sk-ant-oat01-Real > /tmp/pattern
        echo "environ|$(sudo sh -c 'grep -l -a -F -f /tmp/pattern /proc/[0-9]*/environ 2>/dev/null | wc -l')"
        echo "where|$(command -v claude) $(readlink /run/airlock-bin/claude)"
        """.write(toFile: version, atomically: true, encoding: .utf8)
        chmod(version, 0o755)
        symlink("../share/claude/versions/9.9.9", home + "/.local/bin/claude")

        let token = "sk-ant-oat01-Real" + UUID().uuidString.replacingOccurrences(of: "-", with: "") + "AA"
        let data = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path]
        let add = try CLI.run(["secrets", "add", "CLAUDE_CODE_OAUTH_TOKEN", "--stdin"], in: project, environment: data, stdin: Data(token.utf8))
        #expect(add.status == 0, "\(add.stderr)")
        var environment = try Self.standInAnthropic(project, home: home, servers: servers)
        environment["PATH"] = home + "/.local/bin:/usr/local/bin:/usr/bin:/bin"

        let first = try CLI.run(["start", "--", "claude", "first"], in: project, environment: environment)
        #expect(first.status == 0, "stderr: \(first.stderr)")
        let lines = Self.labelled(first.stdout)
        let surrogate = try #require(lines["token"])
        #expect(surrogate.hasPrefix("sk-ant-oat01-") && surrogate.count == token.count && surrogate != token, "\(first.stdout)")
        #expect(!first.stdout.contains(token), "the real token never reached the VM: \(first.stdout)")
        #expect(lines["environ"] == "0", "no process in the VM has it in its environment: \(first.stdout)")
        let received = (try FileSystem.readText(servers.received)) ?? ""
        #expect(received.contains("api.anthropic.com:\(port) /v1/messages Bearer \(token)"), "the API got the real token: \(received)")
        #expect(lines["api"]?.contains("authorization=Bearer \(surrogate)") == true, "its echo came back as the surrogate: \(first.stdout)")
        #expect(lines["invented"] == "401", "\(first.stdout)")
        #expect(!received.contains("MadeUpInsideTheSandbox"), "an invented token never left: \(received)")
        #expect(lines["before"] == "", "\(first.stdout)")
        #expect(lines["onboarding"] == #"{"hasCompletedOnboarding":true}"#, "\(first.stdout)")
        #expect(lines["where"] == "/run/airlock-bin/claude \(version)", "\(first.stdout)")

        // Another sandbox sees the settings the first wrote, kept in airlock's directory.
        let second = try CLI.run(["start", "--name", "second", "--", "claude", "second"], in: project, environment: environment)
        #expect(second.status == 0, "stderr: \(second.stderr)")
        #expect(Self.labelled(second.stdout)["before"] == #"{"from":"first"}"#, "\(second.stdout)")
        let kept = try FileSystem.readText(home + "/.airlock/claude/settings/settings.json") ?? ""
        #expect(kept == "{\"from\":\"second\"}\n")
        let audit = (try FileSystem.readText(project.path + "/.airlock/default/audit.jsonl", limit: 16 << 20)) ?? ""
        #expect(!audit.contains(token), "no token in the audit log")
        #expect(
            audit.contains(#""injected":["CLAUDE_CODE_OAUTH_TOKEN"]"#) && audit.contains(#""event":"security.foreign-credential""#),
            "\(audit.suffix(2000))")

        // No claude on the host: a warning with the way to install it, and the sandbox starts.
        environment["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        let missing = try CLI.run(["start", "--", "true"], in: project, environment: environment)
        #expect(missing.status == 0, "stderr: \(missing.stderr)")
        #expect(
            missing.stderr.contains("claude is not installed on this host") && missing.stderr.contains("https://claude.ai/install.sh"),
            "\(missing.stderr)")
    }

    /// `presets = ["claude-code"]` with the test servers standing in for api.anthropic.com and
    /// platform.claude.com (allowed on their port), and the environment pointing airlock at them
    /// (test-only resolver, CA and service port), the vault in the project, `home` as HOME.
    static func standInAnthropic(_ project: URL, home: String, servers: TestServers) throws -> [String: String] {
        try """
        presets = ["claude-code"]

        [network.rules.stand-in]
        allow = ["api.anthropic.com:\(servers.tls)", "platform.claude.com:\(servers.tls)"]
        allow_private = true
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        return [
            "XDG_DATA_HOME": project.appendingPathComponent(".data").path, "HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin",
            "AIRLOCK_TEST_ONLY_RESOLVE": "api.anthropic.com=127.0.0.1,platform.claude.com=127.0.0.1",
            "AIRLOCK_TEST_ONLY_UPSTREAM_CA": servers.ca, "AIRLOCK_TEST_ONLY_SERVICE_PORT": "\(servers.tls)",
        ]
    }

    @Test(
        "claude-code sign-in inside the sandbox: xdg-open reaches the host's browser (the test plays it: the provider's page, then its redirect), the callback arrives with a surrogate code, the exchange (PKCE checked by the provider) answers surrogates only (none in any process's environment or the VM's writable places), the API gets the real token, a refresh carries the real refresh token, a revoke signs out, ps says so"
    )
    func signInInside() throws {
        let project = try VMEnvironment.repository()
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-home-\(UUID().uuidString.prefix(8))").path
        defer {
            VMEnvironment.cleanUp(project)
            try? FileManager.default.removeItem(atPath: home)
        }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        let port = servers.tls
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        // The browser: notes the page, loads it from the stand-in provider and follows its
        // redirect to the loopback callback.
        let browser = home + "/browser"
        try """
        #!/bin/sh
        echo "$1" > \(home)/opened
        curl -sS -L --max-time 20 --cacert \(servers.ca) --connect-to platform.claude.com:443:127.0.0.1:\(port) "$1" > \(home)/callback-page 2>&1
        """.write(toFile: browser, atomically: true, encoding: .utf8)
        chmod(browser, 0o755)
        var environment = try Self.standInAnthropic(project, home: home, servers: servers)
        environment["BROWSER"] = browser
        // PKCE as the CLI does it: the verifier stays in the VM, the page carries its S256.
        let verifier = "the-verifier-kept-in-the-vm-0123456789-abcdefghij"
        let challenge = "Cd0n8wJ7hrtZJsUhOnX9xZ9mnbNgiJIZ2AcQP2hZcEs"
        let page =
            "https://platform.claude.com/oauth/authorize?code=true&client_id=cli-1&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A45678%2Fcallback&scope=user%3Ainference&code_challenge=\(challenge)&code_challenge_method=S256&state=s1"
        let script = """
            python3 -c '
            import http.server
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    open("/tmp/callback", "w").write(self.path)
                    self.send_response(200); self.send_header("Content-Length", "10"); self.end_headers(); self.wfile.write(b"signed in\\n")
                def log_message(self, *a): pass
            server = http.server.HTTPServer(("127.0.0.1", 45678), H)
            open("/tmp/ready", "w").write("yes")
            server.handle_request()
            ' &
            for i in $(seq 1 60); do [ -s /tmp/ready ] && break; sleep 0.5; done
            echo "shim|$(command -v xdg-open) $BROWSER"
            xdg-open '\(page)'
            for i in $(seq 1 60); do [ -s /tmp/callback ] && break; sleep 1; done
            code=$(sed 's/.*code=\\([^&]*\\).*/\\1/' /tmp/callback)
            echo "code|$code"
            api=https://api.anthropic.com:\(port)/v1/messages
            token=https://platform.claude.com:\(port)/v1/oauth/token
            answer=$(curl -sS -H 'content-type: application/json' --data "{\\"grant_type\\":\\"authorization_code\\",\\"code\\":\\"$code\\",\\"code_verifier\\":\\"\(verifier)\\",\\"redirect_uri\\":\\"http://localhost:45678/callback\\",\\"client_id\\":\\"cli-1\\"}" $token)
            echo "answer|$answer"
            mkdir -p ~/.claude && echo "$answer" > ~/.claude/.credentials.json
            access=$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
            refresh=$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])')
            echo "api|$(curl -sS -H "Authorization: Bearer $access" $api | tr '\\n' ' ')"
            echo "refreshed|$(curl -sS -H 'content-type: application/json' --data "{\\"grant_type\\":\\"refresh_token\\",\\"refresh_token\\":\\"$refresh\\",\\"client_id\\":\\"cli-1\\"}" $token)"
            echo "found|$(sudo sh -c "grep -l -a -E REAL[S]IGNIN /proc/[0-9]*/environ 2>/dev/null; grep -rlsa -E REAL[S]IGNIN /tmp /root /home /etc /run /var/tmp $HOME" | wc -l)"
            echo "revoked|$(curl -sS -H 'content-type: application/json' --data "{\\"token\\":\\"$refresh\\"}" $token/revoke)"
            echo "after|$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $access" $api)"
            """
        let result = try CLI.run(["start", "--", "sh", "-c", script], in: project, environment: environment)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = Self.labelled(result.stdout)
        #expect(lines["shim"] == "/run/airlock/bin/xdg-open /run/airlock/bin/xdg-open", "\(result.stdout)")
        #expect((try? FileSystem.readText(home + "/opened")) == page + "\n", "the host's browser got the page")
        #expect(
            (try? FileSystem.readText(home + "/callback-page")) == "signed in\n",
            "the browser saw the CLI page: \((try? FileSystem.readText(home + "/callback-page")) ?? "") \(result.stderr)")
        #expect(lines["code"]?.hasPrefix("airlock-code-") == true, "the callback came with a surrogate code: \(result.stdout)")
        let answer = lines["answer"] ?? ""
        #expect(answer.contains("sk-ant-oat01-airlock-") && !result.stdout.contains("REALSIGNIN"), "surrogates only: \(result.stdout)")
        let received = (try FileSystem.readText(servers.received)) ?? ""
        #expect(
            received.contains(#""code": "real-code-1""#) || received.contains(#""code":"real-code-1""#), "the provider got the real code: \(received)"
        )
        #expect(received.contains("/v1/messages Bearer sk-ant-oat01-REALSIGNIN-access-1-"), "the API got the real token: \(received)")
        #expect(received.contains("REALSIGNIN-refresh-1-"), "the refresh carried the real refresh token: \(received)")
        #expect(lines["api"]?.contains("authorization=Bearer sk-ant-oat01-airlock-") == true, "its echo came back as the surrogate: \(result.stdout)")
        #expect(lines["found"] == "0", "\(result.stdout)")
        #expect(lines["after"] == "401", "signed out: \(result.stdout)")
        #expect(!received.contains("airlock-code-") && !received.contains("sk-ant-oat01-airlock-"), "no surrogate reached the provider: \(received)")
        // What the sandbox kept (its settings, in airlock's directory) holds the surrogates; the
        // store beside the vault holds the real tokens sealed.
        let kept = (try? FileSystem.readText(home + "/.airlock/claude/settings/.credentials.json")) ?? nil
        #expect(kept?.contains("sk-ant-oat01-airlock-") == true && kept?.contains("REALSIGNIN") == false, "\(kept ?? "none")")
        let vault = project.appendingPathComponent(".data/airlock").path
        let sealed = (try? Data(contentsOf: URL(fileURLWithPath: vault + "/sign-ins.sealed"))) ?? Data()
        #expect(!sealed.isEmpty && !String(decoding: sealed, as: UTF8.self).contains("REALSIGNIN"), "the store is sealed")
        // Signed out: ps says so.
        let ps = try CLI.run(["ps", "--json"], in: project, environment: environment)
        let rows = try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]
        let signIns = rows?.first?["signIns"] as? [[String: Any]]
        #expect(signIns?.first?["service"] as? String == "anthropic" && signIns?.first?["signedIn"] as? Bool == false, "\(ps.stdout)")
        #expect(!ps.stdout.contains("sk-ant-"), "no token in ps: \(ps.stdout)")
    }
}
