import CShim

#if canImport(Glibc)
import Glibc
#endif

/// A directory whose contents the guest controls (the sandbox's clone), read without ever
/// following a symlink and without leaving it: every open goes through openat2 with
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so a symlink planted anywhere on a path (even swapped
/// in while we read) makes that open fail instead of leading outside.
final class GuestTree: Sendable {
    let fd: Int32
    /// For messages: the directory's path on the host.
    let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens the top directory (a host-controlled path).
    static func open(_ path: String) throws(GuestTreeError) -> GuestTree {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw GuestTreeError(path: path, errno: errno) }
        return GuestTree(fd: fd, path: path)
    }

    /// The subdirectory `relative` (any depth), opened beneath this one.
    func directory(_ relative: String) throws(GuestTreeError) -> GuestTree {
        let fd = airlock_open_beneath(self.fd, relative, O_RDONLY | O_DIRECTORY, 0)
        guard fd >= 0 else { throw GuestTreeError(path: path + "/" + relative, errno: -fd) }
        return GuestTree(fd: fd, path: path + "/" + relative)
    }

    enum Kind: Equatable {
        case file(size: Int64, executable: Bool)
        case directory
        case symlink
        case other
    }

    /// What `relative` is, without following a symlink anywhere on the way; nil when absent.
    func kind(_ relative: String) -> Kind? {
        status(relative).map(Self.kind(of:))
    }

    /// lstat of `relative`, without following a symlink anywhere on the way; nil when absent.
    func status(_ relative: String) -> stat? {
        let (parent, name) = split(relative)
        let directoryFD = parent.isEmpty ? dup(fd) : airlock_open_beneath(fd, parent, Int32(AIRLOCK_O_PATH) | O_DIRECTORY, 0)
        guard directoryFD >= 0 else { return nil }
        defer { close(directoryFD) }
        var info = stat()
        guard fstatat(directoryFD, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return info
    }

    static func kind(of info: stat) -> Kind {
        switch info.st_mode & S_IFMT {
        case S_IFREG: .file(size: Int64(info.st_size), executable: info.st_mode & 0o100 != 0)
        case S_IFDIR: .directory
        case S_IFLNK: .symlink
        default: .other
        }
    }

    /// The names in this directory with their kinds (symlinks reported, never followed).
    func entries() -> [(name: String, kind: Kind)] {
        entriesWithStatus().map { ($0.name, Self.kind(of: $0.status)) }
    }

    /// The names in this directory with their lstat data, sorted by name unless told not to.
    func entriesWithStatus(sorted: Bool = true) -> [(name: String, status: stat)] {
        let listFD = dup(fd)
        guard listFD >= 0, let stream = fdopendir(listFD) else {
            if listFD >= 0 { close(listFD) }
            return []
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var result: [(String, stat)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            result.append((name, info))
        }
        return sorted ? result.sorted { $0.0 < $1.0 } : result
    }

    /// The names in this directory as bytes with their lstat data, unsorted (for scans that
    /// must not pay for Strings).
    func rawEntries() -> [(name: [UInt8], status: stat)] {
        let listFD = dup(fd)
        guard listFD >= 0, let stream = fdopendir(listFD) else {
            if listFD >= 0 { close(listFD) }
            return []
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var result: [([UInt8], stat)] = []
        while let entry = readdir(stream) {
            let (name, isDot) = withUnsafeBytes(of: entry.pointee.d_name) { raw -> ([UInt8], Bool) in
                let bytes = raw.prefix(while: { $0 != 0 })
                return (Array(bytes), bytes.count <= 2 && bytes.allSatisfy { $0 == 0x2E })
            }
            if isDot { continue }
            var info = stat()
            let found = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                // d_name is a fixed-size array inside the entry: its base address is never nil.
                guard let base = raw.baseAddress else { return false }
                return fstatat(fd, base.assumingMemoryBound(to: CChar.self), &info, AT_SYMLINK_NOFOLLOW) == 0
            }
            if found { result.append((name, info)) }
        }
        return result
    }

    /// The bytes of the regular file `relative`, refused when larger than `limit`.
    func read(_ relative: String, limit: Int) throws(GuestTreeError) -> [UInt8] {
        let file = try openFile(relative, limit: limit)
        defer { close(file.fd) }
        var bytes = [UInt8](repeating: 0, count: file.size)
        var done = 0
        while done < file.size {
            let n = bytes.withUnsafeMutableBytes { pread(file.fd, $0.baseAddress! + done, file.size - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            done += n
        }
        // A file that shrank while read is read as far as it goes.
        return Array(bytes[0..<done])
    }

    /// Copies the regular file `relative` to `destination` (created 0600, replaced atomically),
    /// refused when larger than `limit`. At most the size seen at open is copied.
    func copy(_ relative: String, to destination: String, limit: Int) throws(GuestTreeError) {
        let file = try openFile(relative, limit: limit)
        defer { close(file.fd) }
        let temporary = destination + ".airlock-tmp"
        let out = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw GuestTreeError(path: temporary, errno: errno) }
        var remaining = file.size
        var failure: Int32 = 0
        while remaining > 0 {
            let n = airlock_copy_file_range(file.fd, out, Int64(remaining))
            if n < 0 {
                failure = Int32(-n)
                break
            }
            if n == 0 { break }
            remaining -= Int(n)
        }
        close(out)
        guard failure == 0, rename(temporary, destination) == 0 else {
            let error = failure != 0 ? failure : errno
            unlink(temporary)
            throw GuestTreeError(path: destination, errno: error)
        }
    }

    /// The target of the symlink `relative` (its text; never resolved).
    func readLink(_ relative: String) throws(GuestTreeError) -> String {
        let (parent, name) = split(relative)
        let directoryFD = parent.isEmpty ? dup(fd) : airlock_open_beneath(fd, parent, Int32(AIRLOCK_O_PATH) | O_DIRECTORY, 0)
        guard directoryFD >= 0 else { throw GuestTreeError(path: path + "/" + relative, errno: parent.isEmpty ? errno : -directoryFD) }
        defer { close(directoryFD) }
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlinkat(directoryFD, name, &buffer, 4096)
        guard n >= 0 else { throw GuestTreeError(path: path + "/" + relative, errno: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func openFile(_ relative: String, limit: Int) throws(GuestTreeError) -> (fd: Int32, size: Int) {
        let file = airlock_open_beneath(fd, relative, O_RDONLY, 0)
        guard file >= 0 else { throw GuestTreeError(path: path + "/" + relative, errno: -file) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(file)
            throw GuestTreeError(path: path + "/" + relative, reason: "is not a regular file")
        }
        guard info.st_size <= limit else {
            close(file)
            throw GuestTreeError(
                path: path + "/" + relative, reason: "is \(formatBytes(Int64(info.st_size))), more than the limit of \(formatBytes(Int64(limit)))")
        }
        return (file, Int(info.st_size))
    }

    private func split(_ relative: String) -> (parent: String, name: String) {
        guard let slash = relative.lastIndex(of: "/") else { return ("", relative) }
        return (String(relative[..<slash]), String(relative[relative.index(after: slash)...]))
    }
}

/// Reading the guest's tree failed or was refused.
struct GuestTreeError: Error, Sendable, CustomStringConvertible {
    var path: String
    var reason: String

    init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    init(path: String, errno code: Int32) {
        self.path = path
        switch code {
        case ELOOP: reason = "is a symlink (or passes through one); airlock never follows symlinks in a sandbox's clone"
        case EXDEV: reason = "leads outside the clone"
        case ENOTDIR: reason = "is not a directory"
        default: reason = String(cString: strerror(code))
        }
    }

    var description: String { "\(path) \(reason)" }
}

func formatBytes(_ bytes: Int64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) bytes" : String(Int(value * 10) / 10) + "." + String(Int(value * 10) % 10) + " " + units[unit]
}
