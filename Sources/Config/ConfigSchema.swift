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
    /// A port forward: `5432` or `"9000:3000"`.
    case portForward
    /// An absolute path (a `~/` prefix is allowed where the path is on the host).
    case absolutePath(hostSide: Bool)
    /// A path relative to the project, never leaving it.
    case projectPath
    case array(Schema)
    case table([(key: String, schema: Schema)])
    /// Entries named by the user (`[mounts.<name>]`), each a table of the given fields plus `enabled`.
    case named([(key: String, schema: Schema)])
    /// `[env]`: any variable name to a template string.
    case environment

    var expectation: String {
        switch self {
        case .string, .absolutePath, .projectPath: "a string"
        case .integer(let range): "an integer from \(range.lowerBound) to \(range.upperBound)"
        case .boolean: "true or false"
        case .size: "a size such as \"512M\" or \"10G\""
        case .choice(let values): "one of " + values.map { "\"\($0)\"" }.joined(separator: ", ")
        case .pattern: "a pattern string such as \"example.com\", \"*.example.com:443\" or \"*:22\""
        case .portForward: "a port (5432) or \"host:guest\" (\"9000:3000\")"
        case .array: "an array"
        case .table, .named, .environment: "a table"
        }
    }
}

enum AirlockSchema {
    static let backends = ["auto", "cloud-hypervisor", "qemu"]
    static let resolutions = AirlockConfig.Resolution.allCases.map(\.rawValue)

    static let root: Schema = .table([
        ("presets", .array(.choice(Presets.names))),
        (
            "vm",
            .table([
                ("image", .string),
                ("cpus", .integer(1...256)),
                ("memory", .size),
                ("kernel", .absolutePath(hostSide: true)),
                ("initramfs", .absolutePath(hostSide: true)),
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
                        ("passthrough", .array(.pattern)),
                        ("allow_private", .boolean),
                    ])
                ),
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
                        ("host", .absolutePath(hostSide: true)),
                        ("guest", .absolutePath(hostSide: false)),
                    ])
                ),
            ])
        ),
        (
            "mounts",
            .named([
                ("source", .absolutePath(hostSide: true)),
                ("target", .absolutePath(hostSide: false)),
                ("read_only", .boolean),
                ("missing", .choice(["fail", "warn", "ignore", "create"])),
            ])
        ),
        (
            "disk",
            .table([
                ("size", .size),
                ("cache", .named([("paths", .array(.absolutePath(hostSide: false)))])),
            ])
        ),
        ("env", .environment),
        ("mask", .named([("paths", .array(.projectPath))])),
        ("daemons", .named([("command", .array(.string))])),
        // OCI registries by host[:port] as written in image references.
        ("registries", .named([("insecure", .boolean)])),
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
        case .pattern:
            guard let text = node.string else { return wrongType() }
            do { _ = try HostPattern(parsing: text) } catch {
                diagnostics.append(ConfigDiagnostic(at: location, "\(name): \(error.description)"))
            }
        case .portForward:
            do { _ = try PortForward(node) } catch {
                diagnostics.append(ConfigDiagnostic(at: location, "\(name): \(error.message)"))
            }
        case .absolutePath(let hostSide):
            guard let text = node.string else { return wrongType() }
            let ok = text.hasPrefix("/") || (hostSide && (text == "~" || text.hasPrefix("~/")))
            if !ok {
                diagnostics.append(
                    ConfigDiagnostic(at: location, "\(name) is \"\(text)\"; it must be an absolute path" + (hostSide ? " (or start with ~/)" : "")))
            }
        case .projectPath:
            guard let text = node.string else { return wrongType() }
            let parts = text.split(separator: "/")
            if text.hasPrefix("/") || parts.contains("..") || parts.isEmpty {
                diagnostics.append(
                    ConfigDiagnostic(at: location, "\(name) is \"\(text)\"; it must be a path inside the project, relative to its root, without `..`")
                )
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
                guard let text = value.string else {
                    diagnostics.append(ConfigDiagnostic(at: value.origin.location, "`\(dotted(valuePath))` must be a string, not \(value.typeName)"))
                    continue
                }
                do { _ = try EnvTemplate.variables(in: text) } catch {
                    diagnostics.append(ConfigDiagnostic(at: value.origin.location, "`\(dotted(valuePath))`: \(error.message)"))
                }
            }
        }
    }

    private mutating func checkFields(_ entries: [(key: String, node: ConfigNode)], fields: [(key: String, schema: Schema)], path: [String]) {
        for (key, child) in entries {
            if let field = fields.first(where: { $0.key == key }) {
                check(child, against: field.schema, path: path + [key])
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
