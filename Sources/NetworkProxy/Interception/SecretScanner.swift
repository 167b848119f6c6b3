import NIOCore
import NetworkPolicy

/// Watches a stream of chunks for the real value of any of `secrets`. What could still be the
/// start of one (the longest value's length less one byte) is held back until the next chunk
/// shows it is not, so no value passes, whole or split across chunks. The values in
/// `swapping` (a service's tokens, which its API may echo) are replaced by their surrogates,
/// of the same length, instead of cutting the stream.
struct SecretScanner {
    struct Found: Error {
        var name: String
    }

    private let values: [(name: String, bytes: [UInt8])]
    private let swaps: [(value: [UInt8], surrogate: [UInt8])]
    private let keep: Int
    private var held: [UInt8] = []

    init(_ secrets: [MaskedSecret], swapping: [MaskedSecret] = []) {
        let swaps = swapping.map { (value: Array($0.value.utf8), surrogate: Array($0.surrogate.utf8)) }
            .filter { !$0.value.isEmpty && $0.value.count == $0.surrogate.count }
        let values = secrets.filter { secret in !swaps.contains { $0.value == Array(secret.value.utf8) } }.map {
            (name: $0.name, bytes: Array($0.value.utf8))
        }
        self.swaps = swaps
        self.values = values
        keep = max(0, ((values.map(\.bytes.count) + swaps.map(\.value.count)).max() ?? 0) - 1)
    }

    var isActive: Bool { !values.isEmpty || !swaps.isEmpty }

    /// `text` with each swapped value replaced by its surrogate.
    func swapped(_ text: String) -> String {
        guard !swaps.isEmpty else { return text }
        var bytes = Array(text.utf8)
        Self.swap(&bytes, swaps)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func swap(_ bytes: inout [UInt8], _ swaps: [(value: [UInt8], surrogate: [UInt8])]) {
        for (value, surrogate) in swaps {
            var from = bytes.startIndex
            while let range = bytes[from...].firstRange(of: value) {
                bytes.replaceSubrange(range, with: surrogate)
                from = range.upperBound
            }
        }
    }

    /// The name of the first value `text` holds.
    func find(in text: String) -> String? {
        guard isActive else { return nil }
        let bytes = Array(text.utf8)
        return values.first { !$0.bytes.isEmpty && bytes.firstRange(of: $0.bytes) != nil }?.name
    }

    /// What of `chunk` (and what was held) may go on now.
    mutating func pass(_ chunk: ByteBuffer) throws(Found) -> ByteBuffer {
        guard isActive else { return chunk }
        held.append(contentsOf: chunk.readableBytesView)
        Self.swap(&held, swaps)
        if let found = values.first(where: { held.firstRange(of: $0.bytes) != nil }) { throw Found(name: found.name) }
        let ready = held.count - keep
        guard ready > 0 else { return ByteBuffer() }
        let out = ByteBuffer(bytes: held[..<ready])
        held.removeFirst(ready)
        return out
    }

    /// What was held back, at the end of the stream (already searched).
    mutating func finish() -> ByteBuffer {
        defer { held = [] }
        return ByteBuffer(bytes: held)
    }
}
