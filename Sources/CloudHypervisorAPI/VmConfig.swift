/// The parts of Cloud Hypervisor's `VmConfig` (and the other request bodies) that airlock
/// sends. Field names follow the OpenAPI spec (`cloud-hypervisor-openapi.yaml`, components /
/// schemas) through explicit `CodingKeys`; optional fields left `nil` are not sent, so CH's
/// defaults apply. The contract tests validate every encoded body against that spec.
public struct VmConfig: Codable, Sendable, Equatable {
    public var cpus: CpusConfig?
    public var memory: MemoryConfig?
    /// Required by the spec.
    public var payload: PayloadConfig
    public var disks: [DiskConfig]?
    public var rng: RngConfig?
    public var fs: [FsConfig]?
    public var serial: SerialConfig?
    public var console: ConsoleConfig?
    public var vsock: VsockConfig?

    public init(
        cpus: CpusConfig? = nil, memory: MemoryConfig? = nil, payload: PayloadConfig, disks: [DiskConfig]? = nil,
        rng: RngConfig? = nil, fs: [FsConfig]? = nil, serial: SerialConfig? = nil, console: ConsoleConfig? = nil, vsock: VsockConfig? = nil
    ) {
        self.cpus = cpus
        self.memory = memory
        self.payload = payload
        self.disks = disks
        self.rng = rng
        self.fs = fs
        self.serial = serial
        self.console = console
        self.vsock = vsock
    }

    enum CodingKeys: String, CodingKey {
        case cpus, memory, payload, disks, rng, fs, serial, console, vsock
    }
}

/// What the VM boots: an ELF `vmlinux` with a PVH note (or a bzImage), initramfs, command line.
public struct PayloadConfig: Codable, Sendable, Equatable {
    public var kernel: String?
    public var initramfs: String?
    public var cmdline: String?

    public init(kernel: String?, initramfs: String?, cmdline: String?) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.cmdline = cmdline
    }

    enum CodingKeys: String, CodingKey {
        case kernel, initramfs, cmdline
    }
}

public struct CpusConfig: Codable, Sendable, Equatable {
    public var bootVcpus: Int
    public var maxVcpus: Int

    public init(bootVcpus: Int, maxVcpus: Int) {
        self.bootVcpus = bootVcpus
        self.maxVcpus = maxVcpus
    }

    enum CodingKeys: String, CodingKey {
        case bootVcpus = "boot_vcpus"
        case maxVcpus = "max_vcpus"
    }
}

public struct MemoryConfig: Codable, Sendable, Equatable {
    /// Bytes.
    public var size: Int64
    /// Guest memory shared with other processes: virtio-fs (virtiofsd maps it) needs `true`.
    public var shared: Bool?

    public init(size: Int64, shared: Bool?) {
        self.size = size
        self.shared = shared
    }

    enum CodingKeys: String, CodingKey {
        case size, shared
    }
}

public struct DiskConfig: Codable, Sendable, Equatable {
    /// Image formats CH knows (`ImageType` in the spec).
    public enum ImageType: String, Codable, Sendable, Equatable {
        case fixedVhd = "FixedVhd"
        case qcow2 = "Qcow2"
        case raw = "Raw"
        case vhdx = "Vhdx"
    }

    public var path: String
    public var readonly: Bool?
    public var id: String?
    /// The virtio-blk serial the guest finds the disk by.
    public var serial: String?
    /// Named explicitly: an autodetected raw image makes CH refuse writes to sector 0.
    public var imageType: ImageType?

    public init(path: String, readonly: Bool? = nil, id: String? = nil, serial: String? = nil, imageType: ImageType? = nil) {
        self.path = path
        self.readonly = readonly
        self.id = id
        self.serial = serial
        self.imageType = imageType
    }

    enum CodingKeys: String, CodingKey {
        case path, readonly, id, serial
        case imageType = "image_type"
    }
}

public struct RngConfig: Codable, Sendable, Equatable {
    public var src: String

    public init(src: String) {
        self.src = src
    }

    enum CodingKeys: String, CodingKey {
        case src
    }
}

