import AsyncHTTPClient
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NetworkPolicy

/// A token request as the CLI sent it (JSON or a form), strictly: no duplicate names.
struct TokenForm {
    var isJSON: Bool
    var fields: [(name: String, value: JSONValue)]

    init?(_ body: [UInt8], contentType: String?) {
        let type = (contentType ?? "").lowercased()
        if type.hasPrefix("application/x-www-form-urlencoded") {
            isJSON = false
            fields = FormBody.parse(Substring(decoding: body, as: UTF8.self)).map { ($0.0, JSONValue.string($0.1)) }
        } else if let object = JSONValue.parse(body) {
            isJSON = true
            fields = object.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        } else {
            return nil
        }
        guard Set(fields.map(\.name)).count == fields.count else { return nil }
    }

    init(isJSON: Bool, _ fields: [(String, String)]) {
        self.isJSON = isJSON
        self.fields = fields.map { ($0.0, JSONValue.string($0.1)) }
    }

    subscript(name: String) -> String? {
        get { fields.first { $0.name == name }?.value.string }
        set {
            fields.removeAll { $0.name == name }
            if let newValue { fields.append((name, .string(newValue))) }
        }
    }

    var bytes: [UInt8] {
        if isJSON { return JSONValue.encode(Dictionary(fields.map { ($0.name, $0.value) }) { $1 }) }
        return Array(FormBody.encode(fields.map { ($0.name, $0.value.string ?? "") }).utf8)
    }

    var contentType: String { isJSON ? "application/json" : "application/x-www-form-urlencoded" }
}

