/// One problem found in the configuration: what is wrong, where, and how to fix it.
public struct ConfigDiagnostic: Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation?
    public var message: String
    public var hint: String?

    public init(at location: SourceLocation?, _ message: String, hint: String? = nil) {
        self.location = location
        self.message = message
        self.hint = hint
    }

    public var description: String {
        var text = location.map { "\($0): error: " } ?? "error: "
        text += message
        if let hint { text += "\n  hint: \(hint)" }
        return text
    }
}

/// The configuration could not be loaded. Carries every problem found, in file order, so a
/// user fixes them all in one go.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]

    public init(_ diagnostics: [ConfigDiagnostic]) {
        self.diagnostics = diagnostics.sorted { a, b in
            switch (a.location, b.location) {
            case (let x?, let y?): x < y
            case (nil, _?): false
            case (_?, nil): true
            case (nil, nil): false
            }
        }
    }

    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// The closest candidate to a misspelt word, if it is close enough to be what was meant.
func suggestion(for word: String, among candidates: some Sequence<String>) -> String? {
    let lowered = word.lowercased()
    var best: (String, Int)?
    for candidate in candidates {
        let distance = editDistance(lowered, candidate.lowercased())
        if best == nil || distance < best!.1 { best = (candidate, distance) }  // `best` checked non-nil first.
    }
    guard let (candidate, distance) = best else { return nil }
    let allowed = max(1, min(3, candidate.count / 3))
    return distance <= allowed ? candidate : nil
}

/// Damerau–Levenshtein (optimal string alignment) distance: a swap of neighbours counts once,
/// so `imgae` is one step from `image`.
func editDistance(_ a: String, _ b: String) -> Int {
    let s = Array(a), t = Array(b)
    if s.isEmpty { return t.count }
    if t.isEmpty { return s.count }
    var d = [[Int]](repeating: [Int](repeating: 0, count: t.count + 1), count: s.count + 1)
    for i in 0...s.count { d[i][0] = i }
    for j in 0...t.count { d[0][j] = j }
    for i in 1...s.count {
        for j in 1...t.count {
            let cost = s[i - 1] == t[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, s[i - 1] == t[j - 2], s[i - 2] == t[j - 1] {
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
            }
        }
    }
    return d[s.count][t.count]
}
