import AirlockSystem
import CloudHypervisor
import CloudHypervisorAPI
import Foundation
import GuestLink
import Machine
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What `CloudHypervisorMachine` asks of Cloud Hypervisor and virtiofsd, and its start-up
/// failures, with stand-in programs (no real VMM runs here).
@Suite("Cloud Hypervisor machine")
struct MachineTests {
    static let spec = MachineSpec(
        kernel: "/c/vmlinux", initramfs: "/c/initramfs", cpus: 3, memoryMiB: 1536,
        shares: [
            .init(tag: "usr", hostPath: "/usr", readOnly: true),
            .init(tag: "workspace", hostPath: "/p/-x,y/.airlock/default/workspace", readOnly: false),
        ],
        disk: "/p/.airlock/default/disk.img", runtimeDirectory: "/run/user/1000/airlock/abcd", consoleLog: "/p/.airlock/default/console.log",
        accelerator: .kvm)

    @Test("vm.create config: vCPUs, shared memory in bytes, serial to the console log, console off, vsock CID 3, one fs per share, raw state disk")
    func config() {
        let sockets = CloudHypervisorMachine.Sockets(runtimeDirectory: Self.spec.runtimeDirectory, shareCount: 2)
        let config = CloudHypervisorMachine.vmConfig(for: Self.spec, sockets: sockets)
        #expect(config.cpus == CpusConfig(bootVcpus: 3, maxVcpus: 3))
        #expect(config.memory == MemoryConfig(size: 1536 * 1024 * 1024, shared: true))
        #expect(config.payload.kernel == "/c/vmlinux" && config.payload.initramfs == "/c/initramfs")
        #expect(config.payload.cmdline?.contains("console=ttyS0") == true)
        #expect(config.serial == SerialConfig(mode: .tty))
        #expect(config.console == ConsoleConfig(mode: .off))
        #expect(config.vsock == VsockConfig(cid: 3, socket: "/run/user/1000/airlock/abcd/vsock.sock"))
        #expect(
            config.fs == [
                FsConfig(tag: "usr", socket: "/run/user/1000/airlock/abcd/fs0.sock", numQueues: 1, queueSize: 1024),
                FsConfig(tag: "workspace", socket: "/run/user/1000/airlock/abcd/fs1.sock", numQueues: 1, queueSize: 1024),
            ])
        #expect(
            config.disks == [DiskConfig(path: "/p/.airlock/default/disk.img", readonly: false, id: "state", serial: "airlock-state", imageType: .raw)]
        )
        #expect(config.rng == RngConfig(src: "/dev/urandom"))
        #expect(CloudHypervisorMachine.arguments(sockets: sockets) == ["--api-socket", "/run/user/1000/airlock/abcd/ch.sock"])
    }

    @Test("an OCI image's layers: read-only raw disks after the state disk, each with its layer's tag as serial (the guest finds them by it)")
    func layerDisks() {
        var spec = Self.spec
        spec.readOnlyDisks = [.init(serial: "oci0", path: "/c/oci/a.sqfs"), .init(serial: "oci1", path: "/c/oci/b.sqfs")]
        let config = CloudHypervisorMachine.vmConfig(for: spec, sockets: .init(runtimeDirectory: spec.runtimeDirectory, shareCount: 2))
        #expect(
            config.disks == [
                DiskConfig(path: "/p/.airlock/default/disk.img", readonly: false, id: "state", serial: "airlock-state", imageType: .raw),
                DiskConfig(path: "/c/oci/a.sqfs", readonly: true, id: "oci0", serial: "oci0", imageType: .raw),
                DiskConfig(path: "/c/oci/b.sqfs", readonly: true, id: "oci1", serial: "oci1", imageType: .raw),
            ])
    }

    @Test("virtiofsd (shared with QEMU): fixed flags, the directory as --shared-dir= (a leading dash stays a path), --readonly for read-only shares")
    func virtiofsd() {
        let readOnly = Virtiofsd.arguments(socket: "/r/fs0.sock", share: .init(tag: "usr", hostPath: "/usr", readOnly: true))
        #expect(
            readOnly == ["--socket-path=/r/fs0.sock", "--shared-dir=/usr", "--cache=auto", "--announce-submounts", "--log-level=warn", "--readonly"])
        let writable = Virtiofsd.arguments(socket: "/r/fs1.sock", share: .init(tag: "w", hostPath: "-rf", readOnly: false))
        #expect(writable.contains("--shared-dir=-rf"))
        #expect(!writable.contains("--readonly"))
        #expect(!writable.contains("-rf"))
    }

    @Test("the process log sits beside the console log")
    func processLog() {
        #expect(CloudHypervisorMachine.processLog(for: Self.spec) == "/p/.airlock/default/vmm.log")
    }

    /// A directory with a console log and a runtime directory for a start that must fail.
    /// `$RUNTIME` in `script` is the runtime directory (in the VMM's reach: it runs jailed).
    func failingStart(
        cloudHypervisor: String, virtiofsd: String, shares: [MachineSpec.Share], script: String? = nil, in given: TemporaryDirectory? = nil
    ) async throws -> MachineError? {
        let directory = try given ?? TemporaryDirectory()
        defer { if given == nil { directory.remove() } }
        var tool = cloudHypervisor
        if let script {
            tool = directory.path + "/fake-tool"
            try ("#!/bin/sh\nRUNTIME='\(directory.path)'\n" + script).write(toFile: tool, atomically: true, encoding: .utf8)
            chmod(tool, 0o755)
        }
        let spec = MachineSpec(
            kernel: "/nonexistent/vmlinux", initramfs: "/nonexistent/initramfs", cpus: 1, memoryMiB: 256, shares: shares,
            disk: directory.path + "/disk.img", runtimeDirectory: directory.path, consoleLog: directory.path + "/console.log", accelerator: .kvm)
        do {
            let machine = try await CloudHypervisorMachine.start(
                spec, cloudHypervisor: tool, virtiofsd: script == nil ? virtiofsd : tool, timeout: .seconds(2))
            await machine.stop(grace: .milliseconds(100))
            return nil
        } catch let error as MachineError {
            return error
        }
    }

    @Test("a cloud-hypervisor that exits at once: a clear error with its output")
    func vmmExits() async throws {
        let error = try await failingStart(
            cloudHypervisor: "", virtiofsd: "/bin/false", shares: [], script: "echo 'Error: KVM not usable' >&2; exit 1")
        let failure = try #require(error)
        #expect(failure.message.contains("cloud-hypervisor exited during start-up"))
        #expect(failure.consoleTail.contains { $0.contains("KVM not usable") })
    }

    @Test("a cloud-hypervisor that never opens its API socket: the readiness deadline fires and the process is killed")
    func vmmNeverReady() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let pidFile = directory.path + "/pid"
        let error = try await failingStart(
            cloudHypervisor: "", virtiofsd: "/bin/false", shares: [], script: "echo $$ > \"$RUNTIME/pid\"; exec sleep 3600", in: directory)
        let failure = try #require(error)
        #expect(failure.message.contains("did not answer on its API socket within 2 s"))
        // The start returned long before the hour was up; the process it left is gone.
        let pid = try #require(Int32(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        for _ in 0..<300 where kill(pid, 0) == 0 { try await Task.sleep(for: .milliseconds(100)) }  // reaped by then
        #expect(kill(pid, 0) == -1 && errno == ESRCH, "cloud-hypervisor (pid \(pid)) still runs")
    }

    @Test("a virtiofsd that exits before creating its socket: named with its share")
    func virtiofsdExits() async throws {
        let error = try await failingStart(
            cloudHypervisor: "", virtiofsd: "", shares: [.init(tag: "usr", hostPath: "/usr", readOnly: true)],
            script: "echo 'virtiofsd: unknown option --readonly' >&2; exit 2")
        let failure = try #require(error)
        #expect(failure.message.contains("virtiofsd for /usr exited before creating its socket"))
        #expect(failure.consoleTail.contains { $0.contains("unknown option --readonly") })
    }

    @Test("a missing binary: cannot start, named")
    func missingBinary() async throws {
        let error = try await failingStart(cloudHypervisor: "/nonexistent/cloud-hypervisor", virtiofsd: "/bin/false", shares: [])
        let failure = try #require(error)
        #expect(failure.message.contains("cannot start /nonexistent/cloud-hypervisor"))
    }
}
