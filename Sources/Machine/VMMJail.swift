import AirlockSystem
import CShim
import Clibseccomp
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a VMM's processes (QEMU, Cloud Hypervisor, virtiofsd) may not do, so that a guest that
/// takes one over still holds little on the host (Firecracker's jailer is the model). Every
/// process `VMMProcess.spawn` starts gets it, just before exec:
///
/// - **No new privileges** (PR_SET_NO_NEW_PRIVS): no setuid binary or file capability counts.
/// - **A seccomp filter** built with libseccomp, loaded last: the calls below fail with EPERM
///   (a VMM that probes one sees an error, not a kill), and calls of another architecture
///   (32-bit entry points) kill the process.
///   - debugging other processes: ptrace, process_vm_readv/writev;
///   - the kernel itself: module loading, kexec, reboot, swap, the clock, syslog, port I/O,
///     quotas, accounting, bpf, perf events, the kernel keyring;
///   - personality changes (only PER_LINUX is let through);
///   - any socket but a Unix one: a VMM here needs Unix sockets only (QMP, the API socket, the
///     console, the guest link), so a taken-over one cannot open a network connection;
///   - for the VMMs (not virtiofsd, which sets up its own sandbox): mount and its relatives,
///     pivot_root, chroot, unshare and setns, so the mount namespace they were given is final.
/// - **Limits**: no core dumps (a core of a VMM holds guest memory), open files capped.
/// - **Landlock** (for the VMMs, where the kernel has it: Linux 5.13 and later, unprivileged,
///   no namespace): the file system holds only the system's programs and libraries (read),
///   the devices a VMM opens, and the VM's own paths (`reach`): kernel, initramfs, disks,
///   shares, runtime directory. The user's home, other projects, SSH keys and tokens are out of
///   reach. With ABI 6 and later, abstract Unix sockets and signals to processes outside are
///   refused too. virtiofsd sandboxes itself with mounts, which Landlock forbids: it goes
///   without.
///
/// Not applied: a process limit. RLIMIT_NPROC counts all of the user's processes and threads
/// on the host, so a cap low enough to matter would break a VMM on a busy desktop.
public struct VMMJail: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// QEMU or Cloud Hypervisor.
        case vmm
        /// virtiofsd: it sandboxes itself (namespaces, its own seccomp filter), so it keeps
        /// the calls that needs.
        case fileServer
    }

    public var kind: Kind
    /// The VM's own paths the process may reach besides the system's, when `confined`.
    public var reach: [Reach] = []
    /// Whether the file system is limited to the system's paths and `reach` (Landlock): set
    /// by `vmm(for:)`, for a VMM whose paths are known.
    public var confined = false

    public enum Reach: Sendable, Equatable {
        case read(String)
        case write(String)
    }

    public static let vmm = VMMJail(kind: .vmm)
    public static let fileServer = VMMJail(kind: .fileServer)

    /// A VMM's jail for `spec`: its kernel, initramfs and read-only disks and shares to read,
    /// its state disk, writable shares and runtime directory to write, and `also`.
    public static func vmm(for spec: MachineSpec, also: [Reach] = []) -> VMMJail {
        var reach: [Reach] = [.read(spec.kernel), .read(spec.initramfs), .write(spec.disk), .write(spec.runtimeDirectory)]
        reach += spec.readOnlyDisks.map { .read($0.path) }
        reach += spec.shares.map { $0.readOnly ? .read($0.hostPath) : .write($0.hostPath) }
        return VMMJail(kind: .vmm, reach: reach + also, confined: true)
    }

    /// What every VMM reads: programs, libraries, the loader's cache and name-service files,
    /// its own /proc entries and the machine's description in /proc and /sys.
    static let systemReads = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf",
        "/etc/passwd", "/etc/group", "/etc/qemu", "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/sys", "/sys",
    ]
    /// The devices a VMM opens.
    static let devices = [
        "/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random", "/dev/kvm", "/dev/vhost-vsock", "/dev/vhost-net", "/dev/net/tun",
        "/dev/shm",
    ]

    /// The Landlock rules: (path, AIRLOCK_LANDLOCK_* access). Empty for virtiofsd.
    func landlockRules() -> [(path: String, access: Int32)] {
        guard kind == .vmm, confined else { return [] }
        let read = Int32(AIRLOCK_LANDLOCK_READ), write = Int32(AIRLOCK_LANDLOCK_READ | AIRLOCK_LANDLOCK_WRITE)
        return Self.systemReads.map { ($0, read) } + Self.devices.map { ($0, write) }
            + reach.map { reach in
                switch reach {
                case .read(let path): (path, read)
                case .write(let path): (path, write)
                }
            }
    }

    /// The kernel's Landlock ABI (0: none).
    public static var landlockABI: Int { Int(airlock_landlock_abi()) }

    /// The open-file cap (soft and hard, never above the caller's hard limit): QEMU and Cloud
    /// Hypervisor use a few hundred; virtiofsd keeps one per file the guest has looked up.
    var openFiles: rlim_t { kind == .vmm ? 4096 : 1 << 20 }

    /// The calls that fail with EPERM for every kind.
    static let denied = [
        "ptrace", "process_vm_readv", "process_vm_writev",
        "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
        "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
        "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "lookup_dcookie",
    ]

    /// Further calls a VMM may not make (virtiofsd needs them for its own sandbox).
    static let deniedToVMMs = [
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    ]

    /// The seccomp program (`struct sock_filter` instructions), built once per kind.
    func program() throws -> [UInt8] {
        try Self.programs.withLock { cache in
            if let built = cache[kind] { return built }
            let built = try build()
            cache[kind] = built
            return built
        }
    }

    private static let programs = Mutex<[Kind: [UInt8]]>([:])

    private func build() throws -> [UInt8] {
        guard let context = seccomp_init(SCMP_ACT_ALLOW) else { throw MachineError("libseccomp: cannot create a filter") }
        defer { seccomp_release(context) }
        let refuse = 0x0005_0000 | UInt32(EPERM)  // SCMP_ACT_ERRNO(EPERM), a function-like macro
        func check(_ result: Int32, _ what: String) throws {
            if result != 0 { throw MachineError("libseccomp: cannot add the rule for \(what) (\(errorText(-result)))") }
        }
        for name in Self.denied + (kind == .vmm ? Self.deniedToVMMs : []) {
            let number = seccomp_syscall_resolve_name(name)
            // A call this libseccomp does not know on this architecture does not exist here.
            if number == __NR_SCMP_ERROR { continue }
            try check(seccomp_rule_add_array(context, refuse, number, 0, nil), name)
        }
        // personality(2) other than PER_LINUX (0). (The query, 0xffffffff, is refused too:
        // libseccomp 2.5 takes one comparison per argument in a rule, and no VMM asks.)
        let otherPersonality = [scmp_arg_cmp(arg: 0, op: SCMP_CMP_NE, datum_a: 0, datum_b: 0)]
        try check(seccomp_rule_add_array(context, refuse, seccomp_syscall_resolve_name("personality"), 1, otherPersonality), "personality")
        // socket(2) of any family but AF_UNIX.
        let otherFamily = [scmp_arg_cmp(arg: 0, op: SCMP_CMP_NE, datum_a: UInt64(AF_UNIX), datum_b: 0)]
        try check(seccomp_rule_add_array(context, refuse, seccomp_syscall_resolve_name("socket"), 1, otherFamily), "socket")
        return try export(context)
    }

    /// The compiled program, through a pipe (libseccomp 2.5 exports to a descriptor only).
    private func export(_ context: scmp_filter_ctx) throws -> [UInt8] {
        var fds: [Int32] = [-1, -1]
        guard airlock_pipe(&fds) == 0 else { throw MachineError("libseccomp: cannot export the filter (pipe: \(errorText(errno)))") }
        defer { close(fds[0]) }
        let result = seccomp_export_bpf(context, fds[1])
        close(fds[1])
        if result != 0 { throw MachineError("libseccomp: cannot export the filter (\(errorText(-result)))") }
        let instruction = 8  // struct sock_filter
        let program: [UInt8]
        do {
            program = try Syscall.readAll(fds[0], limit: Int(UInt16.max) * instruction, subject: "the exported seccomp filter")
        } catch {
            throw MachineError("libseccomp: cannot read the exported filter", cause: error)
        }
        guard !program.isEmpty, program.count % instruction == 0, program.count / instruction <= Int(UInt16.max) else {
            throw MachineError("libseccomp exported a filter of \(program.count) bytes, not whole instructions")
        }
        return program
    }

    /// The limits set in the child: (resource, soft, hard), each at most the caller's hard limit.
    func limits() -> [airlock_spawn_rlimit] {
        func capped(_ resource: __rlimit_resource, _ value: rlim_t) -> airlock_spawn_rlimit {
            var current = rlimit()
            getrlimit(__rlimit_resource_t(resource.rawValue), &current)
            let hard = min(value, current.rlim_max)
            return airlock_spawn_rlimit(resource: Int32(resource.rawValue), soft: UInt64(hard), hard: UInt64(hard))
        }
        return [capped(RLIMIT_CORE, 0), capped(RLIMIT_NOFILE, openFiles)]
    }
}

