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
        try """
        presets = ["claude-code"]

        [network.rules.stand-in]
        allow = ["api.anthropic.com:\(port)"]
        allow_private = true
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        var environment = data
        environment["HOME"] = home
        environment["PATH"] = home + "/.local/bin:/usr/local/bin:/usr/bin:/bin"
        environment["AIRLOCK_TEST_ONLY_RESOLVE"] = "api.anthropic.com=127.0.0.1"
        environment["AIRLOCK_TEST_ONLY_UPSTREAM_CA"] = servers.ca
        environment["AIRLOCK_TEST_ONLY_SERVICE_PORT"] = "\(port)"

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
}
