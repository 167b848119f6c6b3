import AirlockSystem
import Config
import Machine

/// The checks `airlock doctor` reports: each says what it found and, when something is wrong,
/// exactly how to fix it. Pure: computed from `HostFacts`, so tests give it any host.
public enum Doctor {
    public enum Status: String, Sendable, Codable, Comparable {
        case pass, warn, fail

        private var rank: Int { self == .pass ? 0 : self == .warn ? 1 : 2 }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    public struct Check: Sendable, Equatable, Codable {
        /// Stable identifier for scripts (`--json`).
        public var id: String
        public var status: Status
        /// What was found, one line.
        public var summary: String
        /// The exact fix, when not passing.
        public var fix: String?

        public init(id: String, status: Status, summary: String, fix: String?) {
            self.id = id
            self.status = status
            self.summary = summary
            self.fix = fix
        }
    }

    public struct Report: Sendable, Equatable {
        public var checks: [Check]
        public var selection: BackendSelection
        /// True when some backend can run a sandbox with the assets present.
        public var canRunSandbox: Bool { !checks.contains { $0.status == .fail } }
    }

    /// The project's `[commands.*]` (the agents' CLIs): each found on the host's `path`, or a
    /// warning with how to install it. None with an image root (`[vm] image`), which brings its own.
    public static func commands(_ commands: [String: String], path: String, image: String) -> [Check] {
        guard image == "host" else { return [] }
        let found = HostCommands.resolve(commands, path: path)
        return commands.keys.sorted().map { name in
            if let link = found.links.first(where: { $0.name == name }) {
                return Check(id: "command-\(name)", status: .pass, summary: "\(name): \(link.target), shared read-only into the sandbox", fix: nil)
            }
            let install = commands[name] ?? ""
            return Check(
                id: "command-\(name)", status: .warn, summary: "\(name) is not on this host's PATH: the sandbox will have none",
                fix: install.isEmpty ? "install it, or use an image that ships it ([vm] image)" : "\(install) (or use an image that ships it)")
        }
    }

    /// Below this, pulling an image or growing a disk is likely to fail.
    static let lowSpace: UInt64 = 2 << 30
    static let criticalSpace: UInt64 = 256 << 20

