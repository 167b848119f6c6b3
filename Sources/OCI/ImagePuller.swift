import AirlockSystem
import FoundationEssentials
import Logging
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// What a pull reports while it runs (for progress on stderr).
public enum PullEvent: Sendable {
    /// The manifest for this platform is known.
    case resolved(reference: String, manifest: Digest, layers: [Descriptor])
    /// The layer was already extracted in the store.
    case layerCached(Digest, size: Int64)
    /// Compressed bytes on disk so far.
    case layerProgress(Digest, bytes: Int64, total: Int64)
    /// An interrupted download of this layer continues from this byte.
    case layerResumed(Digest, from: Int64)
    case layerExtracting(Digest)
    case layerDone(Digest, LayerInfo)
    /// Bytes of a `docker save` archive read from the Docker daemon so far (`estimate`: the
    /// image's size as the daemon reports it, 0 when unknown).
    case exportProgress(bytes: Int64, estimate: Int64)
}

/// Pulls an image into an `ImageStore`: resolves the reference to this platform's manifest,
/// fetches the config, downloads and extracts the layers (several at once), and records it.
///
/// Concurrency: `pull` is async; network I/O runs on NIO's event loops, file writes and
/// extraction on NIO's blocking thread pool. The store's lock is held for the whole pull.
public struct ImagePuller: Sendable {
    public var store: ImageStore
    public var client: RegistryClient
    public var extractor = LayerExtractor()
    /// Layers downloaded and extracted at the same time.
    public var concurrency = 3
    public var platform = HostPlatform.current
    public var logger = Logger(label: "airlock.oci")

    public init(store: ImageStore, client: RegistryClient) {
        self.store = store
        self.client = client
    }

    public func pull(_ reference: ImageReference, progress: @escaping @Sendable (PullEvent) -> Void = { _ in }) async throws -> ImageRecord {
        let lock = try await store.lock()
        defer { withExtendedLifetime(lock) {} }
        try store.prepare()

        // Manifest (through the index when there is one).
        var fetched = try await client.fetchManifest(reference, reference.manifestReference)
        var manifest: ImageManifest
        switch try ManifestDocument.parse(fetched.bytes, contentType: fetched.contentType, what: reference.description) {
        case .manifest(let single):
            manifest = single
        case .index(let index):
            let descriptor = try Self.select(platform, from: index, reference: reference)
            try store.writeFileAtomically(store.blobPath(fetched.digest), fetched.bytes)
            fetched = try await client.fetchManifest(reference, descriptor.digest.description)
            guard fetched.bytes.count == Int(descriptor.size) else {
                throw OCIError(
                    .integrity, "\(reference): the platform manifest has \(fetched.bytes.count) bytes, the index announces \(descriptor.size)")
            }
            guard
                case .manifest(let single) = try ManifestDocument.parse(fetched.bytes, contentType: fetched.contentType, what: reference.description)
            else {
                throw OCIError(.manifest, "\(reference): the index points to another index for \(platform.os)/\(platform.architecture)")
            }
            manifest = single
        }
        for layer in manifest.layers {
            guard MediaType.layers.contains(layer.mediaType) else {
                throw OCIError(
                    .manifest, "\(reference): layer \(layer.digest.short) has media type \(layer.mediaType), which airlock cannot unpack",
                    hint: "only tar layers (plain, gzip, zstd) are supported")
            }
            guard layer.size >= 0 else { throw OCIError(.manifest, "\(reference): layer \(layer.digest.short) has a negative size") }
        }
        guard manifest.layers.count <= 127 else {
            throw OCIError(.manifest, "\(reference): \(manifest.layers.count) layers (at most 127 are accepted)")
        }
        progress(.resolved(reference: reference.description, manifest: fetched.digest, layers: manifest.layers))

        // Config.
        let configBytes = try await client.fetchSmallBlob(reference, manifest.config)
        let configuration: ImageConfiguration
        do { configuration = try JSONDecoder().decode(ImageConfiguration.self, from: Data(configBytes)) } catch {
            throw OCIError(.manifest, "\(reference): the image config is not valid JSON", cause: error)
        }
        if let os = configuration.os, os != platform.os {
            throw OCIError(.manifest, "\(reference): the image is for \(os), this host runs \(platform.os)")
        }
        if let architecture = configuration.architecture, architecture != platform.architecture {
            throw OCIError(
                .manifest, "\(reference): the image is for \(architecture), this host runs \(platform.architecture)",
                hint: "pull a multi-platform tag or one built for \(platform.architecture)")
        }
        // What each layer must decompress to (`rootfs.diff_ids`): checked as it is extracted.
        let diffIDs = configuration.rootfs?.diffIDs ?? []
        guard diffIDs.count == manifest.layers.count else {
            throw OCIError(
                .integrity, "\(reference): the manifest lists \(manifest.layers.count) layers, the image config's rootfs.diff_ids \(diffIDs.count)",
                hint: "the image is inconsistent; rebuild or push it again")
        }
        var uncompressed: [Digest: Digest] = [:]
        for (layer, text) in zip(manifest.layers, diffIDs) {
            let diffID: Digest
            do { diffID = try Digest(parsing: text) } catch {
                throw OCIError(.manifest, "\(reference): the image config's diff_id \"\(text.prefix(100))\" is not a digest")
            }
            if let other = uncompressed[layer.digest], other != diffID {
                throw OCIError(.integrity, "\(reference): layer \(layer.digest.short) appears twice with different diff_ids in the image config")
            }
            uncompressed[layer.digest] = diffID
        }
        try store.writeFileAtomically(store.blobPath(fetched.digest), fetched.bytes)
        try store.writeFileAtomically(store.blobPath(manifest.config.digest), configBytes)

        // Layers, several at a time; each digest once.
        var seen = Set<Digest>()
        let unique = manifest.layers.filter { seen.insert($0.digest).inserted }
        var infos: [Digest: LayerInfo] = [:]
        try await withThrowingTaskGroup(of: (Digest, LayerInfo).self) { group in
            var pending = unique[...]
            var running = 0
            while true {
                while running < max(1, concurrency), let layer = pending.popFirst() {
                    running += 1
                    let diffID = uncompressed[layer.digest]
                    group.addTask { (layer.digest, try await self.fetchLayer(reference, layer, diffID: diffID, progress: progress)) }
                }
                guard let (digest, info) = try await group.next() else { break }
                running -= 1
                infos[digest] = info
            }
        }

        let record = ImageRecord(
            reference: reference.description, manifestDigest: fetched.digest, configDigest: manifest.config.digest,
            layers: manifest.layers, settings: configuration.config ?? .init(), platform: "\(platform.os)/\(platform.architecture)",
            pulledAt: Int64(time(nil)), downloadSize: manifest.layers.reduce(0) { $0 + $1.size },
            extractedSize: manifest.layers.reduce(0) { $0 + (infos[$1.digest]?.bytes ?? 0) })
        try store.save(record)
        return record
    }