extension InterceptedConnection {
    /// A request to a sign-in's token host: only its token and revoke endpoints, each handled
    /// here (`SignIns`), never passed on as the guest sent it.
    func serveTokenEndpoint(
        _ head: NIOHTTP1.HTTPRequestHead, _ parts: RequestParts, service: ProviderService, signIns: SignIns, client: HTTPClient,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, record: inout InterceptedRequest
    ) async throws {
        let signIn = service.signIn!
        let path = String(head.uri.prefix { $0 != "?" })
        func reply(_ status: HTTPResponseStatus, _ object: [String: JSONValue]) async throws {
            record.status = Int(status.code)
            let body = JSONValue.encode(object)
            let headers: HTTPHeaders = ["content-type": "application/json", "content-length": "\(body.count)", "cache-control": "no-store"]
            try await outbound.write(.head(HTTPResponseHead(version: head.version, status: status, headers: headers)))
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
            try await outbound.write(.end(nil))
        }
        func oauthError(_ status: HTTPResponseStatus, _ error: String, _ text: String) async throws {
            record.stopped = text
            try await reply(status, ["error": .string(error), "error_description": .string("airlock: " + text)])
        }
        guard let store = signIns.store else {
            record.security = "security.sign-in-unavailable"
            try await oauthError(
                .forbidden, "access_denied",
                "signing in to \(service.name) inside the sandbox needs the vault (\(signIns.unavailable ?? "unavailable")), so \(name) is refused; \(service.hint)"
            )
            return
        }
        guard head.method == .POST, path == signIn.tokenPath || path == signIn.revokePath, !head.uri.contains("?") else {
            try await oauthError(.forbidden, "access_denied", "airlock carries only the sign-in's token and revoke requests to \(name)")
            return
        }
        var body: [UInt8] = []
        while let chunk = try await parts.nextChunk() {
            guard body.count + chunk.readableBytes <= 64 << 10 else {
                try await oauthError(.payloadTooLarge, "invalid_request", "a token request is at most 64 KiB")
                return
            }
            body += chunk.readableBytesView
        }
        guard head.headers.first(name: "content-encoding").map({ $0.lowercased() == "identity" }) ?? true,
            var form = TokenForm(body, contentType: head.headers.first(name: "content-type"))
        else {
            try await oauthError(.badRequest, "invalid_request", "a token request must be JSON or a form, uncompressed, each name once")
            return
        }

        if path == signIn.revokePath {
            // A sign-out: the grant goes from the store (every sandbox is signed out), then the
            // provider is asked to revoke the real token, as far as it answers.
            let token = form["token"] ?? ""
            let removed = try store.update { grants -> SignInStore.Grant? in
                guard
                    let index = grants.firstIndex(where: {
                        $0.service == service.name && ($0.accessSurrogate == token || $0.refreshSurrogate == token)
                    })
                else { return nil }
                return grants.remove(at: index)
            }
            if let removed {
                var revoke = TokenForm(isJSON: form.isJSON, [("token", removed.refresh ?? removed.access), ("client_id", removed.clientID)])
                revoke["token_type_hint"] = removed.refresh == nil ? "access_token" : "refresh_token"
                _ = try? await exchange(revoke, path: path, client: client, record: &record)
                record.stopped = "signed out of \(service.name)" + (removed.account.map { " (\($0))" } ?? "") + " in every sandbox"
            }
            try await reply(.ok, [:])
            return
        }

        let grantType = form["grant_type"] ?? ""
        var previous: SignInStore.Grant?
        switch grantType {
        case "authorization_code":
            let port = form["redirect_uri"].flatMap { SignIns.loopbackPort($0, path: signIn.callbackPath) }
            guard let code = form["code"], let port, let real = signIns.redeem(code, service: service.name, port: port) else {
                try await oauthError(.badRequest, "invalid_grant", "this sign-in's code is unknown, used or expired; sign in again")
                return
            }
            guard form["client_id"].map({ !$0.isEmpty }) ?? false else {
                try await oauthError(.badRequest, "invalid_request", "a token request needs its client_id")
                return
            }
            form["code"] = real
        case "refresh_token":
            guard let surrogate = form["refresh_token"], let grant = try store.grant(refresh: surrogate), grant.service == service.name else {
                try await oauthError(.badRequest, "invalid_grant", "this sign-in is no longer valid (signed out); sign in again")
                return
            }
            previous = grant
            // Built here: nothing of the guest's body goes upstream but the scope it asks for.
            var refresh = TokenForm(
                isJSON: form.isJSON, [("grant_type", "refresh_token"), ("refresh_token", grant.refresh ?? ""), ("client_id", grant.clientID)])
            if let scope = form["scope"] { refresh["scope"] = scope }
            form = refresh
        default:
            try await oauthError(.badRequest, "unsupported_grant_type", "airlock carries only the authorization_code and refresh_token grants")
            return
        }

        let (status, answer) = try await exchange(form, path: path, client: client, record: &record)
        guard (200..<300).contains(status.code), let object = answer.flatMap(JSONValue.parse), let access = object["access_token"]?.string else {
            // A refusal passes on, unless it carries a token.
            let text = answer.map { String(decoding: $0, as: UTF8.self) } ?? ""
            if let answer, !text.contains(form["code"] ?? "\u{0}"), !text.contains(previous?.refresh ?? "\u{0}"), JSONValue.parse(answer) != nil {
                try await reply(status, JSONValue.parse(answer)!)
            } else {
                try await oauthError(.badGateway, "server_error", "\(name) answered the token request with \(status.code) and no usable token")
            }
            return
        }
        if let field = Self.unknownSecret(in: .object(object)) {
            record.security = "security.secret-reflected"
            try await oauthError(
                .badGateway, "server_error", "\(name)'s token answer has a value airlock does not know under \(field); kept from the VM")
            return
        }
        let refresh = object["refresh_token"]?.string
        let now = Int64(Date().timeIntervalSince1970)
        var grant =
            previous
            ?? SignInStore.Grant(
                service: service.name, clientID: form["client_id"] ?? "", scopes: [], account: nil, access: access, refresh: refresh,
                accessSurrogate: "", refreshSurrogate: nil, expiresAt: nil, savedAt: now)
        // A surrogate of the real token's length (an echo is swapped in place); a JWT's carries its claims.
        if grant.accessSurrogate.count != access.count || access.split(separator: ".").count == 3 {
            grant.accessSurrogate = SignIns.surrogate(for: access, prefix: signIn.accessPrefix)
        }
        grant.access = access
        if let refresh {
            grant.refresh = refresh
            if grant.refreshSurrogate == nil { grant.refreshSurrogate = SignIns.surrogate(for: refresh, prefix: signIn.refreshPrefix) }
        }
        if let scope = object["scope"]?.string { grant.scopes = scope.split(separator: " ").map(String.init) }
        grant.account =
            object["account"]?["email_address"]?.string ?? object["id_token"]?.string.flatMap(SignIns.account(inJWT:))
            ?? SignIns.account(inJWT: access) ?? grant.account
        grant.expiresAt = object["expires_in"]?.integer.map { now + $0 }
        grant.savedAt = now
        let stored = grant
        let kept = try store.update { grants -> Bool in
            // A refresh of a sign-in signed out meanwhile is not kept.
            if let previous, !grants.contains(where: { $0.refreshSurrogate == previous.refreshSurrogate }) { return false }
            // One sign-in per account and client: a new one replaces the old.
            grants.removeAll { old in
                guard old.service == stored.service else { return false }
                if let previous, old.refreshSurrogate == previous.refreshSurrogate { return true }
                return old.account != nil && old.account == stored.account && old.clientID == stored.clientID
            }
            grants.append(stored)
            return true
        }
        guard kept else {
            try await oauthError(.badRequest, "invalid_grant", "this sign-in was signed out; sign in again")
            return
        }
        var rewritten = object
        rewritten["access_token"] = .string(grant.accessSurrogate)
        if refresh != nil { rewritten["refresh_token"] = grant.refreshSurrogate.map(JSONValue.string) }
        if let id = object["id_token"]?.string { rewritten["id_token"] = .string(SignIns.surrogate(for: id, prefix: "airlock-id-")) }
        let out = JSONValue.encode(rewritten)
        let text = String(decoding: out, as: UTF8.self)
        let reals = [access, refresh, object["id_token"]?.string].compactMap { $0 }.filter { $0.count >= 8 }
        guard !reals.contains(where: text.contains) else {
            record.security = "security.secret-reflected"
            try await oauthError(
                .badGateway, "server_error", "\(name)'s token answer carried a token in a field airlock does not know; kept from the VM")
            return
        }
        record.injected.append("sign-in \(service.name)")
        try await reply(status, rewritten)
    }

