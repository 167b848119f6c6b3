import AsyncHTTPClient
import Logging
import Middleware
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import NetworkPolicy

#if canImport(Glibc)
import Glibc
#endif

/// TLS interception, on when a sandbox has a certificate authority: every allowed TLS
/// connection (not `passthrough`) is ended on the host with a leaf for the name it was judged
/// for, and what it carries is handled by kind: HTTP/1.1 and HTTP/2 (ALPN) request by request,
/// anything else relayed as it was sent over a new TLS connection to the same upstream.
public struct Interception: Sendable {
    public var authority: CertificateAuthority
    /// Roots trusted for upstreams besides the host's own store: set only by code (the command
    /// layer, from its test-only variable), never by a file.
    public var extraUpstreamRoots: [NIOSSLCertificate]
    /// Every masked value: no request as the guest sent it and no answer it gets may hold one.
    public var secrets: [MaskedSecret]
    /// The masked values each rule puts into the requests it allows (`inject`), by rule name.
    public var injections: [String: [MaskedSecret]]
    /// Each intercepted request, when it has ended.
    public var requests: @Sendable (InterceptedRequest) -> Void
    /// Lua scripts run on the requests to their targets, in this order.
    public var middleware: [InterceptionMiddleware]
    /// Providers whose API hosts take only airlock's surrogates, swapped here for the real tokens.
    public var services: [ServiceCredentials]
    /// Sign-ins inside the sandbox, their real tokens kept on the host (`SignIns`).
    public var signIns: SignIns?

    /// `extraUpstreamRootsPEM`: certificates (PEM) trusted for upstreams besides the host's store.
    public init(
        authority: CertificateAuthority, secrets: [MaskedSecret] = [], injections: [String: [MaskedSecret]] = [:],
        middleware: [InterceptionMiddleware] = [], services: [ServiceCredentials] = [], signIns: SignIns? = nil,
        extraUpstreamRootsPEM: String? = nil, requests: @escaping @Sendable (InterceptedRequest) -> Void = { _ in }
    ) throws {
        self.authority = authority
        self.signIns = signIns
        self.middleware = middleware
        self.services = services
        self.secrets = secrets
        self.injections = injections
        self.requests = requests
        self.extraUpstreamRoots = try extraUpstreamRootsPEM.map { try NIOSSLCertificate.fromPEMBytes(Array($0.utf8)) } ?? []
    }
}

/// A middleware for the proxy: its script and the destinations it applies to.
public struct InterceptionMiddleware: Sendable {
    public var script: MiddlewareScript
    public var targets: [HostPattern]

    public init(script: MiddlewareScript, targets: [HostPattern]) {
        self.script = script
        self.targets = targets
    }
}

extension InterceptedConnection.UpstreamRequest {
    mutating func apply(_ edit: MiddlewareRun.RequestEdit) {
        path = edit.path
        headers.apply(edit.headers)
        if let body = edit.body { self.body = .fixed(body) }
    }
}

extension HTTPHeaders {
    /// Each name replaced by its value, or removed (nil).
    mutating func apply(_ edits: [String: String?]) {
        for (name, value) in edits.sorted(by: { $0.key < $1.key }) {
            remove(name: name)
            if let value { add(name: name, value: value) }
        }
    }
}

/// A middleware that failed (its script's error, a limit): the guest gets 502 naming both.
struct MiddlewareFailure: Error, CustomStringConvertible {
    var middleware: String
    var message: String
    var description: String { "the middleware \(middleware) failed: \(message)" }
}

/// One request through an intercepted connection, for the audit log: never a value, only
/// the names of the masked values put into it. The path is without its query (where tokens
/// travel).
public struct InterceptedRequest: Sendable, Equatable {
    public var method: String
    public var host: String
    public var path: String
    /// The answer's status (airlock's own when it answered: 403, 421, 501, 502); nil when the
    /// answer was cut off.
    public var status: Int?
    public var bytesUp: Int64 = 0
    public var bytesDown: Int64 = 0
    /// The masked values put into the request, by name.
    public var injected: [String] = []
    /// The middleware it went through, in order.
    public var middleware: [String] = []
    /// What airlock stopped, when it did (`security` names the event).
    public var stopped: String?
    public var security: String?
}

