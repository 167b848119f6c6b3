import AirlockSystem
import CAssets
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// The kernel and initramfs this run boots: named ones (`AIRLOCK_KERNEL`/`AIRLOCK_INITRAMFS`,
/// `[vm]`) first, else the copies inside the binary, written once to a content-addressed 0600
/// file in the cache (VMMs take paths) and checked against their SHA-256, else the cache.
public enum EmbeddedAssets {
    public static var isEmbedded: Bool {
        var size = 0
        _ = airlock_kernel_data(&size)
        return size > 0
    }

    public static func locate(_ lookup: GuestAssets.Lookup, environment: [String: String]) throws -> (kernel: String, initramfs: String) {
        let cache = HostFacts.cacheDirectory(environment: environment) + "/assets"
        func pick(_ found: GuestAssets.Located?, embedded: () throws -> String?, name: String) throws -> String {
            if let found, found.source != .embedded { return found.path }
            if found?.source == .embedded, let extracted = try embedded() { return extracted }
            throw SandboxError(
                "no guest \(name) found",
                hint: "use the single binary from `make release`, or build the assets with `make kernel` and set AIRLOCK_KERNEL and AIRLOCK_INITRAMFS"
            )
        }
        let kernel = try pick(
            lookup.kernel, embedded: { try extract(airlock_kernel_data, airlock_kernel_sha256, name: "vmlinux", into: cache) }, name: "kernel")
        let initramfs = try pick(
            lookup.initramfs, embedded: { try extract(airlock_initramfs_data, airlock_initramfs_sha256, name: "initramfs", into: cache) },
            name: "initramfs")
        return (kernel, initramfs)
    }

    /// Writes an embedded asset to `<cache>/<sha256>-<name>` unless a file with that content is
    /// already there; returns its path, or nil when nothing is embedded.
    static func extract(
        _ data: (UnsafeMutablePointer<Int>) -> UnsafePointer<UInt8>?, _ digest: () -> UnsafePointer<CChar>?, name: String, into cache: String
    ) throws -> String? {
        var size = 0
        guard let bytes = data(&size), size > 0, let digestPointer = digest() else { return nil }
        let expected = String(cString: digestPointer)
        let path = "\(cache)/\(expected)-\(name)"
        // Only airlock writes these files, whole, under the digest it checked while writing:
        // a file of the right size, ours and private, is that content. (Hashing 90 MB again
        // on every start would cost a noticeable part of a second.)
        var info = stat()
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == getuid(), info.st_mode & 0o077 == 0, Int(info.st_size) == size
        {
            return path
        }
        let content = UnsafeRawBufferPointer(start: bytes, count: size)
        guard hexDigest(content) == expected else {
            throw SandboxError(
                "the \(name) inside this binary does not match its SHA-256", hint: "the binary is damaged: rebuild it with `make release`")
        }
        do {
            try FileSystem.makeDirectories(cache)
            // Written whole under a temporary name, then renamed: a reader never sees half of it.
            try FileSystem.writeAtomically(path, content, mode: 0o600)
        } catch {
            throw SandboxError("cannot unpack the guest \(name)", cause: error, hint: "free some disk space in \(cache)")
        }
        return path
    }

    static func hexDigest(_ bytes: UnsafeRawBufferPointer) -> String {
        SHA256.hash(data: bytes).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
