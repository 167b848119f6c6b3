import AirlockSystem
import CShim
import Clibarchive
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// Unpacks one layer tarball (plain, gzip or zstd; ustar, GNU and PAX: long names, hardlinks,
/// symlinks, xattrs, sparse files) into an empty directory, without root and without ever
/// writing outside that directory.
///
/// ## The on-disk format (what the guest sees through 9p)
/// The directory is shared with QEMU's 9p `security_model=mapped-xattr`, which presents each
/// file's owner, mode and type from `user.virtfs.{uid,gid,mode,rdev}` xattrs (little-endian
/// 32-bit; `rdev` 64-bit). So an unprivileged host can present root-owned files, setuid bits,
/// symlinks and device nodes to the guest:
/// - directories and regular files are real, with their image owner/mode in the xattrs;
/// - a symlink is a regular file holding its target, with `mode = S_IFLNK|0777` (exactly how
///   QEMU itself stores one in this mode), so the host never has a symlink to follow;
/// - a device node or FIFO is an empty regular file with its type, mode and `rdev` in the
///   xattrs (never `mknod`);
/// - an OCI whiteout `.wh.NAME` becomes `NAME`: an empty file the guest sees as the character
///   device 0/0 overlayfs calls a whiteout, also tagged `user.overlay.whiteout=y`, and listed in
///   the layer's record (the guest needs the list: see `LayerInfo.whiteouts`);
/// - an opaque marker `.wh..wh..opq` becomes `user.overlay.opaque=y` on its directory (what
///   overlayfs reads with `userxattr`).
///
/// ## What is refused (`OCIError.hostileLayer`)
/// Absolute paths and `..`; a write through a symlink the layer made (`a -> /etc`, then
/// `a/passwd`); hardlinks whose target is outside or not (yet) extracted; sparse files claiming
/// more than `Limits.sparseBytes`, layers claiming more than `Limits.layerBytes`; too many
/// entries; xattrs that would forge the mapping (`user.virtfs.*`, `user.overlay.*`).
/// Independently of these checks every path is opened with `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS)` relative to the layer directory, so a bug in them still cannot lead a
/// write outside it. libarchive's own `archive_write_disk` (and its `ARCHIVE_EXTRACT_SECURE_*`
/// flags) is not used: it would create real symlinks, owners and device nodes, which this
/// format replaces.
public struct LayerExtractor: Sendable {
    public struct Limits: Sendable {
        /// The sum of all file sizes a layer may claim.
        public var layerBytes: Int64 = 64 << 30
        /// The largest sparse file (its apparent size).
        public var sparseBytes: Int64 = 1 << 30
        public var entries = 2_000_000

        public init() {}
    }

    public var limits = Limits()

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Extracts the archive in `blob` into `directory` (which must exist and be empty).
    /// Blocking: call it from a thread that may block (`NIOThreadPool`), never from the
    /// cooperative pool.
    /// The digest of the decompressed tar (what an image config's `rootfs.diff_ids` names) is
    /// computed on the way and recorded as `LayerInfo.diffID`: the blob is decompressed once,
    /// by an outer reader (`format_raw` with the gzip and zstd filters) whose output the tar
    /// reader pulls through `UncompressedStream`.
    public func extract(blob: String, into directory: String, name: String) throws(OCIError) -> LayerInfo {
        let archiveFD = open(blob, O_RDONLY | O_CLOEXEC)
        guard archiveFD >= 0 else { throw OCIError(.store, "cannot open \(blob): \(errorText(errno))") }
        defer { close(archiveFD) }
        let rootFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        guard rootFD >= 0 else { throw OCIError(.store, "cannot open \(directory): \(errorText(errno))") }
        defer { close(rootFD) }

        let stream = try UncompressedStream(fd: archiveFD, name: name)
        let archive = try LibArchive.reader()
        defer { archive_read_free(archive) }
        archive_read_support_format_tar(archive)
        let opened = withExtendedLifetime(stream) {
            archive_read_open(archive, Unmanaged.passUnretained(stream).toOpaque(), nil, { UncompressedStream.read($0, $1, $2) }, nil)
        }
        guard opened == ARCHIVE_OK else {
            throw OCIError(.archive, "\(name): not a tar archive libarchive can read: \(stream.failure ?? Self.archiveError(archive))")
        }
        var writer = LayerWriter(rootFD: rootFD, name: name, limits: limits)
        try writer.setRoot(uid: 0, gid: 0, mode: FileType.directory | 0o755)
        try withExtendedLifetime(stream) { () throws(OCIError) in
            while true {
                var entry: OpaquePointer?
                let status = archive_read_next_header(archive, &entry)
                if status == ARCHIVE_EOF { break }
                guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
                    throw OCIError(
                        .archive, "\(name): the archive is damaged or truncated: \(stream.failure ?? Self.archiveError(archive))",
                        hint: "the blob matched its digest, so the image itself is broken")
                }
                try writer.add(entry, archive: archive)
            }
        }
        var info = writer.finishedInfo
        info.diffID = try stream.finish().description
        return info
    }

    static func archiveError(_ archive: OpaquePointer) -> String {
        archive_error_string(archive).map { String(cString: $0) } ?? "unknown error"
    }
}

