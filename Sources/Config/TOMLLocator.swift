/// Finds where each key, table header and array element of a TOML document was written.
///
/// TOMLKit (toml++) gives positions for syntax errors only, not for the values it returns, and
/// every message about a value must say `file:line:column`. This scanner walks the same text
/// structurally: table headers, dotted and quoted keys, arrays and inline tables, strings of
/// all four kinds, so that it never mistakes string content for structure. It only runs on
/// documents TOMLKit has already accepted, so it need not diagnose anything itself.
struct TOMLLocator {
    /// Positions by path; array elements use the key `"[i]"`.
    private(set) var positions: [[String]: (line: Int, column: Int)] = [:]

    private let bytes: [UInt8]
    private var index = 0
    private var line = 1
    private var lineStart = 0

    init(text: String) {
        bytes = Array(text.utf8)
        scanDocument()
    }

    func position(of path: [String]) -> (line: Int, column: Int)? {
        var path = path
        while !path.isEmpty {
            if let found = positions[path] { return found }
            path.removeLast()
        }
        return nil
    }

    // MARK: - Scanning

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }
    private var column: Int { index - lineStart + 1 }

    private mutating func advance() {
        if current == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }

    private mutating func skipSpaces() {
        while let c = current, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { advance() }
    }

    /// Skips spaces, newlines and comments (inside arrays all three may appear).
    private mutating func skipTrivia() {
        while let c = current {
            if c == UInt8(ascii: "#") {
                while let d = current, d != UInt8(ascii: "\n") { advance() }
            } else if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                advance()
            } else {
                return
            }
        }
    }

    private mutating func scanDocument() {
        var table: [String] = []
        var arrayCounts: [[String]: Int] = [:]
        while true {
            skipTrivia()
            guard let c = current else { return }
            let start = (line, column)
            if c == UInt8(ascii: "[") {
                advance()
                let isArray = current == UInt8(ascii: "[")
                if isArray { advance() }
                skipSpaces()
                var header = scanKey()
                if isArray {
                    let count = arrayCounts[header, default: 0]
                    arrayCounts[header] = count + 1
                    header.append("[\(count)]")
                }
                record(header, start)
                table = header
                while let d = current, d != UInt8(ascii: "\n") { advance() }
            } else {
                scanKeyValue(prefix: table, start: start)
            }
        }
    }

    private mutating func record(_ path: [String], _ at: (Int, Int)) {
        // A table may be named implicitly by a dotted key before its own header: keep the first.
        for depth in 1...max(path.count, 1) where depth <= path.count {
            let prefix = Array(path.prefix(depth))
            if positions[prefix] == nil { positions[prefix] = at }
        }
    }

    private mutating func scanKeyValue(prefix: [String], start: (Int, Int)) {
        let key = scanKey()
        guard !key.isEmpty else {
            // Not something this scanner understands: skip the line rather than loop.
            while let d = current, d != UInt8(ascii: "\n") { advance() }
            return
        }
        record(prefix + key, start)
        skipSpaces()
        if current == UInt8(ascii: "=") { advance() }
        skipSpaces()
        scanValue(path: prefix + key)
    }

    /// A possibly dotted key of bare and quoted parts; stops before `=`, `]` or end of line.
    private mutating func scanKey() -> [String] {
        var parts: [String] = []
        while let c = current {
            skipSpaces()
            guard let c2 = current else { break }
            if c2 == UInt8(ascii: "\"") || c2 == UInt8(ascii: "'") {
                parts.append(scanString())
            } else if isBareKeyByte(c2) {
                var part: [UInt8] = []
                while let d = current, isBareKeyByte(d) {
                    part.append(d)
                    advance()
                }
                parts.append(String(decoding: part, as: UTF8.self))
            } else {
                _ = c
                break
            }
            skipSpaces()
            if current == UInt8(ascii: ".") { advance() } else { break }
        }
        return parts
    }

    private func isBareKeyByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    private mutating func scanValue(path: [String]) {
        guard let c = current else { return }
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            _ = scanString()
        case UInt8(ascii: "["):
            advance()
            var element = 0
            while true {
                skipTrivia()
                guard let d = current else { return }
                if d == UInt8(ascii: "]") {
                    advance()
                    return
                }
                if d == UInt8(ascii: ",") {
                    advance()
                    continue
                }
                let elementPath = path + ["[\(element)]"]
                positions[elementPath] = (line, column)
                scanValue(path: elementPath)
                element += 1
            }
        case UInt8(ascii: "{"):
            advance()
            while true {
                skipSpaces()
                guard let d = current else { return }
                if d == UInt8(ascii: "}") {
                    advance()
                    return
                }
                if d == UInt8(ascii: ",") {
                    advance()
                    continue
                }
                let before = index
                scanKeyValue(prefix: path, start: (line, column))
                if index == before { advance() }
            }
        default:
            // A bare scalar: number, boolean, date. It ends at a delimiter.
            while let d = current, ![UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: "\n"), UInt8(ascii: "#")].contains(d) {
                advance()
            }
        }
    }

    /// Scans any of TOML's four string forms and returns its raw content (escapes are not
    /// interpreted; keys with escapes are rare enough that their position falls back to the table).
    private mutating func scanString() -> String {
        guard let quote = current else { return "" }
        let multiline = index + 2 < bytes.count && bytes[index + 1] == quote && bytes[index + 2] == quote
        let literal = quote == UInt8(ascii: "'")
        var content: [UInt8] = []
        if multiline {
            advance()
            advance()
            advance()
            while let c = current {
                if c == quote, index + 2 < bytes.count, bytes[index + 1] == quote, bytes[index + 2] == quote {
                    advance()
                    advance()
                    advance()
                    // Up to two more quotes may belong to the content.
                    while current == quote { advance() }
                    break
                }
                if !literal && c == UInt8(ascii: "\\") {
                    advance()
                }
                content.append(c)
                advance()
            }
        } else {
            advance()
            while let c = current, c != quote, c != UInt8(ascii: "\n") {
                if !literal && c == UInt8(ascii: "\\") {
                    advance()
                    if let escaped = current { content.append(escaped) }
                    advance()
                    continue
                }
                content.append(c)
                advance()
            }
            if current == quote { advance() }
        }
        return String(decoding: content, as: UTF8.self)
    }
}
