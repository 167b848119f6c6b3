import CShim

#if canImport(Glibc)
import Glibc
#endif

/// File helpers for host and guest alike (no Foundation: the static guest links this too).
/// Paths are host paths airlock chose or was configured with; for a tree the guest controls,
/// use `ConfinedDirectory`.
public enum FileSystem {
    /// `mkdir` with `mode`; one that exists already is fine.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw .last("mkdir", path) }
    }

    /// `mkdir -p`: every missing directory on the way, each with `mode`.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            try makeDirectory(current, mode: mode)
        }
    }

    /// `rm -rf`, never following a symlink (a symlink is removed, not its target). Only for
    /// trees nothing else changes while this runs. Directories without write permission for
    /// their owner (an extracted image layer) are made writable first.
    public static func removeTree(_ path: String) throws(SystemError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw .last("lstat", path)
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            if info.st_mode & 0o700 != 0o700 { chmod(path, info.st_mode | 0o700) }
            for name in try list(path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 else { throw .last("rmdir", path) }
        } else {
            guard unlink(path) == 0 || errno == ENOENT else { throw .last("unlink", path) }
        }
    }

    /// The names in a directory (not `.` and `..`), sorted.
    public static func list(_ path: String) throws(SystemError) -> [String] {
        guard let directory = opendir(path) else { throw .last("opendir", path) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `list`, or no names when the directory cannot be read (absent, not a directory).
    public static func entries(_ path: String) -> [String] {
        (try? list(path)) ?? []
    }

    /// Writes `bytes` to `path` with `mode` so that a reader (or a crash) never sees half of
    /// it: a temporary file beside it, fsync, rename over, fsync of the directory. `durable:
    /// false` skips the fsyncs, for caches that are rebuilt when lost (readers still never see
    /// half a file).
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600, durable: Bool = true) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try writeAtomically(path, raw, mode: mode, durable: durable) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public static func writeAtomically(_ path: String, _ bytes: UnsafeRawBufferPointer, mode: mode_t = 0o600, durable: Bool = true)
        throws(SystemError)
    {
        do {
            try writeAtomically(path, mode: mode, durable: durable) { fd, temporary in try Syscall.writeAll(fd, bytes, subject: temporary) }
        } catch let error as SystemError {
            throw error
        } catch {
            throw SystemError("write", path, errno: EIO)  // not reached: writeAll throws only SystemError
        }
    }

    /// `writeAtomically` for content made while it is written: `produce` writes to the
    /// temporary file's descriptor (named by the second argument, for errors); if it throws,
    /// the temporary file is removed, `path` is untouched and its error is thrown.
    public static func writeAtomically(_ path: String, mode: mode_t = 0o600, durable: Bool = true, produce: (Int32, String) throws -> Void) throws {
        let temporary = path + ".tmp.\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw SystemError.last("open", temporary) }
        do {
            try produce(fd, temporary)
            fchmod(fd, mode)
            if durable { try Syscall.retrying("fsync", temporary) { fsync(fd) } }
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = SystemError.last("rename", "\(temporary) → \(path)")
            unlink(temporary)
            throw error
        }
        guard durable else { return }
        let directory = parent(of: path)
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }

    public static func writeAtomically(_ path: String, _ text: String, mode: mode_t = 0o600, durable: Bool = true) throws(SystemError) {
        try writeAtomically(path, Array(text.utf8), mode: mode, durable: durable)
    }

    /// Writes (replaces) a file in place: for files only this process reads back, or that
    /// are not worth a rename (kernel settings in /proc). Missing parents are made.
    public static func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
        let directory = parent(of: path)
        if directory != "/" && directory != "." { try makeDirectories(directory) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw .last("open", path) }
        defer { close(fd) }
        try Syscall.writeAll(fd, bytes, subject: path)
        fchmod(fd, mode)
    }

    /// A regular file's bytes, or nil when it does not exist; more than `limit` bytes, or
    /// something other than a regular file (a FIFO would block), is an error.
    public static func read(_ path: String, limit: Int = 4 << 20) throws(SystemError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw .last("open", path)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .last("fstat", path) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw SystemError("read", path, errno: EINVAL) }
        return try Syscall.readAll(fd, limit: limit, subject: path)
    }

    /// A file's text (bytes decoded as UTF-8, invalid sequences replaced), or nil when absent.
    public static func readText(_ path: String, limit: Int = 4 << 20) throws(SystemError) -> String? {
        try read(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The first `limit` bytes of a file as text; nil when it cannot be opened (for sysfs,
    /// /proc and other short files, read to their end or the limit).
    public static func readPrefix(_ path: String, limit: Int) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: min(limit, 4096))
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, limit - bytes.count)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// lstat (never follows a symlink); nil when absent.
    public static func status(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    public static func exists(_ path: String) -> Bool { status(path) != nil }

    /// The path with every symbolic link and `.`/`..` resolved (realpath(3)); nil when some
    /// part of it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// A directory, not a symlink to one.
    public static func isDirectory(_ path: String) -> Bool {
        status(path).map { $0.st_mode & S_IFMT == S_IFDIR } ?? false
    }

    /// Follows symlinks: a directory or a link to one.
    public static func isDirectoryFollowingLinks(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    /// The size of a file (lstat); nil when absent.
    public static func size(_ path: String) -> Int64? {
        status(path).map { Int64($0.st_size) }
    }

    /// mtime in nanoseconds since the epoch (lstat); nil when absent.
    public static func modificationTime(_ path: String) -> Int64? {
        status(path).map { Int64($0.st_mtim.tv_sec) * 1_000_000_000 + Int64($0.st_mtim.tv_nsec) }
    }

    /// Allocated bytes of a tree (what removing it frees): symlinks not followed, other file
    /// systems not entered, a file with several links counted once, and the directories at
    /// `excluding` (absolute paths inside the tree) left out. Walked with fts(3), which only
    /// reads metadata: in a tree a guest changes meanwhile, it may count a wrong size, no more.
    public static func allocatedSize(_ path: String, excluding: Set<String> = []) -> Int64 {
        guard let root = strdup(path) else { return 0 }
        defer { free(root) }
        var roots: [UnsafeMutablePointer<CChar>?] = [root, nil]
        guard let walk = fts_open(&roots, FTS_PHYSICAL | FTS_NOCHDIR | FTS_XDEV, nil) else { return 0 }
        defer { fts_close(walk) }
        var total: Int64 = 0
        var linked = Set<[UInt64]>()
        while let entry = fts_read(walk) {
            let info = Int32(entry.pointee.fts_info)
            if info == FTS_D, !excluding.isEmpty, excluding.contains(String(cString: entry.pointee.fts_path)) {
                fts_set(walk, entry, FTS_SKIP)
                continue
            }
            guard info != FTS_DP, info != FTS_NS, info != FTS_DNR || entry.pointee.fts_statp != nil, let status = entry.pointee.fts_statp
            else { continue }
            if status.pointee.st_nlink > 1, status.pointee.st_mode & S_IFMT != S_IFDIR,
                !linked.insert([UInt64(status.pointee.st_dev), UInt64(status.pointee.st_ino)]).inserted
            {
                continue
            }
            total += Int64(status.pointee.st_blocks) * 512
        }
        return total
    }

    /// What the symbolic link at `path` points to (nil when it is not one or cannot be read).
    public static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The directory part of a path (`.` for a bare name, `/` for a top-level one).
    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The last `count` non-empty lines of a (console) log, read from its last `maxBytes`; a
    /// log that was rotated (`<path>.1`, the bounded logs) is read across both.
    /// Control characters are dropped: the serial console ends lines with CR LF and the guest
    /// may write anything.
    public static func tailLines(of path: String, count: Int = 20, maxBytes: Int = 64 << 10) -> [String] {
        var bytes = tailBytes(of: path, maxBytes: maxBytes)
        if bytes.count < maxBytes && bytes.filter({ $0 == UInt8(ascii: "\n") }).count <= count {
            bytes = tailBytes(of: path + ".1", maxBytes: maxBytes - bytes.count) + bytes
        }
        let lines = bytes.split(separator: UInt8(ascii: "\n")).map { line in
            String(decoding: line.filter { $0 >= 32 || $0 == 9 }, as: UTF8.self)
        }.filter { !$0.isEmpty }
        return Array(lines.suffix(count))
    }

    /// A file's bytes from `offset` on (at most `limit`), as text; empty when it cannot be read.
    public static func text(of path: String, from offset: Int64, limit: Int = 64 << 10) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: limit)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        return count > 0 ? String(decoding: bytes[0..<count], as: UTF8.self) : ""
    }

    private static func tailBytes(of path: String, maxBytes: Int) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0, maxBytes > 0 else {
            if fd >= 0 { close(fd) }
            return []
        }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return [] }
        let start = max(0, Int(size) - maxBytes)
        var bytes = [UInt8](repeating: 0, count: Int(size) - start)
        let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
        return got > 0 ? Array(bytes[0..<got]) : []
    }
}