    /// The manifest for `platform` in an index (a missing variant matches).
    static func select(_ platform: Descriptor.Platform, from index: ImageIndex, reference: ImageReference) throws(OCIError) -> Descriptor {
        let candidates = index.manifests.filter {
            $0.platform?.os == platform.os && $0.platform?.architecture == platform.architecture
                && [MediaType.ociManifest, MediaType.dockerManifest].contains($0.mediaType)
        }
        if let exact = candidates.first(where: { $0.platform?.variant == platform.variant }) ?? candidates.first { return exact }
        let available = index.manifests.compactMap { $0.platform.map { "\($0.os)/\($0.architecture)" + ($0.variant.map { "/" + $0 } ?? "") } }
        throw OCIError(
            .manifest, "\(reference) has no image for \(platform.os)/\(platform.architecture)",
            hint: available.isEmpty ? "the index lists no platforms" : "it has: " + available.joined(separator: ", "))
    }

    /// One layer: nothing when extracted already; else download (resuming), extract into a
    /// temporary directory, record, rename into place, drop the compressed blob. `diffID`:
    /// the digest the decompressed tar must have (the image config's).
    func fetchLayer(_ reference: ImageReference, _ layer: Descriptor, diffID: Digest?, progress: @escaping @Sendable (PullEvent) -> Void) async throws
        -> LayerInfo
    {
        let digest = layer.digest
        if store.hasLayer(digest), let info = store.layerInfo(digest) {
            if let diffID, let recorded = info.diffID, recorded != diffID.description {
                throw Self.diffIDMismatch(reference, digest, recorded: recorded, claimed: diffID)
            }
            progress(.layerCached(digest, size: layer.size))
            return info
        }
        let blob = store.blobPath(digest)
        var info = stat()
        if stat(blob, &info) != 0 {
            let partial = blob + ".partial"
            let report = try await client.download(reference, layer, partial: partial, destination: blob) { bytes in
                progress(.layerProgress(digest, bytes: bytes, total: layer.size))
            }
            if report.resumedFrom > 0 { progress(.layerResumed(digest, from: report.resumedFrom)) }
        }
        progress(.layerExtracting(digest))
        let result = try await Self.unpack(digest, store: store, extractor: extractor, name: "\(reference.repository) layer \(digest.short)") {
            info throws(OCIError) in
            if let diffID, info.diffID != diffID.description {
                throw Self.diffIDMismatch(reference, digest, recorded: info.diffID ?? "?", claimed: diffID)
            }
        }
        progress(.layerDone(digest, result))
        return result
    }

    static func diffIDMismatch(_ reference: ImageReference, _ layer: Digest, recorded: String, claimed: Digest) -> OCIError {
        OCIError(
            .integrity,
            "\(reference): layer \(layer.short) decompresses to \(recorded.prefix(19)), but the image config's rootfs.diff_ids says \(claimed.description.prefix(19))",
            hint: "the image config does not describe its layers; rebuild or push it again")
    }

    /// Extracts the verified blob of layer `digest` in the store into a temporary directory,
    /// lets `check` refuse what came out, records it, renames it into place and drops the blob
    /// (a hostile, broken or refused one too).
    static func unpack(
        _ digest: Digest, store: ImageStore, extractor: LayerExtractor, name: String,
        check: @escaping @Sendable (LayerInfo) throws(OCIError) -> Void = { _ in }
    ) async throws -> LayerInfo {
        let blob = store.blobPath(digest)
        let temporary = store.temporary + "/\(digest.hex).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        return try await NIOThreadPool.singleton.runIfActive { () throws(OCIError) -> LayerInfo in
            guard mkdir(temporary, 0o755) == 0 else {
                throw OCIError(.store, "cannot create \(temporary): \(errorText(errno))")
            }
            do throws(OCIError) {
                let info = try extractor.extract(blob: blob, into: temporary, name: name)
                try check(info)
                try store.writeJSON(info, to: store.layerInfoPath(digest))
                if rename(temporary, store.layerPath(digest)) != 0 {
                    let code = errno
                    // Someone else finished it first: theirs is as good.
                    guard code == ENOTEMPTY || code == EEXIST else {
                        throw OCIError(.store, "cannot move the extracted layer into place: \(errorText(code))")
                    }
                    try storeStep { try FileSystem.removeTree(temporary) }
                }
                unlink(blob)
                return info
            } catch {
                try? FileSystem.removeTree(temporary)
                // A blob that verified but does not extract is useless; a hostile one must go.
                unlink(blob)
                throw error
            }
        }
    }
}