/// One intercepted connection: the name and port it was judged for and the address it was
/// allowed to reach. Requests naming another host get 421 (no domain fronting).
struct InterceptedConnection: Sendable {
    var name: String
    var port: Int
    var address: IPAddress
    var interception: Interception
    /// The rule that allowed the connection: its `inject` values go into the requests.
    var rule: String?
    var logger: Logger
    /// The middleware whose targets name this connection, in the configuration's order.
    let chain: [InterceptionMiddleware]
    /// The provider whose API host this is, if one is.
    let service: ServiceCredentials?

    init(name: String, port: Int, address: IPAddress, interception: Interception, rule: String?, logger: Logger) {
        self.name = name
        self.port = port
        self.address = address
        self.interception = interception
        self.rule = rule
        self.logger = logger
        chain = interception.middleware.filter { middleware in middleware.targets.contains { $0.matches(host: name, port: UInt16(port)) } }
        service = interception.services.first { $0.service.owns(host: name, port: port) }
    }

    var injected: [MaskedSecret] { rule.flatMap { interception.injections[$0] } ?? [] }

    /// What the guest's bytes go into (`Relay.glue`'s upstream): one end of a socket pair
    /// whose other end is served here until the connection ends.
    static func open(_ connection: InterceptedConnection, on loop: any EventLoop) async throws -> (guestSide: any Channel, served: Task<Void, Never>)
    {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw InterceptionError("socketpair: \(String(cString: strerror(errno)))")
        }
        let guestSide: any Channel
        do {
            guestSide = try await ClientBootstrap(group: loop)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.autoRead, value: false)
                .withConnectedSocket(fds[0]).get()
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        let leaf = try connection.interception.authority.leaf(for: connection.name)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: leaf.chain.map { .certificate($0) }, privateKey: .privateKey(leaf.key))
        tls.applicationProtocols = ["h2", "http/1.1"]
        let context = try NIOSSLContext(configuration: tls)
        let negotiated = loop.makePromise(of: Negotiated.self)
        let server: any Channel
        do {
            server = try await ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try channel.pipeline.syncOperations.addHandler(PlaintextRouter(negotiated, httpOnly: !connection.chain.isEmpty))
                    }
                }
                .withConnectedSocket(fds[1]).get()
        } catch {
            close(fds[1])
            guestSide.close(promise: nil)
            throw error
        }
        // Cancelled (the sandbox stops): the connection is closed, which ends what serves it.
        let served = Task {
            await withTaskCancellationHandler {
                do {
                    switch try await negotiated.futureResult.get() {
                    case .http1(let channel): await connection.serveHTTP1(channel)
                    case .http2(let multiplexer): await connection.serveHTTP2(multiplexer)
                    case .raw(let channel): await connection.relayRaw(channel)
                    }
                } catch {
                    connection.logger.debug("intercepted connection to \(connection.name) ended: \(error)")
                }
            } onCancel: {
                server.close(promise: nil)
            }
            try? await server.close()
        }
        return (guestSide, served)
    }

    // MARK: Requests

    func makeClient(on loop: any EventLoop) -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        if !interception.extraUpstreamRoots.isEmpty { tls.additionalTrustRoots = [.certificates(interception.extraUpstreamRoots)] }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10)), decompression: .disabled)
        configuration.dnsOverride = [name: address.description]
        // A failed connection (refused, an unverifiable certificate) is the guest's 502 at
        // once; its own client decides whether to try again.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .automatic
        return HTTPClient(eventLoopGroup: loop, configuration: configuration)
    }

    func serveHTTP1(_ channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        let client = makeClient(on: channel.channel.eventLoop)
        do {
            try await channel.executeThenClose { inbound, outbound in
                let parts = RequestParts(inbound.makeAsyncIterator())
                while let head = try await parts.nextHead() {
                    try await forward(head, parts, client: client, outbound: outbound)
                    try await parts.skipBody()
                    if !head.isKeepAlive { break }
                }
            }
        } catch {
            logger.debug("HTTP/1 connection to \(name): \(error)")
        }
        try? await client.shutdown()
    }

    func serveHTTP2(_ multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>>) async {
        let client = makeClient(on: MultiThreadedEventLoopGroup.singleton.next())
        await withDiscardingTaskGroup { group in
            do {
                for try await stream in multiplexer.inbound {
                    group.addTask {
                        try? await stream.executeThenClose { inbound, outbound in
                            let parts = RequestParts(inbound.makeAsyncIterator())
                            if let head = try await parts.nextHead() {
                                try await forward(head, parts, client: client, outbound: outbound)
                                try await parts.skipBody()
                            }
                        }
                    }
                }
            } catch {
                logger.debug("HTTP/2 connection to \(name): \(error)")
            }
        }
        try? await client.shutdown()
    }

    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
        "host",
    ]

    /// Whether a request's Host (or `:authority`) names this connection's name and port.
    func isForThisConnection(_ authority: String?) -> Bool {
        guard let authority, !authority.isEmpty else { return false }
        var host = Substring(authority)
        var port = 443
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") {
            guard let parsed = Int(host[host.index(after: colon)...]) else { return false }
            port = parsed
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        return host.lowercased() == name.lowercased() && port == self.port
    }

    /// Carries one request upstream, through the middleware whose targets name this
    /// connection, and its answer back. Throws when the answer was cut off (an upstream error
    /// mid-answer, or a real value in it): the connection (HTTP/1) or the stream (HTTP/2) then
    /// ends, so the program sees a broken answer, never a short one.
    func forward(
        _ head: NIOHTTP1.HTTPRequestHead, _ parts: RequestParts, client: HTTPClient, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        var record = InterceptedRequest(method: head.method.rawValue, host: name, path: String(head.uri.prefix { $0 != "?" }))
        defer { interception.requests(record) }
        func refuse(_ status: HTTPResponseStatus, _ text: String) async {
            record.status = Int(status.code)
            await answer(outbound, head, status, text)
        }
        guard isForThisConnection(head.headers.first(name: "host")) else {
            await refuse(
                .misdirectedRequest,
                "this connection was opened for \(name); a request for \(head.headers.first(name: "host") ?? "no host") needs its own connection")
            return
        }
        if head.headers.contains(name: "upgrade") {
            await refuse(
                .notImplemented,
                "airlock does not carry protocol upgrades (WebSocket) through an intercepted connection yet; add passthrough = true to the rule that allows \(name)"
            )
            return
        }
        // The leak check, on the request as the guest sent it: the VM never had a real value,
        // so one in its request came some other way.
        let watch = SecretScanner(interception.secrets)
        if let leaked = watch.find(in: head.uri) ?? head.headers.lazy.compactMap({ watch.find(in: $0.value) }).first {
            record.stopped = "the request carried the real value of \(leaked)"
            record.security = "security.secret-leak"
            await refuse(.forbidden, "the request carried the real value of \(leaked); airlock blocked it (recorded as a security event)")
            return
        }
        // A sign-in's token host: its token and revoke requests, handled here.
        if let signIns = interception.signIns, let owner = signIns.services.first(where: { $0.isTokenHost(name, port: port) }) {
            try await serveTokenEndpoint(head, parts, service: owner, signIns: signIns, client: client, outbound: outbound, record: &record)
            return
        }
        // A provider's API takes only the surrogates airlock gave this sandbox, and the access
        // tokens of its sign-ins.
        let signedIn = interception.signIns?.realTokens() ?? []
        let credentials = service.map { service in
            ServiceCredentials(service: service.service, tokens: service.tokens + (interception.signIns?.apiTokens(for: service.service.name) ?? []))
        }
        if let credentials, let foreign = head.headers.first(where: { credentials.verdict(header: $0.name, value: $0.value) == .refused }) {
            record.stopped = "its \(foreign.name) header held a credential airlock did not give this sandbox"
            record.security = "security.foreign-credential"
            await refuse(
                .unauthorized,
                "\(name) takes only the credentials airlock gives this sandbox; the request's \(foreign.name) header held another (recorded as a security event). To use your own, \(credentials.service.hint)"
            )
            return
        }
        let body = ScannedBody(parts, watch)
        var length: HTTPClientRequest.Body.Length?
        if let value = head.headers.first(name: "content-length").flatMap(Int64.init) {
            length = .known(value)
        } else if head.headers.contains(name: "transfer-encoding") {
            length = .unknown
        }
        var request = UpstreamRequest(
            method: head.method, path: head.uri, headers: HTTPHeaders(head.headers.filter { !Self.hopByHop.contains($0.name.lowercased()) }),
            body: .guest(body, length))
        request.given = head.headers
        request.credentials = credentials
        var answered = false
        do {
            var response: UpstreamResponse
            switch try await pass(request, through: chain[...], client: client, record: &record, hold: MiddlewareHold()) {
            case .denied(let middleware):
                record.stopped = "denied by the middleware \(middleware)"
                await refuse(.forbidden, "the middleware \(middleware) denied this request")
                return
            case .response(let answer):
                response = answer
            }
            if let signIns = interception.signIns, let service = credentials?.service, head.method == .POST,
                service.signIn?.keyPaths.contains(String(head.uri.prefix { $0 != "?" })) == true
            {
                response = try await keepingKeys(response, service: service, signIns: signIns)
            }
            // A service's API may echo the token it was sent: the VM sees the surrogate.
            var scanner = SecretScanner(response.scanFor + signedIn, swapping: interception.services.flatMap(\.tokens) + signedIn)
            var headers = HTTPHeaders()
            for (field, value) in response.headers where !Self.hopByHop.contains(field.lowercased()) {
                let value = scanner.swapped(value)
                if let reflected = scanner.find(in: value) {
                    record.stopped = "the answer's \(field) header carried the real value of \(reflected)"
                    record.security = "security.secret-reflected"
                    await refuse(.badGateway, "\(name)'s answer carried the real value of \(reflected); airlock kept it from the VM")
                    return
                }
                headers.add(name: field, value: value)
            }
            if case .fixed(let bytes) = response.body { headers.replaceOrAdd(name: "content-length", value: "\(bytes.count)") }
            record.status = Int(response.status.code)
            try await outbound.write(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers)))
            answered = true
            func deliver(_ chunk: ByteBuffer) async throws {
                let out: ByteBuffer
                do {
                    out = try scanner.pass(chunk)
                } catch {
                    record.stopped = "the answer's body carried the real value of \(error.name)"
                    record.security = "security.secret-reflected"
                    throw error
                }
                record.bytesDown += Int64(chunk.readableBytes)
                if out.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(out))) }
            }
            switch response.body {
            case .stream(let chunks):
                for try await chunk in chunks { try await deliver(chunk) }
            case .fixed(let bytes):
                if !bytes.isEmpty { try await deliver(ByteBuffer(bytes: bytes)) }
            }
            let rest = scanner.finish()
            if rest.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(rest))) }
            try await outbound.write(.end(nil))
        } catch {
            record.bytesUp = body.bytes
            if let leaked = body.leaked {
                record.stopped = "the request's body carried the real value of \(leaked)"
                record.security = "security.secret-leak"
            }
            guard !answered else {
                if record.stopped == nil { record.stopped = "the answer broke off: \(error)" }
                record.status = nil
                throw error
            }
            if let leaked = body.leaked {
                await refuse(
                    .forbidden, "the request's body carried the real value of \(leaked); airlock blocked it (recorded as a security event)"
                )
            } else if let failure = error as? MiddlewareFailure {
                record.stopped = failure.description
                await refuse(.badGateway, failure.description)
            } else if let refusal = error as? InterceptionError {
                record.stopped = refusal.message
                await refuse(.badGateway, refusal.message)
            } else {
                await refuse(.badGateway, "cannot reach \(name): \(error)")
            }
            return
        }
        record.bytesUp = body.bytes
    }

    // MARK: Middleware

    enum Outcome {
        case denied(String)
        case response(UpstreamResponse)
    }

    struct UpstreamRequest {
        enum Body {
            /// The guest's, as it streams (nil length: none).
            case guest(ScannedBody, HTTPClientRequest.Body.Length?)
            case fixed([UInt8])
        }
        var method: HTTPMethod
        /// With its query.
        var path: String
        var headers: HTTPHeaders
        var body: Body
        /// The headers as the guest sent them.
        var given = HTTPHeaders()
        /// The provider's surrogates this request's credential headers may hold.
        var credentials: ServiceCredentials?
    }

    struct UpstreamResponse {
        enum Body {
            case stream(HTTPClientResponse.Body)
            case fixed([UInt8])
        }
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: Body
        /// The real values the answer must not carry back: every masked value, and what the
        /// middleware put into the request.
        var scanFor: [MaskedSecret]
    }

    /// `request` through `chain`'s first script, which may send it on (the rest of the chain,
    /// then upstream), change it or its answer, or deny it; without a script, upstream.
    func pass(
        _ request: UpstreamRequest, through chain: ArraySlice<InterceptionMiddleware>, client: HTTPClient, record: inout InterceptedRequest,
        hold: MiddlewareHold
    ) async throws -> Outcome {
        guard let middleware = chain.first else { return .response(try await send(request, client: client, record: &record)) }
        let script = middleware.script
        func failure(_ message: String) -> MiddlewareFailure { MiddlewareFailure(middleware: script.name, message: message) }
        var request = request
        var response: UpstreamResponse?
        record.middleware.append(script.name)
        let run: MiddlewareRun
        do {
            run = try MiddlewareRun(
                script, method: request.method.rawValue, path: request.path, host: name, headers: request.headers.map { ($0.name, $0.value) })
        } catch {
            throw failure(error.message)
        }
        var logged = 0
        var step = run.resume(.start)
        while true {
            switch step {
            case .log(let line):
                logged += 1
                if logged <= Self.logLinesPerRequest { logger.info("middleware \(script.name) (\(name)): \(line)") }
                step = run.resume(.logged)
            case .hostMatches(let text):
                do {
                    step = run.resume(.matches(try HostPattern(parsing: text).matches(host: name, port: UInt16(port))))
                } catch {
                    step = run.resume(.refusal("hostMatches: \(error.description)"))
                }
            case .needsBody(response: false):
                let bytes: [UInt8]
                switch request.body {
                case .fixed(let fixed):
                    bytes = fixed
                case .guest(let body, _):
                    bytes = try await Self.collect(body, hold: hold, failure: failure)
                    request.body = .fixed(bytes)
                }
                step = run.resume(.body(bytes))
            case .needsBody(response: true):
                guard var answered = response else { throw failure("res:body() before send()") }
                let bytes: [UInt8]
                switch answered.body {
                case .fixed(let fixed):
                    bytes = fixed
                case .stream(let chunks):
                    bytes = try await Self.collect(chunks, hold: hold, failure: failure)
                    answered.body = .fixed(bytes)
                    response = answered
                }
                step = run.resume(.body(bytes))
            case .send(let edit):
                request.apply(edit)
                switch try await pass(request, through: chain.dropFirst(), client: client, record: &record, hold: hold) {
                case .denied(let who):
                    return .denied(who)
                case .response(let answered):
                    response = answered
                    step = run.resume(.response(status: Int(answered.status.code), headers: answered.headers.map { ($0.name, $0.value) }))
                }
            case .deny:
                return .denied(script.name)
            case .failed(let message):
                throw failure(message)
            case .done(let edit, let responseEdit):
                guard var response else {
                    request.apply(edit)
                    return try await pass(request, through: chain.dropFirst(), client: client, record: &record, hold: hold)
                }
                if let responseEdit {
                    response.status = HTTPResponseStatus(statusCode: responseEdit.status)
                    response.headers.apply(responseEdit.headers)
                    if let body = responseEdit.body { response.body = .fixed(body) }
                }
                return .response(response)
            }
        }
    }

    static let logLinesPerRequest = 100

    /// The whole of a body a script reads: at most `MiddlewareRun.bodyLimit`, each byte
    /// reserved in `hold` first.
    static func collect<Chunks: AsyncSequence>(_ chunks: Chunks, hold: MiddlewareHold, failure: (String) -> MiddlewareFailure) async throws
        -> [UInt8] where Chunks.Element == ByteBuffer
    {
        var bytes: [UInt8] = []
        for try await chunk in chunks {
            guard bytes.count + chunk.readableBytes <= MiddlewareRun.bodyLimit else {
                throw failure("the body is larger than the \(MiddlewareRun.bodyLimit >> 20) MiB a script may read")
            }
            guard hold.reserve(chunk.readableBytes) else {
                throw failure("middleware holds \(MiddlewareMemory.limit >> 20) MiB already (other requests' bodies and scripts); try again")
            }
            bytes += chunk.readableBytesView
        }
        return bytes
    }

    /// The request upstream: masked values put back where this connection's rule injects
    /// them; plain bytes asked for when the answer will be scanned.
    func send(_ request: UpstreamRequest, client: HTTPClient, record: inout InterceptedRequest) async throws -> UpstreamResponse {
        var outgoing = HTTPClientRequest(url: "https://\(name)\(port == 443 ? "" : ":\(port)")\(request.path)")
        outgoing.method = request.method
        var scanFor = interception.secrets
        // What a script put into the request (an env value the guest did not send) must not
        // come back either. Every script of the chain has run by now.
        for middleware in chain {
            for (variable, value) in middleware.script.environment.sorted(by: { $0.key < $1.key })
            where value.utf8.count >= MaskedSecret.minimumReplaced {
                let sent = request.headers.contains { $0.value.contains(value) }
                if sent, !request.given.contains(where: { $0.value.contains(value) }) {
                    scanFor.append(MaskedSecret(name: "\(middleware.script.name).env.\(variable)", value: value))
                    record.injected.append("\(middleware.script.name).env.\(variable)")
                }
            }
        }
        for (field, value) in request.headers {
            var value = value
            if let credentials = request.credentials, case .real(let real, let token) = credentials.verdict(header: field, value: value) {
                value = real
                if !record.injected.contains(token) { record.injected.append(token) }
            }
            for secret in injected where value.contains(secret.surrogate) {
                value = value.replacing(secret.surrogate, with: secret.value)
                if !record.injected.contains(secret.name) { record.injected.append(secret.name) }
            }
            outgoing.headers.add(name: field, value: value)
        }
        // Answers are scanned as they stream: plain bytes, please.
        if !scanFor.isEmpty { outgoing.headers.replaceOrAdd(name: "accept-encoding", value: "identity") }
        switch request.body {
        case .guest(let body, let length):
            if let length { outgoing.body = .stream(body, length: length) }
        case .fixed(let bytes):
            outgoing.body = .bytes(ByteBuffer(bytes: bytes))
        }
        let response = try await client.execute(outgoing, timeout: .hours(1))
        if !scanFor.isEmpty, let encoding = response.headers.first(name: "content-encoding"), encoding.lowercased() != "identity" {
            throw InterceptionError(
                "\(name) answered with content-encoding \(encoding) although asked for none; airlock cannot check it for masked values")
        }
        return UpstreamResponse(status: response.status, headers: response.headers, body: .stream(response.body), scanFor: scanFor)
    }

    func answer(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, _ request: NIOHTTP1.HTTPRequestHead, _ status: HTTPResponseStatus,
        _ text: String
    ) async {
        let body = "airlock: \(text)\n"
        let headers: HTTPHeaders = [
            "content-type": "text/plain; charset=utf-8", "content-length": "\(body.utf8.count)",
            "x-airlock-reason": DenialPage.headerValue(text),
        ]
        try? await outbound.write(.head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
        try? await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
        try? await outbound.write(.end(nil))
    }

    // MARK: Not HTTP

    /// TLS that does not carry HTTP: the same bytes over a new TLS connection to the upstream,
    /// verified like any other.
    func relayRaw(_ guest: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        do {
            var tls = TLSConfiguration.makeClientConfiguration()
            if !interception.extraUpstreamRoots.isEmpty { tls.additionalTrustRoots = [.certificates(interception.extraUpstreamRoots)] }
            let context = try NIOSSLContext(configuration: tls)
            let serverName = name
            let upstream = try await ClientBootstrap(group: guest.channel.eventLoop)
                .connectTimeout(.seconds(10))
                .connect(to: try SocketAddress(ipAddress: address.description, port: port)) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            try await guest.executeThenClose { guestIn, guestOut in
                try await upstream.executeThenClose { upIn, upOut in
                    // TLS has no half-close worth keeping (a close_notify ends the
                    // connection for most peers): when one side ends, both do.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await bytes in guestIn { try await upOut.write(bytes) }
                        }
                        group.addTask {
                            for try await bytes in upIn { try await guestOut.write(bytes) }
                        }
                        defer { group.cancelAll() }
                        try await group.next()
                    }
                }
            }
        } catch {
            logger.debug("relay of non-HTTP TLS to \(name): \(error)")
        }
    }
}

