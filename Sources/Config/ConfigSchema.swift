import NetworkPolicy

/// What each key of `airlock.toml` may hold. Every file is checked against this before any
/// merging, so an error always points into the file that holds it.
indirect enum Schema: Sendable {
    case string
    case integer(ClosedRange<Int>)
    case boolean
    /// `"10G"`, `"512M"` or a number of bytes.
    case size
    case choice([String])
    /// A network destination pattern (see `HostPattern`).
    case pattern
    /// An array of patterns, or `true`/`false`.
    case patternsOrFlag
    /// A port forward: `5432` or `"9000:3000"`.
    case portForward
    /// An absolute path; with `homeRelative`, `~/…` too (the host user's home on the host side,
    /// the agent's in the VM).
    case absolutePath(homeRelative: Bool)
    /// A path relative to the project, never leaving it.
    case projectPath
    /// A `[mounts.*]` path: absolute, `~/…`, or relative to the project.
    case mountPath
    /// Permission bits as an octal string (`"755"`), as the Rust airlock writes them.
    case fileMode
    case array(Schema)
    case table([(key: String, schema: Schema)])
    /// Entries named by the user (`[mounts.<name>]`), each a table of the given fields plus `enabled`.
    case named([(key: String, schema: Schema)])
    /// `[env]`: any variable name to a template string, or to a table `{ value, mask, optional }`
    /// (the Rust airlock's form).
    case environment
    /// `[vm] image`: a reference, or a table `{ name, resolution, insecure }` (the Rust airlock's
    /// form).
    case image
    /// A middleware's `env`: any name to a template string.
    case templates

    var expectation: String {
        switch self {
        case .string, .absolutePath, .projectPath, .mountPath: "a string"
        case .fileMode: "an octal mode string such as \"644\""
        case .integer(let range): "an integer from \(range.lowerBound) to \(range.upperBound)"
        case .boolean: "true or false"
        case .size: "a size such as \"512M\" or \"10G\""
        case .choice(let values): "one of " + values.map { "\"\($0)\"" }.joined(separator: ", ")
        case .pattern: "a pattern string such as \"example.com\", \"*.example.com:443\" or \"*:22\""
        case .patternsOrFlag: "an array of patterns, or true"
        case .portForward: "a port (5432) or \"host:guest\" (\"9000:3000\")"
        case .array: "an array"
        case .table, .named, .environment, .templates: "a table"
        case .image: "an image reference (\"debian:bookworm\") or a table with `name`"
        }
    }
}

enum AirlockSchema {
    /// What the configuration (this airlock's or the Rust airlock's) can say and this airlock
    /// does not act on yet, by dotted path (`*`: any named entry), with the fix. A file may
    /// hold these keys (they are not "unknown"); `config validate` and `start` refuse them in the
    /// merged configuration (`AirlockConfig.notYetSupported`), so `enabled = false` on an entry
    /// silences them, as does a flag set to false; nothing inside a refused entry is listed
    /// again.
    static let notYet: [(path: String, hint: String)] = [
        ("vm.harden", "remove it (or set it to false): the agent may become root inside the VM (sudo); the VM is the boundary"),
        ("vm.kvm", "remove it (or set it to false): nested KVM is not offered"),
        ("vm.image.pull-policy", "remove it: a stored image is used as it is; `airlock image pull` fetches the newest"),
        (
            "daemons.*.harden",
            "remove it (or set it to false): daemons run as the agent does, which may become root inside the VM (sudo)"
        ),
    ]

    /// Whether `path` is a `notYet` path or leads into one (a file may hold it).
    static func isNotYet(_ path: [String]) -> Bool {
        notYet.contains { entry in
            let pattern = entry.path.split(separator: ".")
            return pattern.count >= path.count && zip(pattern, path).allSatisfy { $0 == "*" || $0 == $1 }
        }
    }

    static let backends = ["auto", "cloud-hypervisor", "qemu"]
    static let resolutions = AirlockConfig.Resolution.allCases.map(\.rawValue)