/// What extraction found, recorded next to the layer directory.
public struct LayerInfo: Sendable, Codable, Equatable {
    /// Paths (relative, no leading slash) this layer deletes from the layers below it. The
    /// guest turns them into real overlayfs whiteouts on a tmpfs layer stacked just above this
    /// one, because Linux 6.1's overlayfs detects whiteouts during readdir only by `DT_CHR`,
    /// and QEMU's mapped-xattr 9p reports `DT_UNKNOWN` (lookups alone would still hide them).
    public var whiteouts: [String] = []
    /// Directories that hide everything below them (`.wh..wh..opq`).
    public var opaque: [String] = []
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var hardlinks = 0
    /// Device nodes and FIFOs, recorded as metadata.
    public var devices = 0
    /// Apparent bytes of file data.
    public var bytes: Int64 = 0
    /// xattrs the layer carried that cannot be stored unprivileged (`security.capability`, ACLs).
    public var droppedXattrs = 0
    /// The digest of the decompressed tar (`rootfs.diff_ids` in the image config); nil in
    /// records written before airlock computed it.
    public var diffID: String?
}

/// A layer blob decompressed by libarchive (gzip, zstd or none) and hashed as the tar reader
/// pulls it: the read callback of that reader.
final class UncompressedStream {
    private let outer: OpaquePointer
    private let name: String
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 17, alignment: 16)
    private var hasher = SHA256()
    /// Why decompression stopped, when it failed.
    private(set) var failure: String?

    init(fd: Int32, name: String) throws(OCIError) {
        let outer = try LibArchive.reader()
        self.outer = outer
        self.name = name
        archive_read_support_filter_gzip(outer)
        archive_read_support_filter_zstd(outer)
        archive_read_support_format_raw(outer)
        var entry: OpaquePointer?
        guard archive_read_open_fd(outer, fd, 1 << 17) == ARCHIVE_OK, archive_read_next_header(outer, &entry) == ARCHIVE_OK else {
            throw OCIError(.archive, "\(name): cannot decompress the layer: \(LayerExtractor.archiveError(outer))")
        }
    }

    deinit {
        archive_read_free(outer)
        buffer.deallocate()
    }

    /// The next decompressed bytes, hashed; 0 at the end, -1 on an error (kept in `failure`).
    private func next() -> Int {
        let n = archive_read_data(outer, buffer, 1 << 17)
        if n < 0 {
            failure = "the compressed layer is damaged: \(LayerExtractor.archiveError(outer))"
            return -1
        }
        hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: n))
        return n
    }

    /// libarchive's read callback: `client` is the stream.
    static func read(_: OpaquePointer?, _ client: UnsafeMutableRawPointer?, _ output: UnsafeMutablePointer<UnsafeRawPointer?>?) -> la_ssize_t {
        guard let client else { return -1 }
        let stream = Unmanaged<UncompressedStream>.fromOpaque(client).takeUnretainedValue()
        let n = stream.next()
        output?.pointee = UnsafeRawPointer(stream.buffer)
        return la_ssize_t(n)
    }

    /// Reads what the tar reader left (the end-of-archive blocks, padding) and returns the
    /// digest of all of it.
    func finish() throws(OCIError) -> Digest {
        while true {
            let n = next()
            if n == 0 { break }
            guard n > 0 else { throw OCIError(.archive, "\(name): \(failure ?? "decompression failed")") }
        }
        return Digest(hasher.finalize())
    }
}

