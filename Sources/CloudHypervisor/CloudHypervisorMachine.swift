import AirlockSystem
import CShim
import CloudHypervisorAPI
import GuestLink
import Logging
import Machine
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A VM run by one `cloud-hypervisor` process, driven only through its REST API: shares served
/// by one `virtiofsd` each, the state disk on virtio-blk, the serial console written to the
/// console log, and the link over hybrid vsock.
///
/// Start: virtiofsd per share (ready = its socket file exists) → `cloud-hypervisor
/// --api-socket` (ready = `vmm.ping` answers) → guest→host listeners bound → `vm.create` →
/// `vm.boot`. Stop: `vm.shutdown` → `vm.delete` → `vmm.shutdown` → SIGTERM → SIGKILL, then the
/// virtiofsd processes; everything reaped.
public final class CloudHypervisorMachine: VirtualMachine {
    public let backend = MachineBackend.cloudHypervisor
    public let processID: pid_t
    public var shareServerIDs: [pid_t] { [processID] + virtiofsd.map(\.pid) }
    private let vmm: ProcessWaiter
    /// Writes the serial console and CH's output to the console log.
    private let console: ConsoleRecorder?
    private let virtiofsd: [ProcessWaiter]
    private let listeners: [HybridVsockListener]
    private let client: CloudHypervisorClient
    private let vsockSocket: String
    private let connectTimeout: Duration
    private let logger: Logger

    private init(
        vmm: ProcessWaiter, console: ConsoleRecorder?, virtiofsd: [ProcessWaiter], listeners: [HybridVsockListener],
        client: CloudHypervisorClient, vsockSocket: String, connectTimeout: Duration, logger: Logger
    ) {
        processID = vmm.pid
        self.vmm = vmm
        self.console = console
        self.virtiofsd = virtiofsd
        self.listeners = listeners
        self.client = client
        self.vsockSocket = vsockSocket
        self.connectTimeout = connectTimeout
        self.logger = logger
    }

    /// The guest's vsock context id. Every VM has its own vsock socket, so they can all be 3.
    public static let guestCID: Int64 = 3

    /// Where a VM's sockets go, all inside `MachineSpec.runtimeDirectory`.
    public struct Sockets: Sendable, Equatable {
        public var api: String
        public var vsock: String
        public var shares: [String]

        public init(runtimeDirectory: String, shareCount: Int) {
            api = runtimeDirectory + "/ch.sock"
            vsock = runtimeDirectory + "/vsock.sock"
            shares = (0..<shareCount).map { Virtiofsd.socketPath(runtimeDirectory: runtimeDirectory, index: $0) }
        }
    }

    /// Where virtiofsd's messages go: beside the console log (which holds CH's serial console
    /// and its own messages, through a `ConsoleRecorder`).
    public static func processLog(for spec: MachineSpec) -> String {
        VMMProcess.log(for: spec)
    }

    /// The kernel command line: the serial console on ttyS0 (CH's 8250), as under QEMU.
    public static func kernelCommandLine(for spec: MachineSpec) -> String {
        "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests"
    }

    /// `cloud-hypervisor`'s own arguments: only the API socket; everything else goes through
    /// `vm.create`.
    public static func arguments(sockets: Sockets) -> [String] {
        ["--api-socket", sockets.api]
    }

    /// The `vm.create` body for `spec`.
    public static func vmConfig(for spec: MachineSpec, sockets: Sockets) -> VmConfig {
        VmConfig(
            cpus: CpusConfig(bootVcpus: spec.cpus, maxVcpus: spec.cpus),
            memory: MemoryConfig(size: Int64(spec.memoryMiB) << 20, shared: true),
            payload: PayloadConfig(kernel: spec.kernel, initramfs: spec.initramfs, cmdline: kernelCommandLine(for: spec)),
            disks: [DiskConfig(path: spec.disk, readonly: false, id: "state", serial: LinkNames.stateDiskSerial, imageType: .raw)]
                + spec.readOnlyDisks.map { DiskConfig(path: $0.path, readonly: true, id: $0.serial, serial: $0.serial, imageType: .raw) },
            rng: RngConfig(src: "/dev/urandom"),
            fs: spec.shares.isEmpty
                ? nil
                : zip(spec.shares, sockets.shares).map { share, socket in
                    FsConfig(tag: share.tag, socket: socket, numQueues: 1, queueSize: 1024)
                },
            // `tty`: to CH's stdout, which is a `ConsoleRecorder`'s pipe (bounded log).
            serial: SerialConfig(mode: .tty),
            console: ConsoleConfig(mode: .off),
            vsock: VsockConfig(cid: guestCID, socket: sockets.vsock)
        )
    }

    /// Starts the VM. `guestListeners` maps vsock ports the guest connects to on the host
    /// (e.g. `LinkNames.egressVsockPort`) to the set-up of each accepted connection; they are
    /// listening before the VM boots.
    public static func start(
        _ spec: MachineSpec, cloudHypervisor: String, virtiofsd: String,
        guestListeners: [UInt32: @Sendable (any Channel) -> EventLoopFuture<Void>] = [:],
        timeout: Duration = .seconds(20), connectTimeout: Duration = .seconds(120), logger: Logger = Logger(label: "airlock.cloud-hypervisor")
    ) async throws -> CloudHypervisorMachine {
        let sockets = Sockets(runtimeDirectory: spec.runtimeDirectory, shareCount: spec.shares.count)
        for path in [sockets.api, sockets.vsock] + sockets.shares { unlink(path) }
        let log = processLog(for: spec)
        close(open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))
        let client = CloudHypervisorClient(socketPath: sockets.api, timeout: .seconds(10))
        let started = StartedParts()

