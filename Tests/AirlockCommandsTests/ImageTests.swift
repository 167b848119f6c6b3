import AirlockSystem
import CShim
// `stat` reaches these files through CoreFoundation's headers (it owns the C struct here).
import CoreFoundation
import Foundation
import OCI
import Sandbox
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Images from a real registry", .serialized, .enabled(if: TestRegistry.available, TestRegistry.skipReason))
struct RegistryImageTests {
    func puller(_ sandbox: ImageSandbox, _ registry: TestRegistry, environment: [String: String] = [:], attempts: Int = 5) -> (
        ImagePuller, RegistryClient
    ) {
        var options = RegistryClient.Options(insecureRegistries: [registry.host], environment: environment)
        options.attempts = attempts
        options.backoff = .milliseconds(20)
        let client = RegistryClient(options: options)
        return (ImagePuller(store: ImageStore(root: sandbox.store), client: client), client)
    }

    @Test("without libarchive: image pull fails naming the package, nothing is half stored; doctor warns; airlock itself runs")
    func withoutLibarchive() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        _ = try registry.push("team/rich", tag: "v1", ImageFixtures.rich(busybox: false))
        let project = try sandbox.project(insecure: registry.host)
        // A library name that does not exist stands in for a host without libarchive13.
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path, "AIRLOCK_TEST_ONLY_LIBARCHIVE": "libarchive-absent.so.99"]
        let pull = try CLI.run(["image", "pull", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(pull.status != 0)
        #expect(pull.stderr.contains("OCI images need libarchive, which cannot be loaded: libarchive-absent.so.99"), "\(pull.stderr)")
        #expect(pull.stderr.contains("sudo apt install libarchive13"), "\(pull.stderr)")
        #expect(ImageStore(root: sandbox.store).record(for: try ImageReference(parsing: "\(registry.host)/team/rich:v1")) == nil)
        let doctor = try CLI.run(["doctor", "--format", "json"], in: project, environment: environment)
        #expect(doctor.stdout.contains("\"libarchive\""), "\(doctor.stdout)")
        #expect(doctor.stdout.contains("OCI images ([vm] image) cannot be used"), "\(doctor.stdout)")
        let validate = try CLI.run(["config", "validate"], in: project, environment: environment)
        #expect(validate.status == 0, "\(validate.stderr)")
    }

    @Test(
        "image pull: a multi-platform index, three layers (gzip, zstd, plain); owners, modes, links, devices, whiteouts, xattrs as the guest will see them"
    )
    func pullRich() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let pushed = try registry.push("team/rich", tag: "v1", ImageFixtures.rich(busybox: false))
        let project = try sandbox.project(insecure: registry.host)
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path]
        let pull = try CLI.run(["image", "pull", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stdout == "\(registry.host)/team/rich:v1@\(pushed.manifest)\n")
        #expect(pull.stderr.contains("unpacked"), "plain progress lines without a terminal: \(pull.stderr)")

        let store = ImageStore(root: sandbox.store)
        let record = try #require(store.record(for: try ImageReference(parsing: "\(registry.host)/team/rich:v1")))
        #expect(record.manifestDigest.description == pushed.manifest, "the amd64 manifest, not the arm64 one")
        #expect(record.layers.map(\.digest.description) == pushed.layers)
        #expect(record.settings.user == "dev" && record.settings.workingDir == "/home/dev")
        let base = store.layerPath(record.layers[0].digest), upper = store.layerPath(record.layers[1].digest)

        // Owners and modes live in the mapped-xattr form QEMU's 9p presents.
        #expect(MappedXattr.read32(base + "/home/dev/notes", MappedXattr.uid) == 1000)
        #expect(MappedXattr.read32(base + "/home/dev/notes", MappedXattr.gid) == 1000)
        #expect(MappedXattr.read32(base + "/home/dev/notes", MappedXattr.mode) == 0o100640)
        #expect(MappedXattr.read32(base + "/home/dev", MappedXattr.mode) == 0o040750)
        #expect(MappedXattr.read32(base + "/usr/bin/tool", MappedXattr.mode) == 0o104755)
        // A symlink is a regular file holding its target: nothing on the host to follow.
        var info = stat()
        #expect(lstat(base + "/lnk", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
        #expect(try String(contentsOfFile: base + "/lnk", encoding: .utf8) == "usr/bin/tool")
        #expect(MappedXattr.read32(base + "/lnk", MappedXattr.mode) == 0o120777)
        // A hardlink is a hardlink.
        var tool = stat(), toolLink = stat()
        #expect(stat(base + "/usr/bin/tool", &tool) == 0 && stat(base + "/usr/bin/tool-link", &toolLink) == 0 && tool.st_ino == toolLink.st_ino)
        // A device node is metadata on an empty regular file, never a device.
        #expect(lstat(base + "/devices/null", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && info.st_size == 0)
        #expect(MappedXattr.read32(base + "/devices/null", MappedXattr.mode) == 0o020666)
        #expect(MappedXattr.read64(base + "/devices/null", MappedXattr.rdev) == airlock_oci_makedev(1, 3))
        #expect(MappedXattr.read32(base + "/devices/fifo", MappedXattr.mode) == 0o010600)
        // The layer's own user xattr is kept; a forged mapping one is not.
        var value = [UInt8](repeating: 0, count: 16)
        #expect(airlock_oci_lgetxattr(base + "/xattr-file", "user.test", &value, 16) == 5)
        #expect(MappedXattr.read32(base + "/xattr-file", MappedXattr.uid) == 0)
        // Whiteouts: recorded for the guest, and marked on disk as char 0/0.
        let upperInfo = try #require(store.layerInfo(record.layers[1].digest))
        #expect(upperInfo.whiteouts == ["keep/dir/x", "old"])
        #expect(upperInfo.opaque == ["opaque-dir", "recreated"], "deleted and recreated in one layer: opaque")
        #expect(MappedXattr.read32(upper + "/old", MappedXattr.mode) == 0o020000)
        #expect(airlock_oci_lgetxattr(upper + "/opaque-dir", "user.overlay.opaque", &value, 16) == 1)
        // Long names (PAX) and the platform choice.
        let long =
            store.layerPath(record.layers[2].digest) + "/long/" + String(repeating: "d", count: 120) + "/" + String(repeating: "e", count: 120)
            + "/file"
        #expect(try String(contentsOfFile: long, encoding: .utf8) == "a long path survives")
        #expect(!FileManager.default.fileExists(atPath: base + "/arm-only"))
        // Compressed blobs are dropped once unpacked; manifests and config stay.
        #expect(!FileManager.default.fileExists(atPath: store.blobPath(record.layers[0].digest)))
        #expect(FileManager.default.fileExists(atPath: store.blobPath(record.configDigest)))

        let again = try CLI.run(["image", "pull", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(again.status == 0 && again.stderr.contains("already unpacked"), "\(again.stderr)")

        let list = try CLI.run(["image", "ls", "--json"], in: project, environment: environment)
        let rows = try JSONSerialization.jsonObject(with: list.stdoutData) as? [[String: Any]]
        #expect(rows?.first?["reference"] as? String == "\(registry.host)/team/rich:v1")
        #expect(rows?.first?["layers"] as? Int == 3)

        let remove = try CLI.run(["image", "rm", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(remove.status == 0, "\(remove.stderr)")
        #expect(store.records().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: base), "rm frees the layers nothing else references")
        let missing = try CLI.run(["image", "rm", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(missing.status == 1 && missing.stderr.contains("no such image"))
    }

    /// What Cloud Hypervisor boots an image from (and QEMU with `[vm] image_layers = "block"`):
    /// each extracted layer as squashfs, with the mapped-xattr metadata made real. Read back
    /// with squashfs-tools-ng's own `sqfs2tar`, independent of the writer.
    @Test(
        "block images: owners, modes, hardlinks, symlinks, devices, whiteouts (0/0), opaque dirs and user xattrs come out real; forged mapping xattrs don't; built once, pruned with the layer",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tar2sqfs"), "needs tar2sqfs (squashfs-tools-ng)"))
    func blockImages() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        _ = try registry.push("team/rich", tag: "v1", ImageFixtures.rich(busybox: false))
        let project = try sandbox.project(insecure: registry.host)
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path]
        let pull = try CLI.run(["image", "pull", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(pull.status == 0, "\(pull.stderr)")
        let store = ImageStore(root: sandbox.store)
        let record = try #require(store.record(for: try ImageReference(parsing: "\(registry.host)/team/rich:v1")))

        var builds = 0
        func image(_ index: Int) throws -> String {
            let digest = record.layers[index].digest
            return try store.layerImage(digest) { output, log in
                builds += 1
                let status = try ChildProcess.feed(
                    "/usr/bin/tar2sqfs", ["--quiet", "--no-skip", "--force", "--compressor", "zstd", output], log: log
                ) { fd in
                    try LayerTar.write(layer: store.layerPath(digest), to: fd)
                }
                #expect(status == 0, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
        }
        /// `path type uid:gid mode [target|major,minor] xattrs` per entry, from sqfs2tar's tar.
        func listing(_ image: String) throws -> [String: String] {
            let script = """
                import subprocess, sys, tarfile, io
                data = subprocess.run(["sqfs2tar", sys.argv[1]], check=True, capture_output=True).stdout
                for m in tarfile.open(fileobj=io.BytesIO(data), format=tarfile.PAX_FORMAT):
                    extra = m.linkname if m.issym() or m.islnk() else (f"{m.devmajor},{m.devminor}" if m.ischr() else "")
                    xattrs = ",".join(sorted(f"{k[13:]}={v}" for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")))
                    print(f"{m.name.lstrip('./') or '.'}\t{m.type.decode()} {m.uid}:{m.gid} {m.mode:o} {extra} {xattrs}".rstrip())
                """
            let run = try Spawned.run(
                ["/usr/bin/python3", "-c", script, image], directory: "/", environment: ["PATH": "/usr/bin:/bin"], stdin: nil, timeout: 60)
            #expect(run.status == 0, "\(String(decoding: run.stderr, as: UTF8.self))")
            let output = String(decoding: run.stdout, as: UTF8.self)
            return Dictionary(
                output.split(separator: "\n").map { line in
                    let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
                    return (parts[0], parts.count > 1 ? parts[1] : "")
                }, uniquingKeysWith: { first, _ in first })
        }
        let base = try listing(try image(0))
        #expect(base["home/dev"] == "5 1000:1000 750")
        #expect(base["home/dev/notes"] == "0 1000:1000 640")
        #expect(base["usr/bin/tool"] == "0 0:0 4755")
        #expect(base["usr/bin/tool-link"] == "1 0:0 4755 usr/bin/tool", "a hardlink stays one: \(base)")
        #expect(base["lnk"] == "2 0:0 777 usr/bin/tool")
        #expect(base["devices/null"] == "3 0:0 666 1,3")
        #expect(base["devices/fifo"] == "6 0:0 600")
        #expect(base["xattr-file"] == "0 0:0 644  user.test=hello", "the layer's own xattr kept, the forged mapping one dropped: \(base)")
        let upper = try listing(try image(1))
        #expect(upper["old"] == "3 0:0 0 0,0", "a whiteout is overlayfs' 0/0 character device: \(upper)")
        #expect(upper["keep/dir/x"] == "3 0:0 0 0,0")
        #expect(upper["opaque-dir"]?.hasSuffix("user.overlay.opaque=y") == true, "\(upper)")
        #expect(upper.values.allSatisfy { !$0.contains("virtfs") && !$0.contains("overlay.whiteout") }, "\(upper)")
        #expect(builds == 2)
        _ = try image(0)
        #expect(builds == 2, "built once, then reused")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/tmp").isEmpty, "nothing left in tmp/")

        let remove = try CLI.run(["image", "rm", "\(registry.host)/team/rich:v1"], in: project, environment: environment)
        #expect(remove.status == 0, "\(remove.stderr)")
        #expect(!FileManager.default.fileExists(atPath: store.layerImagePath(record.layers[0].digest)), "rm frees the block images too")
    }

    @Test("Without insecure = true a plain-HTTP registry is not used")
    func insecureOnlyWhenConfigured() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("x/y", ["layers": [["entries": [ImageFixtures.file("a", "a")]]]])
        let project = try sandbox.project(insecure: "elsewhere:1")
        let pull = try CLI.run(["image", "pull", "\(registry.host)/x/y"], in: project, environment: ["XDG_CACHE_HOME": sandbox.cache.path])
        #expect(pull.status == 1)
        #expect(pull.stderr.contains("insecure = true"), "\(pull.stderr)")
    }

    /// A layer that must be refused, how, and what the message says.
    struct Hostile: CustomTestStringConvertible, Sendable {
        var name: String
        var layer: @Sendable (String) -> [String: Any]
        var kind: OCIError.Kind
        var message: String
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(
            name: "../ path", layer: { _ in ["entries": [ImageFixtures.file("../escape", "x")]] }, kind: .hostileLayer, message: "contains \"..\""),
        Hostile(
            name: "nested ../ path", layer: { _ in ["entries": [ImageFixtures.dir("a"), ImageFixtures.file("a/../../escape", "x")]] },
            kind: .hostileLayer, message: "contains \"..\""),
        Hostile(
            name: "absolute path", layer: { outside in ["entries": [ImageFixtures.file(outside + "/absolute", "x")]] }, kind: .hostileLayer,
            message: "absolute path"),
        Hostile(
            name: "symlink, then a write through it",
            layer: { outside in
                ["entries": [ImageFixtures.link("link", outside), ImageFixtures.file("link/planted", "x")]]
            }, kind: .hostileLayer, message: "through the symbolic link \"link\""),
        Hostile(
            name: "symlink to .., then a write through it",
            layer: { _ in
                ["entries": [ImageFixtures.link("up", "../../../.."), ImageFixtures.file("up/planted", "x")]]
            }, kind: .hostileLayer, message: "symbolic link"),
        Hostile(
            name: "hardlink to a path outside",
            layer: { _ in
                ["entries": [ImageFixtures.hardlink("passwd", "../../../../../../etc/passwd")]]
            }, kind: .hostileLayer, message: "contains \"..\""),
        Hostile(
            name: "hardlink to an absolute path", layer: { _ in ["entries": [ImageFixtures.hardlink("passwd", "/etc/passwd")]] }, kind: .hostileLayer,
            message: "absolute path"),
        Hostile(
            name: "hardlink to a file not extracted yet",
            layer: { _ in
                ["entries": [ImageFixtures.hardlink("early", "later"), ImageFixtures.file("later", "x")]]
            }, kind: .hostileLayer, message: "not a file extracted earlier"),
        Hostile(
            name: "10 GB sparse file", layer: { _ in ["entries": [["path": "big", "type": "sparse", "realsize": 10 << 30]]] }, kind: .hostileLayer,
            message: "sparse file"),
        Hostile(
            name: "truncated gzip",
            layer: { _ in
                ["entries": [["path": "data", "size": 200_000]], "truncate": 60_000]
            }, kind: .archive, message: "truncated"),
        Hostile(
            name: "forged whiteout of ..", layer: { _ in ["entries": [["path": "a/.wh...", "data": ""]]] }, kind: .hostileLayer,
            message: "names nothing"),
    ]

    @Test("Hostile layers are refused with a clear error; nothing is written outside the layer directory", arguments: hostile)
    func hostileLayer(_ hostile: Hostile) async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let outside = sandbox.root.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try registry.push("evil/layer", ["layers": [hostile.layer(outside.path)]])
        let (puller, client) = puller(sandbox, registry)
        await #expect {
            _ = try await puller.pull(try ImageReference(parsing: "\(registry.host)/evil/layer"))
        } throws: { error in
            guard let error = error as? OCIError else { return false }
            #expect(error.kind == hostile.kind, "\(error)")
            #expect(error.message.contains(hostile.message), "\(error)")
            return true
        }
        await client.shutdown()
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path).isEmpty, "nothing planted outside")
        #expect(sandbox.filesOutsideStore() == ["outside"], "nothing written beside the store")
        let store = ImageStore(root: sandbox.store)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/layers/sha256").isEmpty, "no layer under its final name")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/tmp").isEmpty, "the failed extraction is gone")
        #expect(store.records().isEmpty)
    }

    @Test("A blob whose bytes do not match its digest is refused and discarded")
    func wrongDigest() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let pushed = try registry.push("bad/digest", ["layers": [["entries": [["path": "data", "size": 5000]]]]])
        // Corrupt the registry's copy behind its back (same size, other bytes).
        let data = registry.blobData(pushed.layers[0])
        var bytes = try Data(contentsOf: data)
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: data)
        let (puller, client) = puller(sandbox, registry)
        await #expect {
            _ = try await puller.pull(try ImageReference(parsing: "\(registry.host)/bad/digest"))
        } throws: { error in
            (error as? OCIError)?.kind == .integrity && "\(error)".contains("digest")
        }
        await client.shutdown()
        let blobs = try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/blobs/sha256")
        #expect(!blobs.contains(String(pushed.layers[0].dropFirst(7))) && !blobs.contains { $0.hasSuffix(".partial") })
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/layers/sha256").isEmpty)
    }

    @Test("A manifest that lies about a layer's size is refused", arguments: [-10, 10])
    func lyingSize(_ delta: Int) async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("bad/size", ["layers": [["entries": [["path": "data", "size": 5000]]]], "lie_sizes": ["0": delta]])
        let (puller, client) = puller(sandbox, registry)
        await #expect {
            _ = try await puller.pull(try ImageReference(parsing: "\(registry.host)/bad/size"))
        } throws: { error in
            (error as? OCIError)?.kind == .integrity && "\(error)".contains("manifest announces")
        }
        await client.shutdown()
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/layers/sha256").isEmpty)
    }

    @Test("An image config whose rootfs.diff_ids do not match the decompressed layers is refused; nothing stays in the store")
    func lyingDiffID() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let pushed = try registry.push(
            "bad/diffid",
            [
                "layers": [["entries": [["path": "a", "size": 3000]]], ["compression": "zstd", "entries": [["path": "b", "size": 3000]]]],
                "lie_diff_ids": [1],
            ])
        let (puller, client) = puller(sandbox, registry)
        await #expect {
            _ = try await puller.pull(try ImageReference(parsing: "\(registry.host)/bad/diffid"))
        } throws: { error in
            (error as? OCIError)?.kind == .integrity && "\(error)".contains("rootfs.diff_ids says")
        }
        await client.shutdown()
        let layers = try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/layers/sha256")
        #expect(!layers.contains { $0.hasPrefix(String(pushed.layers[1].dropFirst(7))) }, "the refused layer is not in the store: \(layers)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.store + "/tmp").isEmpty)
        #expect(ImageStore(root: sandbox.store).records().isEmpty)
    }

    @Test("A pull interrupted by the registry dying resumes with Range and verifies; no half layer under a final name")
    func interruptedPull() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let pushed = try registry.push("big/one", ["layers": [["compression": "none", "entries": [["path": "blob", "size": 48 << 20]]]]])
        let reference = try ImageReference(parsing: "\(registry.host)/big/one")
        let hex = String(pushed.layers[0].dropFirst(7))
        let store = ImageStore(root: sandbox.store)

        let killed = Mutex(false)
        let (first, firstClient) = puller(sandbox, registry, attempts: 2)
        await #expect(throws: OCIError.self) {
            _ = try await first.pull(reference) { event in
                if case .layerProgress(_, let bytes, _) = event, bytes >= 4 << 20 {
                    killed.withLock { done in
                        if !done {
                            registry.stop()
                            done = true
                        }
                    }
                }
            }
        }
        await firstClient.shutdown()
        #expect(killed.withLock { $0 })
        var info = stat()
        let partial = try store.blobPath(pushed.layers[0].digestValue) + ".partial"
        #expect(stat(partial, &info) == 0)
        let kept = Int64(info.st_size)
        #expect(kept > 0 && kept < 48 << 20, "part of the blob is kept: \(kept)")
        #expect(!FileManager.default.fileExists(atPath: sandbox.store + "/blobs/sha256/" + hex))
        #expect(!FileManager.default.fileExists(atPath: sandbox.store + "/layers/sha256/" + hex))

        try registry.start()
        let events = EventLog()
        let (second, secondClient) = puller(sandbox, registry)
        let record = try await second.pull(reference) { events.append($0) }
        await secondClient.shutdown()
        let resumed = events.all.compactMap { event -> Int64? in
            if case .layerResumed(_, let from) = event { return from }
            return nil
        }
        #expect(resumed == [kept], "the second pull continued at byte \(kept)")
        #expect(record.layers.count == 1)
        #expect(stat(store.layerPath(record.layers[0].digest) + "/blob", &info) == 0 && info.st_size == 48 << 20)
        #expect(!FileManager.default.fileExists(atPath: sandbox.store + "/blobs/sha256/\(hex).partial"))
    }

    @Test("A registry with htpasswd: a clear refusal without credentials, a pull with them (docker config.json)")
    func authentication() async throws {
        let registry = try TestRegistry(credentials: ("alice", "s3cret-pw"))
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("private/app", ["layers": [["entries": [ImageFixtures.file("secret", "classified")]]]])
        let project = try sandbox.project(insecure: registry.host)
        let docker = sandbox.root.appendingPathComponent("docker")
        try FileManager.default.createDirectory(at: docker, withIntermediateDirectories: true)
        var environment = ["XDG_CACHE_HOME": sandbox.cache.path, "DOCKER_CONFIG": docker.path]

        let anonymous = try CLI.run(["image", "pull", "\(registry.host)/private/app"], in: project, environment: environment)
        #expect(anonymous.status == 1)
        #expect(
            anonymous.stderr.contains("requires a user name and password") && anonymous.stderr.contains("docker login \(registry.host)"),
            "\(anonymous.stderr)")
        #expect(anonymous.stderr.contains("run the command in a terminal to be asked"), "without a terminal: \(anonymous.stderr)")

        func writeConfig(_ password: String) throws {
            let auth = Data("alice:\(password)".utf8).base64EncodedString()
            try #"{"auths": {"\#(registry.host)": {"auth": "\#(auth)"}}}"#.write(
                to: docker.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        }
        try writeConfig("wrong")
        let refused = try CLI.run(["image", "pull", "\(registry.host)/private/app"], in: project, environment: environment)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("refused") && refused.stderr.contains("stored credentials"), "\(refused.stderr)")

        try writeConfig("s3cret-pw")
        let pulled = try CLI.run(["image", "pull", "\(registry.host)/private/app"], in: project, environment: environment)
        #expect(pulled.status == 0, "\(pulled.stderr)")
        environment["DOCKER_CONFIG"] = nil
        let listed = try CLI.run(["image", "ls"], in: project, environment: environment)
        #expect(listed.stdout.contains("\(registry.host)/private/app:latest"))
    }

    @Test("image prune removes interrupted downloads and layers nothing references, keeps a live sandbox's")
    func prune() async throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("p/one", ["layers": [["entries": [ImageFixtures.file("one", "1")]]]])
        try registry.push("p/two", ["layers": [["entries": [ImageFixtures.file("two", "2")]]]])
        let project = try sandbox.project(insecure: registry.host)
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path]
        for name in ["p/one", "p/two"] {
            #expect(try CLI.run(["image", "pull", "\(registry.host)/\(name)"], in: project, environment: environment).status == 0)
        }
        let store = ImageStore(root: sandbox.store)
        let two = try #require(store.record(for: try ImageReference(parsing: "\(registry.host)/p/two")))
        let liveSandbox = sandbox.root.appendingPathComponent("sandbox-state")
        try FileManager.default.createDirectory(at: liveSandbox, withIntermediateDirectories: true)
        try store.recordSandbox(stateDirectory: liveSandbox.path, record: two)
        #expect(store.removeRecord(try ImageReference(parsing: "\(registry.host)/p/two")))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: sandbox.store + "/blobs/sha256/" + String(repeating: "a", count: 64) + ".partial"))

        let prune = try CLI.run(["image", "prune"], in: project, environment: environment)
        #expect(prune.status == 0, "\(prune.stderr)")
        #expect(prune.stdout.contains("removed 0 layer(s)"), "one's layers are referenced by its record, two's by a live sandbox: \(prune.stdout)")
        #expect(store.hasLayer(two.layers[0].digest))
        #expect(!FileManager.default.fileExists(atPath: sandbox.store + "/blobs/sha256/" + String(repeating: "a", count: 64) + ".partial"))

        try FileManager.default.removeItem(at: liveSandbox)
        let again = try CLI.run(["image", "prune"], in: project, environment: environment)
        #expect(again.stdout.contains("removed 1 layer(s)"), "\(again.stdout)")
        #expect(!store.hasLayer(two.layers[0].digest))
    }
}

