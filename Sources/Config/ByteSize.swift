import AirlockSystem
import NetworkPolicy

/// A size written as `"512M"`, `"10G"`, `"1.5GiB"`, `"2048K"` or a plain number of bytes.
/// Suffixes are binary (K = KiB = 1024), as VMMs and disk tools read them.
public struct ByteSize: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    public static func mebibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 20) }
    public static func gibibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 30) }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    private static let units: [(suffixes: [String], shift: UInt64)] = [
        (["", "B"], 0),
        (["K", "KB", "KIB"], 10),
        (["M", "MB", "MIB"], 20),
        (["G", "GB", "GIB"], 30),
        (["T", "TB", "TIB"], 40),
    ]

    /// Parses `text`; the error says what is accepted.
    public init(parsing text: String) throws(ByteSizeError) {
        let trimmed = text.trimmingWhitespace()
        let numberPart = trimmed.prefix(while: { $0.isNumber || $0 == "." })
        let unitPart = String(trimmed.dropFirst(numberPart.count)).trimmingWhitespace().uppercased()
        guard !numberPart.isEmpty, let number = Double(numberPart), number.isFinite else {
            throw ByteSizeError(text: text)
        }
        guard let unit = Self.units.first(where: { $0.suffixes.contains(unitPart) }) else {
            throw ByteSizeError(text: text)
        }
        let value = number * Double(UInt64(1) << unit.shift)
        guard value >= 0, value < Double(UInt64(1) << 62) else { throw ByteSizeError(text: text) }
        bytes = UInt64(value.rounded())
    }

    public var description: String {
        for (suffix, shift) in [("T", UInt64(40)), ("G", 30), ("M", 20), ("K", 10)] where bytes >= (1 << shift) && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(suffix)"
        }
        return "\(bytes)"
    }
}

public struct ByteSizeError: Error, Sendable, Equatable {
    public var text: String
    public var message: String {
        "\"\(text)\" is not a size; write a number with an optional unit K, M, G or T (binary), e.g. \"512M\" or \"10G\""
    }
}