/// The state of one extraction: what exists so far (for hardlinks and replacements), counters.
struct LayerWriter {
    enum Kind { case directory, file, symlink, device, whiteout }

    let rootFD: Int32
    let name: String
    let limits: LayerExtractor.Limits
    var kinds: [String: Kind] = ["": .directory]
    var whiteouts = Set<String>()
    var opaque = Set<String>()
    var info = LayerInfo()
    var entries = 0
    var claimed: Int64 = 0

    init(rootFD: Int32, name: String, limits: LayerExtractor.Limits) {
        self.rootFD = rootFD
        self.name = name
        self.limits = limits
    }

    func hostile(_ message: String) -> OCIError {
        OCIError(
            .hostileLayer, "\(name): refused: \(message)",
            hint: "the layer tries to write outside its directory or breaks the format; nothing outside it was written")
    }

    func failure(_ call: String, _ path: String, _ code: Int32) -> OCIError {
        if code == ENOSPC { return OCIError(.store, "\(name): the disk is full while writing \(path)") }
        return OCIError(.store, "\(name): \(call) \(path): \(errorText(code))")
    }

    /// Relative components of an archive path; absolute paths and `..` are refused.
    func components(_ raw: String, what: String) throws(OCIError) -> [String] {
        guard !raw.hasPrefix("/") else { throw hostile("\(what) \"\(raw.prefix(200))\" is an absolute path") }
        guard raw.utf8.count <= 4096 else { throw hostile("\(what) longer than 4096 bytes") }
        let parts = raw.split(separator: "/").map(String.init).filter { $0 != "." }
        guard !parts.contains("..") else { throw hostile("\(what) \"\(raw.prefix(200))\" contains \"..\"") }
        return parts
    }

    mutating func setRoot(uid: UInt32, gid: UInt32, mode: UInt32) throws(OCIError) {
        try setOwnership(rootFD, path: ".", uid: uid, gid: gid, mode: mode, rdev: nil)
    }