    public static func examine(_ host: HostFacts, requested: AirlockConfig.Backend) -> Report {
        var checks: [Check] = []
        func add(_ id: String, _ status: Status, _ summary: String, fix: String? = nil) {
            checks.append(Check(id: id, status: status, summary: summary, fix: fix))
        }

        switch host.kvm {
        case .ok: add("kvm-device", .pass, "/dev/kvm is readable and writable")
        case .denied:
            add("kvm-device", .warn, "/dev/kvm exists but you cannot open it read-write", fix: "sudo usermod -aG kvm $USER, then log in again")
        case .missing:
            add(
                "kvm-device", .warn, "/dev/kvm does not exist: VMs will run under software emulation (slow)",
                fix: "enable VT-x/AMD-V in the firmware, then sudo modprobe kvm_intel (or kvm_amd)")
        }

        if host.kvmRunsStandardGuests {
            add(
                "kvm-usable", .pass,
                "KVM is hardware virtualization (" + host.kvmModules.intersection(["kvm_intel", "kvm_amd"]).sorted().joined(separator: ", ") + ")")
        } else if host.kvmIsPVMOnly {
            add(
                "kvm-usable", .warn,
                "KVM here is PVM (kvm_pvm): a standard guest kernel hangs under it, so VMs run under QEMU with TCG software emulation",
                fix: "run on a host with hardware KVM (kvm_intel or kvm_amd) for full speed and Cloud Hypervisor")
        } else if host.kvm == .missing {
            add(
                "kvm-usable", .warn, "no KVM: VMs run under QEMU with TCG software emulation",
                fix: "use a host with hardware virtualization and load kvm_intel or kvm_amd")
        } else {
            add("kvm-usable", .warn, "no hardware KVM module (kvm_intel or kvm_amd) is loaded", fix: "sudo modprobe kvm_intel (or kvm_amd)")
        }

        let chProblems = BackendSelection.cloudHypervisorMissing(on: host)
        if let ch = host.cloudHypervisor {
            add("cloud-hypervisor", .pass, "\(ch.version ?? "unknown version") at \(ch.path)")
        } else {
            add(
                "cloud-hypervisor", .warn, "cloud-hypervisor is not installed (QEMU is used instead)",
                fix: fixPart(chProblems.first { $0.hasPrefix("cloud-hypervisor") }))
        }
        if let virtiofsd = host.virtiofsd {
            add("virtiofsd", .pass, "\(virtiofsd.version ?? "unknown version") at \(virtiofsd.path)")
        } else {
            let legacy = host.legacyVirtiofsd.map { " (\($0) is QEMU's retired C virtiofsd, which lacks --shared-dir and --readonly)" } ?? ""
            add(
                "virtiofsd", .warn, "the Rust virtiofsd is not installed\(legacy); QEMU shares use virtio-9p instead",
                fix: fixPart(chProblems.first { $0.hasPrefix("virtiofsd") }))
        }
        if let qemu = host.qemu {
            add("qemu", .pass, "\(qemu.version ?? "unknown version") at \(qemu.path)")
        } else {
            add(
                "qemu", host.cloudHypervisor == nil ? .fail : .warn, "qemu-system-x86_64 is not installed",
                fix: "sudo apt-get install qemu-system-x86")
        }

        if let tar2sqfs = host.tar2sqfs {
            add(
                "tar2sqfs", .pass,
                "\(tar2sqfs.version ?? "unknown version") at \(tar2sqfs.path): OCI image layers can reach the guest as block images")
        } else {
            add(
                "tar2sqfs", .warn,
                "tar2sqfs is not installed: OCI images cannot be the root on Cloud Hypervisor, nor with [vm] image_layers = \"block\"",
                fix: "sudo apt-get install squashfs-tools-ng")
        }

        switch host.vhostVsock {
        case .ok: add("vhost-vsock", .pass, "/dev/vhost-vsock is available: the QEMU link uses vsock")
        case .denied:
            add(
                "vhost-vsock", .warn, "/dev/vhost-vsock exists but you cannot open it: the QEMU link falls back to virtio-serial",
                fix: "sudo chmod 0666 /dev/vhost-vsock (or a udev rule giving group kvm access)")
        case .missing:
            add(
                "vhost-vsock", .warn, "/dev/vhost-vsock does not exist: the QEMU link uses virtio-serial instead, which works the same",
                fix: "sudo modprobe vhost_vsock")
        }

        switch (host.assets.kernel, host.assets.initramfs) {
        case (let kernel?, let initramfs?):
            add(
                "guest-assets", .pass, "kernel \(kernel.path) (\(kernel.source.rawValue)), initramfs \(initramfs.path) (\(initramfs.source.rawValue))"
            )
        case (let kernel, let initramfs):
            var absent: [String] = []
            if kernel == nil { absent.append("kernel") }
            if initramfs == nil { absent.append("initramfs") }
            var summary = "guest " + absent.joined(separator: " and ") + " not found"
            if !host.assets.broken.isEmpty { summary += "; not readable: " + host.assets.broken.joined(separator: ", ") }
            add(
                "guest-assets", .fail, summary,
                fix:
                    "use the single binary from `make release`, which carries them, or build them with `make kernel` and set AIRLOCK_KERNEL=out/assets/vmlinux AIRLOCK_INITRAMFS=out/assets/initramfs"
            )
        }

        let loaded = host.libraries.filter { $0.missing == nil }
        for library in host.libraries {
            guard let missing = library.missing else { continue }
            add(library.name, .warn, "\(library.name) cannot be loaded (\(missing.why)): \(missing.neededFor) cannot be used", fix: missing.fix)
        }
        if loaded.isEmpty {
            add("libraries", .fail, "no library versions reported", fix: "reinstall airlock")
        } else {
            add("libraries", .pass, loaded.map { "\($0.name) \($0.version)" }.joined(separator: ", "))
        }

        if let free = host.cacheFreeBytes {
            let text = "\(formatBytes(free)) free for \(host.cacheDirectory)"
            if free < criticalSpace {
                add("cache-space", .fail, text, fix: "free disk space or set XDG_CACHE_HOME to a larger file system")
            } else if free < lowSpace {
                add(
                    "cache-space", .warn, text + " (images and disks need a few GiB)",
                    fix: "free disk space or set XDG_CACHE_HOME to a larger file system")
            } else {
                add("cache-space", .pass, text)
            }
        } else {
            add("cache-space", .warn, "cannot tell the free space for \(host.cacheDirectory)", fix: "check that the directory (or its parent) exists")
        }

        if let problem = host.shareViewProblem {
            let fix =
                host.distribution?.id == "ubuntu" && host.distribution.map { $0.major >= 24 } == true
                ? "Ubuntu restricts user namespaces with AppArmor: allow them for airlock with a profile (/etc/apparmor.d/airlock: `abi <abi/4.0>, include <tunables/global> profile airlock /usr/local/bin/airlock flags=(unconfined) { userns, }`, then sudo apparmor_parser -r /etc/apparmor.d/airlock), or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
                : "allow unprivileged user namespaces: sudo sysctl -w user.max_user_namespaces=10000 (and on older Debian kernels kernel.unprivileged_userns_clone=1)"
            add(
                "share-views", .warn,
                "a share's server cannot get a mount namespace of its own (\(problem)): [workspace] mode = \"mount\" cannot start; clone mode is unaffected",
                fix: fix)
        } else {
            add(
                "share-views", .pass,
                "share servers get a mount namespace of their own: [workspace] mode = \"mount\" keeps .git and the configuration read-only")
        }

        if let problem = host.vmmJailProblem {
            add(
                "vmm-jail", .fail, "the VMM cannot be jailed (\(problem)): no VM starts without its jail",
                fix:
                    "use a kernel built with CONFIG_SECCOMP_FILTER (every distribution kernel is); inside a container, allow seccomp and no_new_privs"
            )
        } else if host.landlockABI == 0 {
            add(
                "vmm-jail", .warn,
                VMMJail.summary + "; but this kernel has no Landlock, so a VMM a guest took over could read and write what you can",
                fix: "use Linux 5.13 or later with Landlock enabled (landlock in the lsm= boot parameter, or CONFIG_LSM)")
        } else {
            add(
                "vmm-jail", .pass,
                VMMJail.summary
                    + "; QEMU and Cloud Hypervisor reach only the system's programs and the VM's own files (Landlock ABI \(host.landlockABI))")
        }

        let selection = BackendSelection.choose(requested, on: host)
        if let backend = selection.backend {
            add("backend", .pass, "\(requested.rawValue) → \(backend.rawValue) with \(selection.accelerator?.rawValue ?? "?"): \(selection.reason)")
            add("shares", .pass, ShareTransport.explain(backend: backend, on: host))
        } else {
            add("backend", .fail, "\(requested.rawValue): \(selection.reason)", fix: selection.missing.compactMap(fixPart).joined(separator: "; "))
        }
        return Report(checks: checks, selection: selection)
    }

    /// "what: how" → "how".
    private static func fixPart(_ problem: String?) -> String? {
        guard let problem else { return nil }
        guard let colon = problem.firstRange(of: ": ") else { return problem }
        return String(problem[colon.upperBound...])
    }

    static func formatBytes(_ bytes: UInt64) -> String {
        if bytes >= 1 << 30 { return "\(bytes / (1 << 30)) GiB" }
        if bytes >= 1 << 20 { return "\(bytes / (1 << 20)) MiB" }
        return "\(bytes / 1024) KiB"
    }
}