    static let root: Schema = .table([
        ("presets", .array(.choice(Presets.names))),
        (
            "vm",
            .table([
                ("image", .image),
                ("cpus", .integer(1...256)),
                ("memory", .size),
                ("kernel", .absolutePath(homeRelative: true)),
                ("initramfs", .absolutePath(homeRelative: true)),
                ("backend", .choice(backends)),
                ("resolution", .choice(resolutions)),
                ("image_layers", .choice(AirlockConfig.ImageLayers.allCases.map(\.rawValue))),
                ("boot_snapshot", .boolean),
            ])
        ),
        (
            "workspace",
            .table([
                ("mode", .choice(["clone", "mount"])),
                ("read_only", .boolean),
                ("max_size", .size),
            ])
        ),
        (
            "network",
            .table([
                ("policy", .choice(PolicyMode.allCases.map(\.rawValue))),
                (
                    "rules",
                    .named([
                        ("allow", .array(.pattern)),
                        ("deny", .array(.pattern)),
                        // Patterns, or the Rust airlock's `passthrough = true` (the rule's allow
                        // patterns are passed through).
                        ("passthrough", .patternsOrFlag),
                        ("allow_private", .boolean),
                        // Masked `[env]` values put back into requests to this rule's hosts.
                        ("inject", .array(.string)),
                        // The Rust airlock's older form: scripts on the rule's allowed hosts.
                        ("middleware", .array(.table([("env", .templates), ("script", .string)]))),
                    ])
                ),
                (
                    "middleware",
                    .named([
                        ("target", .array(.pattern)),
                        ("env", .templates),
                        ("script", .string),
                    ])
                ),
                // Model providers whose tokens stay on the host (`ProviderService`).
                ("services", .named([])),
                (
                    "ports",
                    .named([
                        ("host", .array(.portForward)),
                        ("guest", .array(.portForward)),
                    ])
                ),
                (
                    "sockets",
                    .named([
                        // A path, or the Rust airlock's "host-path:guest-path" when `guest` is absent.
                        ("host", .absolutePath(homeRelative: true)),
                        ("guest", .absolutePath(homeRelative: false)),
                    ])
                ),
            ])
        ),
        (
            "mounts",
            .named([
                // On the host: `~/` is the user's home, a relative path the project's.
                ("source", .mountPath),
                // In the VM: `~/` is the agent's home, a relative path the project's.
                ("target", .mountPath),
                ("read_only", .boolean),
                ("missing", .choice(AirlockConfig.Mount.Missing.allCases.map(\.rawValue))),
                ("file_content", .string),
                ("create_mode", .fileMode),
            ])
        ),
        (
            "disk",
            .table([
                ("size", .size),
                // Absolute, `~/` (the agent's home) or relative to the project, as the Rust airlock's.
                ("cache", .named([("paths", .array(.mountPath))])),
            ])
        ),
        ("env", .environment),
        ("mask", .named([("paths", .array(.projectPath))])),
        // Programs on the host's PATH shared into a host-root VM (`HostCommands`); `install`: how
        // to get one the host lacks.
        ("commands", .named([("install", .string)])),
        (
            "daemons",
            .named([
                ("command", .array(.string)),
                // In the VM: absolute, or `~/…` (the agent's home).
                ("cwd", .absolutePath(homeRelative: true)),
                ("env", .environment),
                ("signal", .choice(AirlockConfig.Daemon.signals.map(\.name))),
                ("timeout", .integer(0...86_400)),
                ("restart", .choice(AirlockConfig.Daemon.Restart.allCases.map(\.rawValue))),
                ("max_restarts", .integer(0...1_000_000)),
            ])
        ),
        // OCI registries by host[:port] as written in image references.
        ("registries", .named([("insecure", .boolean)])),
        // Where `airlock secrets` keeps values (`Secrets.Vault`): the user's own setting, refused
        // in a project's files.
        ("vault", .table([("storage", .choice(["file", "encrypted-file", "keyring", "disabled"]))])),
    ])
}

