/// Configuration layers shipped inside the binary. A file names them with
/// `presets = ["claude-code"]`; they sit between the user's file and the project's, so a
/// project can switch any of their entries off with `enabled = false`.
public enum Presets {
    public static let all: [(name: String, text: String)] = [
        (
            "claude-code",
            """
            # Claude Code: the Anthropic API, sign-in (claude.ai for subscriptions, the Claude
            # Console at platform.claude.com, formerly console.anthropic.com) and the endpoints
            # the CLI reports to (Anthropic's published list: api.anthropic.com,
            # statsig.anthropic.com, sentry.io).
            [network.rules.claude-code]
            allow = [
              "api.anthropic.com:443",
              "platform.claude.com:443",
              "console.anthropic.com:443",
              "statsig.anthropic.com:443",
              "claude.ai:443",
              "sentry.io:443",
              "*.sentry.io:443",
            ]

            [env]
            # /usr is read-only in the sandbox: the updater could only fail.
            DISABLE_AUTOUPDATER = "1"
            """
        ),
        (
            "openai-codex",
            """
            # OpenAI Codex CLI: the API and the ChatGPT sign-in endpoints.
            [network.rules.openai-codex]
            allow = [
              "api.openai.com:443",
              "auth.openai.com:443",
              "chatgpt.com:443",
            ]

            [env]
            CODEX_DISABLE_UPDATE_CHECK = "1"
            """
        ),
        (
            "opencode",
            """
            # OpenCode: its own service, the model catalogue and the common model providers.
            [network.rules.opencode]
            allow = [
              "opencode.ai:443",
              "models.dev:443",
              "api.anthropic.com:443",
              "api.openai.com:443",
              "openrouter.ai:443",
            ]

            [env]
            OPENCODE_DISABLE_AUTOUPDATE = "1"
            """
        ),
        (
            "python",
            """
            # Python packages from PyPI.
            [network.rules.python]
            allow = ["pypi.org:443", "files.pythonhosted.org:443"]

            [env]
            PIP_DISABLE_PIP_VERSION_CHECK = "1"
            """
        ),
        (
            "node",
            """
            # Node packages from npm and Yarn's registry, and Node's own downloads.
            [network.rules.node]
            allow = ["registry.npmjs.org:443", "registry.yarnpkg.com:443", "nodejs.org:443"]

            [env]
            NPM_CONFIG_UPDATE_NOTIFIER = "false"
            """
        ),
        (
            "rust",
            """
            # Rust crates from crates.io and toolchains from rust-lang.org.
            [network.rules.rust]
            allow = [
              "crates.io:443",
              "index.crates.io:443",
              "static.crates.io:443",
              "static.rust-lang.org:443",
            ]

            [env]
            CARGO_REGISTRIES_CRATES_IO_PROTOCOL = "sparse"
            """
        ),
    ]

    public static var names: [String] { all.map(\.name) }

    public static func text(of name: String) -> String? {
        all.first(where: { $0.name == name })?.text
    }
}
