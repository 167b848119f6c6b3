import NIOCore
import NetworkPolicy

/// Watches a stream of chunks for the real value of any of `secrets`. What could still be the
/// start of one (the longest value's length less one byte) is held back until the next chunk
/// shows it is not, so no value passes, whole or split across chunks.
struct SecretScanner {
    struct Found: Error {
        var name: String
    }

    private let values: [(name: String, bytes: [UInt8])]
    private let keep: Int
    private var held: [UInt8] = []

    init(_ secrets: [MaskedSecret]) {
        values = secrets.map { ($0.name, Array($0.value.utf8)) }
        keep = max(0, (values.map(\.bytes.count).max() ?? 0) - 1)
    }

    var isActive: Bool { !values.isEmpty }

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
