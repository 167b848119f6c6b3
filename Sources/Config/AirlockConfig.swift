import Middleware
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
        /// The image's registry is spoken to over plain HTTP (the Rust airlock's
        /// `image = { name, insecure = true }`; `[registries."host:port"]` says the same).
        public var imageInsecure = false
        public var imageLayers = ImageLayers.auto
        /// QEMU resumes a VM saved once after boot instead of booting (QEMU's BootSnapshot).
        public var bootSnapshot = true
    }

    public struct Workspace: Sendable, Equatable {
        public enum Mode: String, Sendable { case clone, mount }
        public var mode = Mode.clone
        /// Only for `mount`: share the project read-only (`.git`, the configuration and
        /// `.airlock/` are read-only or hidden in either case).
        public var readOnly = false
        /// The most the workspace (the clone, or the project in mount mode, without `.airlock/`)
        /// may hold on the host's disk: a VM that writes past it is paused (`DiskGuard`), and a
        /// start that finds it over is refused.
        public var maxSize = ByteSize.gibibytes(20)
    }

    public struct Rule: Sendable, Equatable {
        public var allow: [HostPattern] = []
        public var deny: [HostPattern] = []
        public var passthrough: [HostPattern] = []
        /// Allowed names may resolve to loopback/private/link-local addresses.
        public var allowPrivate = false
        /// Masked `[env]` variables whose real values go into requests this rule allows.
        public var inject: [String] = []
    }

    public struct Ports: Sendable, Equatable {
        /// `host = […]`: reach the host. The guest listens on each guest port; a connection
        /// reaches the host's 127.0.0.1 port.
        public var toHost: [PortForward] = []
        /// `guest = […]`: reach the guest. The host listens on 127.0.0.1 at each host port; a
        /// connection reaches the guest's 127.0.0.1 port.
        public var toGuest: [PortForward] = []
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
        /// In the order they run: `[network.middleware.<name>]` by name, then each rule's own
        /// (`[[network.rules.<rule>.middleware]]`, rules by name) in the order written.
        public var middleware: [Middleware] = []
        /// `[network.services.<name>]` turned on, by name, with the tokens the host has for each.
        public var services: [ServiceCredentials] = []
    }

    /// A Lua script run on each intercepted request to its targets (`Middleware` module).
    public struct Middleware: Sendable, Equatable {
        /// `api-auth`, or `rules.<rule>.middleware[<index>]` for a rule's own.
        public var name: String
        public var targets: [HostPattern]
        public var script: String
        /// `env.*`, resolved from the host's environment, then the vault.
        public var environment: [String: String]
        /// `env.*` entries whose templates resolved nowhere: the script sees nil (a start warns).
        public var unresolved: [String]
    }

    /// `[mounts.<name>]`: a host directory or file shared into the VM.
    public struct Mount: Sendable, Equatable {
        /// What a start does when `source` does not exist.
        public enum Missing: String, Sendable, CaseIterable {
            case fail, warn, ignore
            /// The Rust airlock's older name for `create-dir`.
            case create
            case createDir = "create-dir"
            case createFile = "create-file"
        }
        /// On the host: absolute (`~/` expanded), or relative to the project.
        public var source: String
        /// In the VM: absolute, `~/…` (the agent's home), or relative to the project.
        public var target: String
        public var readOnly = true
        public var missing = Missing.fail
        /// The contents a `create-file` source starts with.
        public var fileContent = ""
        /// The permission bits a created source gets (0o755 for a directory, 0o644 for a file).
        public var createMode: UInt32?

        public init(
            source: String, target: String, readOnly: Bool = true, missing: Missing = .fail, fileContent: String = "", createMode: UInt32? = nil
        ) {
            self.source = source
            self.target = target
            self.readOnly = readOnly
            self.missing = missing
            self.fileContent = fileContent
            self.createMode = createMode
        }

        /// Permission bits from an octal string (`"644"`, `"0755"`).
        public static func mode(_ text: String) -> UInt32? {
            guard !text.isEmpty, text.count <= 5, let value = UInt32(text, radix: 8), value <= 0o7777 else { return nil }
            return value
        }
    }

    public struct Disk: Sendable, Equatable {
        public var size = ByteSize.gibibytes(10)
        /// `[disk.cache.<name>] paths`, enabled entries: in the VM (absolute, `~/…` for the
        /// agent's home, or relative to the project), each kept on the state disk.
        public var caches: [String: [String]] = [:]
        /// Every declared cache, enabled or not: the state disk keeps their contents (switching
        /// one off and on again loses nothing); the others' are deleted at the next start.
        public var keptCaches: [String] = []

        public static func isValidCacheName(_ name: String) -> Bool {
            !name.isEmpty && name.count <= 64 && !name.hasPrefix(".")
                && name.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
                }
        }
    }

    /// `[daemons.<name>]`: a process the VM runs beside its sessions (the Rust airlock's keys).
    public struct Daemon: Sendable, Equatable {
        public enum Restart: String, Sendable, CaseIterable {
            /// Whenever it ends, up to `maxRestarts` times.
            case always
            /// Only when it fails (a non-zero exit or a signal).
            case onFailure = "on-failure"
        }

        /// The signals a daemon may be asked to stop with.
        public static let signals: [(name: String, number: Int32)] = [
            ("SIGTERM", 15), ("SIGINT", 2), ("SIGHUP", 1), ("SIGQUIT", 3), ("SIGUSR1", 10), ("SIGUSR2", 12), ("SIGKILL", 9),
        ]

        public var command: [String]
        /// In the VM: absolute, or `~/…` (the agent's home).
        public var cwd = "/"
        /// Set on top of the root's base environment (not the sessions' `[env]`), templates
        /// expanded from the host environment.
        public var env: [String: String] = [:]
        public var signal: Int32 = 15
        /// Seconds between `signal` and SIGKILL; 0 waits without end.
        public var timeout = 10
        public var restart = Restart.always
        /// Restarts after the first start; 0: no limit.
        public var maxRestarts = 10

        public init(
            command: [String], cwd: String = "/", env: [String: String] = [:], signal: Int32 = 15, timeout: Int = 10, restart: Restart = .always,
            maxRestarts: Int = 10
        ) {
            self.command = command
            self.cwd = cwd
            self.env = env
            self.signal = signal
            self.timeout = timeout
            self.restart = restart
            self.maxRestarts = maxRestarts
        }
    }

    public var presets: [String] = []
    public var vm = VM()
    public var workspace = Workspace()
    public var network = Network()
    public var mounts: [String: Mount] = [:]
    public var disk = Disk()
    /// Variables set in the guest, templates already expanded from the host environment (a
    /// masked one's surrogate).
    public var env: [String: String] = [:]
    /// `[env]` entries with `mask = true`, by name: the real value stays on the host.
    public var maskedEnv: [String: MaskedSecret] = [:]
    /// Project paths hidden from the guest, by entry name.
    public var masks: [String: [String]] = [:]
    public var daemons: [String: Daemon] = [:]
    /// `[commands.<name>]`: programs found on the host's PATH and shared read-only into a VM
    /// whose root is the host's, by name: how to install one the host lacks (for the warning).
    public var commands: [String: String] = [:]

    /// The longest a stop may spend on the daemons (the largest `timeout`); nil when one waits
    /// without end (`timeout = 0`).
    public var daemonStopTime: Int? {
        daemons.values.contains { $0.timeout == 0 } ? nil : daemons.values.map(\.timeout).max() ?? 0
    }
    /// `[registries."host:port"]`: registries spoken to over plain HTTP (`insecure = true`).
    public var insecureRegistries: Set<String> = []
    /// `[vault] storage` (user config only): `file`, `encrypted-file`, `keyring` or `disabled`.
    public var vaultStorage = "file"
    /// `[env]` values a start cannot give: a table's required host variable is unset.
    public var unsetVariables: [ConfigDiagnostic] = []
    /// Every `${NAME}` the templates read that the environment does not set (defaulted and
    /// optional ones too): what the vault may fill (`airlock start`, `exec`, `config validate`).
    public var missingVariables: Set<String> = []

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
            vm.cpus = vmNode["cpus"]?.integer ?? vm.cpus
            vm.memory = size(vmNode["memory"]) ?? vm.memory
            vm.kernel = vmNode["kernel"]?.string.map(expandHome)
            vm.initramfs = vmNode["initramfs"]?.string.map(expandHome)
            vm.backend = vmNode["backend"]?.string.flatMap(Backend.init(rawValue:)) ?? vm.backend
            vm.resolution = vmNode["resolution"]?.string.flatMap(Resolution.init(rawValue:)) ?? vm.resolution
            vm.imageLayers = vmNode["image_layers"]?.string.flatMap(ImageLayers.init(rawValue:)) ?? vm.imageLayers
            vm.bootSnapshot = vmNode["boot_snapshot"]?.boolean ?? vm.bootSnapshot
            if let image = vmNode["image"] {
                // A reference, or the Rust airlock's { name, resolution, insecure } (its
                // resolution over [vm] resolution).
                if let name = image.string ?? image["name"]?.string {
                    vm.image = name
                } else {
                    problems.append(
                        ConfigDiagnostic(at: image.origin.location, "[vm.image] needs `name`", hint: "e.g. image = { name = \"debian:bookworm\" }"))
                }
                vm.imageInsecure = image["insecure"]?.boolean ?? vm.imageInsecure
                vm.resolution = image["resolution"]?.string.flatMap(Resolution.init(rawValue:)) ?? vm.resolution
            }
        }
        if let node = root["workspace"] {
            workspace.mode = node["mode"]?.string.flatMap(Workspace.Mode.init(rawValue:)) ?? workspace.mode
            workspace.readOnly = node["read_only"]?.boolean ?? workspace.readOnly
            workspace.maxSize = size(node["max_size"]) ?? workspace.maxSize
            if workspace.readOnly, workspace.mode == .clone, let readOnly = node["read_only"] {
                problems.append(
                    ConfigDiagnostic(
                        at: readOnly.origin.location, "[workspace] read_only applies only with mode = \"mount\"",
                        hint: "the clone is the VM's to change: remove read_only, or share the project itself with mode = \"mount\""))
            }
        }
        /// The rules' passthrough patterns that overlap `pattern` (rules by name): traffic there
        /// is never seen as requests, so no script or service can act on it.
        func passedThrough(_ pattern: HostPattern) -> [(rule: String, passthrough: HostPattern)] {
            network.rules.sorted(by: { $0.key < $1.key }).flatMap { rule, other in
                other.passthrough.filter { $0.overlaps(pattern) }.map { (rule, $0) }
            }
        }
        // `[network.middleware.<name>]` and the Rust airlock's older `[[network.rules.<rule>.middleware]]`
        // (targets: the rule's allowed destinations). A syntax error is found here; a target a
        // rule passes through is refused (nothing there is seen as requests). After the rules.
        func middleware(_ node: ConfigNode) -> [Middleware] {
            var entries: [(name: String, targets: [HostPattern], entry: ConfigNode)] = []
            for (name, entry) in enabledEntries(node["middleware"]).sorted(by: { $0.name < $1.name }) {
                let targets = patterns(entry["target"])
                if targets.isEmpty {
                    problems.append(
                        ConfigDiagnostic(
                            at: entry.origin.location, "[network.middleware.\(name)] needs `target`",
                            hint: "add target = [\"api.example.com:443\"]: the destinations whose requests the script sees"))
                    continue
                }
                entries.append((name, targets, entry))
            }
            for (rule, entry) in enabledEntries(node["rules"]).sorted(by: { $0.name < $1.name }) {
                for (index, attached) in (entry["middleware"]?.elements ?? []).enumerated() {
                    entries.append(("rules.\(rule).middleware[\(index)]", patterns(entry["allow"]), attached))
                }
            }
            var built: [Middleware] = []
            for (name, targets, entry) in entries {
                let path = name.hasPrefix("rules.") ? "network.\(name)" : "network.middleware.\(name)"
                guard let script = entry["script"]?.string else {
                    problems.append(
                        ConfigDiagnostic(at: entry.origin.location, "[\(path)] needs `script`", hint: "add script = \"\"\"…\"\"\" (Lua)"))
                    continue
                }
                if let error = MiddlewareScript.syntaxError(in: script) {
                    problems.append(
                        ConfigDiagnostic(
                            at: entry["script"]?.origin.location ?? entry.origin.location,
                            "[\(path)] script\(error.line.map { ", line \($0)" } ?? ""): \(error.message)",
                            hint: "fix the Lua; it runs as the body of function(req) … end"))
                    continue
                }
                for target in targets {
                    for (rule, passthrough) in passedThrough(target) {
                        problems.append(
                            ConfigDiagnostic(
                                at: entry["target"]?.origin.location ?? entry.origin.location,
                                "[\(path)] applies to \"\(target)\", which [network.rules.\(rule)] passes through (\"\(passthrough)\"): the script would never see its requests",
                                hint: "remove passthrough for those hosts, or the middleware's target"))
                    }
                }
                var values: [String: String] = [:]
                var unresolved: [String] = []
                for (variable, template) in entry["env"]?.entries ?? [] {
                    guard let text = template.string else { continue }
                    do {
                        missingVariables.formUnion(try EnvTemplate.variables(in: text).filter { environment[$0] == nil })
                        if try EnvTemplate.requiredVariables(in: text).contains(where: { environment[$0] == nil }) {
                            unresolved.append(variable)
                        } else {
                            values[variable] = try EnvTemplate.expand(text) { environment[$0] }
                        }
                    } catch {
                        problems.append(ConfigDiagnostic(at: template.origin.location, "`\(path).env.\(variable)`: \(error.message)"))
                    }
                }
                built.append(Middleware(name: name, targets: targets, script: script, environment: values, unresolved: unresolved.sorted()))
            }
            return built
        }
        if let node = root["network"] {
            network.policy = node["policy"]?.string.flatMap(PolicyMode.init(rawValue:)) ?? network.policy
            for (name, entry) in enabledEntries(node["rules"]) {
                // `passthrough = true` (the Rust airlock's form): the rule's allowed destinations
                // are passed through.
                let passAll = entry["passthrough"]?.boolean == true
                let inject = (entry["inject"]?.elements ?? []).compactMap(\.string)
                network.rules[name] = Rule(
                    allow: passAll ? [] : patterns(entry["allow"]), deny: patterns(entry["deny"]),
                    passthrough: passAll ? patterns(entry["allow"]) : patterns(entry["passthrough"]),
                    allowPrivate: entry["allow_private"]?.boolean ?? false, inject: inject)
                for (index, variable) in inject.enumerated() {
                    let at = entry["inject"]?.elements[index].origin.location ?? entry.origin.location
                    if root["env"]?[variable]?["mask"]?.boolean != true {
                        problems.append(
                            ConfigDiagnostic(
                                at: at, "[network.rules.\(name)] inject names \(variable), which is not a masked [env] entry",
                                hint: "add \(variable) = { value = \"${\(variable)}\", mask = true } to [env], or remove it from inject"))
                    } else if passAll || !(entry["passthrough"]?.elements ?? []).isEmpty {
                        problems.append(
                            ConfigDiagnostic(
                                at: at,
                                "[network.rules.\(name)] injects \(variable) but passes its traffic through, where nothing can be put into a request",
                                hint: "remove passthrough from this rule, or move the hosts that need \(variable) to a rule of their own"))
                    }
                }
            }
            network.middleware = middleware(node)
            for (name, entry) in enabledEntries(node["ports"]) {
                network.ports[name] = Ports(
                    toHost: (entry["host"]?.elements ?? []).compactMap { try? PortForward($0) },
                    toGuest: (entry["guest"]?.elements ?? []).compactMap { try? PortForward($0) })
            }
            for (name, entry) in enabledEntries(node["sockets"]) {
                // `host` and `guest`, or the Rust airlock's `host = "host-path:guest-path"` (or one
                // path, the same on both sides).
                guard let host = required(entry, "host", ["network", "sockets", name]) else { continue }
                var mapping = (host: host, guest: entry["guest"]?.string ?? host)
                if entry["guest"] == nil {
                    let colon = host.lastIndex(of: ":")
                    let guest = colon.map { host[host.index(after: $0)...] } ?? host[...]
                    if let colon, guest.hasPrefix("/") {
                        mapping = (String(host[..<colon]), String(guest))
                    } else if guest.hasPrefix("~") {
                        problems.append(
                            ConfigDiagnostic(
                                at: entry["host"]?.origin.location ?? entry.origin.location,
                                "[network.sockets.\(name)] host puts the socket at \"\(guest)\" in the guest; a guest path starting with ~ is not supported",
                                hint: "add guest = \"/run/airlock/\(name).sock\" (an absolute path in the guest)"))
                        continue
                    }
                }
                network.sockets[name] = SocketForward(host: expandHome(mapping.host), guest: mapping.guest)
            }
        }
        for (name, entry) in enabledEntries(root["mounts"]) {
            let path = ["mounts", name]
            if let source = required(entry, "source", path), let target = required(entry, "target", path) {
                let missing = entry["missing"]?.string.flatMap(Mount.Missing.init(rawValue:)) ?? .fail
                // Parse nothing that does nothing: these two act only when a start creates the source.
                if let content = entry["file_content"], missing != .createFile {
                    problems.append(
                        ConfigDiagnostic(
                            at: content.origin.location, "[mounts.\(name)] file_content is used only with missing = \"create-file\"",
                            hint: "add missing = \"create-file\", or remove file_content"))
                }
                if let mode = entry["create_mode"], ![.create, .createDir, .createFile].contains(missing) {
                    problems.append(
                        ConfigDiagnostic(
                            at: mode.origin.location, "[mounts.\(name)] create_mode is used only with missing = \"create-dir\" or \"create-file\"",
                            hint: "add missing = \"create-dir\" or \"create-file\", or remove create_mode"))
                }
                mounts[name] = Mount(
                    source: expandHome(source), target: target, readOnly: entry["read_only"]?.boolean ?? true, missing: missing,
                    fileContent: entry["file_content"]?.string ?? "", createMode: entry["create_mode"]?.string.flatMap(Mount.mode))
            }
        }
        if let node = root["disk"] {
            disk.size = size(node["size"]) ?? disk.size
            for (name, entry) in node["cache"]?.entries ?? [] {
                guard Disk.isValidCacheName(name) else {
                    problems.append(
                        ConfigDiagnostic(
                            at: entry.origin.location, "[disk.cache.\(name)]: a cache's name names its directory on the state disk",
                            hint: "use letters, digits, `-`, `_` and `.`, not starting with `.`"))
                    continue
                }
                disk.keptCaches.append(name)
                if entry["enabled"]?.boolean ?? true {
                    disk.caches[name] = (entry["paths"]?.elements ?? []).compactMap(\.string)
                }
            }
            disk.keptCaches.sort()
        }
        // `NAME = "template"`, or `NAME = { value = "template", optional = true }` (the Rust
        // airlock's forms). A `${VAR}` without a default whose host variable is unset leaves the
        // value incomplete: an optional one is left out; any other is refused at start.
        func expandEnvironment(_ table: ConfigNode?, _ prefix: String) -> [String: String] {
            var expanded: [String: String] = [:]
            for (variable, node) in table?.entries ?? [] {
                guard let template = node.string ?? node["value"]?.string else {
                    problems.append(
                        ConfigDiagnostic(
                            at: node.origin.location, "`\(prefix).\(variable)` needs `value`",
                            hint: "e.g. \(variable) = { value = \"${\(variable)}\" }"))
                    continue
                }
                do {
                    missingVariables.formUnion(try EnvTemplate.variables(in: template).filter { environment[$0] == nil })
                    var seen = Set<String>()
                    let unset = try EnvTemplate.requiredVariables(in: template).filter { environment[$0] == nil && seen.insert($0).inserted }
                    if !unset.isEmpty {
                        if node["optional"]?.boolean != true {
                            let names = unset.map { "$" + $0 }.joined(separator: ", ")
                            unsetVariables.append(
                                ConfigDiagnostic(
                                    at: node.origin.location, "`\(prefix).\(variable)` needs \(names), unset on this host",
                                    hint:
                                        "set it, give a default (${\(unset[0]):value}), or write \(variable) = { value = \"…\", optional = true } to leave it out when unset"
                                ))
                        }
                        continue
                    }
                    expanded[variable] = try EnvTemplate.expand(template) { environment[$0] }
                } catch {
                    problems.append(ConfigDiagnostic(at: node.origin.location, "`\(prefix).\(variable)`: \(error.message)"))
                }
            }
            return expanded
        }
        env = expandEnvironment(root["env"], "env")
        // Masked values: the guest gets a surrogate; the real one stays here.
        for (variable, node) in root["env"]?.entries ?? [] where node["mask"]?.boolean == true {
            guard let value = env[variable] else { continue }
            guard MaskedSecret.canMask(value) else {
                problems.append(
                    ConfigDiagnostic(
                        at: node.origin.location,
                        "`env.\(variable)` with mask = true: its value is too short to mask (a surrogate must replace at least \(MaskedSecret.minimumReplaced) letters or digits) or spans lines",
                        hint: "mask only tokens and keys; a short value can go in as it is without mask"))
                continue
            }
            let secret = MaskedSecret(name: variable, value: value)
            maskedEnv[variable] = secret
            env[variable] = secret.surrogate
        }
        // `[network.services.<name>]`: the provider's tokens from the host (the environment, then
        // the vault), a surrogate each in the VM; its API hosts are always intercepted.
        for (name, entry) in enabledEntries(root["network"]?["services"]).sorted(by: { $0.name < $1.name }) {
            guard let service = ProviderService.named(name) else {
                problems.append(
                    ConfigDiagnostic(
                        at: entry.origin.location, "[network.services.\(name)] is not a service airlock knows",
                        hint: "the services are \(ProviderService.known.map(\.name).joined(separator: " and ")); remove this table"))
                continue
            }
            for pattern in service.patterns {
                for (rule, passthrough) in passedThrough(pattern) {
                    problems.append(
                        ConfigDiagnostic(
                            at: entry.origin.location,
                            "[network.services.\(name)] keeps its tokens on the host, which needs \(pattern) intercepted; [network.rules.\(rule)] passes it through (\"\(passthrough)\")",
                            hint: "remove passthrough for that host, or turn the service off with enabled = false"))
                }
            }
            var tokens: [MaskedSecret] = []
            for variable in service.tokenVariables {
                if let given = root["env"]?[variable] {
                    problems.append(
                        ConfigDiagnostic(
                            at: given.origin.location,
                            "`env.\(variable)` is given by [network.services.\(name)] (a surrogate of the host's token, or nothing when the host has none)",
                            hint: "remove this [env] entry; put the real value in the host's environment or `airlock secrets add \(variable)`"))
                    continue
                }
                guard let value = environment[variable], !value.isEmpty else {
                    missingVariables.insert(variable)
                    continue
                }
                guard MaskedSecret.canMask(value), !value.contains(where: \.isWhitespace) else {
                    problems.append(
                        ConfigDiagnostic(
                            at: entry.origin.location,
                            "[network.services.\(name)]: the host's \(variable) does not look like a token (too short, or spaces in it)",
                            hint: "check the value in the environment or the vault (`airlock secrets ls`)"))
                    continue
                }
                let secret = MaskedSecret(name: variable, value: value)
                tokens.append(secret)
                env[variable] = secret.surrogate
            }
            network.services.append(ServiceCredentials(service: service, tokens: tokens))
        }
        for (name, entry) in enabledEntries(root["mask"]) {
            masks[name] = (entry["paths"]?.elements ?? []).compactMap(\.string)
        }
        for (name, entry) in enabledEntries(root["commands"]) {
            guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                problems.append(
                    ConfigDiagnostic(at: entry.origin.location, "[commands.\(name)]: a command's name is a file name", hint: "e.g. [commands.claude]")
                )
                continue
            }
            commands[name] = entry["install"]?.string ?? ""
        }
        for (name, entry) in enabledEntries(root["daemons"]) {
            let command = (entry["command"]?.elements ?? []).compactMap(\.string)
            if command.isEmpty {
                problems.append(
                    ConfigDiagnostic(
                        at: entry.origin.location, "[daemons.\(name)] needs a non-empty `command`", hint: "e.g. command = [\"redis-server\"]"))
            } else {
                let signal = entry["signal"]?.string.flatMap { name in Daemon.signals.first { $0.name == name }?.number } ?? 15
                daemons[name] = Daemon(
                    command: command, cwd: entry["cwd"]?.string ?? "/", env: expandEnvironment(entry["env"], "daemons.\(name).env"), signal: signal,
                    timeout: entry["timeout"]?.integer ?? 10, restart: entry["restart"]?.string.flatMap(Daemon.Restart.init(rawValue:)) ?? .always,
                    maxRestarts: entry["max_restarts"]?.integer ?? 10)
            }
        }
        vaultStorage = root["vault"]?["storage"]?.string ?? vaultStorage
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
        // Each `notYet` path in an enabled entry (a flag set to false asks for nothing); nothing
        // inside a refused entry again.
        func matches(_ node: ConfigNode, _ pattern: ArraySlice<Substring>, _ path: [String]) -> [(path: [String], node: ConfigNode)] {
            guard let first = pattern.first else { return [(path, node)] }
            if first == "*" {
                return enabledEntries(node).flatMap { matches($0.node, pattern.dropFirst(), path + [$0.name]) }
            }
            guard case .table = node.value, let child = node[String(first)] else { return [] }
            return matches(child, pattern.dropFirst(), path + [String(first)])
        }
        var refused: [[String]] = []
        for (pattern, hint) in AirlockSchema.notYet {
            for (path, node) in matches(root, pattern.split(separator: ".")[...], [])
            where node.boolean != false && !refused.contains(where: { path.starts(with: $0) }) {
                refused.append(path)
                refuse(node, pattern.hasSuffix("*") ? "[\(dotted(path))]" : "`\(dotted(path))`", hint)
            }
        }
        let daemonEnvironments = enabledEntries(root["daemons"]).map { ("daemons.\($0.name).env", $0.node["env"]) }
        for (prefix, table) in daemonEnvironments {
            for (variable, node) in table?.entries ?? [] where node["mask"]?.boolean == true {
                refuse(
                    node["mask"] ?? node, "`\(prefix).\(variable)` with mask = true",
                    "remove mask here: a daemon's env cannot be masked yet (the top-level [env] can)")
            }
        }
        return problems
    }
}
