import NetworkPolicy

/// What the first bytes of a connection say about where it is going: the TLS ClientHello's
/// server name (SNI) or the HTTP/1.x request's Host. Pure and strictly bounds-checked: the
/// bytes come from the guest.
public enum Sniffed: Sendable, Equatable {
    /// The bytes so far are a plausible prefix of a ClientHello or an HTTP request head.
    case needMore
    /// A complete ClientHello; `serverNames` is empty when it carries no SNI.
    case tls(serverNames: [String])
    /// A complete HTTP/1.x request head: the Host header value(s) (port stripped) and the
    /// request line, for messages.
    case http(hosts: [String], requestLine: String)
    /// Neither (or malformed): judged without a name.
    case other

    public static let limit = 16 * 1024

    /// Looks at the first bytes of a connection.
    public static func sniff(_ bytes: [UInt8]) -> Sniffed {
        guard let first = bytes.first else { return .needMore }
        if first == 0x16 { return TLSClientHello.serverNames(bytes) }
        if first >= 0x41 && first <= 0x5A { return HTTPRequestHead.hosts(bytes) }
        return .other
    }

    /// Whether the connection is a plain HTTP/1.x request (its denial can be an HTTP 403 page).
    public var isHTTP: Bool {
        if case .http = self { return true }
        return false
    }

    /// The names to judge.
    public var names: [String] {
        switch self {
        case .tls(let names): names
        case .http(let hosts, _): hosts
        case .needMore, .other: []
        }
    }
}

/// A cursor over untrusted bytes; every read checks the bounds and fails softly.
struct ByteCursor {
    let bytes: [UInt8]
    var index: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.index = start
        self.end = min(end ?? bytes.count, bytes.count)
    }

    var remaining: Int { max(0, end - index) }

    mutating func u8() -> Int? {
        guard index < end else { return nil }
        defer { index += 1 }
        return Int(bytes[index])
    }

    mutating func u16() -> Int? {
        guard remaining >= 2 else { return nil }
        defer { index += 2 }
        return Int(bytes[index]) << 8 | Int(bytes[index + 1])
    }

    mutating func u24() -> Int? {
        guard remaining >= 3 else { return nil }
        defer { index += 3 }
        return Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        index += count
        return true
    }

    /// A sub-cursor over the next `count` bytes, which this cursor skips.
    mutating func take(_ count: Int) -> ByteCursor? {
        guard count >= 0, remaining >= count else { return nil }
        defer { index += count }
        return ByteCursor(bytes, from: index, end: index + count)
    }
}

/// The TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3 for server_name), possibly spread over
/// several handshake records.
enum TLSClientHello {
    static func serverNames(_ bytes: [UInt8]) -> Sniffed {
        // 1. Reassemble the handshake message from the records.
        var handshake: [UInt8] = []
        var records = ByteCursor(bytes)
        var needed: Int?
        while true {
            if let needed, handshake.count >= needed { break }
            guard records.remaining > 0 else { return .needMore }
            guard let type = records.u8() else { return .needMore }
            guard type == 0x16 else { return .other }
            guard let major = records.u8() else { return .needMore }
            guard major == 3 else { return .other }
            guard let minor = records.u8() else { return .needMore }
            guard minor <= 4 else { return .other }
            guard let length = records.u16() else { return .needMore }
            guard length > 0, length <= 16384 + 256 else { return .other }
            guard let body = records.take(length) else {
                // An incomplete record: more is coming unless it cannot fit the limit.
                return bytes.count >= Sniffed.limit ? .other : .needMore
            }
            handshake += bytes[body.index..<body.end]
            if needed == nil, handshake.count >= 4 {
                guard handshake[0] == 0x01 else { return .other }  // ClientHello
                let length = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
                guard length <= Sniffed.limit else { return .other }
                needed = 4 + length
            }
        }
        guard let needed else { return .other }
        // 2. Parse the ClientHello.
        var hello = ByteCursor(handshake, from: 4, end: needed)
        guard let major = hello.u8(), major == 3, hello.skip(1), hello.skip(32) else { return .other }  // version, random
        guard let session = hello.u8(), session <= 32, hello.skip(session) else { return .other }
        guard let suites = hello.u16(), suites >= 2, suites % 2 == 0, hello.skip(suites) else { return .other }
        guard let compression = hello.u8(), compression >= 1, hello.skip(compression) else { return .other }
        if hello.remaining == 0 { return .tls(serverNames: []) }  // no extensions at all
        guard let extensionsLength = hello.u16(), var extensions = hello.take(extensionsLength), hello.remaining == 0 else { return .other }
        var names: [String] = []
        var seen = Set<Int>()
        while extensions.remaining > 0 {
            guard let type = extensions.u16(), let length = extensions.u16(), var body = extensions.take(length) else { return .other }
            guard seen.insert(type).inserted else { return .other }  // RFC 8446: no duplicates
            guard type == 0 else { continue }
            guard let listLength = body.u16(), var list = body.take(listLength), body.remaining == 0 else { return .other }
            while list.remaining > 0 {
                guard let nameType = list.u8(), let nameLength = list.u16(), let name = list.take(nameLength) else { return .other }
                guard nameType == 0 else { continue }
                guard let host = validHostName(Array(handshake[name.index..<name.end])) else { return .other }
                names.append(host)
            }
        }
        return .tls(serverNames: names)
    }
}