/// A virtio-fs device served by a `virtiofsd` on `socket`.
public struct FsConfig: Codable, Sendable, Equatable {
    public var tag: String
    public var socket: String
    public var numQueues: Int
    public var queueSize: Int
    public var id: String?

    public init(tag: String, socket: String, numQueues: Int = 1, queueSize: Int = 1024, id: String? = nil) {
        self.tag = tag
        self.socket = socket
        self.numQueues = numQueues
        self.queueSize = queueSize
        self.id = id
    }

    enum CodingKeys: String, CodingKey {
        case tag, socket, id
        case numQueues = "num_queues"
        case queueSize = "queue_size"
    }
}

/// `ConsoleMode` in the spec.
public enum ConsoleMode: String, Codable, Sendable, Equatable {
    case off = "Off"
    case pty = "Pty"
    case tty = "Tty"
    case file = "File"
    case socket = "Socket"
    case null = "Null"
}

/// The legacy serial port (ttyS0 in the guest).
public struct SerialConfig: Codable, Sendable, Equatable {
    public var mode: ConsoleMode
    public var file: String?

    public init(mode: ConsoleMode, file: String? = nil) {
        self.mode = mode
        self.file = file
    }

    enum CodingKeys: String, CodingKey {
        case mode, file
    }
}

/// The virtio console (hvc0 in the guest).
public struct ConsoleConfig: Codable, Sendable, Equatable {
    public var mode: ConsoleMode
    public var file: String?

    public init(mode: ConsoleMode, file: String? = nil) {
        self.mode = mode
        self.file = file
    }

    enum CodingKeys: String, CodingKey {
        case mode, file
    }
}

/// A virtio-vsock device whose host side is the Unix socket `socket` (hybrid vsock).
public struct VsockConfig: Codable, Sendable, Equatable {
    /// The guest's context id; at least 3.
    public var cid: Int64
    public var socket: String

    public init(cid: Int64, socket: String) {
        self.cid = cid
        self.socket = socket
    }

    enum CodingKeys: String, CodingKey {
        case cid, socket
    }
}

/// Body of `vm.resize`.
public struct VmResize: Codable, Sendable, Equatable {
    public var desiredVcpus: Int?
    /// Bytes.
    public var desiredRam: Int64?
    /// Bytes.
    public var desiredBalloon: Int64?

    public init(desiredVcpus: Int? = nil, desiredRam: Int64? = nil, desiredBalloon: Int64? = nil) {
        self.desiredVcpus = desiredVcpus
        self.desiredRam = desiredRam
        self.desiredBalloon = desiredBalloon
    }

    enum CodingKeys: String, CodingKey {
        case desiredVcpus = "desired_vcpus"
        case desiredRam = "desired_ram"
        case desiredBalloon = "desired_balloon"
    }
}

/// Answer of `vmm.ping`.
public struct VmmPingResponse: Codable, Sendable, Equatable {
    public var version: String
    public var buildVersion: String?
    public var pid: Int64?
    public var features: [String]?

    public init(version: String, buildVersion: String? = nil, pid: Int64? = nil, features: [String]? = nil) {
        self.version = version
        self.buildVersion = buildVersion
        self.pid = pid
        self.features = features
    }

    enum CodingKeys: String, CodingKey {
        case version, pid, features
        case buildVersion = "build_version"
    }
}

/// Answer of `vm.info` (the parts airlock reads; the config echoed back is not decoded).
public struct VmInfo: Codable, Sendable, Equatable {
    /// `VmState` in the spec: Created, Running, Shutdown, Paused, BreakPoint.
    public var state: String
    public var memoryActualSize: Int64?

    public init(state: String, memoryActualSize: Int64? = nil) {
        self.state = state
        self.memoryActualSize = memoryActualSize
    }

    enum CodingKeys: String, CodingKey {
        case state
        case memoryActualSize = "memory_actual_size"
    }
}

/// Answer of the hot-plug endpoints (`vm.add-fs`, `vm.add-disk`) when the VM is running.
public struct PciDeviceInfo: Codable, Sendable, Equatable {
    public var id: String
    public var bdf: String

    public init(id: String, bdf: String) {
        self.id = id
        self.bdf = bdf
    }

    enum CodingKeys: String, CodingKey {
        case id, bdf
    }
}
