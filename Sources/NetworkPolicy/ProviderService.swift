/// A model provider whose API credentials stay on the host (`[network.services.<name>]`, which
/// the `claude-code` and `openai-codex` presets turn on).
///
/// Each of its token variables found in the host's environment or the vault reaches the VM as
/// a surrogate of the same shape (`MaskedSecret`). On the provider's API hosts (port 443
/// only, always intercepted) the host puts the real value back into a credential header
/// (`Authorization: Bearer …`, or the provider's key header) only when the whole credential is
/// one of those surrogates; any other credential there is refused with 401, so the sandbox
/// cannot use a token it obtained some other way.
public struct ProviderService: Sendable, Equatable {
    public var name: String
    /// Its API hosts, on `port`.
    public var apiHosts: [String]
    /// 443 (another only in tests, which cannot listen there).
    public var port = 443
    /// The variables its CLI reads a token from, looked up in the host's environment, then
    /// the vault.
    public var tokenVariables: [String]
    /// The headers that carry credentials on its API hosts (lowercased): `authorization` as
    /// `Bearer <token>`, a key header as the bare token.
    public var credentialHeaders: [String]
    /// How a user gives airlock a token on the host.
    public var hint: String
    /// Signing in inside the sandbox (its CLI's own OAuth sign-in, through the host's
    /// browser), when the provider has one airlock knows.
    public var signIn: SignIn?

    /// What airlock knows of a provider's OAuth sign-in: the authorization-code flow with PKCE
    /// (S256) and a loopback redirect, as the CLIs do it.
    public struct SignIn: Sendable, Equatable {
        /// Its authorize pages: `host/path`, https.
        public var pages: [String]
        /// The hosts of its token endpoint (owned like the API hosts: always intercepted).
        public var tokenHosts: [String]
        public var tokenPath: String
        public var revokePath: String
        /// The CLI's loopback redirect: `http://localhost|127.0.0.1:<port><callbackPath>`.
        public var callbackPath: String
        public var callbackPorts: ClosedRange<Int>
        /// Surrogate prefixes for the access and the refresh token (a JWT access token becomes
        /// an unsigned JWT with the same claims instead).
        public var accessPrefix: String
        public var refreshPrefix: String
        /// Paths on its API hosts whose answers hand out a new API key made with a sign-in's
        /// token (Claude's Console sign-in), keys starting `keyPrefix`: each becomes a
        /// surrogate (`keySurrogatePrefix`) kept with the sign-ins.
        public var keyPaths: [String]
        public var keyPrefix: String
        public var keySurrogatePrefix: String

        public init(
            pages: [String], tokenHosts: [String], tokenPath: String, revokePath: String, callbackPath: String, callbackPorts: ClosedRange<Int>,
            accessPrefix: String, refreshPrefix: String, keyPaths: [String] = [], keyPrefix: String = "", keySurrogatePrefix: String = ""
        ) {
            self.keyPaths = keyPaths
            self.keyPrefix = keyPrefix
            self.keySurrogatePrefix = keySurrogatePrefix
            self.pages = pages
            self.tokenHosts = tokenHosts
            self.tokenPath = tokenPath
            self.revokePath = revokePath
            self.callbackPath = callbackPath
            self.callbackPorts = callbackPorts
            self.accessPrefix = accessPrefix
            self.refreshPrefix = refreshPrefix
        }
    }

    public static let anthropic = ProviderService(
        name: "anthropic", apiHosts: ["api.anthropic.com"],
        tokenVariables: ["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"],
        credentialHeaders: ["authorization", "x-api-key"],
        hint:
            "give airlock a token on the host: `claude setup-token` there, then `airlock secrets add CLAUDE_CODE_OAUTH_TOKEN` (or an API key as ANTHROPIC_API_KEY), or sign in inside the sandbox (`claude`, then /login)",
        signIn: SignIn(
            pages: ["claude.ai/oauth/authorize", "claude.com/cai/oauth/authorize", "platform.claude.com/oauth/authorize"],
            tokenHosts: ["platform.claude.com", "console.anthropic.com"], tokenPath: "/v1/oauth/token", revokePath: "/v1/oauth/token/revoke",
            callbackPath: "/callback", callbackPorts: 1024...65535, accessPrefix: "sk-ant-oat01-airlock-", refreshPrefix: "sk-ant-ort01-airlock-",
            keyPaths: ["/api/oauth/claude_cli/create_api_key"], keyPrefix: "sk-ant-api", keySurrogatePrefix: "sk-ant-api03-airlock-")
    )

