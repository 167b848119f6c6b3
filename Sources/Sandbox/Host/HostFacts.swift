import AirlockSystem
import Config
import Machine

#if canImport(Glibc)
import Glibc
#endif

/// What airlock needs to know about the host to pick a backend and to advise the user.
/// Gathered once by `HostFacts.probe`; tests build it by hand.
public struct HostFacts: Sendable, Equatable {
    public enum Access: String, Sendable, Equatable {
        case missing
        /// Present but not readable and writable by this user.
        case denied
        case ok
    }

    /// An external program: where it is and what it says its version is.
    public struct Tool: Sendable, Equatable {
        public var path: String
        public var version: String?

        public init(path: String, version: String?) {
            self.path = path
            self.version = version
        }
    }

    public var kvm: Access
    /// KVM implementations present in `/sys/module`: `kvm_intel`, `kvm_amd`, `kvm_pvm`.
    public var kvmModules: Set<String>
    public var cloudHypervisor: Tool?
    public var virtiofsd: Tool?
    /// QEMU's old C virtiofsd (7.x, `-o source=`), found but not usable: airlock drives the Rust
    /// virtiofsd (`--shared-dir`, `--readonly`).
    public var legacyVirtiofsd: String?
    public var qemu: Tool?
    /// squashfs-tools-ng's `tar2sqfs`: builds the block images an OCI image's layers reach the
    /// guest as where a share cannot carry their owners (Cloud Hypervisor; see `LayerTransport`).
    public var tar2sqfs: Tool?
    public var vhostVsock: Access
    /// The Linux distribution (`/etc/os-release`), for fixes that name its packages.
    public var distribution: Distribution?
    public var assets: GuestAssets.Lookup
    /// The C libraries: linked in, or loaded when a feature needs them (those say if they can't be).
    public var libraries: [Library]
    public var cacheDirectory: String
    /// Why a helper cannot have a mount namespace of its own (`ShareView`), which
    /// `[workspace] mode = "mount"` needs; nil when it can.
    public var shareViewProblem: String?
    /// Why the VMM jail (`VMMJail`: seccomp, no new privileges, limits) cannot be applied, which
    /// every VM needs; nil when it can.
    public var vmmJailProblem: String?
    /// The kernel's Landlock ABI (0: none): the VMM's file-system jail.
    public var landlockABI = 0
    /// Free bytes where the cache lives (or would be created), `nil` when unknown.
    public var cacheFreeBytes: UInt64?

    public struct Library: Sendable, Equatable {
        public var name: String
        public var version: String
        /// A library loaded when a feature needs it that cannot be loaded here: why, what it
        /// is needed for, and how to install it (`version` is empty then).
        public var missing: (why: String, neededFor: String, fix: String)?

        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }

        public init(name: String, missing why: String, neededFor: String, fix: String) {
            self.name = name
            self.version = ""
            self.missing = (why, neededFor, fix)
        }

