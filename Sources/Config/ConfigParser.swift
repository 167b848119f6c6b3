internal import TOMLKit

/// Turns the text of one TOML file into a `ConfigNode` tree whose every value knows its
/// `file:line:column`.
enum ConfigParser {
    static func parse(_ text: String, file: String) throws(ConfigError) -> ConfigNode {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let at = SourceLocation(file: file, line: error.source.begin.line, column: error.source.begin.column)
            throw ConfigError([ConfigDiagnostic(at: at, "invalid TOML: \(error.description)", hint: "see https://toml.io for the syntax")])
        } catch {
            throw ConfigError([ConfigDiagnostic(at: SourceLocation(file: file, line: 1, column: 1), "invalid TOML: \(error)")])
        }
        let locator = TOMLLocator(text: text)
        return convert(table, path: [], file: file, locator: locator)
    }

    private static func origin(_ path: [String], file: String, locator: TOMLLocator) -> Origin {
        let (line, column) = locator.position(of: path) ?? (1, 1)
        return .file(SourceLocation(file: file, line: line, column: column))
    }

    private static func convert(_ value: any TOMLValueConvertible, path: [String], file: String, locator: TOMLLocator) -> ConfigNode {
        let here = origin(path, file: file, locator: locator)
        switch value.type {
        case .table:
            guard let table = value.table else { return ConfigNode(.table([]), origin: here) }
            var entries: [(key: String, node: ConfigNode)] = []
            for (key, child) in table {
                entries.append((key, convert(child, path: path + [key], file: file, locator: locator)))
            }
            // toml++ keeps keys sorted; show them in the order they were written.
            entries.sort { a, b in
                let x = a.node.origin.location, y = b.node.origin.location
                return (x?.line ?? 0, x?.column ?? 0, a.key) < (y?.line ?? 0, y?.column ?? 0, b.key)
            }
            return ConfigNode(.table(entries), origin: here)
        case .array:
            var elements: [ConfigNode] = []
            if let array = value.array {
                for element in array {
                    elements.append(convert(element, path: path + ["[\(elements.count)]"], file: file, locator: locator))
                }
            }
            return ConfigNode(.array(elements), origin: here)
        case .string:
            return ConfigNode(.string(value.string ?? ""), origin: here)
        case .int:
            return ConfigNode(.integer(value.int ?? 0), origin: here)
        case .double:
            return ConfigNode(.float(value.double ?? 0), origin: here)
        case .bool:
            return ConfigNode(.boolean(value.bool ?? false), origin: here)
        case .date, .time, .dateTime:
            return ConfigNode(.datetime(value.debugDescription), origin: here)
        }
    }
}
