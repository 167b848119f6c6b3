import AirlockSystem
import AsyncHTTPClient
import Crypto
import FoundationEssentials
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A client of the OCI distribution API (`/v2/…`): manifests, blobs, and the two ways
/// registries authenticate (an anonymous or basic-authenticated bearer token fetched from the
/// realm named by `WWW-Authenticate`, or plain basic auth).
///
/// HTTPS always, except for registries the configuration marks `insecure` (plain HTTP). Every
/// request has a deadline for its response head and an idle timeout for its body; transport
/// errors, 429 and 5xx are retried with exponential back-off, and a blob download that breaks
/// resumes where it stopped (HTTP `Range`).
public final class RegistryClient: Sendable {
    public struct Options: Sendable {
        /// Registries (as written in references, `host[:port]`) spoken to over plain HTTP.
        public var insecureRegistries: Set<String> = []
        /// Where `DOCKER_CONFIG` / `HOME` are looked up for stored credentials.
        public var environment: [String: String] = [:]
        /// Tries per request (the first included) for retryable failures.
        public var attempts = 5
        /// The first back-off; doubled after each failure, at most 8 s.
        public var backoff: Duration = .milliseconds(250)
        /// How long a response head may take.
        public var requestTimeout: Duration = .seconds(30)
        /// How long a body may stall.
        public var idleTimeout: Duration = .seconds(60)
        /// Asks the user for a registry's user name and password (blocking; run on NIO's thread
        /// pool) when it wants them and none are stored; nil when nobody can be asked (no
        /// terminal). Called at most once per registry per client; the answer is kept in memory
        /// only.
        public var prompt: (@Sendable (_ registry: String) -> Credentials?)?

        public init(insecureRegistries: Set<String> = [], environment: [String: String] = [:]) {
            self.insecureRegistries = insecureRegistries
            self.environment = environment
        }
    }

    let http: HTTPClient
    let options: Options
    let logger: Logger
    private let tokens = TokenCache()
    private let prompted = PromptedCredentials()

