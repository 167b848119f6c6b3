import CShim

#if canImport(Glibc)
import Glibc
#endif

/// A directory whose contents someone else controls (the sandbox's clone, which the guest
/// writes; an extracted image layer, which a registry described), read without ever following
/// a symlink and without leaving it: every open goes through openat2 with RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV (`CShim/files.c`), so a symlink planted anywhere on
/// a path (even swapped in while we read) makes that open fail instead of leading outside.
public final class ConfinedDirectory: Sendable {
    public let fd: Int32
    /// For messages: the directory's path on the host.
    public let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens the top directory (a host-controlled path).
    public static func open(_ path: String) throws(ConfinedPathError) -> ConfinedDirectory {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw ConfinedPathError(path: path, errno: errno) }
        return ConfinedDirectory(fd: fd, path: path)
    }

    /// The subdirectory `relative` (any depth), opened beneath this one.
    public func directory(_ relative: String) throws(ConfinedPathError) -> ConfinedDirectory {
        let fd = airlock_open_beneath(self.fd, relative, O_RDONLY | O_DIRECTORY, 0)
        guard fd >= 0 else { throw ConfinedPathError(path: path + "/" + relative, errno: -fd) }
        return ConfinedDirectory(fd: fd, path: path + "/" + relative)
    }

    public enum Kind: Equatable {
        case file(size: Int64, executable: Bool)
        case directory
        case symlink
        case other
    }

    /// What `relative` is, without following a symlink anywhere on the way; nil when absent.
    public func kind(_ relative: String) -> Kind? {
        status(relative).map(Self.kind(of:))
    }

    /// lstat of `relative`, without following a symlink anywhere on the way; nil when absent.
    public func status(_ relative: String) -> stat? {
        let (parent, name) = split(relative)
        let directoryFD = parent.isEmpty ? dup(fd) : airlock_open_beneath(fd, parent, Int32(AIRLOCK_O_PATH) | O_DIRECTORY, 0)
        guard directoryFD >= 0 else { return nil }
        defer { close(directoryFD) }
        var info = stat()
        guard fstatat(directoryFD, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return info
    }

    public static func kind(of info: stat) -> Kind {
        switch info.st_mode & S_IFMT {
        case S_IFREG: .file(size: Int64(info.st_size), executable: info.st_mode & 0o100 != 0)
        case S_IFDIR: .directory
        case S_IFLNK: .symlink
        default: .other
        }
    }

    /// The names in this directory with their kinds (symlinks reported, never followed).
    public func entries() -> [(name: String, kind: Kind)] {
        entriesWithStatus().map { ($0.name, Self.kind(of: $0.status)) }
    }

    /// The names in this directory with their lstat data, sorted by name unless told not to.
    public func entriesWithStatus(sorted: Bool = true) -> [(name: String, status: stat)] {
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
    public func rawEntries() -> [(name: [UInt8], status: stat)] {
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
    public func read(_ relative: String, limit: Int) throws(ConfinedPathError) -> [UInt8] {
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
    public func copy(_ relative: String, to destination: String, limit: Int) throws(ConfinedPathError) {
        let file = try openFile(relative, limit: limit)
        defer { close(file.fd) }
        let temporary = destination + ".airlock-tmp"
        let out = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw ConfinedPathError(path: temporary, errno: errno) }
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
            throw ConfinedPathError(path: destination, errno: error)
        }
    }

    /// The target of the symlink `relative` (its text; never resolved).
    public func readLink(_ relative: String) throws(ConfinedPathError) -> String {
        let (parent, name) = split(relative)
        let directoryFD = parent.isEmpty ? dup(fd) : airlock_open_beneath(fd, parent, Int32(AIRLOCK_O_PATH) | O_DIRECTORY, 0)
        guard directoryFD >= 0 else { throw ConfinedPathError(path: path + "/" + relative, errno: parent.isEmpty ? errno : -directoryFD) }
        defer { close(directoryFD) }
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlinkat(directoryFD, name, &buffer, 4096)
        guard n >= 0 else { throw ConfinedPathError(path: path + "/" + relative, errno: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Opens `relative` beneath this directory with open(2) `flags` (O_NOFOLLOW and O_CLOEXEC
    /// are added); the caller closes the descriptor.
    public func open(_ relative: String, flags: Int32) throws(ConfinedPathError) -> Int32 {
        let file = airlock_open_beneath(fd, relative, flags, 0)
        guard file >= 0 else { throw ConfinedPathError(path: path + "/" + relative, errno: -file) }
        return file
    }

    private func openFile(_ relative: String, limit: Int) throws(ConfinedPathError) -> (fd: Int32, size: Int) {
        let file = try open(relative, flags: O_RDONLY)
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(file)
            throw ConfinedPathError(path: path + "/" + relative, reason: "is not a regular file")
        }
        guard info.st_size <= limit else {
            close(file)
            throw ConfinedPathError(
                path: path + "/" + relative, reason: "is \(formatBytes(Int64(info.st_size))), more than the limit of \(formatBytes(Int64(limit)))")
        }
        return (file, Int(info.st_size))
    }

    private func split(_ relative: String) -> (parent: String, name: String) {
        guard let slash = relative.lastIndex(of: "/") else { return ("", relative) }
        return (String(relative[..<slash]), String(relative[relative.index(after: slash)...]))
    }
}

/// Reading a confined directory failed or was refused: the path (on the host) and why.
public struct ConfinedPathError: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var reason: String
    /// The errno behind it, when a call failed.
    public var errno: Int32?

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public init(path: String, errno code: Int32) {
        self.path = path
        self.errno = code
        switch code {
        case ELOOP: reason = "is a symlink (or passes through one); airlock never follows symlinks in a directory it does not control"
        case EXDEV: reason = "leads outside its directory"
        case ENOTDIR: reason = "is not a directory"
        default: reason = errorText(code)
        }
    }

    public var description: String { "\(path) \(reason)" }
}