/// The request parts of one connection (HTTP/1) or stream (HTTP/2), read by one task at a
/// time: the request loop, then the upstream client reading the body it forwards.
final class RequestParts: @unchecked Sendable {
    private var iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator
    private var inBody = false

    init(_ iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator) {
        self.iterator = iterator
    }

    func nextHead() async throws -> NIOHTTP1.HTTPRequestHead? {
        while let part = try await iterator.next() {
            if case .head(let head) = part {
                inBody = true
                return head
            }
        }
        return nil
    }

    /// The rest of the current request's body.
    func skipBody() async throws {
        while inBody, let part = try await iterator.next() {
            if case .end = part { inBody = false }
        }
    }

    func nextChunk() async throws -> ByteBuffer? {
        while inBody, let part = try await iterator.next() {
            switch part {
            case .body(let bytes): return bytes
            case .end: inBody = false
            case .head: throw InterceptionError("a request began inside another's body")
            }
        }
        return nil
    }

}

/// A request's body as it goes upstream: counted, and searched for masked values' real ones
/// (the leak check; a hit fails the upstream request). Read by one task at a time.
final class ScannedBody: AsyncSequence, @unchecked Sendable {
    typealias Element = ByteBuffer
    private let parts: RequestParts
    private var scanner: SecretScanner
    private var finished = false
    private(set) var bytes: Int64 = 0
    private(set) var leaked: String?

