import NetworkPolicy
import Testing

@testable import Config

/// `[network.services.*]` (a provider's tokens kept on the host), `[commands.*]` and the agents'
/// presets built on them.
@Suite("Services, commands and the agents' presets")
struct ServicesTests {
    static let token = "sk-ant-oat01-Abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGH"

    @Test("a token from the host becomes a surrogate in the VM's environment, of the provider's shape; the real one stays with the service")
    func surrogate() throws {
        let loaded = try load(
            project: "[network.services.anthropic]\n", environment: ["HOME": "/home/u", "CLAUDE_CODE_OAUTH_TOKEN": Self.token])
        let services = loaded.config.network.services
        #expect(services.map(\.service.name) == ["anthropic"])
        let secret = try #require(services.first?.tokens.first)
        #expect(secret.name == "CLAUDE_CODE_OAUTH_TOKEN" && secret.value == Self.token)
        let surrogate = try #require(loaded.config.env["CLAUDE_CODE_OAUTH_TOKEN"])
        #expect(surrogate == secret.surrogate && surrogate != Self.token)
        #expect(surrogate.hasPrefix("sk-ant-oat01-") && surrogate.count == Self.token.count)
        #expect(loaded.config.env["ANTHROPIC_API_KEY"] == nil, "only what the host has")
        #expect(loaded.config.missingVariables.contains("ANTHROPIC_API_KEY"), "looked up in the vault")
        #expect(!loaded.config.missingVariables.contains("CLAUDE_CODE_OAUTH_TOKEN"))
    }

    @Test("without a token on the host: no variable in the VM, both names looked up in the vault, the service still on (strict)")
    func noToken() throws {
        let loaded = try load(project: "[network.services.anthropic]\n[network.services.openai]\nenabled = false\n")
        #expect(loaded.config.network.services.map(\.service.name) == ["anthropic"])
        #expect(loaded.config.network.services.first?.tokens.isEmpty == true)
        #expect(loaded.config.env["CLAUDE_CODE_OAUTH_TOKEN"] == nil)
        #expect(loaded.config.missingVariables.isSuperset(of: ["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"]))
    }

    @Test("refused where written: an unknown service, a token also set in [env], a passthrough over the API host, a value that is no token")
    func refusals() throws {
        let unknown = diagnostics(project: "[network.services.gemini]\n")
        #expect(unknown.first?.message == "[network.services.gemini] is not a service airlock knows", "\(unknown)")
        #expect(unknown.first?.location?.description == "airlock.toml:1:1")
        let both = diagnostics(project: "[network.services.openai]\n[env]\nOPENAI_API_KEY = \"placeholder\"\n")
        #expect(both.first?.message.contains("`env.OPENAI_API_KEY` is given by [network.services.openai]") == true, "\(both)")
        #expect(both.first?.location?.description == "airlock.toml:3:1")
        let passthrough = diagnostics(
            project: "[network.services.openai]\n[network.rules.api]\nallow = [\"*.openai.com:443\"]\npassthrough = true\n")
        #expect(passthrough.first?.message.contains("passes it through") == true, "\(passthrough)")
        do {
            _ = try load(project: "[network.services.openai]\n", environment: ["HOME": "/home/u", "OPENAI_API_KEY": "short"])
            Issue.record("a 5-character key was taken")
        } catch {
            #expect(error.diagnostics.first?.message.contains("does not look like a token") == true, "\(error.diagnostics)")
        }
    }

    @Test("[commands.<name>]: names with how to install them; a name with a slash is refused")
    func commands() throws {
        let loaded = try load(project: "[commands.claude]\ninstall = \"npm i -g x\"\n[commands.codex]\n[commands.off]\nenabled = false\n")
        #expect(loaded.config.commands == ["claude": "npm i -g x", "codex": ""])
        #expect(diagnostics(project: "[commands.\"../bin/sh\"]\n").first?.message.contains("a command's name is a file name") == true)
    }

    /// The Rust airlock's preset of `name` (its shipped file) and ours, loaded.
    func presets(_ name: String) throws -> (rust: AirlockConfig, ours: AirlockConfig) {
        (try load(project: try RustAirlockTests.fixture("presets/\(name).toml")).config, try load(project: "presets = [\"\(name)\"]\n").config)
    }

    @Test(
        "claude-code and openai-codex equal the Rust airlock's in effect: its hosts, environment and settings mounts (written by the agent), its token's host a service's",
        arguments: [("claude-code", "anthropic"), ("openai-codex", "openai")])
    func agentPresets(name: String, service: String) throws {
        let (rust, ours) = try presets(name)
        let allowed = Set(ours.network.rules.values.flatMap(\.allow))
        for pattern in rust.network.rules.values.flatMap(\.allow) { #expect(allowed.contains(pattern), "\(pattern)") }
        for (variable, value) in rust.env where !(ProviderService.named(service)?.tokenVariables.contains(variable) ?? false) {
            if variable == "NODE_EXTRA_CA_CERTS" { continue }  // airlock sets it to its own bundle in every sandbox
            #expect(ours.env[variable] == value, "\(variable)")
        }
        #expect(rust.mounts.count == ours.mounts.count)
        for (entry, mount) in rust.mounts {
            let mine = try #require(ours.mounts[entry])
            #expect(
                mine.source == mount.source && mine.target == mount.target && mine.missing == mount.missing && mine.fileContent == mount.fileContent)
            #expect(mine.readOnly == false, "the agent writes its settings")
        }
        // Its middleware set the token on these hosts; here the service owns them.
        let owner = try #require(ours.network.services.first { $0.service.name == service })
        for middleware in rust.network.middleware {
            for target in middleware.targets { #expect(owner.service.patterns.contains(target), "\(target)") }
        }
        #expect(ours.network.middleware.isEmpty)
        #expect(!ours.commands.isEmpty)
    }
}
