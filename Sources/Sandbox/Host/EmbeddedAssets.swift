import AirlockSystem
import CAssets
import Clibzstd
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// The kernel and initramfs this run boots: named ones (`AIRLOCK_KERNEL`/`AIRLOCK_INITRAMFS`,
/// `[vm]`) first, else the copies inside the binary, else the cache.
///
/// `make release` embeds each as one zstd frame (92 MB become 17 MB) with the SHA-256 of its
/// uncompressed content. VMMs take paths, so the first start of a version unpacks each once
/// into a content-addressed 0600 file of the cache (`<sha256>-vmlinux`), checking the digest
/// while it writes; the files of other versions are removed then (a version in use keeps its
/// files open; a start of it within the hour keeps them too).
public enum EmbeddedAssets {
    public static var isEmbedded: Bool {
        var size = 0
        _ = airlock_kernel_data(&size)
        return size > 0
    }

    /// One asset inside the binary: its zstd frame and the SHA-256 of what it unpacks to.
    struct Packed {
        var name: String
        var frame: UnsafeRawBufferPointer
        var sha256: String

        init?(name: String, data: (UnsafeMutablePointer<Int>) -> UnsafePointer<UInt8>?, digest: () -> UnsafePointer<CChar>?) {
            var size = 0
            guard let bytes = data(&size), size > 0, let digest = digest() else { return nil }
            self.init(name: name, frame: UnsafeRawBufferPointer(start: bytes, count: size), sha256: String(cString: digest))
        }

        init(name: String, frame: UnsafeRawBufferPointer, sha256: String) {
            self.name = name
            self.frame = frame
            self.sha256 = sha256
        }

        /// The unpacked size the frame declares (nil: not a zstd frame with its size).
        var unpackedSize: Int64? {
            let size = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
            // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR.
            guard size != UInt64.max, size != UInt64.max - 1, size <= UInt64(Int64.max) else { return nil }
            return Int64(size)
        }
    }

    public static func locate(
        _ lookup: GuestAssets.Lookup, environment: [String: String], progress: (@Sendable (String) -> Void)? = nil
    ) throws -> (kernel: String, initramfs: String) {
        let cache = HostFacts.cacheDirectory(environment: environment) + "/assets"
        func pick(_ found: GuestAssets.Located?, packed: Packed?, name: String) throws -> String {
            if let found, found.source != .embedded { return found.path }
            if found?.source == .embedded, let packed { return try unpack(packed, into: cache, progress: progress) }
            throw SandboxError(
                "no guest \(name) found",
                hint: "use the single binary from `make release`, or build the assets with `make kernel` and set AIRLOCK_KERNEL and AIRLOCK_INITRAMFS"
            )
        }
        let kernel = try pick(
            lookup.kernel, packed: Packed(name: "vmlinux", data: airlock_kernel_data, digest: airlock_kernel_sha256), name: "kernel")
        let initramfs = try pick(
            lookup.initramfs, packed: Packed(name: "initramfs", data: airlock_initramfs_data, digest: airlock_initramfs_sha256), name: "initramfs")
        return (kernel, initramfs)
    }

    /// `<cache>/<sha256>-<name>`, unpacked from `packed` unless a file with that content is
    /// already there.
    static func unpack(_ packed: Packed, into cache: String, progress: (@Sendable (String) -> Void)? = nil) throws -> String {
        let path = "\(cache)/\(packed.sha256)-\(packed.name)"
        guard let size = packed.unpackedSize else {
            throw SandboxError(
                "the \(packed.name) inside this binary is not a zstd frame", hint: "the binary is damaged: rebuild it with `make release`")
        }
        // Only airlock writes these files, whole, under the digest it checked while writing:
        // a file of the right size, ours and private, is that content. (Hashing 90 MB again
        // on every start would cost a noticeable part of a second.)
        var info = stat()
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == getuid(), info.st_mode & 0o077 == 0,
            Int64(info.st_size) == size
        {
            return path
        }
        progress?("unpacking the guest \(packed.name) (once per airlock version)")
        do {
            try FileSystem.makeDirectories(cache)
            try FileSystem.writeAtomically(path, mode: 0o600) { fd, temporary in
                try decompress(packed, size: size, to: fd, subject: temporary, progress: progress)
            }
        } catch let error as SandboxError {
            throw error
        } catch {
            throw SandboxError("cannot unpack the guest \(packed.name)", cause: error, hint: "free some disk space in \(cache)")
        }
        removeOtherVersions(of: packed, in: cache)
        return path
    }

    /// Streams the frame's content to `fd`, hashing it; throws unless it is exactly `size`
    /// bytes with the SHA-256 the binary names.
    static func decompress(_ packed: Packed, size: Int64, to fd: Int32, subject: String, progress: (@Sendable (String) -> Void)?) throws {
        let damaged = { (why: String) in
            SandboxError("the \(packed.name) inside this binary is damaged (\(why))", hint: "rebuild it with `make release`, or download it again")
        }
        guard let context = ZSTD_createDCtx() else { throw damaged("no memory for zstd") }
        defer { ZSTD_freeDCtx(context) }
        var hash = SHA256()
        var input = ZSTD_inBuffer(src: packed.frame.baseAddress, size: packed.frame.count, pos: 0)
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        var written: Int64 = 0
        var shownTenth: Int64 = 0
        while true {
            var output = ZSTD_outBuffer(dst: buffer.baseAddress, size: chunk, pos: 0)
            let remaining = ZSTD_decompressStream(context, &output, &input)
            if ZSTD_isError(remaining) != 0 { throw damaged(String(cString: ZSTD_getErrorName(remaining))) }
            let produced = UnsafeRawBufferPointer(rebasing: buffer[..<output.pos])
            written += Int64(produced.count)
            guard written <= size else { throw damaged("more than the \(size) bytes it declares") }
            hash.update(bufferPointer: produced)
            try Syscall.writeAll(fd, produced, subject: subject)
            if remaining == 0 { break }
            // More is to come, yet all input is read and zstd had room to write: cut short.
            if input.pos == input.size, output.pos < chunk { throw damaged("the frame is cut short") }
            let tenth = written * 10 / max(size, 1)
            if tenth > shownTenth, tenth < 10 {
                shownTenth = tenth
                progress?("unpacking the guest \(packed.name): \(tenth * 10)%")
            }
        }
        guard input.pos == input.size, written == size else { throw damaged("\(written) bytes unpacked of \(size)") }
        let digest = hash.finalize().map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
        guard digest == packed.sha256 else { throw damaged("its SHA-256 is \(digest), not \(packed.sha256)") }
    }

    /// Other versions' copies of this asset (and unpackings a crash cut short), untouched for
    /// an hour: each is 10 to 70 MB.
    static func removeOtherVersions(of packed: Packed, in cache: String) {
        let hourAgo = Int64(time(nil) - 3600) * 1_000_000_000
        let suffix = "-" + packed.name
        for entry in FileSystem.entries(cache) where !entry.hasPrefix(packed.sha256 + suffix) || entry.contains(suffix + ".tmp.") {
            guard entry.hasSuffix(suffix) || entry.contains(suffix + ".tmp.") else { continue }
            let path = cache + "/" + entry
            if let modified = FileSystem.modificationTime(path), modified < hourAgo { unlink(path) }
        }
    }
}
