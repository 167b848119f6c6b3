import AirlockSystem
import CShim
import Crypto
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// A pulled image: what `airlock image ls` lists and what a sandbox boots from.
public struct ImageRecord: Sendable, Codable, Equatable {
    /// The normalized reference it was pulled as (`docker.io/library/alpine:latest`).
    public var reference: String
    public var manifestDigest: Digest
    public var configDigest: Digest
    /// Bottom layer first, as in the manifest.
    public var layers: [Descriptor]
    public var settings: ImageConfiguration.Settings
    public var platform: String
    /// Seconds since the epoch.
    public var pulledAt: Int64
    /// Compressed bytes of the layers.
    public var downloadSize: Int64
    /// Apparent bytes of the extracted files.
    public var extractedSize: Int64
    /// Where it came from: nil or `registry`, or `docker` (the local daemon's copy; then
    /// `manifestDigest` names a manifest airlock wrote for the layers Docker exported).
    public var source: String?
    /// The Docker daemon's image ID, for `docker` images.
    public var dockerImageID: String?

    public var sourceName: String { source ?? "registry" }
}

/// A sandbox that uses an image: `prune` keeps its layers while its state directory exists.
public struct SandboxReference: Sendable, Codable, Equatable {
    public var stateDirectory: String
    public var reference: String
    public var manifestDigest: Digest
    public var layers: [Digest]
}

