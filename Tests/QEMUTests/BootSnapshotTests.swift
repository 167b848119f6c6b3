import AirlockSystem
import Foundation
import Machine
import Testing

@testable import QEMU

/// Which VMs share a boot snapshot: the key sees QEMU's device configuration and the files
/// the guest was booted from, not the paths one sandbox's backends use.
@Suite("Boot snapshot keys")
struct BootSnapshotTests {
    /// A sandbox's spec with its own paths under `root` (kernel, initramfs, disk and a qemu
    /// stand-in are real files: the key reads their identity).
    static func spec(_ root: URL, sandbox: String, memory: UInt64 = 2048, tags: [String] = ["usr", "workspace"]) throws -> MachineSpec {
        let directory = root.appendingPathComponent(sandbox)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let disk = directory.appendingPathComponent("disk.img")
        if !FileManager.default.fileExists(atPath: disk.path) {
            _ = FileManager.default.createFile(atPath: disk.path, contents: nil)
            let handle = try FileHandle(forWritingTo: disk)
            try handle.truncate(atOffset: 8 << 30)
            try handle.close()
        }
        return MachineSpec(
            kernel: root.appendingPathComponent("vmlinux").path, initramfs: root.appendingPathComponent("initramfs").path, cpus: 2, memoryMiB: memory,
            shares: tags.map { .init(tag: $0, hostPath: directory.appendingPathComponent("share-" + $0).path, readOnly: $0 != "workspace") },
            disk: disk.path, runtimeDirectory: "/tmp/airlock-0/" + sandbox, consoleLog: directory.appendingPathComponent("console.log").path,
            accelerator: .tcg)
    }

    static func key(_ spec: MachineSpec, root: URL, tsc: UInt = 2_600_000, cpu: String = "model name : Test CPU\nflags : fpu avx2\n") -> String {
        BootSnapshot.key(
            arguments: QEMUMachine.arguments(for: spec, tscKilohertz: tsc), spec: spec, qemu: root.appendingPathComponent("qemu").path, cpu: cpu)
    }

    @Test(
        "the same configuration in two sandboxes (other paths, another TSC measurement) shares a key; shares, memory, disk size, kernel files, layer disks and another host's CPU or TSC rate change it"
    )
    func keys() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("snapshot-keys-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for name in ["vmlinux", "initramfs", "qemu"] { try Data(name.utf8).write(to: root.appendingPathComponent(name)) }

        let a = try Self.spec(root, sandbox: "a"), b = try Self.spec(root, sandbox: "b,with comma")
        let base = Self.key(a, root: root)
        #expect(base.count == 64)
        #expect(Self.key(b, root: root, tsc: 2_600_013) == base)
        #expect(Self.key(a, root: root, tsc: 2_595_837) == base, "the same host's TSC, measured again")
        // Another machine: another TSC rate, or another CPU (its features are in the snapshot).
        #expect(Self.key(a, root: root, tsc: 3_000_000) != base)
        #expect(Self.key(a, root: root, cpu: "model name : Other CPU\nflags : fpu\n") != base)
        #expect(!BootSnapshot.hostCPU().isEmpty)
        #expect(Self.key(try Self.spec(root, sandbox: "c", tags: ["usr", "opt", "workspace"]), root: root) != base)
        #expect(Self.key(try Self.spec(root, sandbox: "d", memory: 4096), root: root) != base)
        var layers = a
        layers.readOnlyDisks = [.init(serial: "oci0", path: "/c/l0.sqfs")]
        #expect(Self.key(layers, root: root) != base)

        // A bigger disk: the guest sized its disk when it probed it.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: b.disk))
        try handle.truncate(atOffset: 9 << 30)
        try handle.close()
        #expect(Self.key(b, root: root) != base)

        // A rebuilt initramfs at the same path.
        try Data("initramfs, rebuilt".utf8).write(to: root.appendingPathComponent("initramfs"))
        #expect(Self.key(a, root: root) != base)
    }

    @Test("exec: paths are one shell word, whatever they hold")
    func quoting() {
        #expect(BootSnapshot.quoted("/home/me/.cache/airlock/snapshots/k.state") == "'/home/me/.cache/airlock/snapshots/k.state'")
        #expect(BootSnapshot.quoted("/a b/it's $(x)") == "'/a b/it'\\''s $(x)'")
    }

    @Test("prune keeps the most recently used snapshots; an interrupted snapshot boot's files go, a running one's stay")
    func prune() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("snapshot-prune-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for (index, name) in ["old", "older", "new", "newer", "current"].enumerated() {
            let file = root.appendingPathComponent(name + ".state")
            try Data().write(to: file)
            let age: [String: Double] = ["old": 300, "older": 400, "new": 100, "newer": 50, "current": 0]
            try FileManager.default.setAttributes(
                [.modificationDate: Date(timeIntervalSinceNow: -(age[name] ?? 0) - Double(index))], ofItemAtPath: file.path)
        }
        try Data().write(to: root.appendingPathComponent("unrelated.log"))
        // An interrupted snapshot boot's files (its airlock is gone), and a running one's.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        for suffix in ["tmp", "disk", "log"] {
            try Data().write(to: root.appendingPathComponent("k.state.\(gone.processIdentifier).\(suffix)"))
            try Data().write(to: root.appendingPathComponent("k.state.\(getpid()).\(suffix)"))
        }
        var store = BootSnapshot(directory: root.path)
        store.keep = 3
        store.prune(keeping: "current")
        store.removeLeftovers()
        let left = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        let running = ["disk", "log", "tmp"].map { "k.state.\(getpid()).\($0)" }
        #expect(left == ["current.state"] + running + ["new.state", "newer.state", "unrelated.log"])
    }
}
