import AirlockSystem
import Crypto
import Machine

#if canImport(Glibc)
import Glibc
#endif

/// A VM saved once right after boot and restored instead of booting: the kernel's start, the
/// initramfs, the guest agent's module loading and warm-up are done once per VM configuration,
/// not once per `start` (under TCG that is most of a boot).
///
/// The snapshot boot runs the sandbox's own QEMU command line with a scratch state disk of
/// the same size, its own sockets and `airlock.snapshot` on the kernel command line: the guest
/// loads all its modules, then opens the control port, and waits for a host (which in this
/// boot never connects). QEMU reports the port opening (`VSERPORT_CHANGE`); the VM is stopped
/// and migrated to a file (`exec:cat`), and QEMU quits. A later start runs the same command line
/// with `-incoming defer`, loads the file (`migrate-incoming`), continues the VM and connects:
/// the guest resumes where it waited, before any setup, so nothing of a sandbox is in a
/// snapshot. What the guest must not take from the snapshot it renews at setup: the clock, the
/// CRNG (reseeded from virtio-rng) and the block devices' caches (dropped; the snapshot boot
/// read its scratch disk).
///
/// Only QEMU's device *configuration* must match between the two runs; its backends (paths
/// of disks, shares, sockets, the console) may differ. So the key is the command line with
/// those paths taken out, plus the identity of QEMU, kernel and initramfs, the disk's size
/// (the guest sized its disk at probe) and the host CPU (its features, and under TCG the TSC
/// rate the guest calibrated with). Not used with vhost-vsock or virtio-fs (neither can
/// be migrated). Snapshots live in `<cache>/snapshots` (0700; a file is 0600, about 150 MB),
/// the `keep` most recently used.
public struct BootSnapshot: Sendable {
    /// Where snapshots are kept.
    public var directory: String
    public var keep = 3
    /// How long a snapshot boot may take before airlock boots normally instead (it takes a few
    /// seconds, under 30 on a loaded host; a stalled one is given up sooner).
    public var bootTimeout: Duration = .seconds(60)

    public init(directory: String) {
        self.directory = directory
    }

    /// Bumped when the guest's side of the protocol changes in a way the key cannot see.
    static let format = "1"

    /// The key of `arguments` (QEMU's command line for `spec`); `cpu` stands in for this
    /// host's CPU description in tests.
    static func key(arguments: [String], spec: MachineSpec, qemu: String, cpu: String? = nil) -> String {
        var text = format + "\n"
        for argument in arguments {
            var normalized =
                argument
                .replacing(QEMUMachine.escape(spec.runtimeDirectory), with: "@run")
                .replacing(QEMUMachine.escape(spec.consoleLog), with: "@console")
                .replacing(QEMUMachine.escape(spec.disk), with: "@disk")
            // A share's directory is its backend; its tag (in the -device) is configuration.
            if normalized.hasPrefix("local,id=fs"), let path = normalized.firstRange(of: ",path="),
                let end = normalized[path.upperBound...].firstRange(of: ",security_model=")
            {
                normalized.replaceSubrange(path.upperBound..<end.lowerBound, with: "@")
            }
            // Measured per process, a few kHz apart each time; the guest keeps the snapshot
            // boot's calibration, which must be this host's rate: 10 MHz steps.
            if let tsc = normalized.firstRange(of: "tsc_early_khz=") {
                let end = normalized[tsc.upperBound...].firstIndex(of: " ") ?? normalized.endIndex
                let khz = Int(normalized[tsc.upperBound..<end]) ?? 0
                normalized.replaceSubrange(tsc.upperBound..<end, with: "\((khz + 5000) / 10000)0MHz")
            }
            text += normalized + "\n"
        }
        for file in [qemu, spec.kernel, spec.initramfs] {
            var info = stat()
            _ = stat(file, &info)
            text += "\(file) \(info.st_size) \(info.st_ino) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)\n"
        }
        text += "disk \(FileSystem.size(spec.disk) ?? 0)\n"
        // The guest saw this CPU's features (with KVM, `-cpu host`): a cache shared between
        // machines must not hand one's snapshot to another.
        text += cpu ?? Self.hostCPU()
        return SHA256.hash(data: Array(text.utf8)).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    func path(key: String) -> String { directory + "/" + key + ".state" }

    /// The host CPU's model and feature flags (`/proc/cpuinfo`, first CPU).
    static func hostCPU() -> String {
        guard let bytes = (try? FileSystem.read("/proc/cpuinfo", limit: 4 << 20)) ?? nil else { return "" }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n")
            .filter { $0.hasPrefix("model name") || $0.hasPrefix("flags") }.prefix(2).joined(separator: "\n") + "\n"
    }

    /// Whether `spec`, run with these options, can be saved and restored.
    static func applies(vsockCID: UInt32?, virtiofs: Bool) -> Bool {
        vsockCID == nil && !virtiofs
    }

    /// Boots `spec` once as a snapshot boot and saves it under `key`. Blocking on QEMU's
    /// progress through QMP, polled.
    func make(_ spec: MachineSpec, key: String, qemu: String) async throws {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        removeLeftovers()
        let temporary = path(key: key) + ".\(getpid()).tmp"
        let scratch = path(key: key) + ".\(getpid()).disk"
        let runtime = spec.runtimeDirectory + "/snapshot"
        let log = path(key: key) + ".\(getpid()).log"
        defer {
            for file in [scratch, temporary, log] + ["qmp.sock", "control.sock", "egress.sock"].map({ runtime + "/" + $0 }) { unlink(file) }
            rmdir(runtime)
        }
        // `cat >` keeps the mode of the file it writes: no one else may read guest memory.
        let output = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw MachineError("cannot save a boot snapshot", cause: SystemError.last("open", temporary)) }
        close(output)
        // The scratch disk: sparse, the size of the sandbox's.
        let fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0, ftruncate(fd, off_t(FileSystem.size(spec.disk) ?? 0)) == 0 else {
            let error = SystemError.last(fd >= 0 ? "ftruncate" : "open", scratch)
            if fd >= 0 { close(fd) }
            throw MachineError("cannot create the snapshot boot's scratch disk", cause: error)
        }
        close(fd)
        try FileSystem.makeDirectory(runtime, mode: 0o700)
        var boot = spec
        boot.disk = scratch
        boot.runtimeDirectory = runtime
        boot.consoleLog = log
        let qmp = runtime + "/qmp.sock"
        unlink(qmp)
        let console = try ConsoleRecorder(socket: QEMUMachine.consoleSocket(boot), log: boot.consoleLog)
        let waiter: ProcessWaiter
        do {
            defer { console.spawned() }
            waiter = try VMMProcess.spawn(
                qemu, QEMUMachine.arguments(for: boot, snapshotBoot: true), output: console.output,
                views: QEMUMachine.views(of: boot, virtiofsd: false), jail: .vmm(for: boot, also: [.write(directory)]))
        }
        console.endOnKernelPanic(waiter)
        defer { console.finish() }
        defer {
            // Not once it has been reaped: its pid may belong to another process by then.
            if !waiter.hasExited {
                kill(-waiter.pid, SIGKILL)
                kill(waiter.pid, SIGKILL)
            }
        }
        let deadline = ContinuousClock.now + bootTimeout
        let client = try await QEMUMachine.connectQMP(qmp, process: waiter, deadline: deadline, timeout: bootTimeout)
        // The guest opens its control port when it is warm.
        while try await client.takeEvent(matching: { $0.event == "VSERPORT_CHANGE" && $0.data?.id == "control" && $0.data?.open == true }) == nil {
            if waiter.hasExited { throw MachineError("the snapshot boot's QEMU exited", consoleTail: FileSystem.tailLines(of: boot.consoleLog)) }
            if ContinuousClock.now > deadline { throw MachineError("the snapshot boot did not open its control port within \(bootTimeout.text)") }
            try await Task.sleep(for: .milliseconds(10))
        }
        try await client.execute("stop")
        try await client.execute("migrate", arguments: ["uri": "exec:cat > " + Self.quoted(temporary)])
        try await Self.waitForMigration(client, deadline: deadline, what: "saving the snapshot")
        try? await client.execute("quit")
        _ = await VMMProcess.exited(waiter, within: .seconds(5))
        guard rename(temporary, path(key: key)) == 0 else {
            throw MachineError("cannot save a boot snapshot", cause: SystemError.last("rename", temporary))
        }
        prune(keeping: key)
    }