    public static let openai = ProviderService(
        name: "openai", apiHosts: ["api.openai.com", "chatgpt.com"],
        tokenVariables: ["OPENAI_API_KEY"],
        credentialHeaders: ["authorization"],
        hint: "give airlock a key on the host: `airlock secrets add OPENAI_API_KEY`, or sign in inside the sandbox (`codex login`)",
        signIn: SignIn(
            pages: ["auth.openai.com/oauth/authorize"], tokenHosts: ["auth.openai.com"], tokenPath: "/oauth/token", revokePath: "/oauth/revoke",
            callbackPath: "/auth/callback", callbackPorts: 1455...1457, accessPrefix: "airlock-at-", refreshPrefix: "airlock-rt-"))

    public static let known = [anthropic, openai]

    public static func named(_ name: String) -> ProviderService? {
        known.first { $0.name == name }
    }

    public init(
        name: String, apiHosts: [String], port: Int = 443, tokenVariables: [String], credentialHeaders: [String], hint: String, signIn: SignIn? = nil
    ) {
        self.signIn = signIn
        self.name = name
        self.apiHosts = apiHosts
        self.port = port
        self.tokenVariables = tokenVariables
        self.credentialHeaders = credentialHeaders
        self.hint = hint
    }

    /// The hosts it owns: its API hosts and its sign-in's token hosts.
    public var ownedHosts: [String] { apiHosts + (signIn?.tokenHosts ?? []) }

    /// Its owned hosts as patterns (`host:port`).
    public var patterns: [HostPattern] {
        ownedHosts.compactMap { try? HostPattern(parsing: "\($0):\(port)") }
    }

    public func owns(host: String, port: Int) -> Bool {
        port == self.port && ownedHosts.contains { $0 == Self.canonical(host) }
    }

    /// Whether `host` is one of its sign-in's token hosts (on `port`).
    public func isTokenHost(_ host: String, port: Int) -> Bool {
        port == self.port && (signIn?.tokenHosts.contains(Self.canonical(host)) ?? false)
    }

    static func canonical(_ host: String) -> String {
        let lowered = host.lowercased()
        return lowered.hasSuffix(".") ? String(lowered.dropLast()) : lowered
    }
}

/// A service turned on, with the real tokens the host has for it (a surrogate each in the VM).
public struct ServiceCredentials: Sendable, Equatable {
    public var service: ProviderService
    public var tokens: [MaskedSecret]

    public init(service: ProviderService, tokens: [MaskedSecret]) {
        self.service = service
        self.tokens = tokens
    }

    /// What a request's credential header becomes upstream.
    public enum Verdict: Sendable, Equatable {
        /// Not a credential header: as it is.
        case unchanged
        /// A surrogate's real value (the header's new value) and the token's name.
        case real(value: String, token: String)
        /// A credential that is not one of airlock's surrogates.
        case refused
    }

    /// The verdict on header `name` with `value` in a request to one of the service's API hosts.
    public func verdict(header name: String, value: String) -> Verdict {
        let field = name.lowercased()
        guard service.credentialHeaders.contains(field) else { return .unchanged }
        var credential = Substring(value)
        if field == "authorization" {
            guard credential.count > 7, credential.prefix(7).lowercased() == "bearer " else { return .refused }
            credential = credential.dropFirst(7)
        }
        guard let token = tokens.first(where: { $0.surrogate == credential }) else { return .refused }
        return .real(value: field == "authorization" ? "Bearer " + token.value : token.value, token: token.name)
    }
}