/// An HTTP/1.x request head: request line, then header lines, up to the empty line.
enum HTTPRequestHead {
    static func hosts(_ bytes: [UInt8]) -> Sniffed {
        let window = bytes.prefix(Sniffed.limit)
        // The request line: METHOD SP target SP HTTP/1.x CRLF.
        guard let lineEnd = find(crlf: window, from: 0) else {
            return window.count >= Sniffed.limit || !plausibleRequestLinePrefix(window) ? .other : .needMore
        }
        let line = Array(window[0..<lineEnd])
        let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, (1...16).contains(parts[0].count), parts[0].allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }),
            !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }),
            Array(parts[2]) == Array("HTTP/1.1".utf8) || Array(parts[2]) == Array("HTTP/1.0".utf8)
        else { return .other }
        let requestLine = String(decoding: line, as: UTF8.self)
        var hosts: [String] = []
        var start = lineEnd + 2
        while true {
            guard let end = find(crlf: window, from: start) else {
                return window.count >= Sniffed.limit ? .other : .needMore
            }
            if end == start { break }  // the empty line ends the head
            let field = Array(window[start..<end])
            start = end + 2
            guard let colon = field.firstIndex(of: 0x3A), colon > 0 else { return .other }
            let name = field[0..<colon]
            guard name.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return .other }  // no space before ':'
            guard String(decoding: name, as: UTF8.self).lowercased() == "host" else { continue }
            let value = field[(colon + 1)...].drop(while: { $0 == 0x20 || $0 == 0x09 })
            let trimmed = Array(value.reversed().drop(while: { $0 == 0x20 || $0 == 0x09 }).reversed())
            guard let host = hostWithoutPort(trimmed) else { return .other }
            hosts.append(host)
        }
        // HTTP/1.1 without Host: the absolute-form target's authority, if any.
        if hosts.isEmpty, let target = String(validating: parts[1], as: UTF8.self), let authority = absoluteAuthority(target),
            let host = hostWithoutPort(Array(authority.utf8))
        {
            hosts.append(host)
        }
        return .http(hosts: Array(Set(hosts)).sorted(), requestLine: requestLine)
    }

    private static func find(crlf window: ArraySlice<UInt8>, from start: Int) -> Int? {
        var index = window.startIndex + start
        while index + 1 < window.endIndex {
            if window[index] == 0x0D && window[index + 1] == 0x0A { return index - window.startIndex }
            index += 1
        }
        return nil
    }

    /// `GET /x HT` could still become a request; `\x00\x01` never can.
    private static func plausibleRequestLinePrefix(_ window: ArraySlice<UInt8>) -> Bool {
        var index = window.startIndex
        var methodLength = 0
        while index < window.endIndex, window[index] >= 0x41 && window[index] <= 0x5A {
            index += 1
            methodLength += 1
        }
        guard methodLength <= 16 else { return false }
        if index == window.endIndex { return true }
        guard window[index] == 0x20 else { return false }
        return window[index...].allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 0x0D }
    }

    /// `example.com:8080` → `example.com`; `[::1]:80` → `::1`.
    static func hostWithoutPort(_ bytes: [UInt8]) -> String? {
        guard !bytes.isEmpty, bytes.count <= 260 else { return nil }
        var host = bytes[...]
        if host.first == 0x5B {  // [
            guard let close = host.firstIndex(of: 0x5D) else { return nil }
            let rest = host[(close + 1)...]
            guard rest.isEmpty || (rest.first == 0x3A && rest.dropFirst().allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })) else { return nil }
            host = host[(host.startIndex + 1)..<close]
            let text = String(decoding: host, as: UTF8.self)
            return text.contains(":") && IPAddress(text) != nil ? text.lowercased() : nil
        }
        if let colon = host.firstIndex(of: 0x3A) {
            guard host[(colon + 1)...].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            host = host[..<colon]
        }
        return validHostName(Array(host))
    }

    /// `http://example.com:8080/path` → `example.com:8080`.
    private static func absoluteAuthority(_ target: String) -> String? {
        guard let scheme = target.firstRange(of: "://"),
            ["http", "https"].contains(target[..<scheme.lowerBound].lowercased())
        else { return nil }
        let authority = target[scheme.upperBound...].prefix(while: { $0 != "/" && $0 != "?" && $0 != "#" })
        guard !authority.contains("@") else { return nil }
        return String(authority)
    }
}

/// A host name as DNS allows it (letters, digits, `-`, `_`, dots; labels 1-63, at most 253
/// bytes), lower-cased without a trailing dot; or an IPv4 literal.
func validHostName(_ bytes: [UInt8]) -> String? {
    var bytes = bytes[...]
    if bytes.last == 0x2E { bytes = bytes.dropLast() }
    guard !bytes.isEmpty, bytes.count <= 253 else { return nil }
    var labelLength = 0
    for byte in bytes {
        switch byte {
        case 0x2E:
            guard labelLength > 0 else { return nil }
            labelLength = 0
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x5F:
            labelLength += 1
            guard labelLength <= 63 else { return nil }
        default:
            return nil
        }
    }
    guard labelLength > 0 else { return nil }
    return String(decoding: bytes, as: UTF8.self).lowercased()
}
