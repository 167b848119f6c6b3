#if canImport(Glibc)
import Glibc
#endif

/// Thin wrappers that retry `EINTR` and turn `-1` into a `SystemError` at once (as NIOPosix's
/// syscall wrappers do). Only the calls more than one module makes live here.
public enum Syscall {
    /// Calls `body` until it does not fail with EINTR; throws for any other failure (-1).
    @discardableResult
    public static func retrying<T: FixedWidthInteger>(_ call: String, _ subject: String, _ body: () -> T) throws(SystemError) -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            if errno != EINTR { throw .last(call, subject) }
        }
    }

    /// Writes every byte of `bytes` to `fd`.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, subject: String) throws(SystemError) {
        guard let base = bytes.baseAddress else { return }
        var written = 0
        while written < bytes.count {
            written += try retrying("write", subject) { write(fd, base + written, bytes.count - written) }
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], subject: String) throws(SystemError) {
        var written = 0
        while written < bytes.count {
            written += try retrying("write", subject) { bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        }
    }

    /// Sends every byte of `bytes` on the socket `fd`. MSG_NOSIGNAL: a peer that went away is
    /// an error (EPIPE), not a SIGPIPE.
    public static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, subject: String) throws(SystemError) {
        guard let base = bytes.baseAddress else { return }
        var sent = 0
        while sent < bytes.count {
            sent += try retrying("send", subject) { send(fd, base + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
        }
    }

    public static func sendAll(_ fd: Int32, _ bytes: [UInt8], subject: String) throws(SystemError) {
        var sent = 0
        while sent < bytes.count {
            sent += try retrying("send", subject) { bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        }
    }

    /// Reads `count` bytes from `fd`, fewer only when its end comes first.
    public static func read(_ fd: Int32, exactly count: Int, subject: String) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = try retrying("read", subject) { bytes[filled...].withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            filled += n
        }
        return Array(bytes[0..<filled])
    }

    /// Reads `fd` to its end, at most `limit` bytes; more is an error (EFBIG).
    public static func readAll(_ fd: Int32, limit: Int, subject: String) throws(SystemError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try retrying("read", subject) { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if count == 0 { return bytes }
            guard bytes.count + count <= limit else { throw SystemError("read", subject, errno: EFBIG) }
            bytes += chunk[0..<count]
        }
    }

    /// `waitpid` for one child, retrying EINTR; its wait status.
    public static func waitStatus(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }
}

/// How a process ended, from its wait status: the exit code, or 128 + the signal (as shells
/// report it) with the signal.
public struct ExitStatus: Sendable, Equatable {
    public var code: Int32
    public var signal: Int32

    public init(code: Int32, signal: Int32 = 0) {
        self.code = code
        self.signal = signal
    }

    public init(waitStatus status: Int32) {
        if status & 0x7f == 0 {
            self.init(code: (status >> 8) & 0xff)
        } else {
            self.init(code: 128 + (status & 0x7f), signal: status & 0x7f)
        }
    }
}
