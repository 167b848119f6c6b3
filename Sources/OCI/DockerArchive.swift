import AirlockSystem
import Clibarchive
import Crypto
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// A `docker save` tarball read once, as it streams, into a staging directory: every regular
/// entry becomes a numbered file (its archive name is never used as a host path) with its
/// SHA-256 and size; symlinks and hardlinks inside the archive are kept as name → name.
///
/// Both layouts `docker save` writes carry a `manifest.json`
/// (`[{"Config": NAME, "RepoTags": […], "Layers": [NAME, …]}]`); only the names differ:
/// - classic (Docker < 25, skopeo's docker-archive): `<hex>.json` config, `<id>/layer.tar`
///   (a duplicate layer may be a symlink to another `<id>/layer.tar`) or `<hex>.tar`;
/// - OCI layout (Docker ≥ 25): `blobs/sha256/<hex>` for configs, manifests and layers, plus
///   `index.json` and `oci-layout` (which airlock does not need).
/// Names of the form `blobs/sha256/<hex>` and `<hex>.json` must match their content's digest.
struct DockerArchive {
    struct Entry {
        var file: String
        var digest: Digest
        var size: Int64
    }

    struct Limits {
        var entries = 100_000
        /// All regular entries together (the layers, uncompressed as Docker exports them).
        var totalBytes: Int64 = 64 << 30
        /// manifest.json, a config.
        var documentBytes = 8 << 20
    }

    let directory: String
    var entries: [String: Entry] = [:]
    var links: [String: String] = [:]
    let what: String

