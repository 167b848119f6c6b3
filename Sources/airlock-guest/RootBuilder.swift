import GuestLink

#if canImport(Glibc)
import Glibc
#endif

/// Assembles the root the agent's processes run in (chrooted), from a `SetupSpec`:
///
///     /newroot             overlay: lower = a fresh skeleton (tmpfs), upper = state disk
///     /newroot/usr, …      overlay: lower = host directory over 9p or virtio-fs (read-only), upper = state disk
///     /newroot/<project>   the workspace share, read-write
///
/// The state disk keeps every upper layer, so what the agent installs persists across runs of
/// the same sandbox and never reaches the host.
enum RootBuilder {
    static let root = "/newroot"
    static let state = "/mnt/state"
    static let skeleton = "/mnt/skeleton"
    static let shares = "/mnt/shares"

    /// Whether the shares come as virtio-fs devices (Cloud Hypervisor) rather than virtio-9p
    /// (QEMU): a device is bound to the virtiofs driver.
    static func hasVirtiofsDevices() -> Bool {
        System.directoryEntries("/sys/bus/virtio/drivers/virtiofs").contains { $0.hasPrefix("virtio") }
    }

    static func build(_ spec: SetupSpec) async throws {
        var time = timespec(tv_sec: Int(spec.clockSeconds), tv_nsec: Int(spec.clockNanoseconds))
        if clock_settime(CLOCK_REALTIME, &time) != 0 { System.log("cannot set the clock: \(String(cString: strerror(errno)))") }
        _ = spec.hostname.withCString { sethostname($0, strlen($0)) }

        try await prepareStateDisk(spec.stateDisk)
        System.log("setup: state disk mounted")

        // The skeleton: directories, links and the synthesized /etc, fresh each boot.
        try System.mount("tmpfs", skeleton, "tmpfs", options: "mode=0755")
        for directory in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root", "/home", "/var/tmp", "/mnt"] {
            try System.makeDirectories(skeleton + directory)
        }
        chmod(skeleton + "/tmp", 0o1777)
        chmod(skeleton + "/var/tmp", 0o1777)
        for link in spec.links { try System.symlink(link.target, at: skeleton + link.path) }
        for share in spec.shares { try System.makeDirectories(skeleton + share.path) }
        for directory in spec.directories { try System.makeDirectories(skeleton + directory) }
        for file in spec.files { try System.writeFile(skeleton + file.path, file.contents, mode: mode_t(file.mode)) }
        try System.makeDirectories(skeleton + spec.home)

        try System.makeDirectories(state + "/root/upper")
        try System.makeDirectories(state + "/root/work")
        try System.mount("overlay", root, "overlay", options: "lowerdir=\(skeleton),upperdir=\(state)/root/upper,workdir=\(state)/root/work")

        // Scratch file systems first: a share may live below them (a project in /tmp).
        try System.mount("tmpfs", root + "/tmp", "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV), options: "mode=1777")
        try System.mount("tmpfs", root + "/run", "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV), options: "mode=0755")
        let virtiofs = hasVirtiofsDevices()
        for share in spec.shares {
            let mountPoint = shares + "/" + share.tag
            if virtiofs {
                // Cloud Hypervisor: every share is a virtio-fs device (caching is virtiofsd's).
                try System.mount(share.tag, mountPoint, "virtiofs", flags: share.readOnly ? UInt(MS_RDONLY) : 0)
            } else {
                // Read-only host directories can be cached freely; the writable workspace keeps
                // mmap working (git maps its packs) without caching what the host may read.
                let cache = share.readOnly ? "loose" : "mmap"
                try System.mount(share.tag, mountPoint, "9p", flags: share.readOnly ? UInt(MS_RDONLY) : 0,
                                 options: "trans=virtio,version=9p2000.L,msize=512000,cache=\(cache)")
            }
            switch share.kind {
            case .overlay:
                let layer = state + "/layers/" + share.tag
                try System.makeDirectories(layer + "/upper")
                try System.makeDirectories(layer + "/work")
                try System.mount("overlay", root + share.path, "overlay", options: "lowerdir=\(mountPoint),upperdir=\(layer)/upper,workdir=\(layer)/work")
            case .direct:
                try System.makeDirectories(root + share.path)
                try System.mount(mountPoint, root + share.path, "none", flags: UInt(MS_BIND) | (share.readOnly ? UInt(MS_RDONLY) : 0))
            }
        }

        System.log("setup: shares mounted")
        try System.mount("proc", root + "/proc", "proc", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        try System.mount("sysfs", root + "/sys", "sysfs", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY))
        try System.mount("/dev", root + "/dev", "none", flags: UInt(MS_BIND | MS_REC))
        // The home lives in the persistent upper layer; hand it to the user the first time.
        var info = stat()
        if stat(root + spec.home, &info) == 0, info.st_uid != spec.user, spec.home != "/" {
            _ = chown(root + spec.home, spec.user, spec.group)
        }
    }

    /// Mounts the ext4 state disk at /mnt/state, formatting it the first time (no ext4 magic)
    /// and growing the file system when the disk grew.
    static func prepareStateDisk(_ device: String) async throws {
        if !hasExt4Signature(device) {
            System.log("setup: formatting \(device)")
            try await run(["mke2fs", "-q", "-t", "ext4", "-F", "-L", "airlock-state", "-O", "^has_journal", "-E", "lazy_itable_init=1,lazy_journal_init=1", device])
        } else if System.exists("resize2fs") {
            try? await run(["e2fsck", "-p", device])
            try? await run(["resize2fs", device])
        }
        try System.mount(device, state, "ext4", flags: UInt(MS_NOATIME))
    }

    static func hasExt4Signature(_ device: String) -> Bool {
        let fd = open(device, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var magic: UInt16 = 0
        let n = pread(fd, &magic, 2, 1024 + 0x38)
        return n == 2 && UInt16(littleEndian: magic) == 0xEF53
    }

    /// Runs a tool from the initramfs and waits for it.
    static func run(_ arguments: [String]) async throws {
        let status = try await ProcessRunner.runToCompletion(arguments)
        guard status == 0 else { throw SystemError(call: arguments[0], subject: arguments.dropFirst().joined(separator: " "), code: EIO) }
    }
}
