import AirlockSystem
import CShim
import GuestLink
import Machine
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A VM run by `qemu-system-x86_64 -M microvm`: QMP on a Unix socket for the lifecycle, the
/// control link on a virtio-serial port bound to a Unix socket, shares over virtio-fs (one
/// `virtiofsd` each, when the Rust virtiofsd is installed) or virtio-9p, the state disk on
/// virtio-blk, the serial console appended to the console log.
public final class QEMUMachine: VirtualMachine {
    public let backend = MachineBackend.qemu
    public let processID: pid_t
    public var shareServerIDs: [pid_t] { [processID] + virtiofsd.map(\.pid) }
    private let waiter: ProcessWaiter
    private let qmpSocket: String
    private let control: Control
    /// The virtiofsd processes serving this VM's virtio-fs shares (none with 9p).
    private let virtiofsd: [ProcessWaiter]
    /// Writes the serial console and QEMU's output to the console log.
    private let console: ConsoleRecorder
    /// One per virtiofsd: stops the VM when it ends while QEMU runs (cancelled by `stop`).
    private let watchers: [Task<Void, Never>]

    /// How the host reaches the guest's control port.
    enum Control: Sendable {
        /// The virtio-serial port bound to this Unix socket.
        case serial(socket: String)
        /// `AF_VSOCK` to the guest with this context id (vhost-vsock on the host).
        case vsock(cid: UInt32)
    }

    private init(
        waiter: ProcessWaiter, qmpSocket: String, control: Control, virtiofsd: [(process: ProcessWaiter, share: String)], console: ConsoleRecorder,
        consoleLog: String
    ) {
        self.console = console
        processID = waiter.pid
        self.waiter = waiter
        self.qmpSocket = qmpSocket
        self.control = control
        self.virtiofsd = virtiofsd.map(\.process)
        watchers = virtiofsd.map { helper in
            Task { await Self.watch(helper.process, serving: helper.share, qemu: waiter, consoleLog: consoleLog) }
        }
    }