        do {
            // virtiofsd first (`Virtiofsd`, shared with QEMU): CH connects to their sockets at vm.boot.
            started.virtiofsd = try await Virtiofsd.start(
                virtiofsd, serving: zip(spec.shares, sockets.shares).map { Virtiofsd.Served(share: $0, socket: $1) }, log: log)

            let console = try ConsoleRecorder(socket: nil, log: spec.consoleLog)
            started.console = console
            let vmm: ProcessWaiter
            do {
                defer { console.spawned() }
                vmm = try VMMProcess.spawn(cloudHypervisor, arguments(sockets: sockets), output: console.output, jail: .vmm(for: spec))
            }
            console.endOnKernelPanic(vmm)
            started.vmm = vmm
            try await waitForPing(client, of: vmm, timeout: timeout, log: spec.consoleLog)

            for (port, initializer) in guestListeners.sorted(by: { $0.key < $1.key }) {
                started.listeners.append(try await HybridVsockListener.bind(vsockSocket: sockets.vsock, port: port, initializer: initializer))
            }

            do {
                try await client.createVM(vmConfig(for: spec, sockets: sockets))
                try await client.bootVM()
            } catch {
                throw MachineError(
                    "Cloud Hypervisor did not boot the VM", cause: error,
                    consoleTail: FileSystem.tailLines(of: log, count: 10) + FileSystem.tailLines(of: spec.consoleLog))
            }
            logger.info("cloud-hypervisor booted the VM", metadata: ["pid": "\(vmm.pid)", "shares": "\(spec.shares.count)"])
            return CloudHypervisorMachine(
                vmm: vmm, console: started.console, virtiofsd: started.virtiofsd, listeners: started.listeners, client: client,
                vsockSocket: sockets.vsock, connectTimeout: connectTimeout, logger: logger)
        } catch {
            await teardown(
                vmm: started.vmm, console: started.console, client: client, virtiofsd: started.virtiofsd, listeners: started.listeners,
                grace: .seconds(1))
            throw error
        }
    }

    /// What `start` has started so far, for the teardown when a later step fails. Only the
    /// starting task touches it.
    private final class StartedParts {
        var vmm: ProcessWaiter?
        var console: ConsoleRecorder?
        var virtiofsd: [ProcessWaiter] = []
        var listeners: [HybridVsockListener] = []
    }

    public func connectControl() async throws -> LinkClient {
        let fd = try await HybridVsock.connect(socket: vsockSocket, port: LinkNames.controlVsockPort, timeout: connectTimeout)
        return try await LinkClient.connect(connectedSocket: fd)
    }

    public func waitForExit() async -> Int32? {
        await vmm.wait()
    }

    public func pause() async throws {
        try await client.pauseVM()
    }

    public func resume() async throws {
        // Cloud Hypervisor refuses to resume a VM that is not paused.
        if try await client.vmInfo().state == "Paused" { try await client.resumeVM() }
    }

    public func stop(grace: Duration) async {
        await Self.teardown(vmm: vmm, console: console, client: client, virtiofsd: virtiofsd, listeners: listeners, grace: grace)
    }

    /// Ends everything `start` started, the VMM first (virtiofsd ends by itself when its VMM
    /// goes; it gets signals only if it does not).
    private static func teardown(
        vmm: ProcessWaiter?, console: ConsoleRecorder?, client: CloudHypervisorClient, virtiofsd: [ProcessWaiter],
        listeners: [HybridVsockListener], grace: Duration
    ) async {
        if let vmm {
            // After the guest powered off, the VMM ends by itself.
            if await !VMMProcess.exited(vmm, within: grace) {
                var polite = client
                polite.timeout = .seconds(1)
                try? await polite.shutdownVM()
                try? await polite.deleteVM()
                try? await polite.shutdownVMM()
                await VMMProcess.terminate(vmm, grace: grace)
            }
        }
        console?.finish()
        await Virtiofsd.stop(virtiofsd)
        for listener in listeners { await listener.close() }
    }

    /// Cloud Hypervisor is ready once `vmm.ping` answers.
    static func waitForPing(_ client: CloudHypervisorClient, of process: ProcessWaiter, timeout: Duration, log: String) async throws {
        var probe = client
        probe.timeout = .seconds(1)
        let deadline = ContinuousClock.now + timeout
        var last: CloudHypervisorError?
        while true {
            if process.hasExited {
                throw MachineError("cloud-hypervisor exited during start-up", consoleTail: FileSystem.tailLines(of: log))
            }
            do {
                _ = try await probe.ping()
                return
            } catch {
                last = error
            }
            if ContinuousClock.now > deadline {
                // A process that died just now may not be reaped yet: give it a moment so the
                // error says what happened rather than "did not answer".
                for _ in 0..<50 where !process.hasExited { try await Task.sleep(for: .milliseconds(10)) }
                if process.hasExited {
                    throw MachineError("cloud-hypervisor exited during start-up", consoleTail: FileSystem.tailLines(of: log))
                }
                throw MachineError(
                    "cloud-hypervisor did not answer on its API socket within \(timeout.text)", cause: last,
                    consoleTail: FileSystem.tailLines(of: log))
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
