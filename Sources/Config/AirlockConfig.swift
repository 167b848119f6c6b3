import NetworkPolicy

/// The effective configuration of a sandbox: every layer merged, validated, templates expanded.
public struct AirlockConfig: Sendable, Equatable {
    public enum Backend: String, Sendable, CaseIterable {
        case auto
        case cloudHypervisor = "cloud-hypervisor"
        case qemu
    }

    /// Where an OCI image comes from (`[vm] resolution`).
    public enum Resolution: String, Sendable, CaseIterable {
        /// The local Docker daemon's copy when it answers and has the reference, else the registry.
        case auto
        /// Always the registry.
        case registry
        /// Only the local Docker daemon (an error when it does not answer or lacks the image).
        case docker
    }

    /// How an OCI image's layers reach the guest (`[vm] image_layers`).
    public enum ImageLayers: String, Sendable, CaseIterable {
        /// Block images on Cloud Hypervisor (its virtio-fs cannot carry the layers' owners),
        /// 9p shares on QEMU.
        case auto
        /// Shared directories (QEMU's 9p with mapped-xattr ownership).
        case share
        /// Read-only squashfs disks built from the layers (needs squashfs-tools-ng's tar2sqfs).
        case block
    }

    public struct VM: Sendable, Equatable {
        /// `"host"` (the host's system directories, read-only) or an OCI image reference.
        public var image = "host"
        public var cpus = 2
        public var memory = ByteSize.gibibytes(2)
        public var kernel: String?
        public var initramfs: String?
        public var backend = Backend.auto
        /// Where `image` is read from when it is not in the store yet.
        public var resolution = Resolution.auto
        public var imageLayers = ImageLayers.auto
        /// QEMU resumes a VM saved once after boot instead of booting (QEMU's BootSnapshot).
        public var bootSnapshot = true
    }

    public struct Workspace: Sendable, Equatable {
        public enum Mode: String, Sendable { case clone, mount }
        public var mode = Mode.clone
        /// Only for `mount`: share the project read-only.
        public var readOnly = false
    }

    public struct Rule: Sendable, Equatable {
        public var allow: [HostPattern] = []
        public var deny: [HostPattern] = []
        public var passthrough: [HostPattern] = []
        /// Allowed names may resolve to loopback/private/link-local addresses.
        public var allowPrivate = false
    }

    public struct Ports: Sendable, Equatable {
        /// Host listens, guest is connected to.
        public var host: [PortForward] = []
        /// Guest listens, host is connected to.
        public var guest: [PortForward] = []
    }

    public struct SocketForward: Sendable, Equatable {
        /// The Unix socket on the host that guest connections reach.
        public var host: String
        /// Where the socket appears in the guest.
        public var guest: String
    }

    public struct Network: Sendable, Equatable {
        public var policy = PolicyMode.denyByDefault
        public var rules: [String: Rule] = [:]
        public var ports: [String: Ports] = [:]
        public var sockets: [String: SocketForward] = [:]
    }

    public struct Mount: Sendable, Equatable {
        public enum Missing: String, Sendable { case fail, warn, ignore, create }
        public var source: String
        public var target: String
        public var readOnly = true
        public var missing = Missing.fail
    }

    public struct Disk: Sendable, Equatable {
        public var size = ByteSize.gibibytes(10)
        public var caches: [String: [String]] = [:]
    }

    public struct Daemon: Sendable, Equatable {
        public var command: [String]
    }

    public var presets: [String] = []
    public var vm = VM()
    public var workspace = Workspace()
    public var network = Network()
    public var mounts: [String: Mount] = [:]
    public var disk = Disk()
    /// Variables set in the guest, templates already expanded from the host environment.
    public var env: [String: String] = [:]
    /// Project paths hidden from the guest, by entry name.
    public var masks: [String: [String]] = [:]
    public var daemons: [String: Daemon] = [:]
    /// `[registries."host:port"]`: registries spoken to over plain HTTP (`insecure = true`).
    public var insecureRegistries: Set<String> = []

