/// Loads the configuration layers of a project and merges them:
/// user (the Rust airlock's `~/.airlock/config.toml` or `~/.airlock.toml`, then
/// `~/.config/airlock/config.toml`) →
/// presets → project (`airlock.toml`) → local (`airlock.local.toml`). Tables merge, arrays
/// concatenate, scalars override; an entry with `enabled = false` is switched off whatever lower
/// layer defined it.
public struct ConfigLoader: Sendable {
    /// One layer that took part, in merge order.
    public struct Layer: Sendable, Equatable {
        public enum Kind: String, Sendable { case user, preset, project, local }
        public var kind: Kind
        /// The path shown in messages and origins.
        public var displayPath: String
        public var tree: ConfigNode
    }

    public struct Result: Sendable {
        public var config: AirlockConfig
        /// The merged tree, each value carrying where it was written.
        public var merged: ConfigNode
        public var layers: [Layer]

        public init(config: AirlockConfig, merged: ConfigNode = .emptyTable(origin: .builtIn), layers: [Layer] = []) {
            self.config = config
            self.merged = merged
            self.layers = layers
        }

        /// What `config validate` and `start` refuse: entries whose behaviour this airlock does
        /// not have yet (`AirlockConfig.notYetSupported`) and `[env]` values whose required host
        /// variables are unset.
        public var startRefusals: [ConfigDiagnostic] { AirlockConfig.notYetSupported(merged) + config.unsetVariables }
    }

    public static let projectFileName = "airlock.toml"
    public static let localFileName = "airlock.local.toml"

    public var projectRoot: String
    public var userConfigPath: String?
    /// The Rust airlock's user files, the first present one read below `userConfigPath`.
    public var sharedUserConfigPaths: [String]
    public var environment: [String: String]
    public var fileSystem: any FileReading

    public init(
        projectRoot: String, userConfigPath: String?, sharedUserConfigPaths: [String] = [], environment: [String: String],
        fileSystem: any FileReading = LocalFiles()
    ) {
        self.projectRoot = projectRoot
        self.userConfigPath = userConfigPath
        self.sharedUserConfigPaths = sharedUserConfigPaths
        self.environment = environment
        self.fileSystem = fileSystem
    }

    /// The loader every command uses for the project at `projectRoot`: the user's files as
    /// `environment` locates them (`userConfigPath`, `sharedUserConfigPaths`).
    public static func forProject(_ projectRoot: String, environment: [String: String]) -> ConfigLoader {
        ConfigLoader(
            projectRoot: projectRoot, userConfigPath: userConfigPath(environment: environment),
            sharedUserConfigPaths: sharedUserConfigPaths(environment: environment), environment: environment)
    }

    /// The user files the Rust airlock reads, the first present one: `~/.airlock/config.toml`,
    /// `~/.airlock.toml`.
    public static func sharedUserConfigPaths(environment: [String: String]) -> [String] {
        guard let home = environment["HOME"], !home.isEmpty else { return [] }
        return [home + "/.airlock/config.toml", home + "/.airlock.toml"]
    }

