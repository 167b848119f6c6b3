import Crypto

/// A content digest, `sha256:<64 lowercase hex>` (the only algorithm accepted: it is what every
/// registry serves, and the store is keyed by it).
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let hex: String

    public init(parsing text: String) throws(OCIError) {
        guard text.hasPrefix("sha256:") else {
            throw OCIError(.integrity, "unsupported digest \"\(text.prefix(80))\": only sha256 is accepted")
        }
        let hex = String(text.dropFirst(7))
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            throw OCIError(.integrity, "malformed digest \"\(text.prefix(80))\"")
        }
        self.hex = hex
    }

    public init(of bytes: some Sequence<UInt8>) {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        self.init(hasher.finalize())
    }

    init(_ digest: SHA256.Digest) {
        hex = digest.map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 15)]], as: UTF8.self)
        }.joined()
    }

    public var description: String { "sha256:" + hex }
    /// The first 12 hex digits, as `docker images` shows them.
    public var short: String { String(hex.prefix(12)) }

    public static func < (a: Digest, b: Digest) -> Bool { a.hex < b.hex }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = try Digest(parsing: try container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
