import FoundationEssentials
import NetworkPolicy
import Synchronization

/// Signing in inside the sandbox with the real tokens kept on the host, for the services with a
/// sign-in (`ProviderService.SignIn`). One per sandbox process:
///
/// 1. The guest asks to open an authorize page (its `xdg-open`/`$BROWSER`): `checkPage` lets
///    only the provider's own page through, https, with PKCE S256 and one loopback redirect on
///    the CLI's port and path; the page is remembered for 10 minutes.
/// 2. The provider sends the browser to that loopback address on the host, which relays it to
///    the guest with the code replaced by a surrogate (`surrogateCode`: once, 10 minutes, for
///    that service and port).
/// 3. The CLI exchanges the surrogate code at the token endpoint: `exchange` puts the real code
///    back, and of the answer every token becomes a surrogate; the real ones are sealed in the
///    store. Refreshes are built here from the stored refresh token; a revoke of a surrogate
///    signs out every sandbox.
/// 4. On the API hosts, an access surrogate is swapped for its real token (`apiTokens`).
public final class SignIns: Sendable {
    public let services: [ProviderService]
    /// nil when the vault cannot seal the store: `unavailable` says why, and the services'
    /// token hosts are refused rather than letting the agent keep real tokens.
    public let store: SignInStore?
    public let unavailable: String?

    struct Page {
        var service: String
        var port: Int
        var challenge: String
        var opened: ContinuousClock.Instant
    }

    struct Code {
        var service: String
        var port: Int
        var real: String
        var surrogate: String
        var issued: ContinuousClock.Instant
    }

    private let pages = Mutex<[Page]>([])
    /// When pages were opened: at most `opensPerMinute` a minute, whatever the guest does.
    private let opened = Mutex<[ContinuousClock.Instant]>([])
    static let opensPerMinute = 5
    private let codes = Mutex<[Code]>([])
    static let lifetime = Duration.seconds(600)

    public init(services: [ProviderService], store: SignInStore?, unavailable: String? = nil) {
        self.services = services.filter { $0.signIn != nil }
        self.store = store
        self.unavailable = store == nil ? (unavailable ?? "no store") : nil
    }

    public func service(named name: String) -> ProviderService? { services.first { $0.name == name } }

    // MARK: 1. The authorize page

    /// What `checkPage` lets the host open: the page, and the loopback port the provider will
    /// send the browser back to.
    public struct AllowedPage: Sendable, Equatable {
        public var service: String
        public var url: String
        public var callbackPort: Int
    }