/// Checks one file's tree against the schema.
struct SchemaValidator {
    var diagnostics: [ConfigDiagnostic] = []

    mutating func check(_ node: ConfigNode, against schema: Schema, path: [String]) {
        let location = node.origin.location
        let name = path.isEmpty ? "the file" : "`\(dotted(path))`"
        func wrongType() {
            diagnostics.append(ConfigDiagnostic(at: location, "\(name) must be \(schema.expectation), not \(node.typeName)"))
        }

        switch schema {
        case .string:
            if node.string == nil { wrongType() }
        case .integer(let range):
            guard let value = node.integer else { return wrongType() }
            if !range.contains(value) {
                diagnostics.append(ConfigDiagnostic(at: location, "\(name) is \(value), outside \(range.lowerBound)...\(range.upperBound)"))
            }
        case .boolean:
            if node.boolean == nil { wrongType() }
        case .size:
            if let number = node.integer {
                if number < 0 { diagnostics.append(ConfigDiagnostic(at: location, "\(name) must not be negative")) }
            } else if let text = node.string {
                do { _ = try ByteSize(parsing: text) } catch {
                    diagnostics.append(ConfigDiagnostic(at: location, "\(name): \(error.message)"))
                }
            } else {
                wrongType()
            }
        case .choice(let values):
            guard let text = node.string else { return wrongType() }
            if !values.contains(text) {
                let hint = suggestion(for: text, among: values).map { "did you mean \"\($0)\"?" }
                diagnostics.append(ConfigDiagnostic(at: location, "\(name) is \"\(text)\"; expected \(schema.expectation)", hint: hint))
            }
        case .patternsOrFlag:
            if node.boolean != nil { return }
            guard case .array = node.value else { return wrongType() }
            check(node, against: .array(.pattern), path: path)
        case .pattern:
            guard let text = node.string else { return wrongType() }
            do { _ = try HostPattern(parsing: text) } catch {
                diagnostics.append(ConfigDiagnostic(at: location, "\(name): \(error.description)"))
            }
        case .portForward:
            do { _ = try PortForward(node) } catch {
                diagnostics.append(ConfigDiagnostic(at: location, "\(name): \(error.message)"))
            }
        case .absolutePath(let homeRelative):
            guard let text = node.string else { return wrongType() }
            let ok = text.hasPrefix("/") || (homeRelative && (text == "~" || text.hasPrefix("~/")))
            if !ok {
                diagnostics.append(
                    ConfigDiagnostic(
                        at: location, "\(name) is \"\(text)\"; it must be an absolute path" + (homeRelative ? " (or start with ~/)" : "")))
            }
        case .projectPath:
            guard let text = node.string else { return wrongType() }
            let parts = text.split(separator: "/")
            if text.hasPrefix("/") || text.hasPrefix("~") || parts.contains("..") || parts.allSatisfy({ $0 == "." }) {
                diagnostics.append(
                    ConfigDiagnostic(at: location, "\(name) is \"\(text)\"; it must be a path inside the project, relative to its root, without `..`")
                )
            }
        case .mountPath:
            guard let text = node.string else { return wrongType() }
            if text.isEmpty || text.contains("\0") || (text.hasPrefix("~") && text != "~" && !text.hasPrefix("~/")) {
                diagnostics.append(
                    ConfigDiagnostic(
                        at: location, "\(name) is \"\(text)\"; it must be an absolute path, start with ~/, or be relative to the project",
                        hint: text.hasPrefix("~") ? "~user is not expanded: write the whole path" : nil))
            }
        case .fileMode:
            guard let text = node.string else { return wrongType() }
            if AirlockConfig.Mount.mode(text) == nil {
                diagnostics.append(
                    ConfigDiagnostic(
                        at: location, "\(name) is \"\(text)\"; it must be octal permission bits, at most 7777",
                        hint: "for example \"644\" or \"0600\""))
            }
        case .array(let element):
            guard case .array(let elements) = node.value else { return wrongType() }
            for (index, item) in elements.enumerated() {
                check(item, against: element, path: path + ["[\(index)]"])
            }
        case .table(let fields):
            guard case .table(let entries) = node.value else { return wrongType() }
            checkFields(entries, fields: fields, path: path)
        case .named(let fields):
            guard case .table(let entries) = node.value else { return wrongType() }
            for (entryName, entry) in entries {
                guard case .table(let entryFields) = entry.value else {
                    diagnostics.append(
                        ConfigDiagnostic(
                            at: entry.origin.location,
                            "`\(dotted(path + [entryName]))` must be a table ([\(dotted(path + [entryName]))]), not \(entry.typeName)"))
                    continue
                }
                checkFields(entryFields, fields: fields + [("enabled", .boolean)], path: path + [entryName])
            }
        case .environment:
            guard case .table(let entries) = node.value else { return wrongType() }
            for (variable, value) in entries {
                let valuePath = path + [variable]
                var template = value
                if case .table(let fields) = value.value {
                    // `value` may come from another layer: its absence is found after the merge.
                    checkFields(fields, fields: [("value", .string), ("mask", .boolean), ("optional", .boolean)], path: valuePath)
                    guard let given = value["value"], given.string != nil else { continue }
                    template = given
                }
                guard let text = template.string else {
                    diagnostics.append(
                        ConfigDiagnostic(
                            at: value.origin.location, "`\(dotted(valuePath))` must be a string or a table with `value`, not \(value.typeName)"))
                    continue
                }
                do { _ = try EnvTemplate.variables(in: text) } catch {
                    diagnostics.append(ConfigDiagnostic(at: template.origin.location, "`\(dotted(valuePath))`: \(error.message)"))
                }
            }
        case .templates:
            guard case .table(let entries) = node.value else { return wrongType() }
            for (variable, value) in entries {
                guard let text = value.string else {
                    diagnostics.append(
                        ConfigDiagnostic(at: value.origin.location, "`\(dotted(path + [variable]))` must be a string, not \(value.typeName)"))
                    continue
                }
                do { _ = try EnvTemplate.variables(in: text) } catch {
                    diagnostics.append(ConfigDiagnostic(at: value.origin.location, "`\(dotted(path + [variable]))`: \(error.message)"))
                }
            }
        case .image:
            if node.string != nil { return }
            guard case .table(let fields) = node.value else { return wrongType() }
            // `name` may come from another layer: its absence is found after the merge.
            checkFields(
                fields, fields: [("name", .string), ("resolution", .choice(AirlockSchema.resolutions)), ("insecure", .boolean)], path: path)
        }
    }

    private mutating func checkFields(_ entries: [(key: String, node: ConfigNode)], fields: [(key: String, schema: Schema)], path: [String]) {
        for (key, child) in entries {
            if let field = fields.first(where: { $0.key == key }) {
                check(child, against: field.schema, path: path + [key])
            } else if AirlockSchema.isNotYet(path + [key]) {
                continue  // Refused after the merge, unless its entry is switched off.
            } else {
                let known = fields.map(\.key)
                let hint =
                    suggestion(for: key, among: known).map { "did you mean `\($0)`?" }
                    ?? "known keys here: " + known.joined(separator: ", ")
                let table = path.isEmpty ? "at the top level" : "in [\(dotted(path))]"
                diagnostics.append(ConfigDiagnostic(at: child.origin.location, "unknown key `\(key)` \(table)", hint: hint))
            }
        }
    }
}

func dotted(_ path: [String]) -> String {
    var text = ""
    for part in path {
        if part.hasPrefix("[") {
            text += part
        } else {
            if !text.isEmpty { text += "." }
            let bare = !part.isEmpty && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
            text += bare ? part : "\"\(part)\""
        }
    }
    return text
}
