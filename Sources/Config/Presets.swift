/// Configuration layers shipped inside the binary. A file names them with
/// `presets = ["claude-code"]`; they sit between the user's file and the project's, so a
/// project can switch any of their entries off with `enabled = false`.
///
/// The names of the presets and of their rules are the Rust airlock's, so a file written for it
/// (`[network.rules.debian-packages] enabled = false`) means the same here. Its agents'
/// presets keep their settings in the same places (`~/.airlock/claude`, `~/.airlock/codex`);
/// where its presets set a token with a Lua middleware, ours keep it on the host as a service
/// (`[network.services.*]`), whose API hosts take nothing but the surrogates.
public enum Presets {
    public static let all: [(name: String, text: String)] = [
        (
            "claude-code",
            """
            # Claude Code, as the Rust airlock's preset does it, with the token kept on the host.
            # The Anthropic API, sign-in (claude.ai for subscriptions, the Claude Console at
            # platform.claude.com, formerly console.anthropic.com), downloads and the endpoints
            # the CLI reports to (Anthropic's published list: statsig.anthropic.com, sentry.io).
            [network.rules.claude-code]
            allow = [
              "api.anthropic.com:443",
              "claude.ai:443",
              "downloads.claude.ai:443",
              "platform.claude.com:443",
              "console.anthropic.com:443",
              "statsig.anthropic.com:443",
              "sentry.io:443",
              "*.sentry.io:443",
            ]

            # Sign in inside the sandbox (/login: the page opens in the host's browser; the real
            # tokens stay on the host, the VM gets surrogates), or CLAUDE_CODE_OAUTH_TOKEN
            # (`claude setup-token`) / ANTHROPIC_API_KEY from the host's environment or `airlock
            # secrets`. The host puts the real token into requests to api.anthropic.com; any
            # other credential there gets 401.
            [network.services.anthropic]

            # The host's claude (its installer's ~/.local/bin, npm's global prefix), read-only.
            [commands.claude]
            install = "curl -fsSL https://claude.ai/install.sh | bash"

            [env]
            # Claude Code knows it runs in a sandbox.
            IS_SANDBOX = "1"
            # Its install is read-only in the sandbox: the updater could only fail.
            DISABLE_AUTOUPDATER = "1"

            # Settings, sign-in state and memory kept across sandboxes in airlock's directory,
            # never your own ~/.claude (point these sources at ~/.claude and ~/.claude.json in
            # airlock.local.toml to share yours).
            [mounts.claude-settings]
            source = "~/.airlock/claude/settings"
            target = "~/.claude"
            read_only = false
            missing = "create-dir"

            [mounts.claude-json]
            source = "~/.airlock/claude/claude.json"
            target = "~/.claude.json"
            read_only = false
            missing = "create-file"
            file_content = '{"hasCompletedOnboarding":true}'
            """
        ),
        (
            "openai-codex",
            """
            # OpenAI Codex CLI, as the Rust airlock's preset does it, with the key kept on the host:
            # the API and the ChatGPT sign-in endpoints.
            [network.rules.codex]
            allow = [
              "api.openai.com:443",
              "auth.openai.com:443",
              "chatgpt.com:443",
            ]

            # `codex login` inside the sandbox (the page opens in the host's browser; the real
            # tokens stay on the host, used on chatgpt.com), or OPENAI_API_KEY from the host's
            # environment or `airlock secrets` for api.openai.com. Any other credential on those
            # hosts gets 401.
            [network.services.openai]

            # The host's codex (npm's global prefix, or a release binary on PATH), read-only.
            [commands.codex]
            install = "npm install -g @openai/codex"

            [env]
            CODEX_DISABLE_UPDATE_CHECK = "1"

            # Codex's settings and sessions kept across sandboxes in airlock's directory.
            [mounts.codex-dir]
            source = "~/.airlock/codex"
            target = "~/.codex"
            read_only = false
            missing = "create-dir"
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
            [network.rules.python-packages]
            allow = ["pypi.org:443", "files.pythonhosted.org:443"]

            [env]
            PIP_DISABLE_PIP_VERSION_CHECK = "1"
            """
        ),
        ("nodejs", node),
        ("node", node),
        (
            "rust",
            """
            # Rust crates from crates.io and toolchains from rust-lang.org.
            [network.rules.rust-packages]
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
        (
            "copilot-cli",
            """
            # GitHub Copilot CLI: GitHub's API and Copilot's endpoints.
            [network.rules.copilot-cli]
            allow = ["api.github.com:443", "*.githubcopilot.com:443"]
            """
        ),
        (
            "debian",
            """
            # Debian and Ubuntu packages (apt), for an image root (`[vm] image`).
            [network.rules.debian-packages]
            allow = [
              "deb.debian.org",
              "security.debian.org",
              "archive.ubuntu.com",
              "security.ubuntu.com",
              "ppa.launchpad.net",
              "keyserver.ubuntu.com",
            ]
            """
        ),
        (
            "alpine",
            """
            # Alpine packages (apk), for an image root (`[vm] image`).
            [network.rules.alpine-packages]
            allow = ["dl-cdn.alpinelinux.org", "*.alpinelinux.org"]
            """
        ),
        (
            "arch",
            """
            # Arch Linux packages (pacman), for an image root (`[vm] image`).
            [network.rules.arch-packages]
            allow = ["*.archlinux.org", "archlinux.org", "aur.archlinux.org"]
            """
        ),
        (
            "fedora",
            """
            # Fedora, RHEL and CentOS packages (dnf, yum), for an image root (`[vm] image`).
            [network.rules.fedora-packages]
            allow = [
              "mirrors.fedoraproject.org",
              "download.fedoraproject.org",
              "dl.fedoraproject.org",
              "mirror.centos.org",
              "vault.centos.org",
              "cdn-ubi.redhat.com",
            ]
            """
        ),
        (
            "suse",
            """
            # openSUSE and SLES packages (zypper), for an image root (`[vm] image`).
            [network.rules.suse-packages]
            allow = ["download.opensuse.org", "mirrorcache.opensuse.org", "scc.suse.com", "updates.suse.com"]
            """
        ),
    ]

    /// `nodejs` (the Rust airlock's name) and `node`.
    private static let node = """
        # Node packages from npm and Yarn's registry, and Node's own downloads.
        [network.rules.nodejs-packages]
        allow = ["registry.npmjs.org:443", "registry.yarnpkg.com:443", "nodejs.org:443"]

        [env]
        NPM_CONFIG_UPDATE_NOTIFIER = "false"
        """

    public static var names: [String] { all.map(\.name) }

    public static func text(of name: String) -> String? {
        all.first(where: { $0.name == name })?.text
    }
}