    public init() {}
}

extension AirlockConfig {
    /// Builds the typed configuration from a merged tree that every layer's schema check passed.
    /// Only cross-layer problems (an entry whose required key no layer set) can remain.
    init(merged root: ConfigNode, environment: [String: String], home: String) throws(ConfigError) {
        var problems: [ConfigDiagnostic] = []
        func expandHome(_ path: String) -> String {
            if path == "~" { return home }
            if path.hasPrefix("~/") { return home + path.dropFirst(1) }
            return path
        }
        func enabledEntries(_ node: ConfigNode?) -> [(name: String, node: ConfigNode)] {
            (node?.entries ?? []).filter { $0.node["enabled"]?.boolean ?? true }.map { ($0.key, $0.node) }
        }
        func required(_ entry: ConfigNode, _ key: String, _ path: [String]) -> String? {
            if let value = entry[key]?.string { return value }
            problems.append(
                ConfigDiagnostic(at: entry.origin.location, "[\(dotted(path))] needs `\(key)`", hint: "add `\(key) = \"…\"` to that table"))
            return nil
        }
        func patterns(_ node: ConfigNode?) -> [HostPattern] {
            (node?.elements ?? []).compactMap { $0.string.flatMap { try? HostPattern(parsing: $0) } }
        }
        func size(_ node: ConfigNode?) -> ByteSize? {
            guard let node else { return nil }
            if let number = node.integer { return ByteSize(bytes: UInt64(max(0, number))) }
            return node.string.flatMap { try? ByteSize(parsing: $0) }
        }

        var seen = Set<String>()
        presets = (root["presets"]?.elements ?? []).compactMap(\.string).filter { seen.insert($0).inserted }

        if let vmNode = root["vm"] {
            vm.image = vmNode["image"]?.string ?? vm.image
            vm.cpus = vmNode["cpus"]?.integer ?? vm.cpus
            vm.memory = size(vmNode["memory"]) ?? vm.memory
            vm.kernel = vmNode["kernel"]?.string.map(expandHome)
            vm.initramfs = vmNode["initramfs"]?.string.map(expandHome)
            vm.backend = vmNode["backend"]?.string.flatMap(Backend.init(rawValue:)) ?? vm.backend
            vm.resolution = vmNode["resolution"]?.string.flatMap(Resolution.init(rawValue:)) ?? vm.resolution
            vm.imageLayers = vmNode["image_layers"]?.string.flatMap(ImageLayers.init(rawValue:)) ?? vm.imageLayers
            vm.bootSnapshot = vmNode["boot_snapshot"]?.boolean ?? vm.bootSnapshot
        }
        if let node = root["workspace"] {
            workspace.mode = node["mode"]?.string.flatMap(Workspace.Mode.init(rawValue:)) ?? workspace.mode
            workspace.readOnly = node["read_only"]?.boolean ?? workspace.readOnly
        }
        if let node = root["network"] {
            network.policy = node["policy"]?.string.flatMap(PolicyMode.init(rawValue:)) ?? network.policy
            for (name, entry) in enabledEntries(node["rules"]) {
                network.rules[name] = Rule(
                    allow: patterns(entry["allow"]), deny: patterns(entry["deny"]),
                    passthrough: patterns(entry["passthrough"]), allowPrivate: entry["allow_private"]?.boolean ?? false)
            }
            for (name, entry) in enabledEntries(node["ports"]) {
                network.ports[name] = Ports(
                    host: (entry["host"]?.elements ?? []).compactMap { try? PortForward($0) },
                    guest: (entry["guest"]?.elements ?? []).compactMap { try? PortForward($0) })
            }
            for (name, entry) in enabledEntries(node["sockets"]) {
                let path = ["network", "sockets", name]
                if let host = required(entry, "host", path), let guest = required(entry, "guest", path) {
                    network.sockets[name] = SocketForward(host: expandHome(host), guest: guest)
                }
            }
        }
        for (name, entry) in enabledEntries(root["mounts"]) {
            let path = ["mounts", name]
            if let source = required(entry, "source", path), let target = required(entry, "target", path) {
                mounts[name] = Mount(
                    source: expandHome(source), target: target,
                    readOnly: entry["read_only"]?.boolean ?? true,
                    missing: entry["missing"]?.string.flatMap(Mount.Missing.init(rawValue:)) ?? .fail)
            }
        }
        if let node = root["disk"] {
            disk.size = size(node["size"]) ?? disk.size
            for (name, entry) in enabledEntries(node["cache"]) {
                disk.caches[name] = (entry["paths"]?.elements ?? []).compactMap(\.string)
            }
        }
        for (variable, node) in root["env"]?.entries ?? [] {
            guard let template = node.string else { continue }
            do {
                env[variable] = try EnvTemplate.expand(template) { environment[$0] }
            } catch {
                problems.append(ConfigDiagnostic(at: node.origin.location, "`env.\(variable)`: \(error.message)"))
            }
        }
        for (name, entry) in enabledEntries(root["mask"]) {
            masks[name] = (entry["paths"]?.elements ?? []).compactMap(\.string)
        }
        for (name, entry) in enabledEntries(root["daemons"]) {
            let command = (entry["command"]?.elements ?? []).compactMap(\.string)
            if command.isEmpty {
                problems.append(
                    ConfigDiagnostic(
                        at: entry.origin.location, "[daemons.\(name)] needs a non-empty `command`", hint: "e.g. command = [\"redis-server\"]"))
            } else {
                daemons[name] = Daemon(command: command)
            }
        }
        for (name, entry) in enabledEntries(root["registries"]) where entry["insecure"]?.boolean == true {
            insecureRegistries.insert(name)
        }
        if !problems.isEmpty { throw ConfigError(problems) }
    }

