import AirlockSystem
import CShim
import Clibarchive

#if canImport(Glibc)
import Glibc
#endif

/// An extracted layer (LayerExtractor's mapped-xattr directory) written back as a PAX tar
/// (libarchive) with that metadata real: owners, modes, symlinks, device nodes and hardlinks
/// as such, a whiteout as the 0/0 character device overlayfs knows, the layer's other `user.*`
/// xattrs (among them `user.overlay.opaque`) kept and the mapping's `user.virtfs.*` dropped.
///
/// It feeds `tar2sqfs` (squashfs-tools-ng), which builds the layer's squashfs image: how a VMM
/// that cannot present mapped-xattr ownership through a share (Cloud Hypervisor, virtio-fs
/// only; virtiofsd would show the extracting user's files) gets the layer, as a read-only
/// virtio-blk disk. squashfs stores owners as plain metadata, so no root is needed, and its
/// format is squashfs-tools-ng's to write, not ours. The directory is airlock's own (validated
/// at extraction); it is still read without following a symbolic link (the format has none:
/// a symlink is a file holding its target).
public enum LayerTar {
    /// Writes `layer` as a PAX tar to `fd` (a pipe into `tar2sqfs`). Blocking.
    public static func write(layer: String, to fd: Int32) throws(OCIError) {
        var stream = TarStream(layer: layer, fd: fd)
        try stream.write()
    }
}

/// The layer directory as a PAX tar on a file descriptor, each entry with the metadata the
/// mapped xattrs give it.
private struct TarStream {
    let layer: String
    let fd: Int32
    /// The first path of each (device, inode) with more than one link.
    var linked: [String: String] = [:]

    init(layer: String, fd: Int32) {
        self.layer = layer
        self.fd = fd
    }

