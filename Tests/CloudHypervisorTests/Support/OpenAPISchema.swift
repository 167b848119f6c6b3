import Foundation
import Yams

/// A JSON value with its JSON type kept (Foundation's JSONSerialization on Linux cannot tell
/// `true` from `1` reliably; JSONDecoder refuses the wrong one, so the order below is exact).
indirect enum JSONValue: Decodable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .integer(let value): "\(value)"
        case .number(let value): "\(value)"
        case .string(let value): value.debugDescription
        case .array(let values): "[" + values.map(\.description).joined(separator: ",") + "]"
        case .object(let members):
            "{" + members.sorted { $0.key < $1.key }.map { "\($0.key.debugDescription):\($0.value)" }.joined(separator: ",") + "}"
        }
    }
}

/// The Cloud Hypervisor OpenAPI document, loaded with Yams, and a validator for the subset of
/// JSON Schema it uses ($ref, type, properties, required, items, enum, additionalProperties,
/// format int8…int64/uint8…uint32 ranges, minimum, maximum, minLength, nullable).
///
/// Hand-written because no package in reach validates instances against an OpenAPI schema:
/// the local mirror's OpenAPIKit parses and models documents but does not validate JSON
/// values, and there is no JSON Schema validator in it. Anything outside that subset is
/// reported as an error rather than skipped, so an unsupported construct can never pass silently.
struct OpenAPISchema {
    let document: [String: Any]

    init(contentsOf path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let loaded = try Yams.load(yaml: text), let document = Self.normalize(loaded) as? [String: Any] else {
            throw ValidationFailure(["\(path) is not a YAML mapping"])
        }
        self.document = document
    }

    /// YAML mappings come back keyed by `AnyHashable` (`200:` is an Int); JSON-like from here on.
    private static func normalize(_ value: Any) -> Any {
        if let mapping = value as? [AnyHashable: Any] {
            return Dictionary(uniqueKeysWithValues: mapping.map { ("\($0.key.base)", normalize($0.value)) })
        }
        if let mapping = value as? [String: Any] {
            return mapping.mapValues(normalize)
        }
        if let list = value as? [Any] { return list.map(normalize) }
        return value
    }

    struct ValidationFailure: Error, CustomStringConvertible {
        var problems: [String]
        init(_ problems: [String]) { self.problems = problems }
        var description: String { problems.joined(separator: "\n") }
    }

    /// The operation for `method` (lowercase) at `path` (as in the spec: `/vm.create`).
    func operation(_ method: String, _ path: String) -> [String: Any]? {
        ((document["paths"] as? [String: Any])?[path] as? [String: Any])?[method] as? [String: Any]
    }

    /// The JSON schema of the operation's request body, nil when it takes none.
    func requestSchema(_ method: String, _ path: String) -> [String: Any]? {
        let body = operation(method, path)?["requestBody"] as? [String: Any]
        let content = body?["content"] as? [String: Any]
        return (content?["application/json"] as? [String: Any])?["schema"] as? [String: Any]
    }

    /// Whether the spec says the request body is required.
    func requestBodyRequired(_ method: String, _ path: String) -> Bool {
        ((operation(method, path)?["requestBody"] as? [String: Any])?["required"] as? Bool) ?? false
    }

    func schema(named name: String) -> [String: Any]? {
        ((document["components"] as? [String: Any])?["schemas"] as? [String: Any])?[name] as? [String: Any]
    }