    public init(options: Options, logger: Logger = Logger(label: "airlock.oci")) {
        self.options = options
        self.logger = logger
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .nanoseconds(Int64(options.idleTimeout.components.seconds) * 1_000_000_000)),
            decompression: .disabled)
        configuration.httpVersion = .automatic
        // Our own loop retries with back-off and a bounded count; the pool's would retry a
        // refused connection until the request deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
    }

    /// Closes the connections; call once when done.
    public func shutdown() async {
        try? await http.shutdown()
    }

    func baseURL(_ reference: ImageReference) -> String {
        (options.insecureRegistries.contains(reference.registry) ? "http://" : "https://") + reference.apiHost
    }

    // MARK: Manifests

    /// A manifest or index with its digest (computed from the bytes, and checked against the
    /// digest asked for when the request was by digest).
    struct FetchedManifest {
        var bytes: [UInt8]
        var contentType: String?
        var digest: Digest
    }

    func fetchManifest(_ reference: ImageReference, _ manifestReference: String) async throws -> FetchedManifest {
        let url = baseURL(reference) + "/v2/\(reference.repository)/manifests/\(manifestReference)"
        var headers = HTTPHeaders()
        headers.add(name: "Accept", value: MediaType.manifestAccept)
        let response = try await send(url: url, headers: headers, reference: reference, what: "manifest \(reference.repository):\(manifestReference)")
        let limit = 4 << 20
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: limit) } catch let error as NIOTooManyBytesError {
            _ = error
            throw OCIError(.manifest, "\(reference): the manifest is larger than \(limit >> 20) MiB")
        } catch {
            throw OCIError(.transport, "\(reference): reading the manifest failed", cause: error)
        }
        let bytes = Array(body.readableBytesView)
        let digest = Digest(of: bytes)
        if manifestReference.hasPrefix("sha256:"), manifestReference != digest.description {
            throw OCIError(.integrity, "\(reference): the registry's manifest has digest \(digest), not the \(manifestReference) asked for")
        }
        return FetchedManifest(bytes: bytes, contentType: response.headers.first(name: "Content-Type"), digest: digest)
    }

    /// A small blob (an image config), read into memory, size and digest checked.
    func fetchSmallBlob(_ reference: ImageReference, _ descriptor: Descriptor, limit: Int = 8 << 20) async throws -> [UInt8] {
        guard descriptor.size >= 0, descriptor.size <= limit else {
            throw OCIError(.manifest, "\(reference): the config claims \(descriptor.size) bytes (at most \(limit >> 20) MiB are accepted)")
        }
        let response = try await sendFollowingRedirects(
            url: baseURL(reference) + "/v2/\(reference.repository)/blobs/\(descriptor.digest)", headers: HTTPHeaders(), reference: reference,
            what: "blob \(descriptor.digest.short)")
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: Int(descriptor.size) + 1) } catch {
            throw OCIError(
                .integrity, "\(reference): blob \(descriptor.digest.short) is larger than the \(descriptor.size) bytes the manifest announces")
        }
        let bytes = Array(body.readableBytesView)
        guard bytes.count == Int(descriptor.size) else {
            throw OCIError(
                .integrity, "\(reference): blob \(descriptor.digest.short) has \(bytes.count) bytes, the manifest announces \(descriptor.size)")
        }
        guard Digest(of: bytes) == descriptor.digest else {
            throw OCIError(.integrity, "\(reference): blob \(descriptor.digest.short) does not match its digest (got \(Digest(of: bytes)))")
        }
        return bytes
    }

    // MARK: Blobs to disk

    /// What a download did, for progress and tests.
    public struct DownloadReport: Sendable {
        /// Bytes already on disk from an earlier, interrupted download and kept (not fetched again).
        public var resumedFrom: Int64
        /// Attempts that failed and were retried.
        public var retries: Int
    }

    /// Downloads a blob into `partial` (resuming what is already there), checks its size and
    /// digest, and renames it to `destination`. `progress` gets the bytes on disk so far.
    /// A blob that fails its check is deleted; one interrupted by the network is kept for resume.
    func download(
        _ reference: ImageReference, _ descriptor: Descriptor, partial: String, destination: String,
        progress: @escaping @Sendable (Int64) -> Void
    ) async throws -> DownloadReport {
        let fd = open(partial, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw OCIError(.store, "cannot open \(partial): \(errorText(errno))") }
        defer { close(fd) }
        let file = BlobFile(fd: fd)
        var hasher = SHA256()
        var offset: Int64 = try await file.size()
        if offset > descriptor.size {
            try await file.truncate()
            offset = 0
        }
        if offset > 0 { hasher = try await file.hashPrefix(offset) }
        let resumedFrom = offset
        progress(offset)
        var retries = 0
        var failures = 0
        let url = baseURL(reference) + "/v2/\(reference.repository)/blobs/\(descriptor.digest)"
        let what = "\(reference.repository) layer \(descriptor.digest.short)"

        while offset < descriptor.size {
            var headers = HTTPHeaders()
            if offset > 0 { headers.add(name: "Range", value: "bytes=\(offset)-") }
            // Transport failures were retried inside; what is on disk stays for the next pull.
            let response = try await sendFollowingRedirects(url: url, headers: headers, reference: reference, what: what)
            switch response.status.code {
            case 206:
                let start = Self.contentRangeStart(response.headers.first(name: "Content-Range"))
                if start != offset {
                    // Not the range asked for: start over from zero.
                    try await Self.drain(response)
                    try await file.truncate()
                    offset = 0
                    hasher = SHA256()
                    continue
                }
            case 200:
                if offset > 0 {
                    logger.debug("registry ignored Range; downloading \(descriptor.digest.short) from the start")
                    try await file.truncate()
                    offset = 0
                    hasher = SHA256()
                }
            default:
                try await Self.drain(response)
                throw OCIError(.status, "\(what): unexpected HTTP \(response.status.code) for a blob download")
            }
            if let length = response.headers.first(name: "Content-Length").flatMap(Int64.init), offset + length > descriptor.size {
                try await Self.drain(response)
                try? await file.truncate()
                throw OCIError(
                    .integrity, "\(what): the registry sends \(offset + length) bytes, the manifest announces \(descriptor.size)",
                    hint: "the manifest lies about the layer's size or the registry is broken; the download was discarded")
            }
            var pending = ByteBuffer()
            do {
                for try await chunk in response.body {
                    guard offset + Int64(pending.readableBytes + chunk.readableBytes) <= descriptor.size else {
                        try? await file.truncate()
                        throw OCIError(
                            .integrity, "\(what): the registry sent more than the \(descriptor.size) bytes the manifest announces",
                            hint: "the manifest lies about the layer's size or the registry is broken; the download was discarded")
                    }
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    var chunk = chunk
                    pending.writeBuffer(&chunk)
                    if pending.readableBytes >= 1 << 20 {
                        try await file.write(pending, at: offset)
                        offset += Int64(pending.readableBytes)
                        pending.clear()
                        progress(offset)
                    }
                }
                try await file.write(pending, at: offset)
                offset += Int64(pending.readableBytes)
                pending.clear()
                progress(offset)
            } catch let error as OCIError {
                throw error
            } catch {
                // The connection broke mid-body: keep what arrived (the digest covers it) and resume.
                try await file.write(pending, at: offset)
                offset += Int64(pending.readableBytes)
                progress(offset)
                failures += 1
                retries += 1
                guard failures < options.attempts else {
                    throw OCIError(
                        .transport, "\(what): the download broke \(failures) times (last: \(error)); \(offset) of \(descriptor.size) bytes are kept",
                        hint: "pull again to resume from there")
                }
                logger.info(
                    "download interrupted; resuming", metadata: ["blob": "\(descriptor.digest.short)", "offset": "\(offset)", "error": "\(error)"])
                try await Task.sleep(for: backoff(failures))
                continue
            }
            if offset < descriptor.size {
                throw OCIError(
                    .integrity, "\(what): the registry sent \(offset) bytes, the manifest announces \(descriptor.size)",
                    hint: "the manifest lies about the layer's size or the registry is broken")
            }
        }
        let digest = Digest(hasher.finalize())
        guard digest == descriptor.digest else {
            try? await file.truncate()
            unlink(partial)
            throw OCIError(
                .integrity, "\(what): the content's digest is \(digest), the manifest says \(descriptor.digest); the download was discarded",
                hint: "the registry serves corrupt or tampered content")
        }
        // No fsync: a layer blob lives only until it is unpacked (and the unpacked layer is
        // what the store keeps); a crash before that loses a download, never consistency.
        guard rename(partial, destination) == 0 else {
            throw OCIError(.store, "cannot rename \(partial) to \(destination): \(errorText(errno))")
        }
        return DownloadReport(resumedFrom: resumedFrom, retries: retries)
    }

    static func contentRangeStart(_ header: String?) -> Int64? {
        // "bytes 100-199/200"
        guard let header, header.hasPrefix("bytes ") else { return nil }
        return header.dropFirst(6).split(separator: "-").first.flatMap { Int64($0) }
    }

    static func drain(_ response: HTTPClientResponse) async throws {
        _ = try? await response.body.collect(upTo: 1 << 20)
    }

    func backoff(_ failures: Int) -> Duration {
        let base = options.backoff * (1 << min(failures - 1, 5))
        return min(base, .seconds(8)) + .milliseconds(Int.random(in: 0...100))
    }

    // MARK: Requests, retries, authentication

    /// GET `url`, following up to five redirects; the registry's credentials go only to the
    /// registry's own host (blob storage behind a redirect gets none).
    func sendFollowingRedirects(url: String, headers: HTTPHeaders, reference: ImageReference, what: String) async throws -> HTTPClientResponse {
        var response = try await send(url: url, headers: headers, reference: reference, what: what, acceptRedirect: true)
        var current = url
        for _ in 0..<5 {
            guard [301, 302, 303, 307, 308].contains(response.status.code) else { return response }
            try await Self.drain(response)
            guard let location = response.headers.first(name: "Location") else {
                throw OCIError(.status, "\(what): redirect without a Location")
            }
            current = Self.resolve(location, against: current)
            let sameHost = Self.host(of: current) == Self.host(of: url)
            if !sameHost && !current.hasPrefix("https://") && !options.insecureRegistries.contains(reference.registry) {
                throw OCIError(.status, "\(what): the registry redirects to plain HTTP (\(Self.host(of: current) ?? current)); refused")
            }
            response = try await send(url: current, headers: headers, reference: reference, what: what, acceptRedirect: true, authenticate: sameHost)
        }
        throw OCIError(.status, "\(what): too many redirects")
    }

    /// One GET with retries for transport errors, 429 and 5xx, and the authentication dance on
    /// 401. Returns a response whose status is 2xx (or 3xx when `acceptRedirect`); other statuses
    /// become errors here.
    func send(
        url: String, headers: HTTPHeaders, reference: ImageReference, what: String, acceptRedirect: Bool = false, authenticate: Bool = true
    ) async throws -> HTTPClientResponse {
        var failures = 0
        // 0: no authentication yet; 1: stored credentials or anonymous tried; 2: the user's answer tried.
        var stage = 0
        var usedPrompt = false
        let scope = "repository:\(reference.repository):pull"
        while true {
            var request = HTTPClientRequest(url: url)
            request.method = .GET
            request.headers = headers
            request.headers.replaceOrAdd(name: "User-Agent", value: "airlock/0.1")
            if authenticate, let authorization = await tokens.get(registry: reference.registry, scope: scope) {
                request.headers.replaceOrAdd(name: "Authorization", value: authorization)
            }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(
                    request, deadline: .now() + .nanoseconds(Int64(options.requestTimeout.components.seconds) * 1_000_000_000))
            } catch {
                try Task.checkCancellation()
                failures += 1
                // TLS failures do not heal by retrying (NIOSSL is not a direct dependency, so
                // its errors are recognised by their description).
                let text = String(describing: error)
                let permanent = text.contains("NIOSSL") || text.contains("handshake") || text.contains("certificate")
                guard failures < options.attempts, !permanent else {
                    throw OCIError(
                        .transport, "\(what): cannot reach \(Self.host(of: url) ?? url): \(error) (\(failures) attempts)",
                        hint: options.insecureRegistries.contains(reference.registry) || url.hasPrefix("http://")
                            ? "is the registry running?"
                            : "is the registry running? A registry without TLS needs `insecure = true` in [registries.\"\(reference.registry)\"]")
                }
                logger.info("retrying", metadata: ["url": "\(url)", "error": "\(error)"])
                try await Task.sleep(for: backoff(failures))
                continue
            }
            let code = response.status.code
            if (200..<300).contains(code) || (acceptRedirect && (300..<400).contains(code)) { return response }
            if code == 401 && authenticate && stage < 2 {
                let stored = try Credentials.lookup(registry: reference.registry, environment: options.environment)
                // A second 401 after an anonymous token: ask, when there is someone to ask.
                if stage == 0 || (stored == nil && options.prompt != nil) {
                    let challenge = response.headers.first(name: "WWW-Authenticate")
                    try await Self.drain(response)
                    usedPrompt = try await obtainAuthorization(
                        challenge: challenge, reference: reference, scope: scope, what: what, askIfNeeded: stage == 1)
                    stage = usedPrompt ? 2 : stage + 1
                    continue
                }
            }
            if code == 429 || code >= 500 {
                try await Self.drain(response)
                failures += 1
                guard failures < options.attempts else {
                    throw OCIError(.status, "\(what): the registry answered HTTP \(code) \(failures) times", hint: "try again later")
                }
                try await Task.sleep(for: backoff(failures))
                continue
            }
            let detail = await Self.registryErrorMessage(response)
            switch code {
            case 401, 403:
                let credentials = try? Credentials.lookup(registry: reference.registry, environment: options.environment)
                let answered = await prompted.answered(reference.registry)
                if usedPrompt || (credentials == nil && answered) {
                    throw OCIError(
                        .authentication, "\(what): \(reference.registry) refused the user name and password you entered (HTTP \(code)\(detail))",
                        hint:
                            "check them and run the command again (they were not saved); or the account lacks pull access to \(reference.repository)")
                }
                throw OCIError(
                    .authentication, "\(what): \(reference.registry) refused access (HTTP \(code)\(detail))",
                    hint: credentials == nil
                        ? loginHint(reference.registry) + ", or check the name"
                        : "the stored credentials for \(reference.registry) were refused or lack pull access")
            case 404:
                throw OCIError(.notFound, "\(what): not found on \(reference.registry)\(detail)", hint: "check the repository name and tag")
            default:
                throw OCIError(.status, "\(what): unexpected HTTP \(code)\(detail)")
            }
        }
    }

    /// How to give airlock credentials, for messages.
    func loginHint(_ registry: String) -> String {
        "log in with `docker login \(registry)` (airlock reads \(Credentials.configPath(environment: options.environment) ?? "~/.docker/config.json"))"
            + (options.prompt == nil ? ", or run the command in a terminal to be asked for a user name and password" : "")
    }

    /// The user's answer for `registry` (asked once per client; nil when declined or nobody
    /// can be asked).
    func askCredentials(_ registry: String) async -> Credentials? {
        guard let prompt = options.prompt else { return nil }
        return await prompted.get(registry) {
            try? await NIOThreadPool.singleton.runIfActive { prompt(registry) }
        }
    }

    /// Answers a 401: a bearer token from the realm (with basic credentials when the user has
    /// some for this registry), or basic auth directly. Without stored credentials the user is
    /// asked when `askIfNeeded` (an anonymous attempt already failed) or when the registry
    /// wants basic auth (anonymous is impossible). Returns whether the user's answer was used.
    @discardableResult
    func obtainAuthorization(challenge: String?, reference: ImageReference, scope: String, what: String, askIfNeeded: Bool = false) async throws
        -> Bool
    {
        var credentials = try Credentials.lookup(registry: reference.registry, environment: options.environment)
        var usedPrompt = false
        let answered = await prompted.answered(reference.registry)
        if credentials == nil, askIfNeeded || answered {
            credentials = await askCredentials(reference.registry)
            usedPrompt = credentials != nil
        }
        guard let challenge, let parsed = Self.parseChallenge(challenge) else {
            throw OCIError(.authentication, "\(what): \(reference.registry) asks for authentication without saying how (no WWW-Authenticate)")
        }
        switch parsed.scheme.lowercased() {
        case "basic":
            if credentials == nil, let answer = await askCredentials(reference.registry) {
                credentials = answer
                usedPrompt = true
            }
            guard let credentials else {
                throw OCIError(
                    .authentication, "\(what): \(reference.registry) requires a user name and password", hint: loginHint(reference.registry))
            }
            await tokens.set(registry: reference.registry, scope: scope, credentials.basicHeader)
        case "bearer":
            guard let realm = parsed.parameters["realm"], realm.hasPrefix("https://") || realm.hasPrefix("http://") else {
                throw OCIError(.authentication, "\(what): the bearer challenge of \(reference.registry) names no usable realm")
            }
            if realm.hasPrefix("http://") && !options.insecureRegistries.contains(reference.registry) {
                throw OCIError(
                    .authentication, "\(what): \(reference.registry) wants credentials sent to a plain-HTTP token service (\(realm)); refused")
            }
            var query: [String] = []
            if let service = parsed.parameters["service"] { query.append("service=" + Self.percentEncode(service)) }
            query.append("scope=" + Self.percentEncode(parsed.parameters["scope"] ?? scope))
            let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
            func requestToken(_ credentials: Credentials?) async throws -> HTTPClientResponse {
                var request = HTTPClientRequest(url: url)
                request.headers.add(name: "User-Agent", value: "airlock/0.1")
                if let credentials { request.headers.add(name: "Authorization", value: credentials.basicHeader) }
                do {
                    return try await http.execute(request, deadline: .now() + .seconds(30))
                } catch {
                    throw OCIError(.transport, "\(what): cannot reach the token service \(Self.host(of: realm) ?? realm)", cause: error)
                }
            }
            var response = try await requestToken(credentials)
            // Refused anonymously: ask once, when there is someone to ask.
            if response.status.code == 401, credentials == nil, let answer = await askCredentials(reference.registry) {
                try await Self.drain(response)
                credentials = answer
                usedPrompt = true
                response = try await requestToken(answer)
            }
            guard response.status.code == 200 else {
                let detail = await Self.registryErrorMessage(response)
                throw OCIError(
                    .authentication, "\(what): the token service of \(reference.registry) refused (HTTP \(response.status.code)\(detail))",
                    hint: usedPrompt
                        ? "check the user name and password and run the command again (they were not saved)"
                        : credentials == nil
                            ? "the repository may be private: " + loginHint(reference.registry)
                            : "the stored credentials for \(reference.registry) were refused")
            }
            struct TokenResponse: Decodable {
                var token: String?
                var access_token: String?
            }
            let body = try await response.body.collect(upTo: 1 << 20)
            guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(body.readableBytesView)),
                let token = decoded.token ?? decoded.access_token, !token.isEmpty
            else {
                throw OCIError(.authentication, "\(what): the token service of \(reference.registry) answered without a token")
            }
            await tokens.set(registry: reference.registry, scope: scope, "Bearer " + token)
        default:
            throw OCIError(.authentication, "\(what): unsupported authentication scheme \(parsed.scheme) at \(reference.registry)")
        }
        return usedPrompt
    }

    /// `Bearer realm="…",service="…",scope="…"` → scheme and parameters.
    static func parseChallenge(_ header: String) -> (scheme: String, parameters: [String: String])? {
        let trimmed = header.trimmingSpaces()
        guard let space = trimmed.firstIndex(of: " ") else { return trimmed.isEmpty ? nil : (trimmed, [:]) }
        let scheme = String(trimmed[..<space])
        var parameters: [String: String] = [:]
        var rest = trimmed[trimmed.index(after: space)...]
        while !rest.isEmpty {
            while rest.first == " " || rest.first == "," { rest = rest.dropFirst() }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = String(rest[..<equals]).trimmingSpaces().lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let character = rest.first, character != "\"" {
                    if character == "\\" { rest = rest.dropFirst() }
                    if let next = rest.first {
                        value.append(next)
                        rest = rest.dropFirst()
                    }
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end]).trimmingSpaces()
                rest = rest[end...]
            }
            parameters[key] = value
        }
        return (scheme, parameters)
    }

    static func percentEncode(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            if (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || [45, 46, 95, 126].contains(byte) {
                result.append(Character(Unicode.Scalar(byte)))
            } else {
                let digits = Array("0123456789ABCDEF")
                result += "%" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 15)])
            }
        }
        return result
    }

    static func host(of url: String) -> String? {
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        return String(rest.prefix { $0 != "/" && $0 != "?" })
    }

    static func resolve(_ location: String, against url: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        guard let schemeEnd = url.firstRange(of: "://") else { return location }
        let origin = url[..<schemeEnd.upperBound] + (host(of: url) ?? "")
        return location.hasPrefix("/") ? origin + location : origin + "/" + location
    }

    /// `: CODE message` from a registry's JSON error body, when it has one.
    static func registryErrorMessage(_ response: HTTPClientResponse) async -> String {
        struct Errors: Decodable {
            struct Entry: Decodable {
                var code: String?
                var message: String?
            }
            var errors: [Entry]?
        }
        guard let body = try? await response.body.collect(upTo: 64 << 10),
            let decoded = try? JSONDecoder().decode(Errors.self, from: Data(body.readableBytesView)),
            let first = decoded.errors?.first
        else { return "" }
        return ": " + [first.code, first.message].compactMap { $0 }.joined(separator: " ").prefix(300)
    }
}

