import AirlockSystem
import CShim
import Foundation
import Sandbox
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Debian's `docker-registry` (the distribution project's registry) on 127.0.0.1 with its
/// storage in a temporary directory, started and killed by the test.
public final class TestRegistry: @unchecked Sendable {
    // @unchecked: `pid` changes only in start/stop, which a test calls from its own task in
    // sequence; nothing shares a TestRegistry across tasks.
    public static let binary = "/usr/bin/docker-registry"
    public static var available: Bool {
        FileManager.default.isExecutableFile(atPath: binary) && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    }
    public static let skipReason: Comment = "needs Debian's docker-registry and python3 (`make deps` installs them)"
    public static var fixtures: URL { TestFixtures.directory }

    public let directory: URL
    public let port: Int
    public let credentials: (user: String, password: String)?
    private(set) var pid: pid_t = 0

    public var host: String { "127.0.0.1:\(port)" }

    public init(credentials: (user: String, password: String)? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-registry-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        port = try Self.freePort()
        self.credentials = credentials
        var auth = ""
        if let credentials {
            let result = try Spawned.run(
                ["/usr/bin/htpasswd", "-Bbn", credentials.user, credentials.password], directory: directory.path, environment: [:], stdin: nil,
                timeout: 60)
            guard result.status == 0 else { throw Spawned.Failure(description: "htpasswd failed: \(String(decoding: result.stderr, as: UTF8.self))") }
            try Data(result.stdout).write(to: directory.appendingPathComponent("htpasswd"))
            auth = "auth:\n  htpasswd:\n    realm: airlock-test\n    path: \(directory.path)/htpasswd\n"
        }
        let config = """
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(directory.path)/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
            \(auth)
            """
        try config.write(to: directory.appendingPathComponent("config.yml"), atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    public func start() throws {
        let log = open(directory.appendingPathComponent("registry.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(log) }
        let arguments = [Self.binary, "serve", directory.appendingPathComponent("config.yml").path]
        let started = withCStrings(arguments) { argv in
            withCStrings(["PATH=/usr/bin:/bin"]) { envp in
                airlock_spawn(Self.binary, argv, envp, -1, log, log, Int32(AIRLOCK_SPAWN_PDEATHSIG))
            }
        }
        guard started > 0 else { throw Spawned.Failure(description: "cannot start docker-registry: \(String(cString: strerror(-started)))") }
        pid = started
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if Self.canConnect(port) { return }
            usleep(50_000)
        }
        stop()
        throw Spawned.Failure(
            description:
                "docker-registry did not listen on \(port) within 15 s: \((try? String(contentsOf: directory.appendingPathComponent("registry.log"), encoding: .utf8)) ?? "")"
        )
    }

    /// Kills it at once (as a crash or a network cut would look to a client).
    public func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        pid = 0
    }

    public struct Pushed: Decodable {
        public var manifest: String
        public var layers: [String]
        public var config: String
        public var index: String?
    }

    /// Builds and pushes an image described as `Fixtures/testimage.py` reads it.
    @discardableResult
    public func push(_ repository: String, tag: String = "latest", _ description: [String: Any]) throws -> Pushed {
        var spec = description
        spec["registry"] = host
        spec["repository"] = repository
        spec["tag"] = tag
        if let credentials { spec["auth"] = [credentials.user, credentials.password] }
        let input = try JSONSerialization.data(withJSONObject: spec)
        let result = try Spawned.run(
            ["/usr/bin/python3", Self.fixtures.appendingPathComponent("testimage.py").path], directory: directory.path,
            environment: ["PATH": "/usr/bin:/bin"], stdin: [UInt8](input), timeout: 300)
        guard result.status == 0 else { throw Spawned.Failure(description: "push failed: \(String(decoding: result.stderr, as: UTF8.self))") }
        return try JSONDecoder().decode(Pushed.self, from: Data(result.stdout))
    }

    /// Where the registry keeps a blob's bytes (to corrupt it behind its back).
    public func blobData(_ digest: String) -> URL {
        let hex = String(digest.dropFirst(7))
        return directory.appendingPathComponent("data/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data")
    }

    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Spawned.Failure(description: "socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Spawned.Failure(description: "bind failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    public static func canConnect(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// A scratch directory for an image store and the files around it.
public struct ImageSandbox {
    public let root: URL
    public var cache: URL { root.appendingPathComponent("cache") }
    public var store: String { cache.path + "/airlock/oci" }

    public init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-oci-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    public func remove() { try? FileManager.default.removeItem(at: root) }

    /// A project directory whose user config marks `registry` insecure (plain HTTP).
    public func project(insecure registry: String) throws -> URL {
        let project = root.appendingPathComponent("project")
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".xdg/airlock"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".git/info"), withIntermediateDirectories: true)
        try "[registries.\"\(registry)\"]\ninsecure = true\n".write(
            to: project.appendingPathComponent(".xdg/airlock/config.toml"), atomically: true, encoding: .utf8)
        return project
    }

    /// Every path below `root` that is not inside the store's own directories, for "nothing was
    /// written outside" checks.
    public func filesOutsideStore() -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: root.path)
        var found: [String] = []
        while let path = enumerator?.nextObject() as? String {
            if path.hasPrefix("cache/airlock/oci") || path == "cache" || path == "cache/airlock" || path.hasPrefix("project")
                || path.hasPrefix("docker")
            {
                continue
            }
            found.append(path)
        }
        return found
    }
}