    mutating func write() throws(OCIError) {
        let archive = try LibArchive.writer()
        defer { archive_write_free(archive) }
        archive_write_set_format_pax_restricted(archive)
        archive_write_set_bytes_in_last_block(archive, 1)
        guard archive_write_open_fd(archive, fd) == ARCHIVE_OK else { throw failure(archive, layer) }
        let rootFD = open(layer, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard rootFD >= 0 else { throw OCIError(.store, "cannot open \(layer): \(errorText(errno))") }
        try add(archive, fd: rootFD, name: "./", path: layer)
        try walk(archive, directoryFD: rootFD, prefix: "", path: layer)
        guard archive_write_close(archive) == ARCHIVE_OK else { throw failure(archive, layer) }
    }

    /// Adds the entries below `directoryFD` (which this call closes), depth first, each
    /// directory before its contents.
    mutating func walk(_ archive: OpaquePointer, directoryFD: Int32, prefix: String, path: String) throws(OCIError) {
        guard let directory = fdopendir(directoryFD) else {
            close(directoryFD)
            throw OCIError(.store, "cannot read \(path): \(errorText(errno))")
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        for name in names.sorted() {
            let childPath = path + "/" + name
            let fd = openat(dirfd(directory), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { throw OCIError(.store, "cannot open \(childPath): \(errorText(errno))") }
            let isDirectory = try add(archive, fd: fd, name: prefix + name, path: childPath)
            if isDirectory {
                try walk(archive, directoryFD: fd, prefix: prefix + name + "/", path: childPath)
            } else {
                close(fd)
            }
        }
    }

    /// Writes the entry for the open file `fd`; returns whether it is a directory.
    @discardableResult
    mutating func add(_ archive: OpaquePointer, fd: Int32, name: String, path: String) throws(OCIError) -> Bool {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw OCIError(.store, "cannot stat \(path): \(errorText(errno))") }
        let realType = UInt32(info.st_mode) & FileType.mask
        guard realType == FileType.directory || realType == FileType.regular else {
            throw OCIError(
                .store, "\(path) is neither a file nor a directory, which an extracted layer never holds",
                hint: "`airlock image rm` the image and pull it again")
        }
        // Layers extracted by airlock have all four; a missing one keeps the file's own.
        let uid = read32(fd, MappedXattr.uid) ?? 0
        let gid = read32(fd, MappedXattr.gid) ?? 0
        let mode = read32(fd, MappedXattr.mode) ?? UInt32(info.st_mode)
        let type = mode & FileType.mask
        guard let entry = archive_entry_new() else { throw OCIError(.archive, "libarchive: out of memory") }
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname_utf8(entry, name)
        archive_entry_set_uid(entry, la_int64_t(uid))
        archive_entry_set_gid(entry, la_int64_t(gid))
        archive_entry_set_perm(entry, mode_t(mode & 0o7777))
        archive_entry_set_mtime(entry, info.st_mtim.tv_sec, info.st_mtim.tv_nsec)
        try copyXattrs(fd, to: entry, path: path)
        var data = false
        if realType == FileType.directory {
            archive_entry_set_filetype(entry, FileType.directory)
        } else if type == FileType.symlink {
            archive_entry_set_filetype(entry, FileType.symlink)
            archive_entry_set_symlink_utf8(entry, try contents(fd, path: path, limit: 4096))
        } else if type == FileType.character || type == FileType.block || type == FileType.fifo {
            archive_entry_set_filetype(entry, type)
            let rdev = read64(fd, MappedXattr.rdev) ?? 0
            archive_entry_set_rdev(entry, dev_t(rdev))
        } else {
            archive_entry_set_filetype(entry, FileType.regular)
            let key = "\(info.st_dev):\(info.st_ino)"
            if info.st_nlink > 1, let first = linked[key] {
                archive_entry_set_hardlink_utf8(entry, first)
                archive_entry_set_size(entry, 0)
            } else {
                if info.st_nlink > 1 { linked[key] = name }
                archive_entry_set_size(entry, la_int64_t(info.st_size))
                data = true
            }
        }
        guard archive_write_header(archive, entry) == ARCHIVE_OK else { throw failure(archive, path) }
        if data { try copyData(fd, size: Int64(info.st_size), to: archive, path: path) }
        return realType == FileType.directory
    }

    func copyData(_ fd: Int32, size: Int64, to archive: OpaquePointer, path: String) throws(OCIError) {
        var buffer = [UInt8](repeating: 0, count: 1 << 17)
        var left = size
        while left > 0 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, Int(left))) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw OCIError(.store, "\(path) changed while it was read (\(n < 0 ? errorText(errno) : "shorter"))") }
            let written = buffer.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, n) }
            guard written == n else { throw failure(archive, path) }
            left -= Int64(n)
        }
    }

    /// The layer's own `user.*` xattrs, not the mapping itself.
    func copyXattrs(_ fd: Int32, to entry: OpaquePointer, path: String) throws(OCIError) {
        var names = [CChar](repeating: 0, count: 65536)
        let size = airlock_oci_flistxattr(fd, &names, names.count)
        guard size > 0 else {
            if size < 0 { throw OCIError(.store, "cannot list the xattrs of \(path): \(errorText(Int32(-size)))") }
            return
        }
        for rawName in names[..<Int(size)].split(separator: 0) {
            let name = String(decoding: rawName.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard name.hasPrefix("user."), !name.hasPrefix("user.virtfs."), name != "user.overlay.whiteout" else { continue }
            var value = [UInt8](repeating: 0, count: 65536)
            let length = airlock_oci_fgetxattr(fd, name, &value, value.count)
            guard length >= 0 else { throw OCIError(.store, "cannot read xattr \(name) of \(path): \(errorText(Int32(-length)))") }
            value.withUnsafeBytes { archive_entry_xattr_add_entry(entry, name, $0.baseAddress, Int(length)) }
        }
    }

    func contents(_ fd: Int32, path: String, limit: Int) throws(OCIError) -> String {
        var bytes = [UInt8](repeating: 0, count: limit)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw OCIError(.store, "cannot read the symlink target stored in \(path)") }
        return String(decoding: bytes[..<n], as: UTF8.self)
    }

    func read32(_ fd: Int32, _ name: String) -> UInt32? {
        var value: UInt32 = 0
        return airlock_oci_fgetxattr(fd, name, &value, 4) == 4 ? UInt32(littleEndian: value) : nil
    }

    func read64(_ fd: Int32, _ name: String) -> UInt64? {
        var value: UInt64 = 0
        return airlock_oci_fgetxattr(fd, name, &value, 8) == 8 ? UInt64(littleEndian: value) : nil
    }

    func failure(_ archive: OpaquePointer, _ path: String) -> OCIError {
        // A closed pipe: tar2sqfs ended, and its log says why.
        OCIError(.archive, "writing \(path) into the image: \(LayerExtractor.archiveError(archive))")
    }
}