        public static func == (a: Library, b: Library) -> Bool {
            a.name == b.name && a.version == b.version && a.missing?.why == b.missing?.why && a.missing?.neededFor == b.missing?.neededFor
                && a.missing?.fix == b.missing?.fix
        }
    }

    /// `ID` and `VERSION_ID` of `/etc/os-release`: `debian` `12`, `ubuntu` `24.04`.
    public struct Distribution: Sendable, Equatable {
        public var id: String
        public var version: String

        public init(id: String, version: String) {
            self.id = id
            self.version = version
        }

        /// The version's leading number (`24` of `24.04`), 0 when there is none.
        public var major: Int { Int(version.prefix { $0.isNumber }) ?? 0 }

        /// Reads `/etc/os-release` text.
        public init?(osRelease text: String) {
            var values: [String: String] = [:]
            for line in text.split(separator: "\n") {
                guard let equals = line.firstIndex(of: "=") else { continue }
                values[String(line[..<equals])] = String(line[line.index(after: equals)...]).filter { $0 != "\"" && $0 != "'" }
            }
            guard let id = values["ID"] else { return nil }
            self.init(id: id, version: values["VERSION_ID"] ?? "")
        }

        public var description: String { version.isEmpty ? id : "\(id) \(version)" }
    }

    public init(
        kvm: Access, kvmModules: Set<String>, cloudHypervisor: Tool?, virtiofsd: Tool?, legacyVirtiofsd: String? = nil, qemu: Tool?,
        tar2sqfs: Tool? = nil, vhostVsock: Access, distribution: Distribution? = nil, assets: GuestAssets.Lookup, libraries: [Library],
        cacheDirectory: String, cacheFreeBytes: UInt64?, shareViewProblem: String? = nil, vmmJailProblem: String? = nil, landlockABI: Int = 0
    ) {
        self.landlockABI = landlockABI
        self.shareViewProblem = shareViewProblem
        self.vmmJailProblem = vmmJailProblem
        self.kvm = kvm
        self.kvmModules = kvmModules
        self.cloudHypervisor = cloudHypervisor
        self.virtiofsd = virtiofsd
        self.legacyVirtiofsd = legacyVirtiofsd
        self.qemu = qemu
        self.tar2sqfs = tar2sqfs
        self.vhostVsock = vhostVsock
        self.distribution = distribution
        self.assets = assets
        self.libraries = libraries
        self.cacheDirectory = cacheDirectory
        self.cacheFreeBytes = cacheFreeBytes
    }

    /// KVM is there, this user may open it, and it is a real hypervisor (Intel VT-x or AMD-V),
    /// not PVM (`kvm_pvm`), under which a standard guest kernel hangs at boot.
    public var kvmRunsStandardGuests: Bool {
        kvm == .ok && !kvmModules.isDisjoint(with: ["kvm_intel", "kvm_amd"])
    }

    public var kvmIsPVMOnly: Bool {
        kvmModules.contains("kvm_pvm") && kvmModules.isDisjoint(with: ["kvm_intel", "kvm_amd"])
    }
}

extension HostFacts {
    /// Where `virtiofsd` hides on distributions that don't put it on PATH.
    static let virtiofsdDirectories = ["/usr/libexec", "/usr/lib/qemu", "/usr/local/libexec"]

    /// Reads the facts from this machine. `libraries` come from the caller, which links them.
    public static func probe(environment: [String: String], configuredAssets: GuestAssets.Configured, libraries: [Library]) -> HostFacts {
        let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let searchPath = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin"]
        let cache = cacheDirectory(environment: environment)
        var versions = ToolVersions(file: cache + "/tool-versions")
        defer { versions.save() }
        func tool(_ name: String, at found: String?) -> Tool? {
            guard let found else { return nil }
            return Tool(
                path: found,
                version: versions.version(of: found) {
                    let output = try? ChildProcess.capture(found, ["--version"], timeout: .seconds(5))
                    return output?.text.split(separator: "\n").first.map { String($0).trimmingWhitespace() }
                })
        }
        func tool(_ name: String) -> Tool? { tool(name, at: findExecutable(name, in: searchPath)) }
        // A virtiofsd is the Rust one when it takes the options airlock passes (its --help
        // lists --shared-dir); QEMU's retired C one does not, and run by a non-root user it
        // prints a setgroups() failure instead of its version or its help.
        var virtiofsd: Tool?
        var legacyVirtiofsd: String?
        for directory in searchPath + virtiofsdDirectories {
            guard let candidate = tool("virtiofsd", at: findExecutable("virtiofsd", in: [directory])) else { continue }
            let help = versions.output(of: candidate.path, arguments: ["--help"]) {
                (try? ChildProcess.capture(candidate.path, ["--help"], timeout: .seconds(5)))?.text ?? ""
            }
            if isRustVirtiofsd(help: help) {
                virtiofsd = candidate
                break
            }
            legacyVirtiofsd = legacyVirtiofsd ?? candidate.path
        }
        return HostFacts(
            kvm: access("/dev/kvm"),
            kvmModules: Set(["kvm_intel", "kvm_amd", "kvm_pvm"].filter { FileSystem.isDirectoryFollowingLinks("/sys/module/" + $0) }),
            cloudHypervisor: tool("cloud-hypervisor"),
            virtiofsd: virtiofsd,
            legacyVirtiofsd: legacyVirtiofsd,
            qemu: tool("qemu-system-x86_64"),
            tar2sqfs: tool("tar2sqfs"),
            vhostVsock: access("/dev/vhost-vsock"),
            distribution: ((try? FileSystem.readText("/etc/os-release", limit: 64 << 10)) ?? nil).flatMap(Distribution.init(osRelease:)),
            assets: GuestAssets.locate(configured: configuredAssets, environment: environment),
            libraries: libraries,
            cacheDirectory: cache,
            cacheFreeBytes: freeBytes(at: cache),
            shareViewProblem: ShareView.probe(),
            vmmJailProblem: VMMJail.probe(),
            landlockABI: VMMJail.landlockABI
        )
    }