/// The content-addressed store in `$XDG_CACHE_HOME/airlock/oci` (default `~/.cache/airlock/oci`):
///
///     blobs/sha256/<hex>           manifests and configs, verified (layer blobs only until extracted)
///     blobs/sha256/<hex>.partial   a download in progress or interrupted (resumed by the next pull)
///     layers/sha256/<hex>/         an extracted layer (see LayerExtractor), complete by construction:
///     layers/sha256/<hex>.json     extracted under tmp/ and renamed here only when finished
///     layers/sha256/<hex>.sqfs     the layer as a squashfs block image (built on first need, see LayerTar)
///     images/<sha256(ref)>.json    ImageRecord
///     sandboxes/<sha256(dir)>.json SandboxReference
///     tmp/                         extractions in progress
///     lock                         flock: pulls, rm and prune take it exclusively
public struct ImageStore: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public static func defaultRoot(environment: [String: String]) -> String {
        if let cache = environment["XDG_CACHE_HOME"], cache.hasPrefix("/") { return cache + "/airlock/oci" }
        return (environment["HOME"] ?? "/tmp") + "/.cache/airlock/oci"
    }

    var blobs: String { root + "/blobs/sha256" }
    var layers: String { root + "/layers/sha256" }
    var images: String { root + "/images" }
    var sandboxes: String { root + "/sandboxes" }
    var temporary: String { root + "/tmp" }

    public func blobPath(_ digest: Digest) -> String { blobs + "/" + digest.hex }
    public func layerPath(_ digest: Digest) -> String { layers + "/" + digest.hex }
    func layerInfoPath(_ digest: Digest) -> String { layers + "/" + digest.hex + ".json" }
    public func layerImagePath(_ digest: Digest) -> String { layers + "/" + digest.hex + ".sqfs" }

    public func prepare() throws(OCIError) {
        for directory in [root, root + "/blobs", blobs, root + "/layers", layers, images, sandboxes, temporary] {
            try storeStep(hint: "set XDG_CACHE_HOME to a writable directory") { try FileSystem.makeDirectories(directory) }
        }
    }

    // MARK: Locking

    /// Takes the store's lock, waiting at most `timeout` (another pull may hold it).
    public func lock(timeout: Duration = .seconds(600)) async throws -> StoreLock {
        try prepare()
        let path = root + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw OCIError(.store, "cannot open \(path): \(errorText(errno))") }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                close(fd)
                throw OCIError(.store, "cannot lock \(path): \(errorText(errno))")
            }
            guard clock.now < deadline else {
                close(fd)
                throw OCIError(
                    .store, "the image store \(root) stayed locked for \(timeout)",
                    hint: "another airlock is pulling or pruning; try again when it is done")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return StoreLock(fd: fd)
    }

    // MARK: Records

    static func key(_ text: String) -> String { Digest(of: Array(text.utf8)).hex }

    public func record(for reference: ImageReference) -> ImageRecord? {
        readJSON(images + "/" + Self.key(reference.description) + ".json")
    }

    /// Every image record, sorted by reference.
    public func records() -> [ImageRecord] {
        FileSystem.entries(images).filter { $0.hasSuffix(".json") }.compactMap { readJSON(images + "/" + $0) as ImageRecord? }
            .sorted { $0.reference < $1.reference }
    }

    public func save(_ record: ImageRecord) throws(OCIError) {
        try writeJSON(record, to: images + "/" + Self.key(record.reference) + ".json")
    }

    /// Removes the record of `reference`; whether there was one.
    public func removeRecord(_ reference: ImageReference) -> Bool {
        unlink(images + "/" + Self.key(reference.description) + ".json") == 0
    }

    public func layerInfo(_ digest: Digest) -> LayerInfo? {
        readJSON(layerInfoPath(digest))
    }

    public func hasLayer(_ digest: Digest) -> Bool {
        var info = stat()
        return stat(layerPath(digest), &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR && layerInfo(digest) != nil
    }

    /// The layer's squashfs block image, built the first time by `build(output, log)` into
    /// tmp/ and renamed into place only when it succeeded (so the store never holds half an
    /// image under its final name). Blocking. Take `lock()` first.
    public func layerImage(_ digest: Digest, build: (_ output: String, _ log: String) throws -> Void) throws -> String {
        let path = layerImagePath(digest)
        if access(path, R_OK) == 0 { return path }
        guard hasLayer(digest) else {
            throw OCIError(.store, "layer \(digest.short) is not in \(root)", hint: "`airlock image pull` the image again")
        }
        try prepare()
        let temporary = self.temporary + "/" + digest.hex + ".sqfs.\(getpid())"
        let log = temporary + ".log"
        defer { unlink(log) }
        do {
            try build(temporary, log)
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw OCIError(.store, "cannot rename \(temporary) to \(path): \(errorText(code))")
        }
        return path
    }

    /// Notes that the sandbox in `stateDirectory` boots `record` (replacing what it used before).
    public func recordSandbox(stateDirectory: String, record: ImageRecord) throws(OCIError) {
        try prepare()
        let reference = SandboxReference(
            stateDirectory: stateDirectory, reference: record.reference, manifestDigest: record.manifestDigest, layers: record.layers.map(\.digest))
        try writeJSON(reference, to: sandboxes + "/" + Self.key(stateDirectory) + ".json")
    }

    public func sandboxReferences() -> [SandboxReference] {
        FileSystem.entries(sandboxes).filter { $0.hasSuffix(".json") }.compactMap { readJSON(sandboxes + "/" + $0) as SandboxReference? }
    }

    // MARK: Garbage collection

    public struct PruneReport: Sendable, Equatable {
        public var layers = 0
        public var blobs = 0
        public var bytes: Int64 = 0
        public var staleSandboxes = 0
    }

    /// Removes every layer and blob that no image record and no existing sandbox references,
    /// interrupted downloads and unfinished extractions. Take `lock()` first.
    public func prune(keepPartialDownloads: Bool = false) throws(OCIError) -> PruneReport {
        try prepare()
        var report = PruneReport()
        var keep = Set<String>()
        for record in records() {
            keep.insert(record.manifestDigest.hex)
            keep.insert(record.configDigest.hex)
            for layer in record.layers { keep.insert(layer.digest.hex) }
        }
        for name in FileSystem.entries(sandboxes) where name.hasSuffix(".json") {
            guard let reference: SandboxReference = readJSON(sandboxes + "/" + name) else { continue }
            var info = stat()
            if stat(reference.stateDirectory, &info) == 0 {
                keep.insert(reference.manifestDigest.hex)
                for layer in reference.layers { keep.insert(layer.hex) }
            } else {
                unlink(sandboxes + "/" + name)
                report.staleSandboxes += 1
            }
        }
        for name in FileSystem.entries(layers) {
            // `<hex>`, `<hex>.json`, `<hex>.sqfs`
            let hex = String(name.prefix { $0 != "." })
            guard !keep.contains(hex) else { continue }
            let path = layers + "/" + name
            report.bytes += FileSystem.allocatedSize(path)
            try storeStep { try FileSystem.removeTree(path) }
            if hex == name { report.layers += 1 }
        }
        for name in FileSystem.entries(blobs) {
            let hex = name.hasSuffix(".partial") ? String(name.dropLast(8)) : name
            if keep.contains(hex) && !name.hasSuffix(".partial") { continue }
            if keepPartialDownloads && name.hasSuffix(".partial") { continue }
            let path = blobs + "/" + name
            report.bytes += FileSystem.allocatedSize(path)
            try storeStep { try FileSystem.removeTree(path) }
            report.blobs += 1
        }
        for name in FileSystem.entries(temporary) {
            let path = temporary + "/" + name
            report.bytes += FileSystem.allocatedSize(path)
            try storeStep { try FileSystem.removeTree(path) }
        }
        return report
    }

    // MARK: Reading files of an image (for its /etc/passwd)

    /// The bytes of `path` (relative, e.g. `etc/passwd`) as the image shows it: from the
    /// topmost layer that has it as a regular file, nil when a layer above deletes it or none
    /// has it. Reads are confined below the layer directory.
    public func readImageFile(_ record: ImageRecord, _ path: String, limit: Int = 4 << 20) -> [UInt8]? {
        for layer in record.layers.reversed() {
            let directory = layerPath(layer.digest)
            let rootFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard rootFD >= 0 else { continue }
            defer { close(rootFD) }
            let fd = airlock_open_beneath(rootFD, path, O_RDONLY, 0)
            guard fd >= 0 else {
                if layerInfo(layer.digest)?.opaque.contains(where: { path.hasPrefix($0 + "/") }) == true { return nil }
                continue
            }
            defer { close(fd) }
            var mode: UInt32 = 0
            guard airlock_oci_fgetxattr(fd, MappedXattr.mode, &mode, 4) == 4 else { continue }
            guard UInt32(littleEndian: mode) & UInt32(S_IFMT) == UInt32(S_IFREG) else { return nil }
            return try? Syscall.readAll(fd, limit: limit, subject: path)
        }
        return nil
    }

    // MARK: Files

    func readJSON<T: Decodable>(_ path: String) -> T? {
        guard let bytes = ((try? FileSystem.read(path, limit: 16 << 20)) ?? nil) else { return nil }
        return try? JSONDecoder().decode(T.self, from: Data(bytes))
    }

    func writeJSON(_ value: some Encodable, to path: String) throws(OCIError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data: Data
        do { data = try encoder.encode(value) } catch { throw OCIError(.store, "cannot encode \(path)", cause: error) }
        try writeFileAtomically(path, Array(data))
    }

    func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(OCIError) {
        try storeStep { try FileSystem.writeAtomically(path, bytes, mode: 0o644) }
    }
}

/// The store's lock; released when this is released (or the process ends).
public final class StoreLock: Sendable {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// Runs one file-system step of the store; a failure becomes an `OCIError` of kind `store`
/// that keeps the system error as its cause.
func storeStep<T>(hint: String? = nil, _ body: () throws -> T) throws(OCIError) -> T {
    do {
        return try body()
    } catch {
        throw OCIError(.store, "cannot use the image store", cause: error, hint: hint)
    }
}
