#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads small text files. A protocol so tests can give the loader files without touching disk.
public protocol FileReading: Sendable {
    /// The file's text, or `nil` when it does not exist.
    func readText(_ path: String) throws -> String?
}

/// Why a file could not be read.
public struct FileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "\(path): \(String(cString: strerror(errno)))" }
}

/// The real file system, through POSIX calls (no Foundation, so the guest can share this code).
public struct LocalFiles: FileReading {
    /// Config files are small; anything larger is refused rather than read into memory.
    public static let limit = 4 << 20

    public init() {}

    public func readText(_ path: String) throws -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw FileError(path: path, errno: errno)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, errno: errno)
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > Self.limit { throw FileError(path: path, errno: EFBIG) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
