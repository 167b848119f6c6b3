/// An IPv4 or IPv6 address parsed from its text form, strictly (no octal, no shortened
/// IPv4 forms like `127.1`, no zone ids). Pure: no resolver, no I/O.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(UInt8, UInt8, UInt8, UInt8)
    /// 16 bytes, network order.
    case v6([UInt8])

    /// Parses `1.2.3.4`, `::1`, `fe80::1`, `::ffff:1.2.3.4`, with or without `[` `]`.
    public init?(_ text: String) {
        var text = Substring(text)
        if text.hasPrefix("[") && text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        guard !text.isEmpty, text.utf8.count <= 45 else { return nil }
        if text.contains(":") {
            guard let bytes = Self.parseV6(text) else { return nil }
            self = .v6(bytes)
        } else {
            guard let bytes = Self.parseV4(text) else { return nil }
            self = .v4(bytes[0], bytes[1], bytes[2], bytes[3])
        }
    }

    /// Whether `text` is an IP literal (rather than a host name).
    public static func isLiteral(_ text: String) -> Bool { IPAddress(text) != nil }

    private static func parseV4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.utf8.count), part.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            // No leading zeros: `010` is octal to some parsers and decimal to others.
            guard part.utf8.count == 1 || part.utf8.first != 0x30 else { return nil }
            guard let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    private static func parseV6(_ text: Substring) -> [UInt8]? {
        guard text.utf8.allSatisfy({ $0 == 0x3A || $0 == 0x2E || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) }) else {
            return nil
        }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false)
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring) -> [Substring]? {
            if part.isEmpty { return [] }
            let groups = part.split(separator: ":", omittingEmptySubsequences: false)
            return groups.contains(where: \.isEmpty) ? nil : groups
        }
        guard var left = groups(halves[0]) else { return nil }
        var right: [Substring] = []
        if halves.count == 2 {
            guard let groups = groups(halves[1]) else { return nil }
            right = groups
        }
        // An embedded IPv4 address may only stand last.
        var embedded: [UInt8]?
        if halves.count == 2, let last = right.last, last.contains(".") {
            guard let v4 = parseV4(last) else { return nil }
            embedded = v4
            right.removeLast()
        } else if halves.count == 1, let last = left.last, last.contains(".") {
            guard let v4 = parseV4(last) else { return nil }
            embedded = v4
            left.removeLast()
        }
        func words(_ groups: [Substring]) -> [UInt16]? {
            var result: [UInt16] = []
            for group in groups {
                guard group.utf8.count <= 4, let value = UInt16(group, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        guard let head = words(left), let tail = words(right) else { return nil }
        let count = head.count + tail.count + (embedded == nil ? 0 : 2)
        if halves.count == 2 {
            guard count <= 7 else { return nil }
        } else {
            guard count == 8 else { return nil }
        }
        let all = head + [UInt16](repeating: 0, count: 8 - count) + tail
        var bytes: [UInt8] = []
        for word in all {
            bytes.append(UInt8(word >> 8))
            bytes.append(UInt8(word & 0xFF))
        }
        if let embedded { bytes += embedded }
        return bytes.count == 16 ? bytes : nil
    }

    public var description: String {
        switch self {
        case .v4(let a, let b, let c, let d): return "\(a).\(b).\(c).\(d)"
        case .v6(let bytes):
            var groups: [String] = []
            for index in stride(from: 0, to: 16, by: 2) {
                groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
            }
            return groups.joined(separator: ":")
        }
    }

    /// The IPv4 address an IPv6 address carries: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
    /// `::a.b.c.d` (deprecated, still routed by some stacks) and NAT64 `64:ff9b::a.b.c.d`.
    public var embeddedV4: IPAddress? {
        guard case .v6(let b) = self else { return nil }
        let prefix = Array(b[0..<12])
        let mapped = prefix == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]
        let compatible = prefix == [UInt8](repeating: 0, count: 12) && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1)
        let nat64 = prefix == [0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]
        guard mapped || compatible || nat64 else { return nil }
        return .v4(b[12], b[13], b[14], b[15])
    }

    /// Loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254),
    /// unspecified, multicast, broadcast and reserved addresses: everything a connection
    /// from the sandbox must not reach unless a rule says `allow_private = true`. IPv6
    /// addresses carrying an IPv4 address are judged by it.
    public var isPrivate: Bool {
        if let v4 = embeddedV4 { return v4.isPrivate }
        switch self {
        case .v4(let a, let b, _, _):
            return a == 0  // 0.0.0.0/8 "this network"
                || a == 10  // 10/8
                || a == 127  // loopback
                || (a == 100 && (b & 0xC0) == 64)  // 100.64/10 shared address space (CGNAT)
                || (a == 169 && b == 254)  // link-local, metadata services
                || (a == 172 && (b & 0xF0) == 16)  // 172.16/12
                || (a == 192 && b == 168)  // 192.168/16
                || (a == 192 && b == 0)  // 192.0.0/24 protocol assignments, 192.0.2/24 documentation
                || (a == 198 && (b & 0xFE) == 18)  // 198.18/15 benchmarking
                || a >= 224  // multicast, reserved, broadcast
        case .v6(let b):
            let zero = b.allSatisfy { $0 == 0 }
            let loopback = b[0..<15].allSatisfy { $0 == 0 } && b[15] == 1
            return zero || loopback
                || (b[0] & 0xFE) == 0xFC  // fc00::/7 unique local
                || (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)  // fe80::/10 link-local
                || (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0)  // fec0::/10 site-local (deprecated)
                || b[0] == 0xFF  // multicast
                || (b[0] == 0x20 && b[1] == 0x02)  // 2002::/16 6to4: carries an IPv4 address
                || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)  // 2001::/32 Teredo
                || (b[0] == 0x01 && b[1..<8].allSatisfy { $0 == 0 })  // 100::/64 discard
        }
    }
}

/// Whether `ip` (text) is an address a sandbox must not reach without `allow_private`.
/// Text that is not an IP address counts as private: the caller never connects to it.
public func isPrivate(_ ip: String) -> Bool {
    IPAddress(ip)?.isPrivate ?? true
}