extension String {
    /// A `sha256:…` string from the test registry as a Digest.
    var digestValue: Digest {
        get throws { try Digest(parsing: self) }
    }
}

@Suite(
    "Registry credentials asked on the terminal", .serialized,
    .enabled(if: TestRegistry.available && Tmux.available, "needs docker-registry, python3 and tmux"))
struct CredentialPromptTests {
    /// Runs `airlock image pull REF` in a tmux pane (a real terminal) and answers its questions.
    func pullInTmux(_ registry: TestRegistry, _ sandbox: ImageSandbox, project: URL, repository: String, password: String?) async throws -> (
        status: String?, screen: String, terminal: String
    ) {
        let docker = sandbox.root.appendingPathComponent("docker")
        try FileManager.default.createDirectory(at: docker, withIntermediateDirectories: true)
        let session = "airlock-prompt-\(getpid())-\(UUID().uuidString.prefix(4))"
        let done = sandbox.root.appendingPathComponent("status-\(session)")
        let terminal = sandbox.root.appendingPathComponent("stty-\(session)")
        // The shell survives a ^C of airlock (a trap with a command is reset to the default in
        // airlock) and records the terminal's settings afterwards.
        let command =
            "trap true INT; cd '\(project.path)' && XDG_CONFIG_HOME='\(project.path)/.xdg' XDG_CACHE_HOME='\(sandbox.cache.path)' DOCKER_CONFIG='\(docker.path)' "
            + "DOCKER_HOST=unix:///nonexistent.sock '\(CLI.binary)' image pull \(registry.host)/\(repository); status=$?; stty -a > '\(terminal.path)'; echo $status > '\(done.path)'; sleep 30"
        try Tmux.run(["new-session", "-d", "-s", session, "-x", "200", "-y", "40", command])
        defer { _ = try? Tmux.run(["kill-session", "-t", session]) }
        try await Tmux.waitFor(session, toShow: "Username for \(registry.host):", timeout: 60)
        try Tmux.run(["send-keys", "-t", session, "-l", "alice"])
        try Tmux.run(["send-keys", "-t", session, "Enter"])
        try await Tmux.waitFor(session, toShow: "Password for alice@\(registry.host):", timeout: 10)
        if let password {
            try Tmux.run(["send-keys", "-t", session, "-l", password])
            try Tmux.run(["send-keys", "-t", session, "Enter"])
        } else {
            try Tmux.run(["send-keys", "-t", session, "C-c"])
        }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? String(contentsOf: done, encoding: .utf8)) == nil {
            try await Task.sleep(for: .milliseconds(100))
        }
        let screen = try Tmux.run(["capture-pane", "-p", "-t", session])
        return (
            (try? String(contentsOf: done, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines), screen,
            (try? String(contentsOf: terminal, encoding: .utf8)) ?? ""
        )
    }

