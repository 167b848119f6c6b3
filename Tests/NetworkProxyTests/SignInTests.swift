import Crypto
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

@Suite("Sign-in inside the sandbox, tokens on the host")
struct SignInTests {
    static let service = ProviderService(
        name: "anthropic", apiHosts: ["api.test"], port: 443, tokenVariables: ["CLAUDE_CODE_OAUTH_TOKEN"],
        credentialHeaders: ["authorization", "x-api-key"], hint: "sign in",
        signIn: .init(
            pages: ["auth.test/oauth/authorize"], tokenHosts: ["auth.test"], tokenPath: "/v1/oauth/token", revokePath: "/v1/oauth/token/revoke",
            callbackPath: "/callback", callbackPorts: 1024...65535, accessPrefix: "sk-ant-oat01-airlock-", refreshPrefix: "sk-ant-ort01-airlock-",
            keyPaths: ["/api/oauth/claude_cli/create_api_key"], keyPrefix: "sk-ant-api", keySurrogatePrefix: "sk-ant-api03-airlock-"))

    /// The stand-in provider and the guest's program need these.
    static let needsTools = ConditionTrait.enabled(
        if: which("python3") != nil && which("curl") != nil && which("openssl") != nil, "needs python3, curl and openssl")

    static func page(_ changes: [String: String?] = [:]) -> String {
        var fields: [(String, String)] = [
            ("code", "true"), ("client_id", "cli-1"), ("response_type", "code"), ("redirect_uri", "http://localhost:45678/callback"),
            ("scope", "user:inference user:profile"), ("code_challenge", "CHALLENGE"), ("code_challenge_method", "S256"), ("state", "s1"),
        ]
        for (name, value) in changes {
            fields.removeAll { $0.0 == name }
            if let value { fields.append((name, value)) }
        }
        return "https://auth.test/oauth/authorize?" + FormBody.encode(fields)
    }

