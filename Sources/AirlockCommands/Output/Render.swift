// FoundationEssentials, not Foundation: the JSON coders without ICU (tens of MB in a static binary).
import FoundationEssentials

/// The one way commands print results on stdout: JSON for scripts (`--format json`), or text
/// for people (a table, or a command's own layout).
enum Render {
    /// `value` as JSON when `format` says so, else `text()`.
    static func emit(_ value: some Encodable, format: FormatOption, text: () -> String) throws {
        if format.isJSON {
            try printJSON(value)
        } else {
            Terminal.standardOutput.write(text())
        }
    }

    /// `rows` as a JSON array, or as a table (`columns`: header and cell of each), or `empty`
    /// when there are none.
    static func list<Row: Encodable>(_ rows: [Row], format: FormatOption, empty: String, columns: [(String, (Row) -> String)]) throws {
        try emit(rows, format: format) {
            rows.isEmpty ? empty + "\n" : table([columns.map(\.0)] + rows.map { row in columns.map { $0.1(row) } })
        }
    }

    /// Aligned columns, two spaces apart, no trailing spaces.
    static func table(_ cells: [[String]]) -> String {
        let widths = (0..<(cells.first?.count ?? 0)).map { column in cells.map { $0[column].count }.max() ?? 0 }
        return cells.map { row in zip(row, widths).map { $0.padding(to: $1) }.joined(separator: "  ").trimmingTrailingSpaces() + "\n" }.joined()
    }
}

/// Writes a value as pretty JSON (sorted keys, so output is stable) on stdout.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    Terminal.standardOutput.write(String(decoding: data, as: UTF8.self) + "\n")
}
