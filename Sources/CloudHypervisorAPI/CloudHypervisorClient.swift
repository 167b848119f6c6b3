// FoundationEssentials, not Foundation: the JSON coders without ICU (tens of MB in a static binary).
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOPosix

/// Cloud Hypervisor's REST API over its `--api-socket` Unix socket: HTTP/1.1, one connection
/// per request, JSON bodies. One method per endpoint airlock uses, each naming its verb and
/// path (`/api/v1/…`, see `cloud-hypervisor-openapi.yaml`).
///
/// Every request has a deadline (`timeout`, connect included) and a cap on the answer's size.
/// Bodies always go with `Content-Length`, a bodyless PUT with `Content-Length: 0`: CH does not
/// accept chunked requests.
public struct CloudHypervisorClient: Sendable {
    public let socketPath: String
    public var timeout: Duration
    public var responseLimit: Int
    private let group: any EventLoopGroup

    public init(
        socketPath: String, timeout: Duration = .seconds(10), responseLimit: Int = 1 << 20,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.socketPath = socketPath
        self.timeout = timeout
        self.responseLimit = responseLimit
        self.group = group
    }

    /// A verb and a path of the API.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public var method: HTTPMethod
        public var path: String

        public var description: String { "\(method.rawValue) \(path)" }

        public static let vmmPing = Endpoint(method: .GET, path: "/api/v1/vmm.ping")
        public static let vmmShutdown = Endpoint(method: .PUT, path: "/api/v1/vmm.shutdown")
        public static let vmCreate = Endpoint(method: .PUT, path: "/api/v1/vm.create")
        public static let vmBoot = Endpoint(method: .PUT, path: "/api/v1/vm.boot")
        public static let vmInfo = Endpoint(method: .GET, path: "/api/v1/vm.info")
        public static let vmShutdown = Endpoint(method: .PUT, path: "/api/v1/vm.shutdown")
        public static let vmDelete = Endpoint(method: .PUT, path: "/api/v1/vm.delete")
        public static let vmPause = Endpoint(method: .PUT, path: "/api/v1/vm.pause")
        public static let vmResume = Endpoint(method: .PUT, path: "/api/v1/vm.resume")
        public static let vmAddFs = Endpoint(method: .PUT, path: "/api/v1/vm.add-fs")
        public static let vmAddDisk = Endpoint(method: .PUT, path: "/api/v1/vm.add-disk")
        public static let vmResize = Endpoint(method: .PUT, path: "/api/v1/vm.resize")
    }

    // MARK: - Endpoints

    /// `GET /api/v1/vmm.ping`: the VMM answers once its API server runs (readiness).
    public func ping() async throws(CloudHypervisorError) -> VmmPingResponse {
        try decode(VmmPingResponse.self, from: await send(.vmmPing), endpoint: .vmmPing)
    }

    /// `PUT /api/v1/vm.create` (body `VmConfig`): creates the VM without booting it.
    public func createVM(_ config: VmConfig) async throws(CloudHypervisorError) {
        _ = try await send(.vmCreate, body: encode(config, endpoint: .vmCreate))
    }

    /// `PUT /api/v1/vm.boot`: boots the created VM. Most configuration errors surface here.
    public func bootVM() async throws(CloudHypervisorError) {
        _ = try await send(.vmBoot)
    }

    /// `GET /api/v1/vm.info`: the VM's state.
    public func vmInfo() async throws(CloudHypervisorError) -> VmInfo {
        try decode(VmInfo.self, from: await send(.vmInfo), endpoint: .vmInfo)
    }

    /// `PUT /api/v1/vm.shutdown`: stops the VM (the VMM stays).
    public func shutdownVM() async throws(CloudHypervisorError) {
        _ = try await send(.vmShutdown)
    }

    /// `PUT /api/v1/vm.delete`: forgets the VM (the VMM stays).
    public func deleteVM() async throws(CloudHypervisorError) {
        _ = try await send(.vmDelete)
    }

    /// `PUT /api/v1/vm.pause`: stops the VM's vCPUs (its memory and devices stay).
    public func pauseVM() async throws(CloudHypervisorError) {
        _ = try await send(.vmPause)
    }

    /// `PUT /api/v1/vm.resume`: runs a paused VM again.
    public func resumeVM() async throws(CloudHypervisorError) {
        _ = try await send(.vmResume)
    }

    /// `PUT /api/v1/vmm.shutdown`: ends the cloud-hypervisor process.
    public func shutdownVMM() async throws(CloudHypervisorError) {
        _ = try await send(.vmmShutdown)
    }

    /// `PUT /api/v1/vm.add-fs` (body `FsConfig`): adds a virtio-fs device. The device's PCI
    /// info when the VM runs (200), nil when it was added to a VM not yet booted (204).
    @discardableResult
    public func addFs(_ fs: FsConfig) async throws(CloudHypervisorError) -> PciDeviceInfo? {
        let answer = try await send(.vmAddFs, body: encode(fs, endpoint: .vmAddFs))
        return answer.isEmpty ? nil : try decode(PciDeviceInfo.self, from: answer, endpoint: .vmAddFs)
    }

    /// `PUT /api/v1/vm.add-disk` (body `DiskConfig`): adds a disk; as `addFs` for the answer.
    @discardableResult
    public func addDisk(_ disk: DiskConfig) async throws(CloudHypervisorError) -> PciDeviceInfo? {
        let answer = try await send(.vmAddDisk, body: encode(disk, endpoint: .vmAddDisk))
        return answer.isEmpty ? nil : try decode(PciDeviceInfo.self, from: answer, endpoint: .vmAddDisk)
    }

    /// `PUT /api/v1/vm.resize` (body `VmResize`): changes vCPUs, memory or the balloon.
    public func resize(_ resize: VmResize) async throws(CloudHypervisorError) {
        _ = try await send(.vmResize, body: encode(resize, endpoint: .vmResize))
    }

    // MARK: - The exchange

    /// One request on a new connection; the body of a 2xx answer.
    public func send(_ endpoint: Endpoint, body: [UInt8]? = nil) async throws(CloudHypervisorError) -> [UInt8] {
        let response: Response
        do {
            response = try await exchange(endpoint, body: body).get()
        } catch let error as CloudHypervisorError {
            throw error
        } catch {
            throw .transport(endpoint: endpoint.description, .dropped(reason: "\(error)"))
        }
        guard (200..<300).contains(response.status) else {
            throw .http(endpoint: endpoint.description, status: response.status, messages: Self.messages(in: response.body))
        }
        return response.body
    }

    struct Response: Sendable {
        var status: Int
        var body: [UInt8]
    }

    private func exchange(_ endpoint: Endpoint, body: [UInt8]?) -> EventLoopFuture<Response> {
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: Response.self)
        let limit = responseLimit
        let name = endpoint.description
        let socket = socketPath
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let deadline = NIODeadline.now() + .nanoseconds(nanoseconds)

        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(nanoseconds))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, limit: limit, endpoint: name))
                }
            }
            .connect(unixDomainSocketPath: socket)

        connected.whenFailure { error in
            promise.fail(CloudHypervisorError.transport(endpoint: name, .connect(socket: socket, reason: Self.describe(error))))
        }
        connected.whenSuccess { channel in
            let timer = channel.eventLoop.scheduleTask(deadline: deadline) {
                promise.fail(CloudHypervisorError.transport(endpoint: name, .timeout(timeout)))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in
                timer.cancel()
                channel.close(promise: nil)
            }
            var head = HTTPRequestHead(version: .http1_1, method: endpoint.method, uri: endpoint.path)
            head.headers.add(name: "Host", value: "localhost")
            head.headers.add(name: "Accept", value: "application/json")
            if let body {
                head.headers.add(name: "Content-Type", value: "application/json")
                head.headers.add(name: "Content-Length", value: String(body.count))
            } else if endpoint.method != .GET {
                head.headers.add(name: "Content-Length", value: "0")
            }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body, !body.isEmpty {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { error in
                promise.fail(CloudHypervisorError.transport(endpoint: name, .dropped(reason: Self.describe(error))))
            }
        }
        return promise.futureResult
    }

    /// CH's error body: a JSON array of strings; anything else is kept as one message.
    static func messages(in body: [UInt8]) -> [String] {
        if let list = try? JSONDecoder().decode([String].self, from: Data(body)) { return list }
        let text = String(decoding: body.prefix(4096), as: UTF8.self)
        let trimmed = text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()
        return trimmed.isEmpty ? [] : [String(trimmed)]
    }

    private func encode(_ value: some Encodable, endpoint: Endpoint) throws(CloudHypervisorError) -> [UInt8] {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return [UInt8](try encoder.encode(value))
        } catch {
            throw .decoding(endpoint: endpoint.description, reason: "cannot encode the request: \(error)")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from body: [UInt8], endpoint: Endpoint) throws(CloudHypervisorError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch {
            let excerpt = String(decoding: body.prefix(200), as: UTF8.self)
            throw .decoding(endpoint: endpoint.description, reason: "\(error) in \(excerpt.debugDescription)")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return error.description }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout: return "connect timed out"
            case .ioOnClosedChannel, .alreadyClosed, .outputClosed: return "the connection was closed"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}

