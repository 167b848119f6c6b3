import GuestLink
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

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

        public init(tag: String, hostPath: String, readOnly: Bool, mappedOwnership: Bool = false) {
            self.tag = tag
            self.hostPath = hostPath
            self.readOnly = readOnly
            self.mappedOwnership = mappedOwnership
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
    public var accelerator: BackendSelection.Accelerator

    public init(
        kernel: String, initramfs: String, cpus: Int, memoryMiB: UInt64, shares: [Share], disk: String, readOnlyDisks: [Disk] = [],
        runtimeDirectory: String, consoleLog: String, accelerator: BackendSelection.Accelerator
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
    var backend: BackendSelection.Backend { get }
    /// The VMM process.
    var processID: pid_t { get }
    /// Connects the host side of the control link (the guest answers once it has booted).
    func connectControl() async throws -> LinkClient
    /// Waits for the VMM process to end; its wait status, or nil when the waiting task is
    /// cancelled first.
    func waitForExit() async -> Int32?
    /// Ends the VM: gives it `grace` to exit by itself (after a guest power-off), then asks the
    /// VMM to quit, then SIGTERM, then SIGKILL, `grace` apart; reaped.
    func stop(grace: Duration) async
}

/// A backend failed to start the VM.
public struct MachineError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// The last lines of the serial console, when there is one.
    public var consoleTail: [String]

    public init(_ message: String, consoleTail: [String] = []) {
        self.message = message
        self.consoleTail = consoleTail
    }

    public var description: String {
        consoleTail.isEmpty ? message : message + "\nlast lines of the console:\n" + consoleTail.map { "  | " + $0 }.joined(separator: "\n")
    }
}

/// The last `count` lines of a (console) log file, read from its end.
public func tailLines(of path: String, count: Int = 20, maxBytes: Int = 64 << 10) -> [String] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    let size = lseek(fd, 0, SEEK_END)
    let start = max(0, Int(size) - maxBytes)
    var bytes = [UInt8](repeating: 0, count: Int(size) - start)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
    guard n > 0 else { return [] }
    // Bytes, not Characters: the serial console ends lines with "\r\n", one Character in Swift.
    let lines = bytes[0..<n].split(separator: UInt8(ascii: "\n")).map { line in
        String(decoding: line.filter { $0 >= 32 || $0 == 9 }, as: UTF8.self)
    }.filter { !$0.isEmpty }
    return Array(lines.suffix(count))
}