    /// Loads the snapshot `key` into the QEMU behind `client` (started with `-incoming defer`)
    /// and lets the VM run on.
    func restore(_ client: QMPClient, key: String, deadline: ContinuousClock.Instant) async throws {
        let file = path(key: key)
        try await client.execute("migrate-incoming", arguments: ["uri": "exec:cat " + Self.quoted(file)])
        try await Self.waitForMigration(client, deadline: deadline, what: "restoring the snapshot")
        try await client.execute("cont")
        // Most recently used: kept by `prune`.
        utimes(file, nil)
    }

    static func waitForMigration(_ client: QMPClient, deadline: ContinuousClock.Instant, what: String) async throws {
        while true {
            let state = try await client.execute("query-migrate", arguments: [String: String]?.none)
            switch state?.status {
            case "completed"?: return
            case "failed"?, "cancelled"?: throw MachineError("\(what) failed: \(state?.errorDescription ?? "QEMU gave no reason")")
            default: break
            }
            if ContinuousClock.now > deadline { throw MachineError("\(what) did not finish in time") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Removes the snapshots beyond the `keep` most recently used (`key` is one of them).
    func prune(keeping key: String) {
        var snapshots: [(name: String, used: Int)] = []
        for name in FileSystem.entries(directory) where name.hasSuffix(".state") {
            var info = stat()
            guard stat(directory + "/" + name, &info) == 0 else { continue }
            snapshots.append((name, info.st_mtim.tv_sec))
        }
        for old in snapshots.sorted(by: { $0.used > $1.used }).dropFirst(keep) where old.name != key + ".state" {
            unlink(directory + "/" + old.name)
        }
    }

    /// Files of snapshot boots whose airlock is gone (interrupted, killed): `<key>.state.<pid>.*`.
    func removeLeftovers() {
        for name in FileSystem.entries(directory) {
            let parts = name.split(separator: ".")
            guard parts.count == 4, parts[1] == "state", let pid = pid_t(parts[2]), ["tmp", "disk", "log"].contains(parts[3]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + name) }
        }
    }

    /// `path` as one word for `/bin/sh` (QEMU runs `exec:` URIs through it).
    static func quoted(_ path: String) -> String {
        "'" + path.replacing("'", with: "'\\''") + "'"
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