    mutating func add(_ entry: OpaquePointer, archive: OpaquePointer) throws(OCIError) {
        entries += 1
        guard entries <= limits.entries else { throw hostile("more than \(limits.entries) entries") }
        guard let rawPath = Self.string(archive_entry_pathname_utf8(entry)) ?? Self.string(archive_entry_pathname(entry)) else {
            throw hostile("an entry without a path")
        }
        let parts = try components(rawPath, what: "path")
        let type = UInt32(archive_entry_filetype(entry))
        let permissions = UInt32(archive_entry_perm(entry)) & 0o7777
        let uid = UInt32(truncatingIfNeeded: max(0, archive_entry_uid(entry)))
        let gid = UInt32(truncatingIfNeeded: max(0, archive_entry_gid(entry)))

        guard let last = parts.last else {
            // "./": the layer's root directory.
            guard type == FileType.directory else { throw hostile("the root entry is not a directory") }
            try setOwnership(rootFD, path: ".", uid: uid, gid: gid, mode: FileType.directory | permissions, rdev: nil)
            return
        }
        let parentParts = Array(parts.dropLast())
        let path = parts.joined(separator: "/")

        // OCI whiteouts.
        if last == ".wh..wh..opq" {
            let parent = try openDirectory(parentParts, for: path)
            defer { close(parent.fd) }
            try setXattr(parent.fd, "user.overlay.opaque", Array("y".utf8), path: parent.path)
            opaque.insert(parent.path)
            return
        }
        if last.hasPrefix(".wh.") {
            let target = String(last.dropFirst(4))
            guard !target.isEmpty, target != ".", target != ".." else { throw hostile("whiteout \"\(path)\" names nothing") }
            let targetPath = (parentParts + [target]).joined(separator: "/")
            switch kinds[targetPath] {
            case .directory?:
                // Deleted below and recreated here: the directory hides what was below it.
                let parent = try openDirectory(parentParts + [target], for: path)
                defer { close(parent.fd) }
                try setXattr(parent.fd, "user.overlay.opaque", Array("y".utf8), path: targetPath)
                opaque.insert(targetPath)
            case .some:
                break  // this layer's own entry already hides the one below
            case nil:
                let parent = try openDirectory(parentParts, for: path)
                defer { close(parent.fd) }
                let fd = try create(parent.fd, target, path: targetPath)
                defer { close(fd) }
                try setOwnership(fd, path: targetPath, uid: 0, gid: 0, mode: FileType.character, rdev: 0)
                try setXattr(fd, "user.overlay.whiteout", Array("y".utf8), path: targetPath)
                kinds[targetPath] = .whiteout
                whiteouts.insert(targetPath)
            }
            return
        }

        let parent = try openDirectory(parentParts, for: path)
        defer { close(parent.fd) }
        // A later entry replaces an earlier one of the same name (tar semantics).
        var replacedWhiteout = false
        if let existing = kinds[path] {
            if existing == .directory {
                guard type == FileType.directory else { throw hostile("\"\(path)\" is both a directory and a file") }
            } else {
                guard unlinkat(parent.fd, last, 0) == 0 else { throw failure("unlink", path, errno) }
                if existing == .whiteout {
                    whiteouts.remove(path)
                    replacedWhiteout = true
                }
                kinds[path] = nil
            }
        }

        if let rawLink = Self.string(archive_entry_hardlink_utf8(entry)) ?? Self.string(archive_entry_hardlink(entry)) {
            let targetParts = try components(rawLink, what: "hardlink target of \(path)")
            let targetPath = targetParts.joined(separator: "/")
            guard let targetKind = kinds[targetPath], targetKind != .directory, targetKind != .whiteout, let targetName = targetParts.last else {
                throw hostile("hardlink \"\(path)\" points to \"\(rawLink.prefix(200))\", which is not a file extracted earlier from this layer")
            }
            let targetParent = try openDirectory(Array(targetParts.dropLast()), for: path)
            defer { close(targetParent.fd) }
            guard linkat(targetParent.fd, targetName, parent.fd, last, 0) == 0 else { throw failure("link", path, errno) }
            kinds[path] = targetKind
            info.hardlinks += 1
            return
        }

        switch type {
        case FileType.directory:
            if kinds[path] == nil {
                guard mkdirat(parent.fd, last, 0o755) == 0 else { throw failure("mkdir", path, errno) }
                kinds[path] = .directory
                info.directories += 1
            }
            let fd = airlock_open_beneath(parent.fd, last, O_RDONLY | O_DIRECTORY, 0)
            guard fd >= 0 else { throw failure("open", path, -fd) }
            defer { close(fd) }
            try setOwnership(fd, path: path, uid: uid, gid: gid, mode: FileType.directory | permissions, rdev: nil)
            if replacedWhiteout {
                try setXattr(fd, "user.overlay.opaque", Array("y".utf8), path: path)
                opaque.insert(path)
            }
            try copyXattrs(entry, to: fd, path: path)
        case FileType.regular:
            let size = archive_entry_size_is_set(entry) != 0 ? archive_entry_size(entry) : 0
            guard size >= 0 else { throw hostile("\"\(path)\" has a negative size") }
            if archive_entry_sparse_count(entry) > 0 && size > limits.sparseBytes {
                throw hostile("sparse file \"\(path)\" claims \(size) bytes (more than \(limits.sparseBytes))")
            }
            claimed += size
            guard claimed <= limits.layerBytes else { throw hostile("the layer claims more than \(limits.layerBytes) bytes of files") }
            let fd = try create(parent.fd, last, path: path)
            defer { close(fd) }
            try writeData(archive, to: fd, size: size, path: path)
            try setOwnership(fd, path: path, uid: uid, gid: gid, mode: FileType.regular | permissions, rdev: nil)
            try copyXattrs(entry, to: fd, path: path)
            var times = [
                timespec(tv_sec: Int(archive_entry_atime(entry)), tv_nsec: Int(archive_entry_atime_nsec(entry))),
                timespec(tv_sec: Int(archive_entry_mtime(entry)), tv_nsec: Int(archive_entry_mtime_nsec(entry))),
            ]
            if archive_entry_atime_is_set(entry) == 0 { times[0] = times[1] }
            _ = futimens(fd, &times)
            kinds[path] = .file
            info.files += 1
            info.bytes += size
        case FileType.symlink:
            guard let target = Self.bytes(archive_entry_symlink_utf8(entry)) ?? Self.bytes(archive_entry_symlink(entry)), !target.isEmpty else {
                throw hostile("symlink \"\(path)\" has no target")
            }
            guard target.count < 4096 else { throw hostile("symlink \"\(path)\" has a target longer than 4095 bytes") }
            let fd = try create(parent.fd, last, path: path)
            defer { close(fd) }
            try writeAll(fd, target, path: path)
            try setOwnership(fd, path: path, uid: uid, gid: gid, mode: FileType.symlink | 0o777, rdev: nil)
            kinds[path] = .symlink
            info.symlinks += 1
        case FileType.character, FileType.block, FileType.fifo:
            let major = UInt32(archive_entry_rdevmajor(entry)), minor = UInt32(archive_entry_rdevminor(entry))
            let fd = try create(parent.fd, last, path: path)
            defer { close(fd) }
            if type == FileType.character && major == 0 && minor == 0 {
                // An overlayfs-style whiteout inside the tar: the same as `.wh.NAME`.
                try setOwnership(fd, path: path, uid: 0, gid: 0, mode: FileType.character, rdev: 0)
                try setXattr(fd, "user.overlay.whiteout", Array("y".utf8), path: path)
                kinds[path] = .whiteout
                whiteouts.insert(path)
            } else {
                try setOwnership(fd, path: path, uid: uid, gid: gid, mode: type | permissions, rdev: airlock_oci_makedev(major, minor))
                kinds[path] = .device
                info.devices += 1
            }
        default:
            // Sockets cannot be archived meaningfully; skip anything else unknown.
            break
        }
    }