    /// A virtiofsd ends by itself only when QEMU has gone. One that ends while QEMU runs (it
    /// crashed, or was killed) leaves the guest hanging on its share, so the VM is stopped at
    /// once, with the reason in the console log: the boot fails with it instead of waiting for
    /// its deadline, and a running session ends.
    private static func watch(_ helper: ProcessWaiter, serving share: String, qemu: ProcessWaiter, consoleLog: String) async {
        guard let status = await helper.wait() else { return }
        // QEMU going first makes virtiofsd go: give QEMU's own end a moment to be seen.
        try? await Task.sleep(for: .milliseconds(300))
        if Task.isCancelled || qemu.hasExited { return }
        let line = Array("airlock: virtiofsd for \(share) ended (wait status \(status)) while the VM ran; stopping the VM\n".utf8)
        let fd = open(consoleLog, O_WRONLY | O_APPEND | O_CLOEXEC)
        if fd >= 0 {
            _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        // QEMU's process group (its own session); it is reaped by its waiter.
        kill(-qemu.pid, SIGTERM)
        kill(qemu.pid, SIGTERM)
    }

    /// Measured once per process: the host TSC rate a TCG guest must be told.
    public static let hostTSCKilohertz = UInt(airlock_tsc_khz(25))

    /// The kernel command line. Under TCG the guest gets the host's TSC rate (without PIT or
    /// HPET it cannot calibrate and hangs) and trusts it across CPUs.
    /// `snapshotBoot`: a boot that makes a `BootSnapshot`.
    public static func kernelCommandLine(for spec: MachineSpec, tscKilohertz: UInt, snapshotBoot: Bool = false) -> String {
        var line = "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests"
        if spec.accelerator == .tcg { line += " tsc_early_khz=\(tscKilohertz) tsc=reliable" }
        if snapshotBoot { line += " airlock.snapshot" }
        return line
    }

    /// The shares served by virtiofsd when `virtiofsd` is installed (`ShareTransport.qemu`),
    /// each with its socket: `fs<index>.sock`, index into `spec.shares`.
    public static func virtiofsShares(of spec: MachineSpec, virtiofsd: Bool) -> [Virtiofsd.Served] {
        spec.shares.enumerated().compactMap { index, share in
            guard ShareTransport.qemu(for: share, virtiofsd: virtiofsd) == .virtiofs else { return nil }
            return Virtiofsd.Served(share: share, socket: Virtiofsd.socketPath(runtimeDirectory: spec.runtimeDirectory, index: index))
        }
    }

    /// The QEMU command line for `spec` (without the binary), split out for tests.
    /// microvm needs ACPI on: Debian's virtio_mmio finds devices only through ACPI.
    /// With `vsockCID` the control link is vhost-vsock (`vhost-vsock-device`: microvm has
    /// virtio-mmio, not PCI) with that guest context id, and there is no control serial port,
    /// so the guest picks vsock.
    /// With `virtiofsd` (the Rust virtiofsd is installed), every share but image layers is a
    /// `vhost-user-fs-device` on the socket of its virtiofsd, the guest's RAM is a shared
    /// memfd (vhost-user maps it into virtiofsd), named as microvm's `memory-backend`, and the
    /// virtio-mmio transports are modern (virtio 1.0), as vhost-user requires.
    /// `snapshotBoot`: the boot that makes a `BootSnapshot` of this command line.
    public static func arguments(
        for spec: MachineSpec, tscKilohertz: UInt = hostTSCKilohertz, vsockCID: UInt32? = nil, virtiofsd: Bool = false, snapshotBoot: Bool = false
    ) -> [String] {
        let qmp = spec.runtimeDirectory + "/qmp.sock"
        let control = spec.runtimeDirectory + "/control.sock"
        let virtiofs = !virtiofsShares(of: spec, virtiofsd: virtiofsd).isEmpty
        var arguments = [
            "-M", "microvm,acpi=on,pit=off,pic=off,rtc=on,isa-serial=on,x-option-roms=off" + (virtiofs ? ",memory-backend=mem" : ""),
            "-accel", spec.accelerator == .kvm ? "kvm" : "tcg",
            "-cpu", spec.accelerator == .kvm ? "host" : "max",
            "-smp", "\(spec.cpus)",
            "-m", "\(spec.memoryMiB)M",
        ]
        if virtiofs {
            // The same size as -m (QEMU insists); share=on so virtiofsd can map it.
            arguments += ["-object", "memory-backend-memfd,id=mem,size=\(spec.memoryMiB)M,share=on"]
            // virtio-mmio is legacy (version 1) by default, which vhost-user backends refuse
            // ("virtio legacy devices aren't supported by libvhost-user"): modern transports.
            // Only with virtio-fs, so the 9p configuration stays exactly as it was.
            arguments += ["-global", "virtio-mmio.force-legacy=false"]
        }
        arguments += [
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", spec.kernel,
            "-initrd", spec.initramfs,
            "-append", kernelCommandLine(for: spec, tscKilohertz: tscKilohertz, snapshotBoot: snapshotBoot),
            // The serial console goes to a `ConsoleRecorder` listening there (bounded log).
            "-chardev", "socket,id=console,path=\(escape(consoleSocket(spec)))",
            "-serial", "chardev:console",
            "-qmp", "unix:\(escape(qmp)),server=on,wait=off",
            "-device", "virtio-serial-device,max_ports=4",
            // The guest→host egress connection (TCP flows for the host's proxy): always a port,
            // with or without vhost-vsock, so each sandbox has its own.
            "-chardev", "socket,id=egress,path=\(escape(spec.runtimeDirectory + "/egress.sock")),server=on,wait=off",
            "-device", "virtserialport,chardev=egress,name=\(LinkNames.egressPort)",
        ]
        if let vsockCID {
            arguments += ["-device", "vhost-vsock-device,guest-cid=\(vsockCID)"]
        } else {
            arguments += [
                "-chardev", "socket,id=control,path=\(escape(control)),server=on,wait=off",
                // The id names the port in QEMU's VSERPORT_CHANGE events (see BootSnapshot).
                "-device", "virtserialport,chardev=control,name=\(LinkNames.controlPort),id=control",
            ]
        }
        arguments += [
            "-drive", "id=state,file=\(escape(spec.disk)),format=raw,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=state,serial=\(LinkNames.stateDiskSerial)",
            "-object", "rng-random,id=rng,filename=/dev/urandom",
            "-device", "virtio-rng-device,rng=rng",
        ]
        for disk in spec.readOnlyDisks {
            arguments += [
                "-drive", "id=\(disk.serial),file=\(escape(disk.path)),format=raw,if=none,readonly=on",
                "-device", "virtio-blk-device,drive=\(disk.serial),serial=\(disk.serial)",
            ]
        }
        for (index, share) in spec.shares.enumerated() {
            switch ShareTransport.qemu(for: share, virtiofsd: virtiofsd) {
            case .virtiofs:
                // Read-only is virtiofsd's `--readonly` (and the guest's read-only mount).
                let socket = Virtiofsd.socketPath(runtimeDirectory: spec.runtimeDirectory, index: index)
                arguments += [
                    "-chardev", "socket,id=fs\(index),path=\(escape(socket))",
                    "-device", "vhost-user-fs-device,chardev=fs\(index),tag=\(share.tag),queue-size=1024",
                ]
            case .ninep:
                arguments += [
                    "-fsdev",
                    "local,id=fs\(index),path=\(escape(share.hostPath)),security_model=\(share.mappedOwnership ? "mapped-xattr" : "none")"
                        + (share.readOnly ? ",readonly=on" : ""),
                    "-device", "virtio-9p-device,fsdev=fs\(index),mount_tag=\(share.tag)",
                ]
            }
        }
        return arguments
    }

    /// Where QEMU connects with the serial console: the recorder's socket.
    static func consoleSocket(_ spec: MachineSpec) -> String {
        spec.runtimeDirectory + "/console.sock"
    }

    /// QEMU option values separate with commas; a comma in a path is written twice.
    static func escape(_ value: String) -> String {
        value.replacing(",", with: ",,")
    }

    /// The guest context id to try on `attempt` (0, 1, …): derived from the sandbox's runtime
    /// directory (unique per running sandbox) so the first try rarely collides, in 3 ..< 2³¹
    /// (0–2 are reserved; the top values are special).
    public static func vsockCID(runtimeDirectory: String, attempt: Int) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in runtimeDirectory.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        let span: UInt32 = (1 << 31) - 3
        return 3 + (hash &+ UInt32(truncatingIfNeeded: attempt) &* 2_654_435_761) % span
    }