/// What the user answered per registry: asked once (concurrent requests wait for the same
/// answer), kept in memory only.
actor PromptedCredentials {
    private var answers: [String: Task<Credentials?, Never>] = [:]

    func get(_ registry: String, ask: @escaping @Sendable () async -> Credentials?) async -> Credentials? {
        if let task = answers[registry] { return await task.value }
        let task = Task { await ask() }
        answers[registry] = task
        return await task.value
    }

    /// Whether the user was asked for `registry` already (and answered).
    func answered(_ registry: String) async -> Bool {
        guard let task = answers[registry] else { return false }
        return await task.value != nil
    }
}

/// Authorization header values per registry and scope, shared by concurrent downloads.
actor TokenCache {
    private var values: [String: String] = [:]

    func get(registry: String, scope: String) -> String? { values[registry + " " + scope] }
    func set(registry: String, scope: String, _ value: String) { values[registry + " " + scope] = value }
}

/// A blob file being written; every syscall runs on NIO's blocking-I/O thread pool, never on
/// the cooperative pool.
struct BlobFile: Sendable {
    let fd: Int32

    func size() async throws -> Int64 {
        try await NIOThreadPool.singleton.runIfActive {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw OCIError(.store, "fstat: \(errorText(errno))") }
            return Int64(info.st_size)
        }
    }

    func truncate() async throws {
        try await NIOThreadPool.singleton.runIfActive {
            guard ftruncate(fd, 0) == 0 else { throw OCIError(.store, "ftruncate: \(errorText(errno))") }
        }
    }

    func write(_ buffer: ByteBuffer, at offset: Int64) async throws {
        guard buffer.readableBytes > 0 else { return }
        try await NIOThreadPool.singleton.runIfActive {
            try buffer.withUnsafeReadableBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let n = pwrite(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done, off_t(offset) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else {
                        throw OCIError(.store, "writing a blob failed: \(errorText(errno))", hint: "is the disk full?")
                    }
                    done += n
                }
            }
        }
    }

    /// The SHA-256 state after the first `length` bytes (a download being resumed).
    func hashPrefix(_ length: Int64) async throws -> SHA256 {
        try await NIOThreadPool.singleton.runIfActive {
            var hasher = SHA256()
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var offset: Int64 = 0
            while offset < length {
                let want = Int(min(Int64(buffer.count), length - offset))
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw OCIError(.store, "reading a partial blob failed: \(errorText(errno))") }
                buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                offset += Int64(n)
            }
            return hasher
        }
    }
}
