import AirlockSystem
import GuestLink
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The VMMs airlock drives.
public enum MachineBackend: String, Sendable, Equatable, CaseIterable {
    case cloudHypervisor = "cloud-hypervisor"
    case qemu
}

/// How the guest's CPU is run: hardware virtualization, or QEMU's software emulation.
public enum Accelerator: String, Sendable, Equatable {
    case kvm
    case tcg
}

/// What a VMM backend is asked to boot.
public struct MachineSpec: Sendable, Equatable {
    public struct Share: Sendable, Equatable {
        public var tag: String
        public var hostPath: String
        public var readOnly: Bool
        /// The files' owners, modes and types are in `user.virtfs.*` xattrs (an extracted OCI
        /// layer): QEMU shares it with 9p `security_model=mapped-xattr`, even when the other
        /// shares are virtio-fs (`ShareTransport.qemu`).
        public var mappedOwnership: Bool
        /// Parts of `hostPath` read-only or hidden on the host side (`ShareView`).
        public var view: ShareView?

        public init(tag: String, hostPath: String, readOnly: Bool, mappedOwnership: Bool = false, view: ShareView? = nil) {
            self.tag = tag
            self.hostPath = hostPath
            self.readOnly = readOnly
            self.mappedOwnership = mappedOwnership
            self.view = view
        }
    }

    /// A read-only disk besides the state disk (an OCI layer's squashfs image); the guest finds
    /// it by its virtio-blk serial number.
    public struct Disk: Sendable, Equatable {
        /// At most 20 bytes (virtio-blk's limit).
        public var serial: String
        public var path: String

        public init(serial: String, path: String) {
            self.serial = serial
            self.path = path
        }
    }

    public var kernel: String
    public var initramfs: String
    public var cpus: Int
    public var memoryMiB: UInt64
    public var shares: [Share]
    /// The raw state disk image (the guest sees it as /dev/vda).
    public var disk: String
    public var readOnlyDisks: [Disk]
    /// Where the VMM's sockets go (0700; short, for the 108-byte socket path limit).
    public var runtimeDirectory: String
    /// The serial console, appended to.
    public var consoleLog: String
    public var accelerator: Accelerator

    public init(
        kernel: String, initramfs: String, cpus: Int, memoryMiB: UInt64, shares: [Share], disk: String, readOnlyDisks: [Disk] = [],
        runtimeDirectory: String, consoleLog: String, accelerator: Accelerator
    ) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.shares = shares
        self.disk = disk
        self.readOnlyDisks = readOnlyDisks
        self.runtimeDirectory = runtimeDirectory
        self.consoleLog = consoleLog
        self.accelerator = accelerator
    }
}

/// Sets up the host's end of a guest→host egress connection on a connected channel (the
/// network proxy's HTTP/2 server). Backends call it for every egress connection they get:
/// QEMU connects once to its `airlock.egress` port; Cloud Hypervisor accepts on `<vsock>_1025`.
public typealias EgressHandler = @Sendable (any Channel) -> EventLoopFuture<Void>

/// A booted VM, whatever the VMM. Backends implement this; the orchestrator drives it.
public protocol VirtualMachine: Sendable {
    var backend: MachineBackend { get }
    /// The VMM process.
    var processID: pid_t { get }
    /// The processes that write the guest's shared files on the host: the VMM and the
    /// virtiofsd helpers (a file the guest deleted but keeps open stays open in one of them).
    var shareServerIDs: [pid_t] { get }
    /// Connects the host side of the control link (the guest answers once it has booted).
    func connectControl() async throws -> LinkClient
    /// Waits for the VMM process to end; its wait status, or nil when the waiting task is
    /// cancelled first.
    func waitForExit() async -> Int32?
    /// Stops the guest's vCPUs where they are (QMP `stop`, Cloud Hypervisor's `vm.pause`): it
    /// writes nothing more until `resume`. Its memory, devices and connections stay.
    func pause() async throws
    /// Runs a paused guest again; a running one is left as it is.
    func resume() async throws
    /// Ends the VM: gives it `grace` to exit by itself (after a guest power-off), then asks the
    /// VMM to quit, then SIGTERM, then SIGKILL, `grace` apart; reaped.
    func stop(grace: Duration) async
}

/// A backend failed to start or run the VM: what, the error it came from, and the last lines
/// of the serial console (where a guest's own failure shows).
public struct MachineError: ExplainedError, Sendable {
    public var message: String
    public var cause: (any Error)?
    public var hint: String?
    /// The last lines of the serial console, when there is one.
    public var consoleTail: [String]

    public init(_ message: String, cause: (any Error)? = nil, hint: String? = nil, consoleTail: [String] = []) {
        self.message = message
        self.cause = cause
        self.hint = hint
        self.consoleTail = consoleTail
    }

    public var description: String {
        var text = message
        if let cause { text += ": \(cause)" }
        if !consoleTail.isEmpty { text += "\nlast lines of the console:\n" + consoleTail.map { "  | " + $0 }.joined(separator: "\n") }
        if let hint { text += "\n  hint: \(hint)" }
        return text
    }
}
