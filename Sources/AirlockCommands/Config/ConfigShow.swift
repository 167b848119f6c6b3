import ArgumentParser
import Config

struct ConfigShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the effective configuration and the file each value came from."
    )

    @OptionGroup var global: GlobalOptions

    /// JSON: {"config": …, "origins": {"dotted.path": "file:line:column"}}.
    @OptionGroup var output: FormatOption

    func run() throws {
        let context = try ProjectContext.load()
        let effective = context.loaded.effective
        var origins: [String: String] = [:]
        collectOrigins(effective, path: [], into: &origins)
        try Render.emit(ShowOutput(config: JSONValue(effective), origins: origins), format: output) {
            let out = Terminal.standardOutput
            var renderer = ConfigRenderer(comment: { out.style("# \($0)", .dim) })
            renderer.render(effective)
            return renderer.output
        }
    }

    private struct ShowOutput: Encodable {
        var config: JSONValue
        var origins: [String: String]
    }

    private func collectOrigins(_ node: ConfigNode, path: [String], into origins: inout [String: String]) {
        switch node.value {
        case .table(let entries):
            for entry in entries { collectOrigins(entry.node, path: path + [entry.key], into: &origins) }
        case .array(let elements):
            for (index, element) in elements.enumerated() {
                origins[ConfigRenderer.key(path) + "[\(index)]"] = element.origin.description
            }
        default:
            origins[ConfigRenderer.key(path)] = node.origin.description
        }
    }
}

/// A ConfigNode as plain JSON.
enum JSONValue: Encodable {
    case string(String), integer(Int), float(Double), boolean(Bool)
    case array([JSONValue])
    case object([String: JSONValue])

    init(_ node: ConfigNode) {
        switch node.value {
        case .string(let text), .datetime(let text): self = .string(text)
        case .integer(let number): self = .integer(number)
        case .float(let number): self = .float(number)
        case .boolean(let flag): self = .boolean(flag)
        case .array(let elements): self = .array(elements.map(JSONValue.init))
        case .table(let entries): self = .object(Dictionary(entries.map { ($0.key, JSONValue($0.node)) }, uniquingKeysWith: { $1 }))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let text): try container.encode(text)
        case .integer(let number): try container.encode(number)
        case .float(let number): try container.encode(number)
        case .boolean(let flag): try container.encode(flag)
        case .array(let elements): try container.encode(elements)
        case .object(let members): try container.encode(members)
        }
    }
}

/// Prints a ConfigNode as TOML with each value's origin as a trailing comment.
struct ConfigRenderer {
    var comment: (String) -> String
    private(set) var output = ""

    init(comment: @escaping (String) -> String) {
        self.comment = comment
    }

    static func key(_ path: [String]) -> String {
        path.map { part in
            part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") } ? part : "\"\(part)\""
        }.joined(separator: ".")
    }

    mutating func render(_ node: ConfigNode) {
        renderTable(node, path: [])
    }

    private mutating func renderTable(_ node: ConfigNode, path: [String]) {
        let scalars = node.entries.filter { if case .table = $0.node.value { false } else { true } }
        let tables = node.entries.filter { if case .table = $0.node.value { true } else { false } }
        if !scalars.isEmpty || (tables.isEmpty && !path.isEmpty) {
            if !path.isEmpty {
                if !output.isEmpty { output += "\n" }
                output += "[\(Self.key(path))]\n"
            }
            let width = scalars.map { Self.key([$0.key]).count + 3 + inline($0.node).count }.filter { $0 <= 60 }.max() ?? 0
            for (key, child) in scalars {
                if case .array(let elements) = child.value, !elements.isEmpty, Set(elements.map(\.origin)).count > 1 || inline(child).count > 60 {
                    output += "\(Self.key([key])) = [\n"
                    let elementWidth = elements.map { inline($0).count + 3 }.max() ?? 0
                    for element in elements {
                        let text = "  \(inline(element)),"
                        output += text.padding(to: elementWidth) + "  " + comment(element.origin.description) + "\n"
                    }
                    output += "]\n"
                } else {
                    let text = "\(Self.key([key])) = \(inline(child))"
                    output += text.padding(to: width) + "  " + comment(child.origin.description) + "\n"
                }
            }
        }
        for (key, child) in tables { renderTable(child, path: path + [key]) }
    }

    private func inline(_ node: ConfigNode) -> String {
        switch node.value {
        case .string(let text): quote(text)
        case .datetime(let text): text
        case .integer(let number): "\(number)"
        case .float(let number): "\(number)"
        case .boolean(let flag): "\(flag)"
        case .array(let elements): "[" + elements.map(inline).joined(separator: ", ") + "]"
        case .table(let entries): "{ " + entries.map { "\(Self.key([$0.key])) = \(inline($0.node))" }.joined(separator: ", ") + " }"
        }
    }

    private func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}