    /// Validates `value` against `schema`; the problems found, empty when it conforms.
    /// `strict`: properties a schema does not list are errors (OpenAPI allows them by default,
    /// but a misspelt key in our `CodingKeys` would otherwise pass while CH ignores it).
    func problems(_ value: JSONValue, against schema: [String: Any], strict: Bool = true, at path: String = "$") -> [String] {
        var schema = schema
        if let reference = schema["$ref"] as? String {
            let prefix = "#/components/schemas/"
            guard reference.hasPrefix(prefix), let target = self.schema(named: String(reference.dropFirst(prefix.count))) else {
                return ["\(path): unresolvable $ref \(reference)"]
            }
            schema = target
        }
        let known: Set<String> = [
            "type", "properties", "required", "items", "enum", "additionalProperties", "format", "minimum", "maximum",
            "minLength", "nullable", "description", "default", "deprecated", "example", "title",
        ]
        let unsupported = Set(schema.keys).subtracting(known)
        if !unsupported.isEmpty { return ["\(path): schema uses unsupported keywords \(unsupported.sorted())"] }

        if value == .null {
            return (schema["nullable"] as? Bool) == true ? [] : ["\(path): null is not allowed"]
        }
        var found: [String] = []
        if let options = schema["enum"] as? [Any] {
            let allowed = options.map { "\($0)" }
            guard case .string(let text) = value, allowed.contains(text) else {
                return ["\(path): \(value) is not one of \(allowed)"]
            }
        }
        // An untyped schema with properties is an object schema.
        let type = schema["type"] as? String ?? (schema["properties"] != nil ? "object" : nil)
        switch type {
        case "object"?:
            guard case .object(let members) = value else { return ["\(path): expected an object, found \(value)"] }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for name in schema["required"] as? [String] ?? [] where members[name] == nil {
                found.append("\(path): required property \(name) is missing")
            }
            for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                if let property = properties[name] as? [String: Any] {
                    found += problems(member, against: property, strict: strict, at: "\(path).\(name)")
                } else if let additional = schema["additionalProperties"] as? [String: Any] {
                    found += problems(member, against: additional, strict: strict, at: "\(path).\(name)")
                } else if (schema["additionalProperties"] as? Bool) == false || (strict && schema["additionalProperties"] == nil) {
                    found.append("\(path): property \(name) is not in the schema")
                }
            }
        case "array"?:
            guard case .array(let elements) = value else { return ["\(path): expected an array, found \(value)"] }
            if let items = schema["items"] as? [String: Any] {
                for (index, element) in elements.enumerated() {
                    found += problems(element, against: items, strict: strict, at: "\(path)[\(index)]")
                }
            }
        case "string"?:
            guard case .string(let text) = value else { return ["\(path): expected a string, found \(value)"] }
            if let minimum = schema["minLength"] as? Int, text.count < minimum { found.append("\(path): shorter than \(minimum)") }
        case "boolean"?:
            guard case .bool = value else { return ["\(path): expected a boolean, found \(value)"] }
        case "integer"?:
            guard case .integer(let number) = value else { return ["\(path): expected an integer, found \(value)"] }
            if let format = schema["format"] as? String {
                guard let range = Self.ranges[format] else { return ["\(path): unsupported integer format \(format)"] }
                if !range.contains(number) { found.append("\(path): \(number) is outside \(format)") }
            }
            if let minimum = schema["minimum"] as? Int, number < Int64(minimum) { found.append("\(path): \(number) is below the minimum \(minimum)") }
            if let maximum = schema["maximum"] as? Int, number > Int64(maximum) { found.append("\(path): \(number) is above the maximum \(maximum)") }
        case "number"?:
            switch value {
            case .integer, .number: break
            default: return ["\(path): expected a number, found \(value)"]
            }
        case let other?:
            return ["\(path): unsupported type \(other)"]
        case nil:
            break
        }
        return found
    }

    static let ranges: [String: ClosedRange<Int64>] = [
        "int8": Int64(Int8.min)...Int64(Int8.max),
        "int16": Int64(Int16.min)...Int64(Int16.max),
        "int32": Int64(Int32.min)...Int64(Int32.max),
        "int64": Int64.min...Int64.max,
        "uint8": 0...Int64(UInt8.max),
        "uint16": 0...Int64(UInt16.max),
        "uint32": 0...Int64(UInt32.max),
    ]
}

/// Where the test fixtures and the shared reference live.
enum Fixtures {
    /// Tests/CloudHypervisorTests
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let spec = directory.appendingPathComponent("Fixtures/cloud-hypervisor-openapi.yaml").path
    /// `../shared/ref/` beside the repository, present in the project's workspace only.
    static let sharedSpec = directory.deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/ref/cloud-hypervisor-openapi.yaml").path
}