    /// Opens (creating as needed, owned by root, 0755) the directory `parts`, resolved beneath
    /// the layer root without following anything.
    mutating func openDirectory(_ parts: [String], for path: String) throws(OCIError) -> (fd: Int32, path: String) {
        let joined = parts.joined(separator: "/")
        if parts.isEmpty {
            let fd = dup(rootFD)
            guard fd >= 0 else { throw failure("dup", ".", errno) }
            return (fd, "")
        }
        // Fast path: it exists.
        if kinds[joined] == .directory {
            let fd = airlock_open_beneath(rootFD, joined, O_RDONLY | O_DIRECTORY, 0)
            if fd >= 0 { return (fd, joined) }
            throw failure("open", joined, -fd)
        }
        // Walk, creating missing directories; a non-directory on the way is refused.
        var current = dup(rootFD)
        guard current >= 0 else { throw failure("dup", ".", errno) }
        var walked: [String] = []
        for part in parts {
            walked.append(part)
            let walkedPath = walked.joined(separator: "/")
            switch kinds[walkedPath] {
            case .symlink?:
                close(current)
                throw hostile("\"\(path)\" would be written through the symbolic link \"\(walkedPath)\"")
            case .some(let kind) where kind != .directory:
                close(current)
                throw hostile("\"\(path)\" would be written below \"\(walkedPath)\", which is not a directory")
            case nil:
                guard mkdirat(current, part, 0o755) == 0 else {
                    let code = errno
                    close(current)
                    throw failure("mkdir", walkedPath, code)
                }
                kinds[walkedPath] = .directory
                info.directories += 1
                let fd = airlock_open_beneath(current, part, O_RDONLY | O_DIRECTORY, 0)
                close(current)
                guard fd >= 0 else { throw failure("open", walkedPath, -fd) }
                current = fd
                try setOwnership(current, path: walkedPath, uid: 0, gid: 0, mode: FileType.directory | 0o755, rdev: nil)
                continue
            default:
                break
            }
            let fd = airlock_open_beneath(current, part, O_RDONLY | O_DIRECTORY, 0)
            close(current)
            guard fd >= 0 else { throw failure("open", walkedPath, -fd) }
            current = fd
        }
        return (current, joined)
    }

    func create(_ parent: Int32, _ name: String, path: String) throws(OCIError) -> Int32 {
        let fd = airlock_open_beneath(parent, name, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw failure("create", path, -fd) }
        return fd
    }

    /// The file's data, block by block at libarchive's offsets (holes stay holes).
    func writeData(_ archive: OpaquePointer, to fd: Int32, size: Int64, path: String) throws(OCIError) {
        var block: UnsafeRawPointer?
        var length = 0
        var offset: la_int64_t = 0
        while true {
            let status = archive_read_data_block(archive, &block, &length, &offset)
            if status == ARCHIVE_EOF { break }
            guard status == ARCHIVE_OK || status == ARCHIVE_WARN else {
                throw OCIError(
                    .archive, "\(name): the archive is damaged or truncated at \"\(path)\": \(LayerExtractor.archiveError(archive))",
                    hint: "the layer is truncated or corrupt")
            }
            guard offset >= 0, offset + Int64(length) <= size else { throw hostile("\"\(path)\" has data beyond its declared size") }
            guard let block, length > 0 else { continue }
            var done = 0
            while done < length {
                let n = pwrite(fd, block + done, length - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw failure("write", path, errno) }
                done += n
            }
        }
        guard ftruncate(fd, off_t(size)) == 0 else { throw failure("truncate", path, errno) }
    }