/// Collects one HTTP answer into `promise`, bounded by `limit`. Lives on its channel's event
/// loop only (NIO calls handlers there), so it needs no locking.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<CloudHypervisorClient.Response>
    private let limit: Int
    private let endpoint: String
    private var status: Int?
    private var body: [UInt8] = []
    private var done = false

    init(promise: EventLoopPromise<CloudHypervisorClient.Response>, limit: Int, endpoint: String) {
        self.promise = promise
        self.limit = limit
        self.endpoint = endpoint
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(let bytes):
            guard body.count + bytes.readableBytes <= limit else {
                fail(.responseTooLarge(limit: limit), context)
                return
            }
            body += bytes.readableBytesView
        case .end:
            done = true
            if let status {
                promise.succeed(.init(status: status, body: body))
            } else {
                promise.fail(CloudHypervisorError.transport(endpoint: endpoint, .dropped(reason: "an answer without a status line")))
            }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { fail(.dropped(reason: status == nil ? "closed before answering" : "closed in the middle of the answer"), context) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { fail(.dropped(reason: CloudHypervisorClient.describe(error)), context) }
    }

    private func fail(_ failure: CloudHypervisorError.TransportFailure, _ context: ChannelHandlerContext) {
        done = true
        promise.fail(CloudHypervisorError.transport(endpoint: endpoint, failure))
        context.close(promise: nil)
    }
}
