import NIOCore

/// A small, strict binary encoding for the link's request bodies: big-endian integers and
/// length-prefixed UTF-8 strings. Hand-written because the guest avoids Foundation (JSON) to
/// stay small, and the structures are few and flat. Every read is bounded: a guest (or host)
/// sending garbage gets `WireError`, never a crash or an unbounded allocation.
public struct WireWriter {
    public private(set) var buffer: ByteBuffer

    public init(allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        buffer = allocator.buffer(capacity: 256)
    }

    public mutating func write(_ value: UInt8) { buffer.writeInteger(value) }
    public mutating func write(_ value: UInt16) { buffer.writeInteger(value) }
    public mutating func write(_ value: UInt32) { buffer.writeInteger(value) }
    public mutating func write(_ value: Int32) { buffer.writeInteger(value) }
    public mutating func write(_ value: Int64) { buffer.writeInteger(value) }
    public mutating func write(_ value: Bool) { buffer.writeInteger(value ? UInt8(1) : 0) }

    public mutating func write(_ value: String) {
        buffer.writeInteger(UInt32(value.utf8.count))
        buffer.writeString(value)
    }

    public mutating func write(_ bytes: [UInt8]) {
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
    }

    public mutating func write(_ values: [String]) {
        buffer.writeInteger(UInt32(values.count))
        for value in values { write(value) }
    }
}

public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public struct WireReader {
    private var buffer: ByteBuffer
    /// No single string may be longer than this.
    public static let maxString = 1 << 20
    /// No list may have more elements than this.
    public static let maxCount = 1 << 16

    public init(_ buffer: ByteBuffer) { self.buffer = buffer }

    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(WireError) -> T {
        guard let value = buffer.readInteger(as: T.self) else { throw WireError("truncated message") }
        return value
    }

    public mutating func readBool() throws(WireError) -> Bool {
        switch try read(UInt8.self) {
        case 0: return false
        case 1: return true
        case let other: throw WireError("invalid boolean \(other)")
        }
    }

    public mutating func readString() throws(WireError) -> String {
        let length = Int(try read(UInt32.self))
        guard length <= Self.maxString else { throw WireError("string of \(length) bytes exceeds the limit") }
        guard let bytes = buffer.readBytes(length: length) else { throw WireError("truncated string") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw WireError("string is not valid UTF-8") }
        return text
    }

    public mutating func readBytes() throws(WireError) -> [UInt8] {
        let length = Int(try read(UInt32.self))
        guard length <= Self.maxString else { throw WireError("field of \(length) bytes exceeds the limit") }
        guard let bytes = buffer.readBytes(length: length) else { throw WireError("truncated field") }
        return bytes
    }

    public mutating func readStrings() throws(WireError) -> [String] {
        let count = Int(try read(UInt32.self))
        guard count <= Self.maxCount else { throw WireError("list of \(count) entries exceeds the limit") }
        var values: [String] = []
        values.reserveCapacity(min(count, 64))
        for _ in 0..<count { values.append(try readString()) }
        return values
    }

    public func expectEnd() throws(WireError) {
        guard buffer.readableBytes == 0 else { throw WireError("\(buffer.readableBytes) unexpected trailing bytes") }
    }
}
