/// A place in a configuration file, 1-based like compilers print it.
public struct SourceLocation: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The file as shown to the user (relative to the project when inside it).
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }

    public static func < (a: SourceLocation, b: SourceLocation) -> Bool {
        (a.file, a.line, a.column) < (b.file, b.line, b.column)
    }
}

/// Where an effective value came from.
public enum Origin: Sendable, Hashable, CustomStringConvertible {
    /// airlock's built-in default.
    case builtIn
    /// A file (a user, project or local config, or a preset shipped in the binary).
    case file(SourceLocation)

    public var description: String {
        switch self {
        case .builtIn: "default"
        case .file(let location): location.description
        }
    }

    public var location: SourceLocation? {
        if case .file(let location) = self { location } else { nil }
    }
}

/// A configuration value as written, before it is given its typed meaning: the TOML tree of
/// one file (or of the merged layers), each value carrying where it was written.
public struct ConfigNode: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int)
        case float(Double)
        case boolean(Bool)
        /// Dates and times, kept as text: no key of ours takes one.
        case datetime(String)
        case array([ConfigNode])
        /// Keys in the order they were written.
        case table([(key: String, node: ConfigNode)])

        public static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.string(let x), .string(let y)): x == y
            case (.integer(let x), .integer(let y)): x == y
            case (.float(let x), .float(let y)): x == y
            case (.boolean(let x), .boolean(let y)): x == y
            case (.datetime(let x), .datetime(let y)): x == y
            case (.array(let x), .array(let y)): x == y
            case (.table(let x), .table(let y)): x.map(\.key) == y.map(\.key) && x.map(\.node) == y.map(\.node)
            default: false
            }
        }
    }

    public var value: Value
    public var origin: Origin

    public init(_ value: Value, origin: Origin) {
        self.value = value
        self.origin = origin
    }

    /// The TOML name of this value's type, for messages.
    public var typeName: String {
        switch value {
        case .string: "a string"
        case .integer: "an integer"
        case .float: "a float"
        case .boolean: "a boolean"
        case .datetime: "a date/time"
        case .array: "an array"
        case .table: "a table"
        }
    }

    public subscript(key: String) -> ConfigNode? {
        guard case .table(let entries) = value else { return nil }
        return entries.first(where: { $0.key == key })?.node
    }

    public var entries: [(key: String, node: ConfigNode)] {
        if case .table(let entries) = value { entries } else { [] }
    }

    public var elements: [ConfigNode] {
        if case .array(let elements) = value { elements } else { [] }
    }

    public var string: String? {
        if case .string(let text) = value { text } else { nil }
    }

    public var integer: Int? {
        if case .integer(let number) = value { number } else { nil }
    }

    public var boolean: Bool? {
        if case .boolean(let flag) = value { flag } else { nil }
    }

    public static func emptyTable(origin: Origin) -> ConfigNode {
        ConfigNode(.table([]), origin: origin)
    }
}

extension ConfigNode {
    /// Merges `upper` over `self`: tables merge key by key, arrays concatenate, anything else
    /// (scalars, or values whose types differ) is replaced by the upper value.
    public func merged(with upper: ConfigNode) -> ConfigNode {
        switch (value, upper.value) {
        case (.table(var lower), .table(let higher)):
            for (key, node) in higher {
                if let index = lower.firstIndex(where: { $0.key == key }) {
                    lower[index].node = lower[index].node.merged(with: node)
                } else {
                    lower.append((key, node))
                }
            }
            return ConfigNode(.table(lower), origin: origin)
        case (.array(let lower), .array(let higher)):
            return ConfigNode(.array(lower + higher), origin: upper.origin)
        default:
            return upper
        }
    }
}
