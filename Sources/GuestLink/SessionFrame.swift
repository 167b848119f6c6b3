import NIOCore

/// The messages of an exec session, carried in order inside one HTTP/2 stream. HTTP/2 does the
/// multiplexing and flow control; these frames only tell stdin from a resize, stdout from
/// stderr, and carry the exit status. Layout: 1 byte type, 4 bytes big-endian length, payload.
public enum SessionFrame: Sendable, Equatable {
    // Host → guest.
    case spec(ExecSpec)
    case stdin(ByteBuffer)
    case stdinClosed
    case resize(WindowSize)
    case signal(Int32)
    // Guest → host.
    case stdout(ByteBuffer)
    case stderr(ByteBuffer)
    /// The process ended: `code` when it exited, `signal` when a signal killed it.
    case exited(code: Int32, signal: Int32)
    /// The process could not be started; the text says why.
    case failed(String)

    /// Payloads above this are a protocol violation (output is sent in chunks well below it).
    public static let maxPayload = 1 << 20

    private enum Tag: UInt8 {
        case spec = 1, stdin, stdinClosed, resize, signal
        case stdout = 0x11, stderr, exited, failed
    }

    public func write(to buffer: inout ByteBuffer) {
        func frame(_ tag: Tag, _ payload: (inout ByteBuffer) -> Void) {
            buffer.writeInteger(tag.rawValue)
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(UInt32(0))
            let start = buffer.writerIndex
            payload(&buffer)
            buffer.setInteger(UInt32(buffer.writerIndex - start), at: lengthIndex)
        }
        switch self {
        case .spec(let spec):
            var encoded = spec.encoded()
            frame(.spec) { $0.writeBuffer(&encoded) }
        case .stdin(var bytes):
            frame(.stdin) { $0.writeBuffer(&bytes) }
        case .stdinClosed:
            frame(.stdinClosed) { _ in }
        case .resize(let size):
            frame(.resize) {
                $0.writeInteger(size.rows)
                $0.writeInteger(size.columns)
            }
        case .signal(let number):
            frame(.signal) { $0.writeInteger(number) }
        case .stdout(var bytes):
            frame(.stdout) { $0.writeBuffer(&bytes) }
        case .stderr(var bytes):
            frame(.stderr) { $0.writeBuffer(&bytes) }
        case .exited(let code, let signal):
            frame(.exited) {
                $0.writeInteger(code)
                $0.writeInteger(signal)
            }
        case .failed(let message):
            frame(.failed) { $0.writeString(message) }
        }
    }

    public var buffer: ByteBuffer {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return buffer
    }
}

/// Reassembles `SessionFrame`s from the bytes of a stream, whatever the DATA frame boundaries.
public struct SessionFrameParser: Sendable {
    private var pending = ByteBuffer()

    public init() {}

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        pending.writeBuffer(&bytes)
    }

    /// The next complete frame, nil when more bytes are needed; throws on a malformed frame.
    public mutating func next() throws(WireError) -> SessionFrame? {
        guard pending.readableBytes >= 5,
            let tag = pending.getInteger(at: pending.readerIndex, as: UInt8.self),
            let length = pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self)
        else { return nil }
        guard Int(length) <= SessionFrame.maxPayload else { throw WireError("session frame of \(length) bytes exceeds the limit") }
        guard pending.readableBytes >= 5 + Int(length) else { return nil }
        pending.moveReaderIndex(forwardBy: 5)
        // `readSlice` cannot fail: the length was checked above.
        guard var payload = pending.readSlice(length: Int(length)) else { return nil }
        defer { pending.discardReadBytes() }
        func exact<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
            guard let value = payload.readInteger(as: T.self) else { throw WireError("truncated session frame") }
            return value
        }
        switch tag {
        case 1: return .spec(try ExecSpec(decoding: payload))
        case 2: return .stdin(payload)
        case 3: return .stdinClosed
        case 4:
            let rows = try exact(UInt16.self)
            let columns = try exact(UInt16.self)
            return .resize(WindowSize(rows: rows, columns: columns))
        case 5: return .signal(try exact(Int32.self))
        case 0x11: return .stdout(payload)
        case 0x12: return .stderr(payload)
        case 0x13:
            let code = try exact(Int32.self)
            let signal = try exact(Int32.self)
            return .exited(code: code, signal: signal)
        case 0x14: return .failed(String(decoding: payload.readableBytesView, as: UTF8.self))
        default: throw WireError("unknown session frame type \(tag)")
        }
    }
}