    /// Checks an address the guest asked the host to open; throws a refusal that names only the
    /// host and path (never the query).
    public func checkPage(_ url: String) throws(InterceptionError) -> AllowedPage {
        guard url.utf8.count <= 8192, !url.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7f } ?? false }) else {
            throw InterceptionError("airlock opens only a provider's sign-in page; this address is too long or has spaces or control characters")
        }
        guard url.hasPrefix("https://") else {
            throw InterceptionError("airlock opens only a provider's sign-in page (https); not \(url.prefix { $0 != "?" && $0 != "#" }.prefix(200))")
        }
        let rest = url.dropFirst("https://".count)
        let beforeQuery = rest.prefix { $0 != "?" && $0 != "#" }
        let place = String(beforeQuery).lowercased()
        guard !url.contains("#"), let service = services.first(where: { $0.signIn!.pages.contains(place) }), !place.contains("@") else {
            throw InterceptionError(
                "airlock opens only a provider's sign-in page (\(services.flatMap { $0.signIn!.pages }.joined(separator: ", "))); not https://\(beforeQuery.prefix(200))"
            )
        }
        let signIn = service.signIn!
        let query = rest.dropFirst(beforeQuery.count).dropFirst()
        let pairs = FormBody.parse(query)
        func one(_ name: String) throws(InterceptionError) -> String {
            let values = pairs.filter { $0.0 == name }.map(\.1)
            guard values.count == 1, !values[0].isEmpty else {
                throw InterceptionError("https://\(place): a sign-in page needs exactly one \(name) (airlock checks the sign-in before it opens it)")
            }
            return values[0]
        }
        guard try one("response_type") == "code" else {
            throw InterceptionError("https://\(place): only the authorization-code flow (response_type=code)")
        }
        guard try one("code_challenge_method") == "S256" else {
            throw InterceptionError("https://\(place): only PKCE with S256 (code_challenge_method)")
        }
        let challenge = try one("code_challenge")
        _ = try one("client_id")
        guard !pairs.contains(where: { $0.0 == "prompt" && $0.1 == "none" }), !pairs.contains(where: { $0.0 == "response_mode" }) else {
            throw InterceptionError("https://\(place): prompt=none and response_mode are not allowed")
        }
        let redirect = try one("redirect_uri")
        guard let port = Self.loopbackPort(redirect, path: signIn.callbackPath), signIn.callbackPorts.contains(port) else {
            throw InterceptionError(
                "https://\(place): the redirect must be http://localhost:<port>\(signIn.callbackPath) (ports \(signIn.callbackPorts.lowerBound)–\(signIn.callbackPorts.upperBound))"
            )
        }
        let admitted = opened.withLock { opened in
            opened.removeAll { ContinuousClock.now - $0 > .seconds(60) }
            guard opened.count < Self.opensPerMinute else { return false }
            opened.append(.now)
            return true
        }
        guard admitted else {
            throw InterceptionError("the sandbox asked for more than \(Self.opensPerMinute) sign-in pages in a minute; wait a minute")
        }
        pages.withLock { pages in
            pages.removeAll { ContinuousClock.now - $0.opened > Self.lifetime || ($0.service == service.name && $0.port == port) }
            pages.append(Page(service: service.name, port: port, challenge: challenge, opened: .now))
        }
        return AllowedPage(service: service.name, url: url, callbackPort: port)
    }

    /// The port of `http://localhost:<port><path>` (or 127.0.0.1), nothing else.
    static func loopbackPort(_ redirect: String, path: String) -> Int? {
        for host in ["http://localhost:", "http://127.0.0.1:"] where redirect.hasPrefix(host) {
            let rest = redirect.dropFirst(host.count)
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 5, rest.dropFirst(digits.count) == path, let port = Int(digits) else { return nil }
            return port
        }
        return nil
    }

    // MARK: 2. The callback

    /// The surrogate that replaces the real authorization `code` on the callback to `port`;
    /// nil when no sign-in page was opened for that port (the callback then gets no code).
    public func surrogateCode(for real: String, port: Int) -> String? {
        guard let page = pages.withLock({ $0.first { $0.port == port && ContinuousClock.now - $0.opened < Self.lifetime } }) else { return nil }
        let surrogate = "airlock-code-" + Self.randomText(32)
        codes.withLock { codes in
            codes.removeAll { ContinuousClock.now - $0.issued > Self.lifetime }
            if codes.count >= 32 { codes.removeFirst() }
            codes.append(Code(service: page.service, port: port, real: real, surrogate: surrogate, issued: .now))
        }
        return surrogate
    }

    /// The real code for a surrogate, once.
    func redeem(_ surrogate: String, service: String, port: Int?) -> String? {
        codes.withLock { codes in
            guard let index = codes.firstIndex(where: { $0.surrogate == surrogate }) else { return nil }
            let code = codes.remove(at: index)
            guard code.service == service, port == nil || code.port == port, ContinuousClock.now - code.issued < Self.lifetime else { return nil }
            return code.real
        }
    }

    // MARK: 4. The API hosts

    /// The access tokens of the service's sign-ins, each as a masked value whose surrogate is
    /// the one the sandbox holds. Empty when the store cannot be read (the request then gets 401).
    public func apiTokens(for service: String) -> [MaskedSecret] {
        guard let store, let grants = try? store.grants() else { return [] }
        return grants.filter { $0.service == service }.map { grant in
            var secret = MaskedSecret(name: "sign-in \(service)" + (grant.account.map { " (\($0))" } ?? ""), value: grant.access)
            secret.surrogate = grant.accessSurrogate
            return secret
        }
    }

    /// Every real token of every sign-in: no answer may bring one to the VM.
    public func realTokens() -> [MaskedSecret] {
        guard let store, let grants = try? store.grants() else { return [] }
        return grants.flatMap { grant in
            [(grant.access, grant.accessSurrogate), (grant.refresh, grant.refreshSurrogate)].compactMap { real, surrogate -> MaskedSecret? in
                guard let real, let surrogate else { return nil }
                var secret = MaskedSecret(name: "sign-in \(grant.service)", value: real)
                secret.surrogate = surrogate
                return secret
            }
        }
    }

    // MARK: Surrogates

    static func randomText(_ count: Int) -> String {
        base64URL((0..<count).map { _ in UInt8.random(in: 0...255) })
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacing("+", with: "-").replacing("/", with: "_")
            .replacing("=", with: "")
    }

    static func base64URLDecode(_ text: Substring) -> [UInt8]? {
        var standard = String(text.replacing("-", with: "+").replacing("_", with: "/"))
        while standard.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard).map { Array($0) }
    }

    /// A surrogate for a real token: an unsigned JWT with the same claims (and a nonce) when
    /// the token is a JWT, as a CLI reads its account from the claims; else `prefix` and
    /// random characters (at least 32 bytes' worth). Either to the real token's length where
    /// it is long enough, so that an API's echo of the real token is swapped in place
    /// (`SecretScanner`).
    static func surrogate(for real: String, prefix: String) -> String {
        let parts = real.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 3, let payload = base64URLDecode(parts[1]), case .object(var claims)? = JSONValue.parse(payload).map(JSONValue.object) {
            claims["airlock_nonce"] = .string(randomText(32))
            let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + base64URL(JSONValue.encode(claims)) + "."
            // A "signature" of random characters, to the real token's length where it is long enough.
            let signature = max(43, real.count - unsigned.count)
            return unsigned + randomText(signature).prefix(signature)
        }
        let length = max(real.count, prefix.count + 43)
        return prefix + randomText(length).prefix(length - prefix.count)
    }

    /// The e-mail address (or id) in a JWT's claims.
    static func account(inJWT token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = base64URLDecode(parts[1]), let claims = JSONValue.parse(payload) else { return nil }
        return claims["email"]?.string ?? claims["https://api.openai.com/profile"]?["email"]?.string ?? claims["sub"]?.string
    }
}