    func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(OCIError) {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw failure("write", path, errno) }
            done += n
        }
    }

    /// The owner, mode (with the file type) and device number the guest sees.
    func setOwnership(_ fd: Int32, path: String, uid: UInt32, gid: UInt32, mode: UInt32, rdev: UInt64?) throws(OCIError) {
        try setXattr(fd, MappedXattr.uid, MappedXattr.encode32(uid), path: path)
        try setXattr(fd, MappedXattr.gid, MappedXattr.encode32(gid), path: path)
        try setXattr(fd, MappedXattr.mode, MappedXattr.encode32(mode), path: path)
        if let rdev { try setXattr(fd, MappedXattr.rdev, MappedXattr.encode64(rdev), path: path) }
    }

    func setXattr(_ fd: Int32, _ name: String, _ value: [UInt8], path: String) throws(OCIError) {
        let result = value.withUnsafeBytes { airlock_oci_fsetxattr(fd, name, $0.baseAddress, $0.count) }
        guard result == 0 else {
            if -result == ENOTSUP {
                throw OCIError(
                    .store, "\(name): the cache's file system does not support user xattrs (\(path))",
                    hint: "put the cache on ext4, xfs or btrfs (XDG_CACHE_HOME)")
            }
            throw failure("setxattr \(name)", path, -result)
        }
    }

    /// The entry's own xattrs: `user.*` ones are kept, except those that would forge the
    /// mapping or overlayfs' markers; other namespaces cannot be set unprivileged.
    mutating func copyXattrs(_ entry: OpaquePointer, to fd: Int32, path: String) throws(OCIError) {
        guard archive_entry_xattr_reset(entry) > 0 else { return }
        var namePointer: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &namePointer, &value, &size) == ARCHIVE_OK {
            guard let namePointer else { continue }
            let xattr = String(cString: namePointer)
            guard xattr.hasPrefix("user."), !xattr.hasPrefix("user.virtfs."), !xattr.hasPrefix("user.overlay."), size <= 65536 else {
                info.droppedXattrs += 1
                continue
            }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            try setXattr(fd, xattr, bytes, path: path)
        }
    }

    static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    static func bytes(_ pointer: UnsafePointer<CChar>?) -> [UInt8]? {
        pointer.map { Array(UnsafeRawBufferPointer(start: UnsafeRawPointer($0), count: strlen($0))) }
    }
}

extension LayerWriter {
    var finishedInfo: LayerInfo {
        var result = info
        result.whiteouts = whiteouts.sorted()
        result.opaque = opaque.sorted()
        return result
    }
}

/// File type bits of `st_mode` (spelled here: Glibc's and libarchive's imports of them clash).
enum FileType {
    static let mask: UInt32 = 0o170000
    static let regular: UInt32 = 0o100000
    static let directory: UInt32 = 0o040000
    static let symlink: UInt32 = 0o120000
    static let character: UInt32 = 0o020000
    static let block: UInt32 = 0o060000
    static let fifo: UInt32 = 0o010000
}

/// QEMU 9p `security_model=mapped-xattr`: the xattrs it reads a file's metadata from.
public enum MappedXattr {
    public static let uid = "user.virtfs.uid"
    public static let gid = "user.virtfs.gid"
    public static let mode = "user.virtfs.mode"
    public static let rdev = "user.virtfs.rdev"

    static func encode32(_ value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    static func encode64(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    /// Reads one of them from `path` (not following a symlink), for tests and `image` tools.
    public static func read32(_ path: String, _ name: String) -> UInt32? {
        var value: UInt32 = 0
        let n = airlock_oci_lgetxattr(path, name, &value, 4)
        return n == 4 ? UInt32(littleEndian: value) : nil
    }

    public static func read64(_ path: String, _ name: String) -> UInt64? {
        var value: UInt64 = 0
        let n = airlock_oci_lgetxattr(path, name, &value, 8)
        return n == 8 ? UInt64(littleEndian: value) : nil
    }
}