    init(_ parts: RequestParts, _ scanner: SecretScanner) {
        self.parts = parts
        self.scanner = scanner
    }

    func next() async throws -> ByteBuffer? {
        while !finished {
            guard let chunk = try await parts.nextChunk() else {
                finished = true
                let rest = scanner.finish()
                return rest.readableBytes > 0 ? rest : nil
            }
            bytes += Int64(chunk.readableBytes)
            do {
                let out = try scanner.pass(chunk)
                if out.readableBytes > 0 { return out }
            } catch {
                leaked = error.name
                throw error
            }
        }
        return nil
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let body: ScannedBody
        mutating func next() async throws -> ByteBuffer? { try await body.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}

enum Negotiated {
    case http1(NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>)
    case http2(NIOHTTP2Handler.AsyncStreamMultiplexer<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>>)
    case raw(NIOAsyncChannel<ByteBuffer, ByteBuffer>)
}

/// After the handshake: HTTP/2 when ALPN chose it, else HTTP/1 when the first bytes are an
/// HTTP request head, else raw bytes. Installs what was chosen behind itself, hands the bytes
/// it held on, and leaves.
final class PlaintextRouter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<Negotiated>
    /// Middleware applies: only HTTP is carried (a script must see every request), and the
    /// guest is waited for however long it takes to speak.
    private let httpOnly: Bool
    private var held = ByteBuffer()
    private var decided = false
    private var timer: Scheduled<Void>?

    init(_ promise: EventLoopPromise<Negotiated>, httpOnly: Bool) {
        self.promise = promise
        self.httpOnly = httpOnly
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            if negotiated == "h2" {
                decide(context) {
                    .http2(
                        try context.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: stream)
                            }
                        })
                }
            } else if !httpOnly {
                // A protocol whose server speaks first sends nothing: raw after a moment.
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                timer = context.eventLoop.scheduleTask(in: .milliseconds(300)) { bound.value.0.decideRaw(bound.value.1) }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        held.writeBuffer(&bytes)
        switch Sniffed.sniff(Array(held.readableBytesView.prefix(Sniffed.limit))) {
        case .needMore where held.readableBytes < Sniffed.limit:
            return
        case .http:
            decide(context) {
                try context.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                return .http1(try NIOAsyncChannel(wrappingChannelSynchronously: context.channel))
            }
        default:
            guard !httpOnly else {
                decided = true
                promise.fail(InterceptionError("the connection did not carry HTTP, and middleware applies to it"))
                context.close(promise: nil)
                return
            }
            decideRaw(context)
        }
    }

    private func decideRaw(_ context: ChannelHandlerContext) {
        decide(context) { .raw(try NIOAsyncChannel(wrappingChannelSynchronously: context.channel)) }
    }

    private func decide(_ context: ChannelHandlerContext, _ make: () throws -> Negotiated) {
        guard !decided else { return }
        decided = true
        timer?.cancel()
        do {
            promise.succeed(try make())
        } catch {
            promise.fail(error)
            context.close(promise: nil)
            return
        }
        if held.readableBytes > 0 {
            context.fireChannelRead(NIOAny(held))
            context.fireChannelReadComplete()
            held = ByteBuffer()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !decided {
            decided = true
            timer?.cancel()
            promise.fail(InterceptionError("the guest closed the connection before it sent anything"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !decided {
            decided = true
            timer?.cancel()
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }
}