    /// The user's file: `$XDG_CONFIG_HOME/airlock/config.toml`, else `~/.config/airlock/config.toml`.
    public static func userConfigPath(environment: [String: String]) -> String? {
        if let xdg = environment["XDG_CONFIG_HOME"], xdg.hasPrefix("/") { return xdg + "/airlock/config.toml" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.config/airlock/config.toml" }
        return nil
    }

    public func load() throws(ConfigError) -> Result {
        var diagnostics: [ConfigDiagnostic] = []
        var fileLayers: [Layer] = []

        /// Whether the file is there.
        @discardableResult
        func read(_ path: String, display: String, kind: Layer.Kind) -> Bool {
            do {
                guard let bytes = try fileSystem.read(path) else { return false }
                if let (line, column) = firstInvalidUTF8(in: bytes) {
                    diagnostics.append(
                        ConfigDiagnostic(
                            at: SourceLocation(file: display, line: line, column: column), "the file is not valid UTF-8 here",
                            hint: "TOML files are UTF-8: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"))
                    return true
                }
                let tree = try ConfigParser.parse(String(decoding: bytes, as: UTF8.self), file: display)
                var validator = SchemaValidator()
                validator.check(tree, against: AirlockSchema.root, path: [])
                diagnostics += validator.diagnostics
                fileLayers.append(Layer(kind: kind, displayPath: display, tree: tree))
            } catch let error as ConfigError {
                diagnostics += error.diagnostics
            } catch {
                diagnostics.append(ConfigDiagnostic(at: nil, "cannot read \(display): \(error)", hint: "check the file's permissions"))
            }
            return true
        }

        for path in sharedUserConfigPaths where read(path, display: displayPath(path), kind: .user) { break }
        if let userConfigPath {
            read(userConfigPath, display: displayPath(userConfigPath), kind: .user)
        }
        read(projectRoot + "/" + Self.projectFileName, display: Self.projectFileName, kind: .project)
        read(projectRoot + "/" + Self.localFileName, display: Self.localFileName, kind: .local)
        // Where this user's secrets live is not a project's to say.
        for layer in fileLayers where layer.kind != .user {
            if let vault = layer.tree["vault"] {
                diagnostics.append(
                    ConfigDiagnostic(
                        at: vault.origin.location, "[vault] is a setting of your own, not of a project",
                        hint: "move it to \(userConfigPath.map(displayPath) ?? "~/.config/airlock/config.toml")"))
            }
        }
        if !diagnostics.isEmpty { throw ConfigError(diagnostics) }

        // Presets named by any file, first mention first, each parsed from the binary.
        var presetNames: [String] = []
        for layer in fileLayers {
            for name in (layer.tree["presets"]?.elements ?? []).compactMap(\.string) where !presetNames.contains(name) {
                presetNames.append(name)
            }
        }
        var presetLayers: [Layer] = []
        for name in presetNames {
            guard let text = Presets.text(of: name) else { continue }  // Unknown names failed validation above.
            do {
                presetLayers.append(Layer(kind: .preset, displayPath: "preset:\(name)", tree: try ConfigParser.parse(text, file: "preset:\(name)")))
            } catch {
                diagnostics += error.diagnostics
            }
        }
        if !diagnostics.isEmpty { throw ConfigError(diagnostics) }

        let ordered = fileLayers.filter { $0.kind == .user } + presetLayers + fileLayers.filter { $0.kind != .user }
        var merged = ConfigNode.emptyTable(origin: .builtIn)
        for layer in ordered { merged = merged.merged(with: layer.tree) }

        let config = try AirlockConfig(merged: merged, environment: environment, home: environment["HOME"] ?? "/")
        let socketProblems = Self.checkSocketForwards(config.network.sockets, merged: merged, projectRoot: projectRoot)
        if !socketProblems.isEmpty { throw ConfigError(socketProblems) }
        return Result(config: config, merged: merged, layers: ordered)
    }

    /// `[network.sockets.<name>]`: a name the guest can send (letters, digits, `.`, `_`, `-`),
    /// a `guest` path that is absolute, plain (no `.`/`..`/empty parts), short enough for a
    /// socket address and outside the project (the workspace appears there), used once; and a
    /// `host` path absolute after `~` expansion, short enough for a socket address.
    static func checkSocketForwards(_ sockets: [String: AirlockConfig.SocketForward], merged: ConfigNode, projectRoot: String) -> [ConfigDiagnostic] {
        var problems: [ConfigDiagnostic] = []
        var guestPaths: [String: String] = [:]
        let nameBytes = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".utf8))
        for (name, socket) in sockets.sorted(by: { $0.key < $1.key }) {
            let entry = merged["network"]?["sockets"]?[name]
            let table = "[network.sockets.\(name)]"
            if name.utf8.count > 64 || !name.utf8.allSatisfy({ nameBytes.contains($0) }) {
                problems.append(
                    ConfigDiagnostic(
                        at: entry?.origin.location, "\(table): the name may only have letters, digits, `.`, `_` and `-` (at most 64)",
                        hint: "rename the table, e.g. [network.sockets.ssh-agent]"))
            }
            let guest = socket.guest
            let guestAt = (entry?["guest"] ?? entry?["host"])?.origin.location ?? entry?.origin.location
            let parts = guest.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            if !guest.hasPrefix("/") || guest == "/" || parts.contains("..") || parts.contains(".") || parts.contains("") || guest.utf8.contains(0) {
                problems.append(
                    ConfigDiagnostic(
                        at: guestAt, "\(table) guest is \"\(guest)\"; it must be an absolute path to a file, without `.`, `..` or `//`",
                        hint: "for example guest = \"/run/airlock/\(name).sock\""))
            } else if guest == projectRoot || guest.hasPrefix(projectRoot == "/" ? "/" : projectRoot + "/") {
                problems.append(
                    ConfigDiagnostic(
                        at: guestAt, "\(table) guest is \"\(guest)\", inside the project (\(projectRoot)), where the sandbox's workspace appears",
                        hint: "put the socket outside the project, e.g. guest = \"/run/airlock/\(name).sock\""))
            } else if guest.utf8.count > 96 {
                problems.append(
                    ConfigDiagnostic(
                        at: guestAt, "\(table) guest is \(guest.utf8.count) bytes long; a socket path may have at most 96",
                        hint: "choose a shorter path, e.g. guest = \"/run/airlock/\(name).sock\""))
            } else if let other = guestPaths[guest] {
                problems.append(
                    ConfigDiagnostic(
                        at: guestAt, "\(table) guest \"\(guest)\" is also [network.sockets.\(other)]'s", hint: "give each forward its own guest path")
                )
            } else {
                guestPaths[guest] = name
            }
            let hostAt = entry?["host"]?.origin.location ?? entry?.origin.location
            if !socket.host.hasPrefix("/") {
                problems.append(
                    ConfigDiagnostic(
                        at: hostAt, "\(table) host is \"\(socket.host)\"; it must be an absolute path (or start with ~/)",
                        hint: "for example host = \"~/.ssh/agent.sock\""))
            } else if socket.host.utf8.count > 107 {
                problems.append(
                    ConfigDiagnostic(
                        at: hostAt, "\(table) host is \(socket.host.utf8.count) bytes long after expansion; a Unix socket path may have at most 107",
                        hint: "link the socket from a shorter path and name that"))
            }
        }
        return problems
    }

    /// `~/…` for paths in the home directory, relative for paths in the project, else as is.
    private func displayPath(_ path: String) -> String {
        if path.hasPrefix(projectRoot + "/") { return String(path.dropFirst(projectRoot.count + 1)) }
        if let home = environment["HOME"], home.count > 1, path.hasPrefix(home + "/") { return "~" + path.dropFirst(home.count) }
        return path
    }
}
