import AirlockSystem

/// A destination pattern from a network rule: `host`, `host:port`, `*:port`, `*.suffix`,
/// `*.suffix:port` or `*`.
///
/// Host names compare case-insensitively and a trailing dot is ignored, so `Example.COM.`
/// and `example.com` are the same host. `*.example.com` matches every name *below*
/// `example.com`, not `example.com` itself (write both when both are meant).
public struct HostPattern: Sendable, Hashable, CustomStringConvertible {
    public enum Host: Sendable, Hashable {
        /// `*`: any host.
        case any
        /// An exact host name or IP literal, normalised (lower case, no trailing dot, no brackets).
        case exact(String)
        /// `*.suffix`: any name that ends with `.suffix`; the stored value is `suffix`.
        case suffix(String)
    }

    public let host: Host
    /// `nil` means any port.
    public let port: UInt16?
    /// The text the pattern was parsed from, for messages.
    public let description: String

    public init(parsing text: String) throws(PatternError) {
        let source = text
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw PatternError(pattern: source, reason: "the pattern is empty") }
        guard !trimmed.contains(where: { $0 == " " || $0 == "\t" || $0 == "/" }) else {
            throw PatternError(pattern: source, reason: "patterns are `host`, `host:port`, `*:port`, `*.suffix` or `*`; no spaces, schemes or paths")
        }

        var hostPart = Substring(trimmed)
        var portPart: Substring?
        if hostPart.hasPrefix("[") {
            // Bracketed IPv6 literal, optionally followed by :port.
            guard let close = hostPart.firstIndex(of: "]") else {
                throw PatternError(pattern: source, reason: "an IPv6 literal opened with `[` is never closed")
            }
            let after = hostPart[hostPart.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw PatternError(pattern: source, reason: "only `:port` may follow `]`")
                }
                portPart = after.dropFirst()
            }
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            guard hostPart.contains(":"), hostPart.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw PatternError(pattern: source, reason: "`[\(hostPart)]` is not an IPv6 address")
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            if hostPart[..<colon].contains(":") {
                throw PatternError(pattern: source, reason: "write IPv6 addresses in brackets, e.g. `[::1]:443`")
            }
            portPart = hostPart[hostPart.index(after: colon)...]
            hostPart = hostPart[..<colon]
        }

        if let portPart {
            guard let value = UInt16(portPart), value > 0 else {
                throw PatternError(pattern: source, reason: "`\(portPart)` is not a port number (1-65535)")
            }
            self.port = value
        } else {
            self.port = nil
        }

        var name = hostPart.lowercased()
        guard name != "*.", name != "." else {
            throw PatternError(pattern: source, reason: "`\(name)` names no host; write `*` for any host or `*.example.com` for its subdomains")
        }
        if name.hasSuffix(".") { name.removeLast() }
        if name == "*" {
            self.host = .any
        } else if name.hasPrefix("*.") {
            let suffix = String(name.dropFirst(2))
            try Self.checkHostName(suffix, pattern: source)
            self.host = .suffix(suffix)
        } else {
            guard !name.contains("*") else {
                throw PatternError(pattern: source, reason: "`*` may only stand alone or as a leading `*.` label")
            }
            if !name.contains(":") { try Self.checkHostName(name, pattern: source) }
            self.host = .exact(name)
        }
        self.description = trimmed
    }

    private static func checkHostName(_ name: String, pattern: String) throws(PatternError) {
        guard !name.isEmpty else { throw PatternError(pattern: pattern, reason: "the host name is empty") }
        guard name.utf8.count <= 253 else { throw PatternError(pattern: pattern, reason: "the host name is longer than 253 characters") }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw PatternError(pattern: pattern, reason: "the host name has an empty label (`..`)") }
            guard label.utf8.count <= 63 else { throw PatternError(pattern: pattern, reason: "the label `\(label)` is longer than 63 characters") }
            guard label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw PatternError(pattern: pattern, reason: "`\(label)` has a character not allowed in a host name")
            }
            guard !label.hasPrefix("-"), !label.hasSuffix("-") else {
                throw PatternError(pattern: pattern, reason: "the label `\(label)` starts or ends with `-`")
            }
        }
    }

    /// Whether `host` (a name or an IP literal) on `port` matches this pattern.
    public func matches(host: String, port: UInt16) -> Bool {
        if let own = self.port, own != port { return false }
        let name = Self.normalise(host)
        switch self.host {
        case .any: return true
        case .exact(let exact): return name == exact
        case .suffix(let suffix): return name.hasSuffix("." + suffix)
        }
    }

    /// Whether some destination matches both patterns.
    public func overlaps(_ other: HostPattern) -> Bool {
        if let port, let otherPort = other.port, port != otherPort { return false }
        switch (host, other.host) {
        case (.any, _), (_, .any): return true
        case (.exact(let a), .exact(let b)): return a == b
        case (.exact(let name), .suffix(let suffix)), (.suffix(let suffix), .exact(let name)): return name.hasSuffix("." + suffix)
        case (.suffix(let a), .suffix(let b)): return a == b || a.hasSuffix("." + b) || b.hasSuffix("." + a)
        }
    }

    /// Lower case, no trailing dot, no IPv6 brackets.
    public static func normalise(_ host: String) -> String {
        var name = host.lowercased()
        if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.hasSuffix(".") && name.count > 1 { name.removeLast() }
        return name
    }
}

/// A malformed pattern in a network rule.
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public let pattern: String
    public let reason: String
    public var description: String { "invalid pattern \"\(pattern)\": \(reason)" }
}