    /// Whether a virtiofsd's `--help` is the Rust virtiofsd's: it takes `--shared-dir` and
    /// `--socket-path`, the flags airlock runs it with.
    public static func isRustVirtiofsd(help: String) -> Bool {
        help.contains("--shared-dir") && help.contains("--socket-path")
    }

    /// `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`.
    public static func cacheDirectory(environment: [String: String]) -> String {
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") { return xdg + "/airlock" }
        return (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp") + "/.cache/airlock"
    }

    static func access(_ path: String) -> Access {
        var info = stat()
        guard stat(path, &info) == 0 else { return .missing }
        return Glibc.access(path, R_OK | W_OK) == 0 ? .ok : .denied
    }

    static func findExecutable(_ name: String, in directories: [String]) -> String? {
        if name.hasPrefix("/") { return Glibc.access(name, X_OK) == 0 ? name : nil }
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/" + name
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Glibc.access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    /// What the host can give a sandbox whose state lives at `path`.
    public static func capacity(at path: String) -> HostCapacity {
        HostCapacity(
            cpus: max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            memoryBytes: UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * UInt64(max(0, sysconf(Int32(_SC_PAGESIZE)))),
            freeDiskBytes: freeBytes(at: path))
    }

    /// Free space for an unprivileged user on the file system that holds `path` (or would
    /// hold it: the nearest existing ancestor).
    static func freeBytes(at path: String) -> UInt64? {
        var candidate = path
        while true {
            var info = statvfs()
            if statvfs(candidate, &info) == 0 { return UInt64(info.f_bavail) * UInt64(info.f_frsize) }
            guard candidate != "/", let slash = candidate.lastIndex(of: "/") else { return nil }
            candidate = slash == candidate.startIndex ? "/" : String(candidate[..<slash])
        }
    }
}

/// The `--version` line of each tool, remembered per binary (path, inode, size, mtime) in the
/// cache: running `qemu-system-x86_64 --version` and friends costs ~0.1 s on every start.
/// An upgraded tool is a different file, so it is asked again.
struct ToolVersions {
    let file: String
    private var entries: [String: (identity: String, version: String?)] = [:]
    private var changed = false

    init(file: String) {
        self.file = file
        let text = ((try? FileSystem.readText(file, limit: 1 << 20)) ?? nil) ?? ""
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3 else { continue }
            entries[fields[0]] = (fields[1], fields[2].isEmpty ? nil : fields[2])
        }
    }

    mutating func version(of path: String, ask: () -> String?) -> String? {
        remembered(path, ask: ask)
    }

    /// What `path` printed for `arguments` (asked once per binary, like its version). Kept to
    /// its first 4 KiB, on one line.
    mutating func output(of path: String, arguments: [String], ask: () -> String) -> String {
        remembered(path + "\u{1F}" + arguments.joined(separator: " ")) {
            String(ask().prefix(4096).map { $0 == "\n" || $0 == "\t" ? " " : $0 })
        } ?? ""
    }

    private mutating func remembered(_ key: String, ask: () -> String?) -> String? {
        let path = key.split(separator: "\u{1F}", maxSplits: 1).first.map(String.init) ?? key
        var info = stat()
        guard stat(path, &info) == 0 else { return ask() }
        let identity = "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(getuid())"
        if let known = entries[key], known.identity == identity { return known.version }
        let version = ask()
        entries[key] = (identity, version)
        changed = true
        return version
    }

    /// Written when something was learnt; a cache that can't be written is only slower.
    func save() {
        guard changed else { return }
        let text = entries.keys.sorted().map { path in
            let entry = entries[path]
            let version = String((entry?.version ?? "").map { $0 == "\t" || $0 == "\n" ? " " : $0 })
            return [path, entry?.identity ?? "", version].joined(separator: "\t") + "\n"
        }.joined()
        try? FileSystem.makeDirectories(FileSystem.parent(of: file))
        try? FileSystem.writeAtomically(file, text, durable: false)
    }
}