    /// What QEMU prints when another VM on the host already has the context id.
    static func cidInUse(_ log: String) -> Bool {
        log.contains("unable to set guest cid") || (log.contains("vhost-vsock") && log.contains("Address already in use"))
    }

    /// Starts QEMU and waits until its QMP socket answers. With `vhostVsock` (the host has
    /// `/dev/vhost-vsock`), the link is AF_VSOCK; a context id another VM holds means another try
    /// with the next one. With `virtiofsd` (the Rust virtiofsd's path), the shares it can serve
    /// are virtio-fs, one virtiofsd each, started (and ready) before QEMU. With `snapshots`, a
    /// VM that can be (see `BootSnapshot`) is restored from its boot snapshot, which is made
    /// first when there is none (`progress` says so: it takes a boot).
    public static func start(
        _ spec: MachineSpec, qemu: String, vhostVsock: Bool = false, virtiofsd: String? = nil, egress: EgressHandler? = nil,
        timeout: Duration = .seconds(20),
        snapshots: BootSnapshot? = nil, progress: (@Sendable (String) -> Void)? = nil
    ) async throws -> QEMUMachine {
        let attempts = vhostVsock ? 8 : 1
        for attempt in 0..<attempts {
            let cid = vhostVsock ? vsockCID(runtimeDirectory: spec.runtimeDirectory, attempt: attempt) : nil
            let logStart = FileSystem.size(spec.consoleLog) ?? 0
            do {
                return try await start(
                    spec, qemu: qemu, vsockCID: cid, virtiofsd: virtiofsd, egress: egress, timeout: timeout, snapshots: snapshots, progress: progress)
            } catch
                where error is MachineError && cid != nil && attempt + 1 < attempts && cidInUse(FileSystem.text(of: spec.consoleLog, from: logStart))
            {
                continue  // the next attempt reports its own failure
            }
        }
        throw MachineError("no free vsock context id found for QEMU", consoleTail: FileSystem.tailLines(of: spec.consoleLog))
    }

