import Foundation
import OCI
import TestSupport
import Testing

/// One real session booted from an OCI image pulled from a local registry.
@Suite(
    "Sandboxes booted from OCI images (VM)", .tags(.vm), .serialized, .timeLimit(.minutes(4)),
    .enabled(if: VMEnvironment.available, VMEnvironment.skipReason),
    .enabled(if: TestRegistry.available, TestRegistry.skipReason),
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/busybox"), "needs a static busybox (busybox-static) to put in the image"))
struct ImageVMTests {
    @Test(
        "[vm] image = REF: start pulls it, runs its Cmd as its User in its WorkingDir with its Env; files, owners, links, devices and deletions are the image's"
    )
    func bootFromImage() throws {
        try boot()
    }

    /// The same with virtiofsd on PATH (QEMU's C virtiofsd behind the test-only stand-in, see
    /// `VirtiofsStandIn`): the workspace is virtio-fs, the layers stay on 9p, and the image's
    /// owners, modes and devices come out the same.
    @Test(
        "the same image with virtiofsd: the workspace over virtio-fs, the layers over 9p (mapped-xattr ownership intact)",
        .enabled(if: VirtiofsStandIn.available, VirtiofsStandIn.skipReason))
    func bootFromImageWithVirtiofs() throws {
        let (bin, environment) = try VirtiofsStandIn.install()
        defer { try? FileManager.default.removeItem(at: bin) }
        let result = try boot(extraEnvironment: environment, verbose: true)
        #expect(result.stderr.contains("setup: shares mounted (virtio-fs: workspace)"), "\(result.stderr)")
        #expect(result.stderr.contains("the image's layers stay on virtio-9p"), "\(result.stderr)")
        let calls = VirtiofsStandIn.calls(bin)
        #expect(
            calls.count == 1 && calls.first?.directory.hasSuffix("/.airlock/default/workspace") == true,
            "only the workspace is served by virtiofsd: \(calls)")
    }

    /// Layers as squashfs disks (what Cloud Hypervisor boots an image from, since its virtio-fs
    /// cannot carry mapped-xattr owners), on QEMU: the same checks pass. With the virtiofsd
    /// stand-in (root) the workspace is virtio-fs too, which is Cloud Hypervisor's layout.
    @Test(
        "[vm] image_layers = \"block\": the layers reach the guest as squashfs disks with the same owners, modes, devices and deletions",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tar2sqfs"), "needs tar2sqfs (squashfs-tools-ng)"))
    func bootFromBlockLayers() throws {
        var environment: [String: String] = [:]
        var bin: URL?
        if VirtiofsStandIn.available { (bin, environment) = try VirtiofsStandIn.install() }
        defer { if let bin { try? FileManager.default.removeItem(at: bin) } }
        let result = try boot(vmSettings: "image_layers = \"block\"\n", extraEnvironment: environment, verbose: true)
        #expect(result.stderr.contains("building the block image of layer 1/3"), "\(result.stderr)")
        #expect(result.stderr.contains("setup: image layers mounted (squashfs disks: oci0, oci1, oci2)"), "\(result.stderr)")
        if let bin {
            #expect(result.stderr.contains("setup: shares mounted (virtio-fs: workspace)"), "\(result.stderr)")
            #expect(VirtiofsStandIn.calls(bin).count == 1, "virtiofsd serves the workspace only")
        }
    }

    /// The same on Cloud Hypervisor, where block layers are the default (`image_layers = "auto"`).
    @Test(
        "on Cloud Hypervisor: the image boots from its layers' squashfs disks, the workspace over virtio-fs",
        .enabled(if: CloudHypervisorHost.available, CloudHypervisorHost.skipReason))
    func bootFromImageOnCloudHypervisor() throws {
        let result = try boot(backend: "cloud-hypervisor", verbose: true)
        #expect(result.stderr.contains("backend cloud-hypervisor"), "\(result.stderr)")
        #expect(result.stderr.contains("setup: image layers mounted (squashfs disks: oci0, oci1"), "\(result.stderr)")
    }

    @Test(
        "[disk.cache.*]: kept on the state disk through a change of image (which resets the root's writable layer) and a re-clone; ps --json lists them; a removed entry's contents are deleted"
    )
    func caches() throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        var second = ImageFixtures.rich(busybox: true)
        var config = second["config"] as? [String: Any] ?? [:]
        config["Env"] = ["PATH=/bin:/usr/bin", "GREETING=the second image"]
        second["config"] = config
        try registry.push("team/vm", tag: "v1", ImageFixtures.rich(busybox: true))
        try registry.push("team/vm", tag: "v2", second)
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".xdg/airlock"), withIntermediateDirectories: true)
        try "[registries.\"\(registry.host)\"]\ninsecure = true\n".write(
            to: project.appendingPathComponent(".xdg/airlock/config.toml"), atomically: true, encoding: .utf8)
        func configure(_ tag: String, caches: String) throws {
            try "[vm]\nimage = \"\(registry.host)/team/vm:\(tag)\"\n\(caches)".write(
                to: project.appendingPathComponent("airlock.local.toml"), atomically: true, encoding: .utf8)
        }
        let both = "[disk.cache.tool]\npaths = [\"~/.cache/tool\"]\n[disk.cache.deps]\npaths = [\"deps\"]\n"
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path]
        func run(_ arguments: [String], _ script: String) throws -> String {
            let result = try CLI.run(
                ["start"] + arguments + ["-e", "PROJECT=\(project.path)", "--", "/bin/sh", "-c", script], in: project, environment: environment)
            #expect(result.status == 0, "stderr: \(result.stderr)")
            return result.stdout
        }

        try configure("v1", caches: both)
        _ = try run([], "echo cached > ~/.cache/tool/data; echo upper > ~/plain; echo dep > \"$PROJECT/deps/x\"; echo $GREETING")
        let listed = try CLI.run(["ps", "--json"], in: project, environment: environment)
        #expect(listed.stdout.contains("\"name\":\"tool\"") || listed.stdout.contains("\"name\" : \"tool\""), "\(listed.stdout)")
        #expect(listed.stdout.contains("~\\/.cache\\/tool") || listed.stdout.contains("~/.cache/tool"), "\(listed.stdout)")

        // A new image and a new clone: the caches are still there, the root's own writes are not.
        try configure("v2", caches: both)
        let after = try run(
            ["--fresh"], "echo $GREETING; cat ~/.cache/tool/data; cat ~/plain 2>/dev/null || echo no-plain; cat \"$PROJECT/deps/x\"")
        #expect(after == "the second image\ncached\nno-plain\ndep\n", "\(after)")

        // Switched off: not bound, kept. Removed: deleted.
        try configure("v2", caches: both.replacingOccurrences(of: "[disk.cache.tool]\n", with: "[disk.cache.tool]\nenabled = false\n"))
        #expect(try run([], "cat ~/.cache/tool/data 2>/dev/null || echo unbound") == "unbound\n")
        try configure("v2", caches: both)
        #expect(try run([], "cat ~/.cache/tool/data") == "cached\n")
        try configure("v2", caches: "[disk.cache.deps]\npaths = [\"deps\"]\n")
        _ = try run([], "true")
        try configure("v2", caches: both)
        #expect(try run([], "cat ~/.cache/tool/data 2>/dev/null || echo gone") == "gone\n")
    }

    @Test(
        "root in an image's VM: `sudo apt-get install` works through the policy when a rule allows the archive; apt refuses the agent itself; without the rule the archive is out of reach"
    )
    func aptInstall() throws {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let archive = sandbox.root.appendingPathComponent("archive")
        try FileManager.default.createDirectory(at: archive, withIntermediateDirectories: true)
        let port = try TestRegistry.freePort()
        // An image of this host's apt and dpkg, and a one-package archive on 127.0.0.1, which the
        // VM reaches as deb.test (the test-only resolver override).
        let built = try Spawned.run(
            ["/usr/bin/python3", TestFixtures.path("aptimage.py").path, archive.path, "http://deb.test:\(port)/"], directory: archive.path,
            environment: ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin"], stdin: nil, timeout: 120)
        #expect(built.status == 0, "\(String(decoding: built.stderr, as: UTF8.self))")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(built.stdout)) as? [[String: Any]])
        try registry.push(
            "team/apt", tag: "v1",
            [
                "layers": [["compression": "gzip", "entries": entries]],
                "config": [
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "User": "dev", "WorkingDir": "/home/dev",
                ] as [String: Any],
            ])
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", archive.path]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        // SIGKILL: a process Foundation starts from a test thread inherits its blocked signals
        // (SIGTERM among them), so `terminate()` would leave it running.
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        while !TestRegistry.canConnect(port) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }

        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".xdg/airlock"), withIntermediateDirectories: true)
        try "[registries.\"\(registry.host)\"]\ninsecure = true\n".write(
            to: project.appendingPathComponent(".xdg/airlock/config.toml"), atomically: true, encoding: .utf8)
        let image = "[vm]\nimage = \"\(registry.host)/team/apt:v1\"\n"
        let rule = "[network.rules.archive]\nallow = [\"deb.test:\(port)\"]\nallow_private = true\n"
        let environment = ["XDG_CACHE_HOME": sandbox.cache.path, "AIRLOCK_TEST_ONLY_RESOLVE": "deb.test=127.0.0.1"]
        try (image + rule).write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let script = """
            apt-get install -y airlock-hello >/dev/null 2>&1 || echo "as the agent: refused ($(id -u))"
            sudo apt-get update >/tmp/update.log 2>&1 || { echo update-failed; cat /tmp/update.log; }
            sudo apt-get install -y airlock-hello >/tmp/install.log 2>&1 || { echo install-failed; cat /tmp/install.log; }
            airlock-hello
            dpkg-query -W -f='${Status}\\n' airlock-hello
            """
        let installed = try CLI.run(["start", "--", "/bin/sh", "-c", script], in: project, environment: environment)
        #expect(installed.status == 0, "stderr: \(installed.stderr)")
        #expect(
            installed.stdout == "as the agent: refused (1000)\nhello from the test archive\ninstall ok installed\n",
            "\(installed.stdout)\n\(installed.stderr)")

        // Without the rule, the policy keeps the archive out of reach.
        try image.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let denied = try CLI.run(
            ["start", "--", "/bin/sh", "-c", "sudo apt-get update >/dev/null 2>&1 && echo BAD-reached || echo unreachable"], in: project,
            environment: environment)
        #expect(denied.status == 0, "stderr: \(denied.stderr)")
        #expect(denied.stdout == "unreachable\n", "\(denied.stdout)")
    }

    @discardableResult
    func boot(backend: String = "qemu", vmSettings: String = "", extraEnvironment: [String: String] = [:], verbose: Bool = false) throws -> CLI.Run {
        let registry = try TestRegistry()
        let sandbox = try ImageSandbox()
        defer { sandbox.remove() }
        let pushed = try registry.push("team/vm", tag: "v1", ImageFixtures.rich(busybox: true))
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".xdg/airlock"), withIntermediateDirectories: true)
        try "[registries.\"\(registry.host)\"]\ninsecure = true\n".write(
            to: project.appendingPathComponent(".xdg/airlock/config.toml"), atomically: true, encoding: .utf8)
        try "[vm]\nimage = \"\(registry.host)/team/vm:v1\"\nbackend = \"\(backend)\"\n\(vmSettings)".write(
            to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        var environment = ["XDG_CACHE_HOME": sandbox.cache.path]
        for (key, value) in extraEnvironment { environment[key] = value }

        // No command: the image's Cmd (/checks.sh), as its User, in its WorkingDir.
        let result = try CLI.run(
            ["start"] + (verbose ? ["--verbose"] : []) + ["-e", "PROJECT=\(project.path)"], in: project, environment: environment)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        func line(_ key: String) -> String { lines.first { $0.hasPrefix(key + "=") } ?? "(missing \(key)= in \(result.stdout))" }
        #expect(line("uid") == "uid=1000 gid=1000 pwd=/home/dev greeting=hello from the image home=/home/dev")
        #expect(line("notes") == "notes=1000:1000:640 tool=0:4755:2")
        #expect(line("link") == "link=usr/bin/tool null=character special file:1:3")
        #expect(line("old").contains("No such file or directory"), "\(line("old"))")
        #expect(line("keep") == "keep=[y ] opaque=[upper-file ] recreated=[new ]")
        #expect(line("motd") == "motd=welcome long=a long path survives")
        #expect(line("workspace") == "workspace=hello")
        #expect(line("write") == "write=written")

        let store = ImageStore(root: sandbox.store)
        let record = try #require(store.record(for: try ImageReference(parsing: "\(registry.host)/team/vm:v1")))
        #expect(record.manifestDigest.description == pushed.manifest)
        #expect(store.sandboxReferences().contains { $0.manifestDigest == record.manifestDigest }, "prune keeps what the sandbox boots")
        return result
    }
}