    /// An API answer that hands out new API keys (`SignIn.keyPaths`): each key becomes a
    /// surrogate of its length, the key kept with the sign-ins (used like an access token).
    /// An answer too large to read whole (1 MiB) or a store that cannot be written: 502.
    func keepingKeys(_ response: UpstreamResponse, service: ProviderService, signIns: SignIns) async throws -> UpstreamResponse {
        guard let signIn = service.signIn, (200..<300).contains(response.status.code) else { return response }
        guard let store = signIns.store else {
            throw InterceptionError("\(name) made an API key, and without the vault airlock cannot keep it from the VM")
        }
        guard let bytes = try await Self.whole(response.body, limit: 1 << 20) else {
            throw InterceptionError("\(name)'s answer with an API key is over 1 MiB")
        }
        var response = response
        response.body = .fixed(bytes)
        guard let object = JSONValue.parse(bytes) else { return response }
        var made: [SignInStore.Grant] = []
        func swap(_ value: JSONValue) -> JSONValue {
            switch value {
            case .string(let text) where text.hasPrefix(signIn.keyPrefix) && text.count >= 32:
                let surrogate = SignIns.surrogate(for: text, prefix: signIn.keySurrogatePrefix)
                made.append(
                    SignInStore.Grant(
                        service: service.name, clientID: "api-key", scopes: [], account: nil, access: text, refresh: nil, accessSurrogate: surrogate,
                        refreshSurrogate: nil, expiresAt: nil, savedAt: Int64(Date().timeIntervalSince1970)))
                return .string(surrogate)
            case .array(let values): return .array(values.map(swap))
            case .object(let fields): return .object(fields.mapValues(swap))
            default: return value
            }
        }
        let swapped = object.mapValues(swap)
        guard !made.isEmpty else { return response }
        try store.update { $0 += made }
        response.body = .fixed(JSONValue.encode(swapped))
        return response
    }

    /// `form` to the token host's `path`; the answer's status and body (at most 1 MiB).
    private func exchange(_ form: TokenForm, path: String, client: HTTPClient, record: inout InterceptedRequest) async throws -> (
        HTTPResponseStatus, [UInt8]?
    ) {
        let bytes = form.bytes
        let headers: HTTPHeaders = [
            "content-type": form.contentType, "accept": "application/json", "content-length": "\(bytes.count)", "user-agent": "airlock",
        ]
        let request = UpstreamRequest(method: .POST, path: path, headers: headers, body: .fixed(bytes))
        let response = try await send(request, client: client, record: &record)
        return (response.status, try await Self.whole(response.body, limit: 1 << 20))
    }

    /// The first field of a token answer that may hold a credential airlock would not turn into
    /// a surrogate: a string of 16 or more characters (not a UUID) under a name that sounds like
    /// one (token, secret, key, session, password, cookie, …), other than the tokens airlock
    /// replaces and the `*_id`/`*_type` fields.
    static func unknownSecret(in value: JSONValue, at path: String = "") -> String? {
        switch value {
        case .object(let fields):
            for (name, field) in fields.sorted(by: { $0.key < $1.key }) {
                let lowered = name.lowercased()
                let place = path.isEmpty ? name : "\(path).\(name)"
                if case .string(let text) = field, text.count >= 16, UUID(uuidString: text) == nil,
                    !["access_token", "refresh_token", "id_token"].contains(lowered), !lowered.hasSuffix("_id"), !lowered.hasSuffix("_type"),
                    !lowered.hasSuffix("_uuid"), lowered != "id", lowered != "uuid",
                    ["token", "secret", "key", "session", "password", "passwd", "cred", "cookie", "jwt", "bearer", "assertion", "code"].contains(
                        where: {
                            lowered.contains($0)
                        })
                {
                    return place
                }
                if let inner = unknownSecret(in: field, at: place) { return inner }
            }
        case .array(let values):
            for (index, element) in values.enumerated() {
                if let inner = unknownSecret(in: element, at: "\(path)[\(index)]") { return inner }
            }
        default:
            break
        }
        return nil
    }

    /// An answer's whole body; nil when it is over `limit` bytes.
    static func whole(_ body: UpstreamResponse.Body, limit: Int) async throws -> [UInt8]? {
        switch body {
        case .fixed(let fixed):
            return fixed.count <= limit ? fixed : nil
        case .stream(let chunks):
            var bytes: [UInt8] = []
            for try await chunk in chunks {
                guard bytes.count + chunk.readableBytes <= limit else { return nil }
                bytes += chunk.readableBytesView
            }
            return bytes
        }
    }
}