    private static func start(
        _ spec: MachineSpec, qemu: String, vsockCID: UInt32?, virtiofsd: String?, egress: EgressHandler?, timeout: Duration,
        snapshots: BootSnapshot?, progress: (@Sendable (String) -> Void)?
    ) async throws -> QEMUMachine {
        let qmp = spec.runtimeDirectory + "/qmp.sock"
        let control = spec.runtimeDirectory + "/control.sock"
        unlink(qmp)
        unlink(control)
        unlink(spec.runtimeDirectory + "/egress.sock")

        // virtiofsd first (ready = its socket exists): QEMU connects to the sockets as it starts.
        // Their output goes to vmm.log, beside the console log.
        let served = virtiofsShares(of: spec, virtiofsd: virtiofsd != nil)
        var helpers: [ProcessWaiter] = []
        var helperLog: String?
        if let virtiofsd, !served.isEmpty {
            let log = VMMProcess.log(for: spec)
            close(open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))
            helperLog = log
            helpers = try await Virtiofsd.start(virtiofsd, serving: served, log: log)
        }

        /// The console's last lines, after virtiofsd's when there are any.
        func failureTail() -> [String] {
            (helperLog.map { FileSystem.tailLines(of: $0, count: 10) } ?? []) + FileSystem.tailLines(of: spec.consoleLog)
        }

        var arguments = arguments(for: spec, vsockCID: vsockCID, virtiofsd: virtiofsd != nil)
        var snapshot: (store: BootSnapshot, key: String)?
        if let snapshots, BootSnapshot.applies(vsockCID: vsockCID, virtiofs: !served.isEmpty) {
            let key = BootSnapshot.key(arguments: arguments, spec: spec, qemu: qemu)
            if access(snapshots.path(key: key), R_OK) != 0 {
                progress?("preparing a boot snapshot of this VM configuration (once; later starts resume it)")
                do {
                    try await snapshots.make(spec, key: key, qemu: qemu)
                } catch {
                    progress?("no boot snapshot (\(error)); booting normally")
                }
            }
            if access(snapshots.path(key: key), R_OK) == 0 {
                snapshot = (snapshots, key)
                arguments += ["-incoming", "defer"]
            }
        }

        // The console and QEMU's own complaints (a bad path, a missing device) go to the
        // console log, within its size.
        let waiter: ProcessWaiter
        let console: ConsoleRecorder
        do {
            console = try ConsoleRecorder(socket: consoleSocket(spec), log: spec.consoleLog)
            defer { console.spawned() }
            waiter = try VMMProcess.spawn(
                qemu, arguments, output: console.output, views: views(of: spec, virtiofsd: virtiofsd != nil),
                jail: .vmm(for: spec, also: (snapshot?.store.directory).map { [.read($0)] } ?? []))
        } catch {
            await Virtiofsd.stop(helpers)
            throw error
        }
        console.endOnKernelPanic(waiter)
        let machine = QEMUMachine(
            waiter: waiter, qmpSocket: qmp, control: vsockCID.map { .vsock(cid: $0) } ?? .serial(socket: control),
            virtiofsd: zip(helpers, served).map { ($0, $1.share.hostPath) }, console: console, consoleLog: spec.consoleLog)

