import AirlockSystem
import CShim
// `stat` reaches these files through CoreFoundation's headers (it owns the C struct here).
import CoreFoundation
import Foundation
import OCI
import Sandbox
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real `dockerd` (Debian's docker.io) with its data, exec root and socket in a temporary
/// directory: no network (no bridge, no iptables), vfs storage. Started and stopped by the test.
final class TestDockerd: @unchecked Sendable {
    // @unchecked: `pid` is set in init and cleared in stop, called from the owning test's task.
    static let daemon = "/usr/sbin/dockerd"
    static var cli: String? { ["/usr/bin/docker", "/usr/local/bin/docker"].first { FileManager.default.isExecutableFile(atPath: $0) } }
    static var available: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: daemon) && cli != nil
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/skopeo") && TestRegistry.available
    }
    static let skipReason: Comment = "needs root, dockerd and the docker CLI (apt-get install docker.io), skopeo and docker-registry"

    let directory: URL
    var socket: String { directory.appendingPathComponent("docker.sock").path }
    private(set) var pid: pid_t = 0

    init() throws {
        // Short: dockerd's containerd socket path must fit in sun_path.
        directory = URL(fileURLWithPath: "/tmp/al-dockerd-\(UUID().uuidString.prefix(6))")
        for sub in ["data", "exec"] {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        let log = open(directory.appendingPathComponent("dockerd.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(log) }
        let arguments = [
            Self.daemon, "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
            "--data-root", directory.appendingPathComponent("data").path, "--exec-root", directory.appendingPathComponent("exec").path,
            "-H", "unix://" + socket, "--pidfile", directory.appendingPathComponent("dockerd.pid").path,
        ]
        let started = withCStrings(arguments) { argv in
            withCStrings(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]) { envp in
                airlock_spawn(Self.daemon, argv, envp, -1, log, log, Int32(AIRLOCK_SPAWN_PDEATHSIG))
            }
        }
        guard started > 0 else { throw Spawned.Failure(description: "cannot start dockerd: \(String(cString: strerror(-started)))") }
        pid = started
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let result = try? docker(["version", "--format", "{{.Server.Version}}"]), result.status == 0 { return }
            usleep(200_000)
        }
        let text = (try? String(contentsOf: directory.appendingPathComponent("dockerd.log"), encoding: .utf8)) ?? ""
        stop()
        throw Spawned.Failure(description: "dockerd did not answer within 60 s:\n\(text.suffix(3000))")
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    func docker(_ arguments: [String]) throws -> Spawned.Result {
        try Spawned.run(
            [Self.cli ?? "docker", "-H", "unix://" + socket] + arguments, directory: directory.path,
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": directory.path], stdin: nil, timeout: 300)
    }

    /// SIGTERM (dockerd stops its containerd), then SIGKILL after 20 s.
    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        var status: Int32 = 0
        while Date() < deadline {
            let done = waitpid(pid, &status, WNOHANG)
            if done == pid || (done < 0 && errno == ECHILD) {
                pid = 0
                return
            }
            usleep(100_000)
        }
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        pid = 0
    }
}

/// `Fixtures/docker-api.py`: a stand-in Docker Engine API on a Unix socket serving an archive
/// built from a spec (hostile ones included, which a real daemon would refuse to load).
final class FakeDockerAPI: @unchecked Sendable {
    // @unchecked: as TestDockerd.
    let directory: URL
    var socket: String { directory.appendingPathComponent("api.sock").path }
    private(set) var pid: pid_t = 0

    init(_ spec: [String: Any]) throws {
        directory = URL(fileURLWithPath: "/tmp/al-fakedocker-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let specFile = directory.appendingPathComponent("spec.json")
        try JSONSerialization.data(withJSONObject: spec).write(to: specFile)
        let log = open(directory.appendingPathComponent("api.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(log) }
        let arguments = ["/usr/bin/python3", TestRegistry.fixtures.appendingPathComponent("docker-api.py").path, specFile.path, socket]
        let started = withCStrings(arguments) { argv in
            withCStrings(["PATH=/usr/bin:/bin"]) { envp in
                airlock_spawn(arguments[0], argv, envp, -1, log, log, Int32(AIRLOCK_SPAWN_PDEATHSIG))
            }
        }
        guard started > 0 else { throw Spawned.Failure(description: "cannot start docker-api.py") }
        pid = started
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: socket) { return }
            usleep(50_000)
        }
        throw Spawned.Failure(
            description:
                "docker-api.py did not listen: \((try? String(contentsOf: directory.appendingPathComponent("api.log"), encoding: .utf8)) ?? "")")
    }

    deinit {
        if pid > 0 {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("Images from the local Docker daemon", .serialized, .enabled(if: TestRegistry.available, TestRegistry.skipReason))
struct DockerImageTests {
    @Test(
        "A real dockerd: an image loaded from a skopeo docker-archive is read with resolution docker (registry stopped), then auto picks it too",
        .enabled(if: TestDockerd.available, TestDockerd.skipReason))
    func realDaemon() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        // Docker images have no zstd layers (skopeo refuses to write one to docker-archive).
        var rich = ImageFixtures.rich(busybox: false)
        rich["layers"] = (rich["layers"] as? [[String: Any]] ?? []).map { layer in
            var layer = layer
            if layer["compression"] as? String == "zstd" { layer["compression"] = "gzip" }
            return layer
        }
        try registry.push("team/rich", tag: "v1", rich)
        let reference = "\(registry.host)/team/rich:v1"
        let archive = sandbox.root.appendingPathComponent("rich.tar")
        let copy = try Spawned.run(
            ["/usr/bin/skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://\(reference)", "docker-archive:\(archive.path):\(reference)"],
            directory: sandbox.root.path, environment: ["PATH": "/usr/bin:/bin", "HOME": sandbox.root.path], stdin: nil, timeout: 300)
        #expect(copy.status == 0, "\(String(decoding: copy.stderr, as: UTF8.self))")

        let dockerd = try TestDockerd()
        let load = try dockerd.docker(["load", "-i", archive.path])
        #expect(load.status == 0, "\(String(decoding: load.stderr, as: UTF8.self))")
        let inspected = try dockerd.docker(["image", "inspect", "--format", "{{.Id}}", reference])
        let imageID = String(decoding: inspected.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        registry.stop()  // from here on only the daemon has it

        let project = try sandbox.project(insecure: registry.host)
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path, "DOCKER_HOST": "unix://" + dockerd.socket]
        let pull = try CLI.run(["image", "pull", "--from", "docker", reference], in: project, environment: environment)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stderr.contains("reading the Docker daemon's copy (\(dockerd.socket)"), "\(pull.stderr)")
        #expect(pull.stderr.contains("from the Docker daemon"), "\(pull.stderr)")

        let store = ImageStore(root: sandbox.store)
        let record = try #require(store.record(for: try ImageReference(parsing: reference)))
        #expect(record.source == "docker" && record.dockerImageID == imageID)
        #expect(record.configDigest.description == imageID)
        #expect(record.layers.count == 3)
        #expect(record.settings.user == "dev" && record.settings.workingDir == "/home/dev")
        let base = store.layerPath(record.layers[0].digest), upper = store.layerPath(record.layers[1].digest)
        #expect(MappedXattr.read32(base + "/home/dev/notes", MappedXattr.uid) == 1000)
        #expect(MappedXattr.read32(base + "/home/dev/notes", MappedXattr.mode) == 0o100640)
        #expect(MappedXattr.read32(base + "/usr/bin/tool", MappedXattr.mode) == 0o104755)
        #expect(try String(contentsOfFile: base + "/home/dev/notes", encoding: .utf8) == "private notes\n")
        var info = stat()
        #expect(lstat(base + "/lnk", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
        #expect(MappedXattr.read32(base + "/lnk", MappedXattr.mode) == 0o120777)
        #expect(MappedXattr.read64(base + "/devices/null", MappedXattr.rdev) == airlock_oci_makedev(1, 3))
        #expect(store.layerInfo(record.layers[1].digest)?.whiteouts == ["keep/dir/x", "old"])
        #expect(MappedXattr.read32(upper + "/old", MappedXattr.mode) == 0o020000)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/tmp").isEmpty, "the staging directory is gone")

        let list = try CLI.run(["image", "ls"], in: project, environment: environment)
        #expect(list.stdout.contains(reference) && list.stdout.contains("docker"), "\(list.stdout)")

        // auto (the default) chooses the daemon's copy and says so.
        #expect(try CLI.run(["image", "rm", reference], in: project, environment: environment).status == 0)
        let auto = try CLI.run(["image", "pull", reference], in: project, environment: environment)
        #expect(auto.status == 0, "\(auto.stderr)")
        #expect(auto.stderr.contains("using the Docker daemon's copy"), "\(auto.stderr)")

        // docker with a reference the daemon lacks: a clear error.
        let missing = try CLI.run(["image", "pull", "--from", "docker", "\(registry.host)/team/none:v1"], in: project, environment: environment)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("has no image") && missing.stderr.contains("--from registry"), "\(missing.stderr)")
        dockerd.stop()
    }

    @Test("auto falls back to the registry when no daemon answers; docker without a daemon names the socket and the fix")
    func noDaemon() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("x/y", ["layers": [["entries": [ImageFixtures.file("a", "a")]]]])
        let project = try sandbox.project(insecure: registry.host)
        let socket = sandbox.root.appendingPathComponent("no-docker.sock").path
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path, "DOCKER_HOST": "unix://" + socket]

        let docker = try CLI.run(["image", "pull", "--from", "docker", "\(registry.host)/x/y"], in: project, environment: environment)
        #expect(docker.status == 1)
        #expect(docker.stderr.contains("no Docker daemon answers on \(socket)") && docker.stderr.contains("DOCKER_HOST"), "\(docker.stderr)")

        let tcp = try CLI.run(
            ["image", "pull", "--from", "docker", "\(registry.host)/x/y"], in: project,
            environment: environment.merging(["DOCKER_HOST": "tcp://10.0.0.1:2375"]) { $1 })
        #expect(tcp.status == 1 && tcp.stderr.contains("not a Unix socket"), "\(tcp.stderr)")

        // The key in the config, checked with a suggestion.
        try "[vm]\nresolution = \"dokcer\"\n".write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let bad = try CLI.run(["image", "pull", "\(registry.host)/x/y"], in: project, environment: environment)
        #expect(bad.status == 2 && bad.stderr.contains("did you mean \"docker\"?"), "\(bad.stderr)")
        try "[vm]\nresolution = \"auto\"\n".write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)

        let auto = try CLI.run(["image", "pull", "\(registry.host)/x/y"], in: project, environment: environment)
        #expect(auto.status == 0, "\(auto.stderr)")
        #expect(auto.stderr.contains("pulling from the registry (no Docker daemon: \(socket) does not exist)"), "\(auto.stderr)")
        let record = try #require(ImageStore(root: sandbox.store).record(for: try ImageReference(parsing: "\(registry.host)/x/y")))
        #expect(record.sourceName == "registry")
    }

    @Test("A stand-in daemon (docker-api.py) serving Docker ≥ 25's OCI layout with a gzip layer, and the classic one")
    func standInLayouts() async throws {
        for layout in ["oci", "classic"] {
            let sandbox = try ImageSandbox()
            defer { sandbox.remove() }
            let name = "127.0.0.1:9/stand/in:\(layout)"
            let api = try FakeDockerAPI([
                "name": name, "layout": layout, "config": ["User": "1000"],
                "layers": [
                    ["entries": [ImageFixtures.dir("etc"), ImageFixtures.file("etc/owned", "mine", mode: 0o600, uid: 1000, gid: 1000)]],
                    ["compression": "gzip", "entries": [ImageFixtures.file("upper", "up"), ImageFixtures.link("ln", "etc/owned")]],
                ],
            ])
            let project = try sandbox.project(insecure: "127.0.0.1:9")
            let pull = try CLI.run(
                ["image", "pull", "--from", "docker", name], in: project,
                environment: ["XDG_CACHE_HOME": sandbox.cache.path, "DOCKER_HOST": "unix://" + api.socket])
            #expect(pull.status == 0, "\(layout): \(pull.stderr)")
            let store = ImageStore(root: sandbox.store)
            let record = try #require(store.record(for: try ImageReference(parsing: name)))
            #expect(record.layers.map(\.mediaType) == ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"])
            #expect(MappedXattr.read32(store.layerPath(record.layers[0].digest) + "/etc/owned", MappedXattr.uid) == 1000)
            #expect(MappedXattr.read32(store.layerPath(record.layers[0].digest) + "/etc/owned", MappedXattr.mode) == 0o100600)
            #expect(try String(contentsOfFile: store.layerPath(record.layers[1].digest) + "/ln", encoding: .utf8) == "etc/owned")
            #expect(FileManager.default.fileExists(atPath: store.blobPath(record.manifestDigest)))
        }
    }

    struct Hostile: CustomTestStringConvertible, Sendable {
        var name: String
        var spec: @Sendable (String) -> [String: Any]
        var kind: OCIError.Kind
        var message: String
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(
            name: "a layer that is not its diff_id",
            spec: { _ in
                ["layers": [["entries": [ImageFixtures.file("a", "a")]], ["entries": [ImageFixtures.file("b", "b")]]], "wrong_diff_id": 1]
            }, kind: .integrity, message: "diff_id"),
        Hostile(
            name: "a gzip layer that is not its diff_id (OCI layout)",
            spec: { _ in
                ["layout": "oci", "layers": [["compression": "gzip", "entries": [ImageFixtures.file("a", "a")]]], "wrong_diff_id": 0]
            }, kind: .integrity, message: "diff_id"),
        Hostile(
            name: "../ in a layer", spec: { _ in ["layers": [["entries": [ImageFixtures.file("../escape", "x")]]]] }, kind: .hostileLayer,
            message: "contains \"..\""),
        Hostile(
            name: "symlink, then a write through it, in a layer",
            spec: { outside in
                ["layers": [["entries": [ImageFixtures.link("link", outside), ImageFixtures.file("link/planted", "x")]]]]
            }, kind: .hostileLayer, message: "symbolic link"),
        Hostile(
            name: "manifest.json naming a file outside the archive",
            spec: { _ in
                ["layers": [["entries": [ImageFixtures.file("a", "a")]]], "manifest_layers": ["../../../../etc/passwd"]]
            }, kind: .hostileLayer, message: "leaves the archive"),
        Hostile(
            name: "manifest.json naming an absolute path",
            spec: { _ in
                ["layers": [["entries": [ImageFixtures.file("a", "a")]]], "manifest_layers": ["/etc/passwd"]]
            }, kind: .hostileLayer, message: "absolute path"),
    ]

    @Test("Hostile exports from a (stand-in) daemon are refused like hostile registry content; nothing is written outside", arguments: hostile)
    func hostileExport(_ hostile: Hostile) async throws {
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let outside = sandbox.root.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        let name = "127.0.0.1:9/evil/export:1"
        var spec = hostile.spec(outside.path)
        spec["name"] = name
        let api = try FakeDockerAPI(spec)
        let daemon = DockerDaemonClient(socketPath: api.socket)
        let reference = try ImageReference(parsing: name)
        let image = try #require(try await daemon.inspect(reference))
        await #expect {
            _ = try await DockerImporter(store: ImageStore(root: sandbox.store), daemon: daemon).pull(reference, image: image)
        } throws: { error in
            guard let error = error as? OCIError else { return false }
            #expect(error.kind == hostile.kind, "\(error)")
            #expect(error.message.contains(hostile.message), "\(error)")
            return true
        }
        await daemon.shutdown()
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path).isEmpty, "nothing planted outside")
        #expect(sandbox.filesOutsideStore() == ["outside"], "nothing written beside the store")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/layers/sha256").isEmpty, "no layer under its final name")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/tmp").isEmpty, "staging and extraction are gone")
        #expect(ImageStore(root: sandbox.store).records().isEmpty)
    }
}