    @Test("401 without stored credentials on a terminal: asked once, password not echoed, never written; a wrong one is a clear refusal")
    func prompt() async throws {
        let registry = try TestRegistry(credentials: ("alice", "s3cret-pw"))
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        try registry.push("private/app", ["layers": [["entries": [ImageFixtures.file("secret", "classified")]]]])
        try registry.push("private/other", ["layers": [["entries": [ImageFixtures.file("other", "x")]]]])
        let project = try sandbox.project(insecure: registry.host)

        let good = try await pullInTmux(registry, sandbox, project: project, repository: "private/app", password: "s3cret-pw")
        #expect(good.status == "0", "pane:\n\(good.screen)")
        #expect(!good.screen.contains("s3cret-pw"), "the password is not echoed:\n\(good.screen)")
        #expect(good.screen.components(separatedBy: "Username for").count == 2, "asked once:\n\(good.screen)")
        #expect(ImageStore(root: sandbox.store).record(for: try ImageReference(parsing: "\(registry.host)/private/app")) != nil)
        // Nothing on disk holds the password (the registry's own htpasswd holds a bcrypt hash).
        let grep = try Spawned.run(
            ["/usr/bin/grep", "-rl", "s3cret-pw", sandbox.root.path, project.path], directory: "/", environment: [:], stdin: nil, timeout: 60)
        #expect(grep.stdout.isEmpty, "files holding the password: \(String(decoding: grep.stdout, as: UTF8.self))")

        let bad = try await pullInTmux(registry, sandbox, project: project, repository: "private/other", password: "wrong-pw")
        #expect(bad.status == "1", "pane:\n\(bad.screen)")
        #expect(bad.screen.contains("refused the user name and password you entered"), "pane:\n\(bad.screen)")

        // ^C at the password prompt ends the pull and leaves the terminal echoing.
        let interrupted = try await pullInTmux(registry, sandbox, project: project, repository: "private/other", password: nil)
        #expect(interrupted.status == "130", "pane:\n\(interrupted.screen)")
        let flags = interrupted.terminal.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == ";" })
        #expect(flags.contains("echo") && !flags.contains("-echo"), "stty -a after ^C:\n\(interrupted.terminal)")
    }
}