    /// Reads the tar stream on `fd` (blocking: a thread of its own, never the cooperative pool).
    static func stage(fd: Int32, into directory: String, what: String, limits: Limits) throws(OCIError) -> DockerArchive {
        var result = DockerArchive(directory: directory, what: what)
        let archive = try LibArchive.reader()
        defer { archive_read_free(archive) }
        archive_read_support_format_tar(archive)
        guard archive_read_open_fd(archive, fd, 1 << 17) == ARCHIVE_OK else {
            throw OCIError(.archive, "\(what): the Docker daemon's export is not a tar archive: \(LayerExtractor.archiveError(archive))")
        }
        var total: Int64 = 0
        var count = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            var entry: OpaquePointer?
            let status = archive_read_next_header(archive, &entry)
            if status == ARCHIVE_EOF { break }
            guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
                throw OCIError(.archive, "\(what): the Docker daemon's export is damaged or truncated: \(LayerExtractor.archiveError(archive))")
            }
            count += 1
            guard count <= limits.entries else { throw result.hostile("more than \(limits.entries) entries in the export") }
            guard let raw = LayerWriter.string(archive_entry_pathname(entry)) else { throw result.hostile("an entry without a name") }
            let name = try result.normalize(raw, relativeTo: nil)
            if let target = LayerWriter.string(archive_entry_hardlink(entry)) {
                result.links[name] = try result.normalize(target, relativeTo: nil)
                result.entries[name] = nil
                continue
            }
            switch UInt32(archive_entry_filetype(entry)) {
            case FileType.regular:
                let file = directory + "/\(count)"
                let out = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
                guard out >= 0 else { throw OCIError(.store, "cannot create \(file): \(errorText(errno))") }
                defer { close(out) }
                var hasher = SHA256()
                var size: Int64 = 0
                while true {
                    let n = buffer.withUnsafeMutableBytes { archive_read_data(archive, $0.baseAddress, $0.count) }
                    if n == 0 { break }
                    guard n > 0 else {
                        throw OCIError(.archive, "\(what): the export broke off in \(raw.prefix(200)): \(LayerExtractor.archiveError(archive))")
                    }
                    size += Int64(n)
                    total += Int64(n)
                    guard total <= limits.totalBytes else { throw result.hostile("the export holds more than \(limits.totalBytes >> 30) GiB") }
                    buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    do {
                        try buffer.withUnsafeBytes { try Syscall.writeAll(out, UnsafeRawBufferPointer(rebasing: $0[0..<n]), subject: file) }
                    } catch {
                        throw OCIError(.store, "\(what): writing a staged file failed", cause: error, hint: "is the disk full?")
                    }
                }
                result.entries[name] = Entry(file: file, digest: Digest(hasher.finalize()), size: size)
                result.links[name] = nil
            case FileType.symlink:
                guard let target = LayerWriter.string(archive_entry_symlink(entry)) else {
                    throw result.hostile("symlink \(raw.prefix(200)) without a target")
                }
                result.links[name] = try result.normalize(target, relativeTo: name)
                result.entries[name] = nil
            default:
                continue  // directories (and anything else) carry nothing airlock reads
            }
        }
        return result
    }

    func hostile(_ message: String) -> OCIError {
        OCIError(
            .hostileLayer, "\(what): refused the Docker daemon's export: \(message)",
            hint: "the archive is malformed or tries to name paths outside itself; nothing outside airlock's store was written")
    }

    /// An archive path made canonical (`./a//b` → `a/b`); a symlink target is resolved against
    /// its link's directory. Absolute paths and `..` leaving the archive are refused.
    func normalize(_ raw: String, relativeTo link: String?) throws(OCIError) -> String {
        guard raw.utf8.count <= 4096, !raw.isEmpty else { throw hostile("an empty name or one longer than 4096 bytes") }
        guard !raw.hasPrefix("/") else { throw hostile("\"\(raw.prefix(200))\" is an absolute path") }
        var parts: [Substring] = link.map { $0.split(separator: "/").dropLast() } ?? []
        for part in raw.split(separator: "/") where part != "." {
            if part == ".." {
                guard !parts.isEmpty else { throw hostile("\"\(raw.prefix(200))\" leaves the archive (..)") }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        guard !parts.isEmpty else { throw hostile("\"\(raw.prefix(200))\" names the archive's root") }
        return parts.joined(separator: "/")
    }

    /// The regular entry `name` names, following links inside the archive (at most 16).
    func resolve(_ name: String) throws(OCIError) -> Entry {
        var current = try normalize(name, relativeTo: nil)
        for _ in 0..<16 {
            if let entry = entries[current] {
                // A name that is a digest must be that digest.
                if let claimed = Self.claimedDigest(current), claimed != entry.digest {
                    throw OCIError(
                        .integrity, "\(what): \(current) in the Docker daemon's export has digest \(entry.digest)",
                        hint: "the export is corrupt or tampered with")
                }
                return entry
            }
            guard let next = links[current] else {
                throw OCIError(.manifest, "\(what): the Docker daemon's export has no file \(name.prefix(200))")
            }
            current = next
        }
        throw hostile("a loop of links at \(name.prefix(200))")
    }

    /// `blobs/sha256/<hex>` and `<hex>.json` name their content's digest.
    static func claimedDigest(_ name: String) -> Digest? {
        if name.hasPrefix("blobs/sha256/") { return try? Digest(parsing: "sha256:" + name.dropFirst(13)) }
        if name.hasSuffix(".json"), !name.contains("/") { return try? Digest(parsing: "sha256:" + name.dropLast(5)) }
        return nil
    }

    func readDocument(_ name: String, limit: Int) throws(OCIError) -> (bytes: [UInt8], entry: Entry) {
        let entry = try resolve(name)
        guard entry.size <= Int64(limit), let bytes = ((try? FileSystem.read(entry.file, limit: limit)) ?? nil) else {
            throw OCIError(.manifest, "\(what): \(name.prefix(200)) in the Docker daemon's export is larger than \(limit >> 20) MiB")
        }
        return (bytes, entry)
    }

    /// The digest of a layer's uncompressed tar (its `diff_id`): the blob itself when it is
    /// plain, else the output of gzip/zstd (Docker's containerd store may export compressed
    /// layers). Blocking.
    static func uncompressedDigest(_ file: String, what: String) throws(OCIError) -> Digest {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OCIError(.store, "cannot open \(file): \(errorText(errno))") }
        defer { close(fd) }
        return try UncompressedStream(fd: fd, name: what).finish()
    }

    /// The layer media type by the blob's first bytes (gzip, zstd, else plain tar).
    static func layerMediaType(_ file: String) -> String {
        let head = readPrefix(file, count: 4)
        if head.starts(with: [0x1F, 0x8B]) { return "application/vnd.oci.image.layer.v1.tar+gzip" }
        if head == [0x28, 0xB5, 0x2F, 0xFD] { return "application/vnd.oci.image.layer.v1.tar+zstd" }
        return "application/vnd.oci.image.layer.v1.tar"
    }

    static func readPrefix(_ file: String, count: Int) -> [UInt8] {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, count) }
        return n > 0 ? Array(bytes[0..<n]) : []
    }
}

/// `manifest.json` of a `docker save` archive.
struct DockerSaveManifest: Decodable {
    var config: String
    var repoTags: [String]?
    var layers: [String]

    enum CodingKeys: String, CodingKey {
        case config = "Config", repoTags = "RepoTags", layers = "Layers"
    }
}