    @Test("the authorize page: only the provider's page, https, response_type=code, PKCE S256, one loopback redirect on the CLI's path")
    func pageCheck() throws {
        let signIns = SignIns(services: [Self.service], store: nil)
        #expect(try signIns.checkPage(Self.page()) == .init(service: "anthropic", url: Self.page(), callbackPort: 45678))
        let refused: [String] = [
            Self.page().replacing("https://", with: "http://"),
            Self.page().replacing("auth.test", with: "evil.test"),
            Self.page().replacing("auth.test/oauth/authorize", with: "auth.test/oauth/other"),
            Self.page().replacing("https://auth.test", with: "https://user@auth.test"),
            Self.page(["code_challenge_method": "plain"]),
            Self.page(["code_challenge": nil]),
            Self.page(["response_type": "token"]),
            Self.page(["redirect_uri": "http://evil.test:45678/callback"]),
            Self.page(["redirect_uri": "http://localhost:45678/elsewhere"]),
            Self.page(["redirect_uri": "http://localhost:45678/callback?x=1"]),
            Self.page(["redirect_uri": "https://localhost:45678/callback"]),
            Self.page(["prompt": "none"]),
            Self.page() + "&redirect_uri=http%3A%2F%2Flocalhost%3A1%2Fcallback",
            Self.page() + "#fragment",
            Self.page() + "&x=a b",
        ]
        for url in refused {
            #expect(throws: InterceptionError.self, "\(url)") { try signIns.checkPage(url) }
        }
        for _ in 0..<(SignIns.opensPerMinute - 1) { _ = try signIns.checkPage(Self.page()) }
        #expect(throws: InterceptionError.self, "at most \(SignIns.opensPerMinute) pages a minute") { try signIns.checkPage(Self.page()) }
        do {
            _ = try signIns.checkPage(Self.page(["code_challenge_method": "plain"]) + "&secret=hunter2")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "a refusal never repeats the query: \(error)")
        }
    }

    @Test("a callback's code becomes a surrogate only for a page opened for that port; the surrogate works once, for that service and port")
    func codes() throws {
        let signIns = SignIns(services: [Self.service], store: nil)
        #expect(signIns.surrogateCode(for: "real", port: 45678) == nil, "no page opened")
        _ = try signIns.checkPage(Self.page())
        let code = try #require(signIns.surrogateCode(for: "real", port: 45678))
        #expect(code.hasPrefix("airlock-code-") && !code.contains("real"))
        #expect(signIns.redeem(code, service: "anthropic", port: 45679) == nil, "another port")
        let again = try #require(signIns.surrogateCode(for: "real2", port: 45678))
        #expect(signIns.redeem(again, service: "openai", port: 45678) == nil, "another service")
        let third = try #require(signIns.surrogateCode(for: "real3", port: 45678))
        #expect(signIns.redeem(third, service: "anthropic", port: 45678) == "real3")
        #expect(signIns.redeem(third, service: "anthropic", port: 45678) == nil, "once")
    }

    @Test(
        "the callback as the guest gets it: a GET of the CLI's path, the code a surrogate, no cookie or credential; anything else answered on the host"
    )
    func callbackRewrite() throws {
        let signIns = SignIns(services: [Self.service], store: nil)
        let relay = CallbackRelay(signIns: signIns, logger: testLogger)
        let head =
            "GET /callback?code=real-1&state=s1 HTTP/1.1\r\nHost: localhost:45678\r\nCookie: session=secret\r\nAuthorization: Basic x\r\nAccept: text/html\r\nConnection: keep-alive"
        #expect(
            relay.rewrite(head, port: 45678, path: "/callback")
                == .answer(status: "410 Gone", text: "no sign-in waits on this port; sign in again in the sandbox"))
        _ = try signIns.checkPage(Self.page())
        guard case .forward(let bytes) = relay.rewrite(head, port: 45678, path: "/callback") else {
            Issue.record("not forwarded")
            return
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let code = try #require(text.split(separator: "code=").last?.prefix { $0 != "&" })
        #expect(code.hasPrefix("airlock-code-") && signIns.redeem(String(code), service: "anthropic", port: 45678) == "real-1", "\(text)")
        #expect(text.hasPrefix("GET /callback?code=airlock-code-") && text.contains("&state=s1 HTTP/1.1\r\n"), "\(text)")
        #expect(text.contains("Host: localhost:45678\r\n") && text.contains("Accept: text/html\r\n") && text.hasSuffix("Connection: close\r\n\r\n"))
        #expect(!text.contains("secret") && !text.contains("Basic") && !text.contains("keep-alive"), "\(text)")
        #expect(
            relay.rewrite("POST /callback HTTP/1.1", port: 45678, path: "/callback") == .answer(status: "405 Method Not Allowed", text: "only GET"))
        if case .answer(let status, _) = relay.rewrite("GET /other HTTP/1.1", port: 45678, path: "/callback") {
            #expect(status == "404 Not Found")
        } else {
            Issue.record("another path was forwarded")
        }
        #expect(relay.rewrite("garbage", port: 45678, path: "/callback") == .answer(status: "400 Bad Request", text: "not HTTP/1"))
    }

    @Test("the store: sealed (no token readable in its file), shared by every process with the key, refused with another key")
    func store() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-signins-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = (0..<32).map { UInt8($0) }
        let store = SignInStore(directory: directory, key: key)
        let grant = SignInStore.Grant(
            service: "anthropic", clientID: "cli", scopes: ["user:inference"], account: "dev@example.com", access: "sk-ant-oat01-REAL-ACCESS-secret",
            refresh: "sk-ant-ort01-REAL-REFRESH-secret", accessSurrogate: "sk-ant-oat01-airlock-a", refreshSurrogate: "sk-ant-ort01-airlock-r",
            expiresAt: nil, savedAt: 1)
        try store.update { $0.append(grant) }
        #expect(try SignInStore(directory: directory, key: key).grant(access: "sk-ant-oat01-airlock-a") == grant)
        let sealed = try Data(contentsOf: URL(fileURLWithPath: directory + "/sign-ins.sealed"))
        #expect(!String(decoding: sealed, as: UTF8.self).contains("REAL"), "the tokens are sealed")
        let summary = try String(contentsOfFile: directory + "/sign-ins.json", encoding: .utf8)
        #expect(summary.contains("dev@example.com") && !summary.contains("REAL"), "\(summary)")
        #expect(SignInStore.summaries(directory: directory).map(\.account) == ["dev@example.com"])
        #expect(throws: InterceptionError.self) { try SignInStore(directory: directory, key: Array(repeating: 7, count: 32)).grants() }
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/sign-ins.sealed")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test("surrogates: the provider's shape, or an unsigned JWT with the real claims")
    func surrogates() throws {
        let plain = SignIns.surrogate(for: "sk-ant-oat01-REAL", prefix: "sk-ant-oat01-airlock-")
        #expect(plain.hasPrefix("sk-ant-oat01-airlock-") && plain.count == 64, "at least 43 random characters: \(plain)")
        let long = "sk-ant-oat01-" + String(repeating: "R", count: 95)
        let same = SignIns.surrogate(for: long, prefix: "sk-ant-oat01-airlock-")
        #expect(same.count == long.count && same != SignIns.surrogate(for: long, prefix: "sk-ant-oat01-airlock-"), "the real token's length, random")
        let claims = SignIns.base64URL(Array(#"{"email":"dev@example.com","exp":1999999999}"#.utf8))
        let jwt = "eyJhbGciOiJSUzI1NiJ9.\(claims).c2lnbmF0dXJl"
        let fake = SignIns.surrogate(for: jwt, prefix: "airlock-at-")
        let parts = fake.split(separator: ".")
        #expect(parts.count == 3 && parts[2] != "c2lnbmF0dXJl" && fake != jwt)
        #expect(SignIns.account(inJWT: fake) == "dev@example.com")
        let payload = try #require(SignIns.base64URLDecode(parts[1]).flatMap(JSONValue.parse))
        #expect(payload["exp"] == .integer(1_999_999_999) && payload["airlock_nonce"] != nil)
    }

    /// The stand-in provider: token endpoint (authorization_code with PKCE S256, refresh with
    /// rotation), revoke, and an API that echoes the credential it received. argv: port, cert,
    /// key, the expected code challenge, a log of what reached it.
    static let provider = #"""
        import base64, hashlib, http.server, json, ssl, sys, urllib.parse
        port, cert, key, challenge, log = sys.argv[1:6]
        jwt = len(sys.argv) > 6 and sys.argv[6] == "jwt"
        extra = len(sys.argv) > 6 and sys.argv[6] == "extra"
        def make_jwt(claims):
            b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
            return b64(b'{"alg":"RS256","kid":"k1"}') + "." + b64(json.dumps(claims).encode()) + "." + b64(b"s" * 256)
        state = {"n": 1, "refresh": None, "access": None, "key": None}
        def note(line):
            with open(log, "a") as f: f.write(line + "\n")
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def reply(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status); self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def tokens(self):
                n = state["n"]; state["n"] += 1
                if jwt:
                    state["access"] = make_jwt({"iss": "https://auth.openai.com", "exp": 1999999999, "n": n, "REAL": "access"})
                    state["refresh"] = "v1.REAL-RT-%d-%s" % (n, "z" * 40)
                    return {"access_token": state["access"], "refresh_token": state["refresh"], "expires_in": 3600,
                            "id_token": make_jwt({"email": "dev@openai.test", "REAL": "id"}), "token_type": "Bearer"}
                state["access"] = "sk-ant-oat01-REAL-ACCESS-%d-%s" % (n, "x" * 40)
                state["refresh"] = "sk-ant-ort01-REAL-REFRESH-%d-%s" % (n, "y" * 40)
                if extra:
                    return {"access_token": state["access"], "token_type": "Bearer", "account": {"session_key": "REAL-SESSION-%s" % ("s" * 30)}}
                return {"access_token": state["access"], "refresh_token": state["refresh"], "expires_in": 3600,
                        "token_type": "Bearer", "scope": "user:inference user:profile",
                        "account": {"uuid": "u-1", "email_address": "dev@example.com"}}
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                body = json.loads(raw) if self.headers.get("Content-Type", "").startswith("application/json") else dict(urllib.parse.parse_qsl(raw))
                note("POST %s %s" % (self.path, json.dumps(body, sort_keys=True)))
                if self.path == "/v1/oauth/token" and body.get("grant_type") == "authorization_code":
                    verifier = body.get("code_verifier", "")
                    made = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                    if body.get("code") != "real-code-1" or made != challenge or body.get("client_id") != "cli-1":
                        return self.reply(400, {"error": "invalid_grant"})
                    return self.reply(200, self.tokens())
                if self.path == "/v1/oauth/token" and body.get("grant_type") == "refresh_token":
                    if body.get("refresh_token") != state["refresh"] or body.get("client_id") != "cli-1":
                        return self.reply(400, {"error": "invalid_grant"})
                    return self.reply(200, self.tokens())
                if self.path == "/api/oauth/claude_cli/create_api_key":
                    if self.headers.get("Authorization", "") != "Bearer %s" % state["access"]:
                        return self.reply(401, {"error": "unauthorized"})
                    state["key"] = "sk-ant-api03-REAL-KEY-%s" % ("k" * 80)
                    return self.reply(200, {"raw_key": state["key"], "name": "claude-cli"})
                if self.path == "/v1/oauth/token/revoke":
                    if body.get("token") == state["refresh"]: state["refresh"] = None; state["access"] = None
                    return self.reply(200, {})
                self.reply(404, {"error": "not_found"})
            def do_GET(self):
                auth = self.headers.get("Authorization", "") or self.headers.get("x-api-key", "")
                note("GET %s %s" % (self.path, auth))
                if auth != "Bearer %s" % state["access"] and (state["key"] is None or auth != state["key"]):
                    return self.reply(401, {"error": "unauthorized"})
                self.reply(200, {"you_sent": auth})
            def log_message(self, *a): pass
        s = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H)
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(cert, key)
        s.socket = c.wrap_socket(s.socket, server_side=True)
        s.serve_forever()
        """#

    @Test(
        "through the interceptor: the code exchange gives the VM surrogates only, the API call carries the real token, refresh is built by the host, revoke signs out every sandbox, an invented token is 401",
        Self.needsTools)
    func endToEnd() async throws {
        try await within(120) {
            let harness = try await Harness.start(store: true)
            defer { harness.stop() }
            let (port, verifier, log, key) = (harness.port, Harness.verifier, harness.log, harness.key)
            func json(_ text: String) throws -> [String: JSONValue] { try #require(JSONValue.parse(Array(text.utf8)), "\(text)") }
            func call(_ host: String, _ path: String, json: String? = nil, form: String? = nil, bearer: String? = nil) async throws -> (Int, String) {
                try await harness.call(host, path, json, form, bearer)
            }
            var service = Self.service
            service.port = port

            // The browser came back with the real code; the VM got a surrogate for it.
            let code = try harness.browserReturns()
            let exchange =
                #"{"grant_type":"authorization_code","code":"\#(code)","code_verifier":"\#(verifier)","redirect_uri":"http://localhost:45678/callback","client_id":"cli-1","state":"s1"}"#
            let (status, answer) = try await call("auth.test", "/v1/oauth/token", json: exchange)
            #expect(status == 200, "\(answer)")
            #expect(!answer.contains("REAL"), "no real token reaches the VM: \(answer)")
            let tokens = try json(answer)
            let access = try #require(tokens["access_token"]?.string)
            let refresh = try #require(tokens["refresh_token"]?.string)
            #expect(access.hasPrefix("sk-ant-oat01-airlock-") && refresh.hasPrefix("sk-ant-ort01-airlock-"))
            #expect(tokens["expires_in"] == .integer(3600) && tokens["account"]?["email_address"]?.string == "dev@example.com")
            let again = try await call("auth.test", "/v1/oauth/token", json: exchange)
            #expect(again.0 == 400 && again.1.contains("invalid_grant"), "a surrogate code works once: \(again)")
            let invented = try await call(
                "auth.test", "/v1/oauth/token",
                form:
                    "grant_type=authorization_code&code=real-code-1&code_verifier=\(verifier)&redirect_uri=http%3A%2F%2Flocalhost%3A45678%2Fcallback&client_id=cli-1"
            )
            #expect(invented.0 == 400, "a code that is not airlock's surrogate is refused: \(invented)")
            let other = try await call("auth.test", "/v1/other", json: "{}")
            #expect(other.0 == 403, "only the token and revoke endpoints: \(other)")

            // The API: the surrogate becomes the real token upstream; its echo comes back as the surrogate.
            let used = try await call("api.test", "/v1/messages", bearer: access)
            #expect(used.0 == 200 && used.1.contains(access) && !used.1.contains("REAL"), "\(used) \(access)")
            let foreign = try await call("api.test", "/v1/messages", bearer: "sk-ant-oat01-InventedInTheVM000000000000000")
            #expect(foreign.0 == 401, "\(foreign)")
            // An API key made with the sign-in (Claude's Console sign-in): the VM gets a surrogate.
            let made = try await call("api.test", "/api/oauth/claude_cli/create_api_key", json: "{}", bearer: access)
            let apiKey = try #require(try json(made.1)["raw_key"]?.string, "\(made)")
            #expect(made.0 == 200 && apiKey.hasPrefix("sk-ant-api03-airlock-") && !made.1.contains("REAL"), "\(made)")
            let withKey = try await harness.call("api.test", "/v1/messages", nil, nil, nil, key: apiKey)
            #expect(withKey.0 == 200 && withKey.1.contains(apiKey), "x-api-key with the key's surrogate: \(withKey)")
            // Another sandbox (another process with the store's key) sees the sign-in.
            let second = SignIns(services: [service], store: SignInStore(directory: harness.directory + "/vault", key: key))
            #expect(second.apiTokens(for: "anthropic").map(\.surrogate) == [access, apiKey])

            // A refresh: built by the host from the stored refresh token and client id.
            let refreshed = try await call(
                "auth.test", "/v1/oauth/token", json: #"{"grant_type":"refresh_token","refresh_token":"\#(refresh)","client_id":"evil"}"#)
            #expect(refreshed.0 == 200 && !refreshed.1.contains("REAL"), "\(refreshed)")
            let renewed = try json(refreshed.1)
            #expect(renewed["access_token"]?.string == access && renewed["refresh_token"]?.string == refresh, "the surrogates stay: \(renewed)")
            let afterRefresh = try await call("api.test", "/v1/messages", bearer: access)
            #expect(afterRefresh.0 == 200, "the API gets the new real token: \(afterRefresh)")
            let unknownRefresh = try await call(
                "auth.test", "/v1/oauth/token",
                json: #"{"grant_type":"refresh_token","refresh_token":"sk-ant-ort01-airlock-made-up","client_id":"cli-1"}"#)
            #expect(unknownRefresh.0 == 400 && unknownRefresh.1.contains("invalid_grant"), "\(unknownRefresh)")

            // A sign-out: the store forgets it for every sandbox, and the provider revokes the real token.
            let revoked = try await call("auth.test", "/v1/oauth/token/revoke", json: #"{"token":"\#(refresh)","client_id":"cli-1"}"#)
            #expect(revoked.0 == 200, "\(revoked)")
            #expect(second.apiTokens(for: "anthropic").map(\.surrogate) == [apiKey], "the API key stays until the provider revokes it")
            let afterRevoke = try await call("api.test", "/v1/messages", bearer: access)
            #expect(afterRevoke.0 == 401, "signed out: \(afterRevoke)")

            let seen = try String(contentsOfFile: log, encoding: .utf8)
            #expect(seen.contains(#""client_id": "cli-1", "grant_type": "refresh_token", "refresh_token": "sk-ant-ort01-REAL-REFRESH-1-"#), "\(seen)")
            #expect(seen.contains(#"POST /v1/oauth/token/revoke {"client_id": "cli-1", "token": "sk-ant-ort01-REAL-REFRESH-2-"#), "\(seen)")
            #expect(
                seen.contains("GET /v1/messages Bearer sk-ant-oat01-REAL-ACCESS-1-")
                    && seen.contains("GET /v1/messages Bearer sk-ant-oat01-REAL-ACCESS-2-"))
            #expect(!seen.contains("airlock-"), "no surrogate ever reached the provider: \(seen)")
            await harness.close()
        }
    }

    @Test(
        "OpenAI's shape: a form exchange; JWT tokens become unsigned JWTs with the same claims and the real one's length (the account read from the id_token); the API gets the real JWT and its echo comes back as the surrogate",
        Self.needsTools)
    func jwtTokens() async throws {
        try await within(120) {
            let harness = try await Harness.start(store: true, mode: "jwt")
            defer { harness.stop() }
            let code = try harness.browserReturns()
            let form = FormBody.encode([
                ("grant_type", "authorization_code"), ("code", code), ("code_verifier", Harness.verifier),
                ("redirect_uri", "http://localhost:45678/callback"), ("client_id", "cli-1"),
            ])
            let (status, answer) = try await harness.call("auth.test", "/v1/oauth/token", nil, form, nil)
            #expect(status == 200, "\(answer)")
            let tokens = try #require(JSONValue.parse(Array(answer.utf8)), "\(answer)")
            let access = try #require(tokens["access_token"]?.string)
            let id = try #require(tokens["id_token"]?.string)
            #expect(access.hasPrefix("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.") && id.hasPrefix("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."), "\(answer)")
            #expect(SignIns.account(inJWT: id) == "dev@openai.test")
            #expect(tokens["refresh_token"]?.string?.hasPrefix("sk-ant-ort01-airlock-") == true, "the service's refresh prefix")
            let grants = try #require(try harness.signIns.store?.grants())
            #expect(grants.count == 1 && grants[0].account == "dev@openai.test" && grants[0].access.count == access.count, "\(grants)")
            #expect(!grants[0].access.hasPrefix("eyJhbGciOiJub25l"), "the real token is stored, not the surrogate")
            let used = try await harness.call("api.test", "/v1/messages", nil, nil, access)
            #expect(used.0 == 200 && used.1.contains(access), "the echo comes back as the surrogate: \(used)")
            let seen = try String(contentsOfFile: harness.log, encoding: .utf8)
            #expect(seen.contains("GET /v1/messages Bearer \(grants[0].access)"), "the API got the real JWT: \(seen)")
            await harness.close()
        }
    }

    @Test(
        "a token answer with a credential-like value airlock does not know (an account's session key) is 502, nothing stored",
        Self.needsTools)
    func unknownField() async throws {
        try await within(60) {
            let harness = try await Harness.start(store: true, mode: "extra")
            defer { harness.stop() }
            let code = try harness.browserReturns()
            let (status, answer) = try await harness.call(
                "auth.test", "/v1/oauth/token",
                #"{"grant_type":"authorization_code","code":"\#(code)","code_verifier":"\#(Harness.verifier)","redirect_uri":"http://localhost:45678/callback","client_id":"cli-1"}"#,
                nil, nil)
            #expect(status == 502 && answer.contains("account.session_key") && !answer.contains("REAL"), "\(answer)")
            #expect(try harness.signIns.store?.grants().isEmpty == true)
            let usual =
                #"{"access_token":"a","token_type":"Bearer","expires_in":28800,"scope":"user:inference user:profile user:sessions:claude_code","account":{"uuid":"0b9c6c1e-8f5e-4c4e-9d7e-1f2a3b4c5d6e","email_address":"dev@example.com"},"organization":{"uuid":"0b9c6c1e-8f5e-4c4e-9d7e-1f2a3b4c5d6e","name":"Dev"}}"#
            #expect(
                InterceptedConnection.unknownSecret(in: .object(try #require(JSONValue.parse(Array(usual.utf8))))) == nil, "a usual answer passes")
            await harness.close()
        }
    }

    @Test(
        "without the vault's key no sign-in: the token host answers 403 with the reason, nothing goes upstream",
        Self.needsTools)
    func unavailable() async throws {
        try await within(60) {
            let harness = try await Harness.start(store: false)
            defer { harness.stop() }
            let (status, answer) = try await harness.call(
                "auth.test", "/v1/oauth/token", #"{"grant_type":"authorization_code","code":"real-code-1","client_id":"cli-1"}"#, nil, nil)
            #expect(status == 403 && answer.contains("needs the vault (the vault is disabled)"), "\(answer)")
            #expect((try? String(contentsOfFile: harness.log, encoding: .utf8)) == nil, "nothing reached the provider")
            await harness.close()
        }
    }

    /// The stand-in provider on 127.0.0.1 (auth.test for its token endpoint, api.test for its
    /// API, one certificate), an egress server with interception and `SignIns`, a fake guest
    /// and curl as its program.
    struct Harness {
        static let verifier = "the-code-verifier-0123456789-0123456789-abcdef"
        let directory: String
        let port: Int
        let challenge: String
        let log: String
        let key: [UInt8]
        let signIns: SignIns
        let provider: Process
        let guest: FakeGuest
        let captures: [String: (port: Int, task: Task<Void, Never>)]

        static func start(store: Bool, mode: String = "plain") async throws -> Harness {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-signin-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try await makeCertificate(in: directory, names: ["auth.test", "api.test"])
            let port = try await freePort()
            let challenge = SignIns.base64URL(Array(SHA256.hash(data: Array(verifier.utf8))))
            let log = directory + "/provider.log"
            let provider = try #require(
                try launchProgram(
                    ["python3", "-c", SignInTests.provider, "\(port)", directory + "/cert.pem", directory + "/key.pem", challenge, log, mode],
                    directory: directory))
            try await waitForListener(port: port)
            var service = SignInTests.service
            service.port = port
            let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
            let signIns =
                store
                ? SignIns(services: [service], store: SignInStore(directory: directory + "/vault", key: key))
                : SignIns(services: [service], store: nil, unavailable: "the vault is disabled")
            let authority = try CertificateAuthority.loadOrCreate(path: directory + "/state/ca.pem", project: "/tmp/project")
            let server = EgressServer(
                configuration: .init(
                    rules: try rules([("provider", allow: ["auth.test:\(port)", "api.test:\(port)"], deny: [], allowPrivate: true)]),
                    resolver: StaticResolver(["auth.test": ["127.0.0.1"], "api.test": ["127.0.0.1"]]),
                    interception: try Interception(
                        authority: authority, services: [ServiceCredentials(service: service, tokens: [])], signIns: signIns,
                        extraUpstreamRootsPEM: try String(contentsOfFile: directory + "/cert.pem", encoding: .utf8))),
                logger: testLogger, records: Records().sink)
            let guest = try await FakeGuest(server: server)
            let auth = try await guest.capture(host: "auth.test", ip: "198.18.0.10", port: UInt16(port))
            let api = try await guest.capture(host: "api.test", ip: "198.18.0.11", port: UInt16(port))
            return Harness(
                directory: directory, port: port, challenge: challenge, log: log, key: key, signIns: signIns, provider: provider, guest: guest,
                captures: ["auth.test": auth, "api.test": api])
        }

        /// The sign-in page opened with the harness's challenge and the provider's redirect come
        /// back to the CLI's port with the real code: the surrogate code the guest gets.
        func browserReturns() throws -> String {
            _ = try signIns.checkPage(SignInTests.page(["code_challenge": challenge]))
            return try #require(signIns.surrogateCode(for: "real-code-1", port: 45678))
        }

        /// curl from the guest: status and body.
        func call(_ host: String, _ path: String, _ json: String?, _ form: String?, _ bearer: String?, key: String? = nil) async throws -> (
            Int, String
        ) {
            var arguments = ["curl", "-sS", "-k", "--max-time", "10", "-w", "|%{http_code}"]
            if let key { arguments += ["-H", "x-api-key: \(key)"] }
            if let json { arguments += ["-H", "content-type: application/json", "--data-raw", json] }
            if let form { arguments += ["--data-raw", form] }
            if let bearer { arguments += ["-H", "Authorization: Bearer \(bearer)"] }
            arguments += ["--connect-to", "\(host):\(port):127.0.0.1:\(captures[host]!.port)", "https://\(host):\(port)\(path)"]
            let output = try #require(try await runProgram(arguments)).output
            let split = try #require(output.lastIndex(of: "|"))
            return (Int(output[output.index(after: split)...]) ?? 0, String(output[..<split]))
        }

        func close() async {
            for capture in captures.values { capture.task.cancel() }
            await guest.close()
        }

        func stop() {
            kill(provider.processIdentifier, SIGKILL)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
