import AirlockSystem
import CGuestInit
import CShim
import GuestLink
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// What PID 1 does before anything else: the pseudo file systems, a console for logs, the
/// kernel modules in dependency order.
enum EarlyInit {
    static func run() throws {
        try System.mount("devtmpfs", "/dev", "devtmpfs", flags: UInt(MS_NOSUID), options: "mode=0755")
        // stdin/stdout/stderr on the console: the initramfs has no /dev/console of its own.
        let console = open("/dev/console", O_RDWR)
        if console >= 0 {
            for fd in Int32(0)...2 where fd != console { dup2(console, fd) }
            if console > 2 { close(console) }
        }
        System.log("started")
        if airlock_guest_proc_mounted() == 0 {
            try System.mount("proc", "/proc", "proc", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        }
        try System.mount("sysfs", "/sys", "sysfs", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        try System.mount("devpts", "/dev/pts", "devpts", flags: UInt(MS_NOSUID | MS_NOEXEC), options: "gid=5,mode=0620,ptmxmode=0666")
        try System.mount("tmpfs", "/run", "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV), options: "mode=0755")
        try System.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        loadModules()
    }

    /// Loads `/lib/modules/*.ko` in the order of `/lib/modules/load-order` (dependencies first,
    /// as Kernel/build-kernel.sh wrote it). The control link's modules (up to `virtio_console`)
    /// load here. The rest load on two threads of their own while the link comes up and the
    /// host sends the setup (ext4 alone takes 130 ms under TCG): the file systems, then from
    /// `dummy.ko` on the network's (Kernel/modules.list lists that section last, and nothing in
    /// it depends on the file-system modules). Setup waits for each group where it needs it.
    static func loadModules() {
        guard let order = FileSystem.readPrefix("/lib/modules/load-order", limit: 1 << 20) else {
            System.log("no /lib/modules/load-order; loading no modules")
            fileSystemModules.finish()
            networkModules.finish()
            return
        }
        var names = order.split(separator: "\n").map(String.init).filter { !$0.isEmpty && !$0.hasPrefix("#") }
        // PCI transports only where there is a PCI bus (Cloud Hypervisor; not QEMU's microvm).
        if FileSystem.entries("/sys/bus/pci/devices").isEmpty { names.removeAll { $0.hasPrefix("virtio_pci") } }
        let early = names.firstIndex(of: "virtio_console.ko").map { $0 + 1 } ?? names.count
        _ = load(names[..<early])
        // The transports have found the devices by now: drivers of absent kinds are skipped.
        let devices = virtioDeviceKinds()
        let present = Set(devices)
        names = Array(names[..<early]) + names[early...].filter { name in deviceModules[name].map(present.contains) ?? true }
        // squashfs serves only an OCI image's layer disks, which come beside the state disk.
        if devices.count(where: { $0 == 2 }) < 2 { names.removeAll { $0 == "squashfs.ko" } }
        let network = max(early, names.firstIndex(of: "dummy.ko") ?? names.count)
        let fileSystems = Array(names[early..<network]), networking = Array(names[network...])
        startThread {
            System.log("\(load(fileSystems[...])) kernel modules loaded (file systems, devices)")
            fileSystemModules.finish()
        }
        startThread {
            System.log("\(load(networking[...])) kernel modules loaded (network)")
            networkModules.finish()
        }
    }

    /// Modules that serve only one kind of virtio device (with the modules only they need),
    /// and that kind's virtio device ID: not loaded when the VM has no such device. airlock
    /// hot-plugs nothing, so the devices present at boot are all there will be.
    static let deviceModules: [String: UInt32] = [
        "virtio_blk.ko": 2, "virtio_rng.ko": 4,
        "9pnet.ko": 9, "9pnet_virtio.ko": 9, "netfs.ko": 9, "fscache.ko": 9, "9p.ko": 9,
        "vsock.ko": 19, "vmw_vsock_virtio_transport_common.ko": 19, "vmw_vsock_virtio_transport.ko": 19,
        "fuse.ko": 26, "virtiofs.ko": 26,
    ]

    /// The virtio device ID of each device present (`/sys/bus/virtio/devices/*/device`, "0x0009").
    static func virtioDeviceKinds() -> [UInt32] {
        FileSystem.entries("/sys/bus/virtio/devices").compactMap { entry in
            FileSystem.readPrefix("/sys/bus/virtio/devices/\(entry)/device", limit: 64)
                .flatMap { $0.split(separator: "\n").first }
                .flatMap { UInt32($0.dropFirst(2), radix: 16) }
        }
    }

    /// Loads each module (one already there is fine); returns how many are in.
    private static func load(_ names: ArraySlice<String>) -> Int {
        var loaded = 0
        for name in names {
            let fd = open("/lib/modules/" + name, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                System.log("module \(name): cannot open: \(errorText(errno))")
                continue
            }
            let result = airlock_finit_module(fd)
            close(fd)
            if result != 0 && result != -EEXIST {
                System.log("module \(name): \(errorText(-result))")
            } else {
                loaded += 1
            }
        }
        return loaded
    }

    /// Whether this boot makes a boot snapshot (`airlock.snapshot` on the kernel command line):
    /// the host saves the VM as soon as the control port opens, so it opens only once every
    /// module is loaded, as warm as a VM gets before a sandbox's setup.
    static var snapshotBoot: Bool {
        FileSystem.readPrefix("/proc/cmdline", limit: 64 << 10)?.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("airlock.snapshot")
            == true
    }

    /// Waits until the host is connected to the virtio-serial port `fd`: until then
    /// virtio_console reports POLLHUP (and a read would return end-of-file). The host connects
    /// before the guest gets here, except in a VM restored from a boot snapshot, which resumes
    /// in this loop and waits for its new host.
    static func waitForHost(port fd: Int32) {
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, -1)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 || poller.revents & Int16(POLLHUP) == 0 { return }
            usleep(2000)
        }
    }

    /// Done when the file-system and device modules are loaded.
    static let fileSystemModules = Completion()
    /// Done when the network's modules (dummy, nf_tables and the rest) are loaded.
    static let networkModules = Completion()

    enum ControlTransport: Equatable {
        /// The device node of the virtio-serial port.
        case serialPort(String)
        /// A virtio-vsock device, and the guest's context id on it.
        case vsock(cid: UInt32)
    }

    /// The control link's transport, the first that exists: the virtio-serial port named
    /// `LinkNames.controlPort`, else a vsock device (this guest has a CID). Waits up to `timeout`
    /// for either to appear.
    static func controlTransport(timeout: Double = 10) -> ControlTransport? {
        let deadline = now() + timeout
        repeat {
            if let port = virtioPort(named: LinkNames.controlPort, timeout: 0) { return .serialPort(port) }
            // VMADDR_CID_ANY (no transport bound), -errno (no /dev/vsock) and the reserved
            // CIDs 0–2 all mean: no vsock device.
            let cid = airlock_vsock_local_cid()
            if cid >= 3 && cid < 0xFFFF_FFFF { return .vsock(cid: UInt32(cid)) }
            var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
            nanosleep(&pause, nil)
        } while now() < deadline
        return nil
    }

    /// The device node of the virtio-serial port named `name`, waiting for it to appear.
    static func virtioPort(named name: String, timeout: Double = 10) -> String? {
        let deadline = now() + timeout
        repeat {
            for entry in FileSystem.entries("/sys/class/virtio-ports") {
                let portName = FileSystem.readPrefix("/sys/class/virtio-ports/\(entry)/name", limit: 256)?.split(separator: "\n").first.map(
                    String.init)
                if portName == name, FileSystem.exists("/dev/" + entry) { return "/dev/" + entry }
            }
            var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
            nanosleep(&pause, nil)
        } while now() < deadline
        return nil
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func powerOff() -> Never {
        _ = airlock_power_off()
        // Not PID 1 (a test run) or not allowed: just end.
        exit(0)
    }
}

/// A one-time event that async code can wait for and any thread can complete.
final class Completion: Sendable {
    private let state = NIOLockedValueBox<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func finish() {
        let waiters = state.withLockedValue { state in
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let done = state.withLockedValue { state in
                if !state.done { state.waiters.append(continuation) }
                return state.done
            }
            if done { continuation.resume() }
        }
    }
}