        // Ready when QMP answers; if QEMU dies first, say why.
        let deadline = ContinuousClock.now + timeout
        let client: QMPClient
        do {
            client = try await connectQMP(qmp, process: waiter, deadline: deadline, timeout: timeout)
        } catch var error as MachineError {
            await machine.stop(grace: waiter.hasExited ? .zero : .seconds(1))
            error.consoleTail = failureTail()
            throw error
        }
        if let snapshot {
            do {
                try await snapshot.store.restore(client, key: snapshot.key, deadline: deadline)
            } catch {
                // A snapshot that does not load is not tried again: boot normally.
                await machine.stop(grace: .zero)
                unlink(snapshot.store.path(key: snapshot.key))
                progress?("the boot snapshot did not load (\(error)); booting normally")
                return try await start(
                    spec, qemu: qemu, vsockCID: vsockCID, virtiofsd: virtiofsd, egress: egress, timeout: timeout, snapshots: nil,
                    progress: progress)
            }
            progress?("resumed the boot snapshot \(snapshot.key.prefix(12))")
        }
        if let egress {
            // QEMU listens on the egress port's socket from the start; the guest speaks first.
            do {
                _ = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer(egress)
                    .connect(unixDomainSocketPath: spec.runtimeDirectory + "/egress.sock").get()
            } catch {
                await machine.stop(grace: .seconds(1))
                throw MachineError("cannot connect to QEMU's egress port", cause: error, consoleTail: failureTail())
            }
        }
        return machine
    }

    public func connectControl() async throws -> LinkClient {
        switch control {
        case .serial(let socket):
            return try await LinkClient.connect(unixSocket: socket)
        case .vsock(let cid):
            // Refused or reset until the guest agent listens; the orchestrator's boot deadline
            // bounds this loop too.
            let deadline = ContinuousClock.now + .seconds(120)
            while true {
                do {
                    return try await LinkClient.connect(vsockCID: cid, port: LinkNames.controlVsockPort)
                } catch {
                    if ContinuousClock.now > deadline {
                        throw MachineError("the guest did not accept vsock port \(LinkNames.controlVsockPort) (CID \(cid))", cause: error)
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
        }
    }

    /// A QMP connection to the QEMU `process` just started, once it listens; fails when it
    /// exits or `deadline` (`timeout` seconds after the start) passes first.
    static func connectQMP(_ path: String, process: ProcessWaiter, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> QMPClient {
        while true {
            if process.hasExited { throw MachineError("QEMU exited during start-up") }
            if let client = try? await QMPClient.connect(path: path, timeout: .seconds(2)) { return client }
            if ContinuousClock.now > deadline { throw MachineError("QEMU did not open its QMP socket within \(timeout.text)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    public func waitForExit() async -> Int32? {
        await waiter.wait()
    }

    public func pause() async throws {
        try await QMPClient.connect(path: qmpSocket, timeout: .seconds(2)).execute("stop", timeout: .seconds(2))
    }

    public func resume() async throws {
        try await QMPClient.connect(path: qmpSocket, timeout: .seconds(2)).execute("cont", timeout: .seconds(2))
    }

    /// QEMU first, then its virtiofsd processes (they end by themselves when QEMU goes; they
    /// get signals only if they do not), all reaped.
    public func stop(grace: Duration) async {
        for watcher in watchers { watcher.cancel() }
        await stopQEMU(grace: grace)
        console.finish()
        await Virtiofsd.stop(virtiofsd)
    }

    /// The views of `spec`'s 9p shares, which QEMU serves itself: it then runs in their mount
    /// namespace (the mounts there must be its own, or a rename or unlink through the share
    /// would reach what they cover).
    static func views(of spec: MachineSpec, virtiofsd: Bool) -> [(ShareView, at: String)] {
        spec.shares.compactMap { share in
            guard let view = share.view, ShareTransport.qemu(for: share, virtiofsd: virtiofsd) == .ninep else { return nil }
            return (view, share.hostPath)
        }
    }

    private func stopQEMU(grace: Duration) async {
        // The orchestrator has asked the guest to power off: let it sync its disk and go.
        if await VMMProcess.exited(waiter, within: grace) { return }
        // Then `quit` (QEMU ends at once), then signals.
        if let client = try? await QMPClient.connect(path: qmpSocket, timeout: .seconds(1)) {
            try? await client.execute("quit", timeout: .seconds(1))
        }
        for signal in [SIGTERM, SIGKILL] {
            if await VMMProcess.exited(waiter, within: grace) { return }
            kill(-processID, signal)
            kill(processID, signal)
        }
        _ = await waiter.wait()
    }
}
