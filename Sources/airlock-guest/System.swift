import CShim

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call in the guest: which call, on what, and errno's text.
struct SystemError: Error, CustomStringConvertible {
    var call: String
    var subject: String
    var code: Int32

    var description: String { "\(call)(\(subject)): \(String(cString: strerror(code)))" }
}

/// Thin throwing wrappers over the calls the guest makes; each retries EINTR where it applies.
enum System {
    static func mount(_ source: String, _ target: String, _ type: String, flags: UInt = 0, options: String? = nil) throws {
        try makeDirectories(target)
        let result = options.map { Glibc.mount(source, target, type, flags, $0) } ?? Glibc.mount(source, target, type, flags, nil)
        if result != 0 {
            throw SystemError(call: "mount", subject: "\(type) \(source) on \(target)" + (options.map { " (\($0))" } ?? ""), code: errno)
        }
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw SystemError(call: "mkdir", subject: current, code: errno)
            }
        }
    }

    static func writeFile(_ path: String, _ contents: [UInt8], mode: mode_t = 0o644) throws {
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex { try makeDirectories(String(path[..<slash])) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw SystemError(call: "open", subject: path, code: errno) }
        defer { close(fd) }
        try writeAll(fd, contents, subject: path)
        fchmod(fd, mode)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], subject: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(call: "write", subject: subject, code: errno)
            }
            offset += n
        }
    }

    static func readFile(_ path: String, limit: Int = 1 << 20) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func symlink(_ target: String, at path: String) throws {
        if Glibc.symlink(target, path) != 0 && errno != EEXIST {
            throw SystemError(call: "symlink", subject: "\(path) → \(target)", code: errno)
        }
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Writes a line to the kernel console (the serial log on the host), stamped like the
    /// kernel's lines (seconds since boot), so console.log shows where a boot spends its time.
    static func log(_ message: String) {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        let milliseconds = String(time.tv_nsec / 1_000_000)
        let stamp =
            "[\(String(repeating: " ", count: max(0, 5 - String(time.tv_sec).count)))\(time.tv_sec).\(String(repeating: "0", count: 3 - milliseconds.count))\(milliseconds)]"
        let line = Array("\(stamp) airlock-guest: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// Runs `body` on a detached thread of its own.
    static func startThread(_ body: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(
            &thread, nil,
            { argument in
                // `argument` is the box retained just above, released here.
                guard let argument else { return nil }
                Unmanaged<Box>.fromOpaque(argument).takeRetainedValue().body()
                return nil
            }, box)
        pthread_detach(thread)
    }
}