extension VMMJail {
    /// What the jail applies on this host, found by starting a process through it: nil when a
    /// jailed process runs with its seccomp filter and no new privileges, else what failed.
    public static func probe() -> String? {
        let log = "/tmp/airlock-jail-probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(log) }
        do {
            let process = try VMMProcess.spawn("/bin/cat", ["/proc/self/status"], log: log)
            for _ in 0..<5000 where !process.hasExited { usleep(1000) }
            let status = (try? FileSystem.readText(log, limit: 64 << 10)) ?? nil ?? ""
            let fields = Dictionary(
                status.split(separator: "\n").compactMap { line -> (String, String)? in
                    let parts = line.split(separator: ":", maxSplits: 1)
                    return parts.count == 2 ? (String(parts[0]), parts[1].split(separator: "\t").first.map(String.init) ?? "") : nil
                }, uniquingKeysWith: { $1 })
            if fields["Seccomp"] != "2" { return "a jailed process runs without its seccomp filter (Seccomp: \(fields["Seccomp"] ?? "absent"))" }
            if fields["NoNewPrivs"] != "1" { return "a jailed process can still gain privileges (NoNewPrivs: \(fields["NoNewPrivs"] ?? "absent"))" }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// One line on what the jail holds, for `airlock doctor`.
    public static var summary: String {
        "QEMU, Cloud Hypervisor and virtiofsd run with a seccomp filter (\(denied.count) system calls refused, \(deniedToVMMs.count) more to the VMMs; Unix sockets only), no new privileges, no core dumps and at most \(VMMJail.vmm.openFiles) open files (virtiofsd \(VMMJail.fileServer.openFiles))"
    }

}
