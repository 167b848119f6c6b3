import AsyncHTTPClient
import FoundationEssentials
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// What `GET /images/{name}/json` says about an image (the fields airlock uses).
public struct DockerImage: Sendable, Decodable, Equatable {
    /// `sha256:…`: the config's digest (classic store) or the image index's (containerd store).
    public var id: String
    public var repoTags: [String]?
    public var repoDigests: [String]?
    public var os: String?
    public var architecture: String?
    public var variant: String?
    /// Uncompressed bytes of the layers (a progress estimate, nothing is checked against it).
    public var size: Int64?

    enum CodingKeys: String, CodingKey {
        case id = "Id", repoTags = "RepoTags", repoDigests = "RepoDigests", os = "Os", architecture = "Architecture", variant = "Variant", size =
            "Size"
    }
}

/// A client of the Docker Engine API on its Unix socket: `GET /_ping`, `GET /images/{name}/json`
/// and `GET /images/{name}/get` (the `docker save` tarball, streamed). AsyncHTTPClient speaks
/// HTTP/1.1 over the socket (`http+unix://`).
///
/// The daemon is a local, root-owned service, but what it sends is treated like a registry's:
/// bounded sizes, strict JSON, and the archive goes through `DockerArchive` and the layer
/// extractor's checks.
public final class DockerDaemonClient: Sendable {
    public let socketPath: String
    let http: HTTPClient
    let logger: Logger

    public static let defaultSocket = "/var/run/docker.sock"

    /// The socket airlock uses: `$DOCKER_HOST` when it is `unix://PATH`, else the default.
    /// Another `DOCKER_HOST` (tcp://, ssh://) is an error: airlock only reads a local socket.
    public static func socketPath(environment: [String: String]) throws(OCIError) -> String {
        guard let host = environment["DOCKER_HOST"], !host.isEmpty else { return defaultSocket }
        guard host.hasPrefix("unix://"), host.count > 7 else {
            throw OCIError(
                .transport, "DOCKER_HOST=\(host.prefix(200)) is not a Unix socket; airlock reads images only from a local daemon's socket",
                hint: "set DOCKER_HOST=unix:///path/to/docker.sock, unset it for \(defaultSocket), or use [vm] resolution = \"registry\"")
        }
        return String(host.dropFirst(7))
    }

    public init(socketPath: String, logger: Logger = Logger(label: "airlock.oci")) {
        self.socketPath = socketPath
        self.logger = logger
        let configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(5), read: .seconds(120)),
            decompression: .disabled)
        http = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    func url(_ path: String) -> String {
        "http+unix://" + RegistryClient.percentEncode(socketPath) + path
    }

    /// The daemon's answer on `/images/…` for `reference` (`docker.io/library/debian:bookworm`);
    /// the daemon normalizes names as `docker` does.
    static func imagePath(_ reference: ImageReference) -> String {
        "/images/" + reference.description
    }

    func get(_ path: String, deadline: Duration) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: url(path))
        request.headers.add(name: "User-Agent", value: "airlock/0.1")
        // A Unix socket has no host name; Docker wants some Host header.
        request.headers.add(name: "Host", value: "docker")
        do {
            return try await http.execute(request, deadline: .now() + .nanoseconds(Int64(deadline.components.seconds) * 1_000_000_000))
        } catch {
            throw OCIError(.transport, "the Docker daemon at \(socketPath) does not answer \(path)", cause: error, hint: Self.startHint(socketPath))
        }
    }

    public static func startHint(_ socket: String) -> String {
        "start the daemon (`sudo systemctl start docker`), point DOCKER_HOST at its socket (unix:///path/docker.sock), "
            + "make \(socket) accessible to you (the docker group), or read images from their registry with [vm] resolution = \"registry\" / `--from registry`"
    }

    /// Whether a Docker daemon answers `GET /_ping` on the socket (quickly: auto-resolution asks
    /// on every pull). The reason when it does not.
    public func ping(timeout: Duration = .seconds(3)) async -> String? {
        var info = stat()
        guard stat(socketPath, &info) == 0 else { return "\(socketPath) does not exist" }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else { return "\(socketPath) is not a socket" }
        guard access(socketPath, R_OK | W_OK) == 0 else { return "\(socketPath) is not accessible to this user" }
        do {
            let response = try await get("/_ping", deadline: timeout)
            let body = try await response.body.collect(upTo: 4096)
            guard response.status.code == 200 else { return "\(socketPath) answered HTTP \(response.status.code) to /_ping" }
            guard String(buffer: body).hasPrefix("OK") else {
                return "\(socketPath) is not a Docker daemon (its /_ping says \(String(buffer: body).prefix(40).debugDescription))"
            }
            return nil
        } catch let error as OCIError {
            return error.message
        } catch {
            return "\(socketPath): \(error)"
        }
    }

    /// `GET /images/{name}/json`; nil when the daemon has no such image (404).
    public func inspect(_ reference: ImageReference) async throws -> DockerImage? {
        let response = try await get(Self.imagePath(reference) + "/json", deadline: .seconds(30))
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: 4 << 20) } catch {
            throw OCIError(.manifest, "the Docker daemon's description of \(reference) is larger than 4 MiB or broke off", cause: error)
        }
        switch response.status.code {
        case 200:
            do {
                let image = try JSONDecoder().decode(DockerImage.self, from: Data(body.readableBytesView))
                _ = try Digest(parsing: image.id)
                return image
            } catch {
                throw OCIError(.manifest, "the Docker daemon's description of \(reference) is not what the Engine API documents", cause: error)
            }
        case 404:
            return nil
        default:
            throw OCIError(.status, "the Docker daemon answered HTTP \(response.status.code) for \(reference): \(Self.message(body))")
        }
    }

    /// `GET /images/{id}/get`: the `docker save` tarball, its bytes handed to `consume` as
    /// they arrive (at most `limit` in all).
    func export(_ id: String, reference: ImageReference, limit: Int64, consume: (ByteBuffer) async throws -> Void) async throws {
        let response = try await get("/images/\(id)/get", deadline: .seconds(120))
        guard response.status.code == 200 else {
            let body = try? await response.body.collect(upTo: 64 << 10)
            throw OCIError(
                .status, "the Docker daemon answered HTTP \(response.status.code) to exporting \(reference): \(body.map(Self.message) ?? "")")
        }
        var total: Int64 = 0
        var body = response.body.makeAsyncIterator()
        while true {
            let next: ByteBuffer?
            do { next = try await body.next() } catch {
                throw OCIError(
                    .transport, "reading \(reference) from the Docker daemon broke off after \(total) bytes", cause: error, hint: "try again")
            }
            guard let chunk = next else { return }
            total += Int64(chunk.readableBytes)
            guard total <= limit else {
                throw OCIError(.hostileLayer, "the Docker daemon's archive of \(reference) is larger than \(limit >> 30) GiB; refused")
            }
            try await consume(chunk)
        }
    }

    static func message(_ body: ByteBuffer) -> String {
        struct Message: Decodable { var message: String }
        if let decoded = try? JSONDecoder().decode(Message.self, from: Data(body.readableBytesView)) { return String(decoded.message.prefix(300)) }
        return String(String(buffer: body).prefix(300))
    }
}