    /// Keys the schema knows (from airlock's design and the Rust airlock's) whose behaviour
    /// this airlock does not have yet: `config validate` and `start` refuse them where they are
    /// written rather than ignore them.
    static func notYetSupported(_ root: ConfigNode) -> [ConfigDiagnostic] {
        var problems: [ConfigDiagnostic] = []
        func enabledEntries(_ node: ConfigNode?) -> [(name: String, node: ConfigNode)] {
            (node?.entries ?? []).filter { $0.node["enabled"]?.boolean ?? true }.map { ($0.key, $0.node) }
        }
        func refuse(_ node: ConfigNode, _ what: String, _ hint: String) {
            problems.append(ConfigDiagnostic(at: node.origin.location, "\(what) is not supported by this airlock yet", hint: hint))
        }
        for (section, what, hint) in [
            ("mounts", "[mounts.NAME]", "remove the entry (or set enabled = false); meanwhile the VM sees only the project's clone"),
            ("mask", "[mask.NAME]", "remove the entry (or set enabled = false); files the project does not track are never copied into the clone"),
            ("daemons", "[daemons.NAME]", "remove the entry (or set enabled = false), and start the process in your command instead"),
        ] {
            for (name, entry) in enabledEntries(root[section]) {
                refuse(entry, what.replacing("NAME", with: name), hint)
            }
        }
        for (name, entry) in enabledEntries(root["disk"]?["cache"]) {
            refuse(
                entry, "[disk.cache.\(name)]",
                "remove the entry (or set enabled = false); the state disk already keeps what the VM writes outside the project")
        }
        if let mode = root["workspace"]?["mode"], mode.string == "mount" {
            refuse(
                mode, "[workspace] mode = \"mount\"",
                "use mode = \"clone\" (the default): the VM works on a clone, its work comes home with `airlock fetch`")
        }
        if let readOnly = root["workspace"]?["read_only"] {
            refuse(readOnly, "[workspace] read_only", "remove it: the clone is the VM's to change")
        }
        return problems
    }
}
