import AirlockSystem
import FoundationEssentials
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Imports an image from the local Docker daemon into an `ImageStore`: the daemon's
/// `docker save` export streams straight into `DockerArchive` (no second copy of the archive on
/// disk), then everything is checked as if a registry had sent it — the config against the
/// image ID, every layer against the config's `rootfs.diff_ids` — and the layers go through the
/// same extraction as a pull. The record says `source = "docker"`; its manifest is one airlock
/// writes for the exported layers (Docker's export carries no registry manifest to keep).
///
/// Concurrency: the archive is read by libarchive on a thread of its own, fed through a socket
/// pair by the task that receives the HTTP body (its blocking writes run on NIO's thread pool).
public struct DockerImporter: Sendable {
    public var store: ImageStore
    public var daemon: DockerDaemonClient
    public var extractor = LayerExtractor()
    public var platform = HostPlatform.current
    var limits = DockerArchive.Limits()

    public init(store: ImageStore, daemon: DockerDaemonClient) {
        self.store = store
        self.daemon = daemon
    }

    /// Imports `image` (what `daemon.inspect(reference)` returned) as `reference`.
    public func pull(_ reference: ImageReference, image: DockerImage, progress: @escaping @Sendable (PullEvent) -> Void = { _ in }) async throws
        -> ImageRecord
    {
        let what = "\(reference) (Docker daemon)"
        if let os = image.os, os != platform.os {
            throw OCIError(.manifest, "\(what): the image is for \(os), this host runs \(platform.os)")
        }
        if let architecture = image.architecture, architecture != platform.architecture {
            throw OCIError(
                .manifest, "\(what): the image is for \(architecture), this host runs \(platform.architecture)",
                hint: "pull one for \(platform.architecture) with `docker pull --platform linux/\(platform.architecture)`, or use --from registry")
        }
        let lock = try await store.lock()
        defer { withExtendedLifetime(lock) {} }
        try store.prepare()
        let staging = store.temporary + "/docker.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(staging, 0o700) == 0 else { throw OCIError(.store, "cannot create \(staging): \(errorText(errno))") }
        defer { try? FileSystem.removeTree(staging) }

        let archive = try await receive(image, reference: reference, into: staging, what: what, progress: progress)

        // manifest.json: one image (the one asked for).
        let manifestBytes = try archive.readDocument("manifest.json", limit: 1 << 20).bytes
        let saved: [DockerSaveManifest]
        do { saved = try JSONDecoder().decode([DockerSaveManifest].self, from: Data(manifestBytes)) } catch {
            throw OCIError(.manifest, "\(what): the export's manifest.json is not what `docker save` writes", cause: error)
        }
        guard let entry = saved.count == 1 ? saved.first : saved.first(where: { (try? archive.resolve($0.config).digest.description) == image.id })
        else {
            throw OCIError(.manifest, "\(what): the export's manifest.json lists \(saved.count) images, none of them \(image.id)")
        }

        // The config: the image ID itself (classic store) or named by a blob of the export
        // whose digest is the ID (containerd store: the ID is the index's digest).
        let (configBytes, configEntry) = try archive.readDocument(entry.config, limit: limits.documentBytes)
        guard configEntry.digest.description == image.id || archive.entries.values.contains(where: { $0.digest.description == image.id }) else {
            throw OCIError(
                .integrity, "\(what): the exported config has digest \(configEntry.digest), but the daemon describes the image as \(image.id)",
                hint: "the image changed while it was exported, or the export is tampered with; try again")
        }
        let configuration: ImageConfiguration
        do { configuration = try JSONDecoder().decode(ImageConfiguration.self, from: Data(configBytes)) } catch {
            throw OCIError(.manifest, "\(what): the image config is not valid JSON", cause: error)
        }
        if let os = configuration.os, os != platform.os {
            throw OCIError(.manifest, "\(what): the image is for \(os), this host runs \(platform.os)")
        }
        if let architecture = configuration.architecture, architecture != platform.architecture {
            throw OCIError(.manifest, "\(what): the image is for \(architecture), this host runs \(platform.architecture)")
        }
        let diffIDs = configuration.rootfs?.diffIDs ?? []
        guard diffIDs.count == entry.layers.count else {
            throw OCIError(.integrity, "\(what): the export lists \(entry.layers.count) layers, the image config's rootfs.diff_ids \(diffIDs.count)")
        }
        guard entry.layers.count <= 127 else { throw OCIError(.manifest, "\(what): \(entry.layers.count) layers (at most 127 are accepted)") }

        // Each layer is the tar its diff_id names (Docker exports them uncompressed; a
        // compressed one is checked after decompression).
        var layers: [Descriptor] = []
        var files: [Digest: String] = [:]
        for (index, name) in entry.layers.enumerated() {
            let staged = try archive.resolve(name)
            let diffID = try Digest(parsing: diffIDs[index])
            var mediaType = "application/vnd.oci.image.layer.v1.tar"
            if staged.digest != diffID {
                mediaType = DockerArchive.layerMediaType(staged.file)
                let file = staged.file
                var uncompressed = staged.digest
                if !mediaType.hasSuffix(".tar") {
                    uncompressed = try await NIOThreadPool.singleton.runIfActive { try DockerArchive.uncompressedDigest(file, what: what) }
                }
                guard uncompressed == diffID else {
                    throw OCIError(
                        .integrity,
                        "\(what): layer \(index + 1) (\(name.prefix(120))) has digest \(uncompressed), the image config's diff_id is \(diffID)",
                        hint: "the export is corrupt or tampered with; nothing was unpacked")
                }
            }
            layers.append(Descriptor(mediaType: mediaType, digest: staged.digest, size: staged.size))
            files[staged.digest] = staged.file
        }

        // A manifest for the record, as a registry would have one.
        let manifest = ImageManifest(
            config: Descriptor(mediaType: MediaType.ociConfig, digest: configEntry.digest, size: Int64(configBytes.count)), layers: layers)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let manifestData: [UInt8]
        do { manifestData = Array(try encoder.encode(manifest)) } catch { throw OCIError(.store, "cannot encode a manifest", cause: error) }
        let manifestDigest = Digest(of: manifestData)
        progress(.resolved(reference: reference.description, manifest: manifestDigest, layers: layers))

        var infos: [Digest: LayerInfo] = [:]
        var seen = Set<Digest>()
        for layer in layers where seen.insert(layer.digest).inserted {
            if store.hasLayer(layer.digest), let info = store.layerInfo(layer.digest) {
                progress(.layerCached(layer.digest, size: layer.size))
                infos[layer.digest] = info
                continue
            }
            guard let file = files[layer.digest], rename(file, store.blobPath(layer.digest)) == 0 else {
                throw OCIError(.store, "cannot move layer \(layer.digest.short) into \(store.root): \(errorText(errno))")
            }
            progress(.layerExtracting(layer.digest))
            let info = try await ImagePuller.unpack(
                layer.digest, store: store, extractor: extractor, name: "\(reference.repository) layer \(layer.digest.short) (Docker daemon)")
            progress(.layerDone(layer.digest, info))
            infos[layer.digest] = info
        }
        try store.writeFileAtomically(store.blobPath(configEntry.digest), configBytes)
        try store.writeFileAtomically(store.blobPath(manifestDigest), manifestData)

        let record = ImageRecord(
            reference: reference.description, manifestDigest: manifestDigest, configDigest: configEntry.digest,
            layers: layers, settings: configuration.config ?? .init(), platform: "\(platform.os)/\(platform.architecture)",
            pulledAt: Int64(time(nil)), downloadSize: layers.reduce(0) { $0 + $1.size },
            extractedSize: layers.reduce(0) { $0 + (infos[$1.digest]?.bytes ?? 0) }, source: "docker", dockerImageID: image.id)
        try store.save(record)
        return record
    }

    /// The export, streamed into `DockerArchive.stage` through a socket pair.
    func receive(
        _ image: DockerImage, reference: ImageReference, into staging: String, what: String, progress: @escaping @Sendable (PullEvent) -> Void
    ) async throws -> DockerArchive {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw OCIError(.store, "socketpair: \(errorText(errno))")
        }
        let (readFD, writeFD) = (fds[0], fds[1])
        // libarchive blocks in read(2) for the whole export: a thread of its own, so it never
        // waits for a thread the writer below occupies.
        let readerPool = NIOThreadPool(numberOfThreads: 1)
        readerPool.start()
        let limits = self.limits
        let reader = Task {
            try await readerPool.runIfActive { () throws(OCIError) -> DockerArchive in
                defer { close(readFD) }
                return try DockerArchive.stage(fd: readFD, into: staging, what: what, limits: limits)
            }
        }
        var writeError: (any Error)?
        var received: Int64 = 0
        let estimate = image.size ?? 0
        do {
            try await daemon.export(image.id, reference: reference, limit: limits.totalBytes + (1 << 30)) { chunk in
                received += Int64(chunk.readableBytes)
                try await NIOThreadPool.singleton.runIfActive { try Self.sendAll(writeFD, chunk) }
                progress(.exportProgress(bytes: received, estimate: estimate))
            }
        } catch {
            writeError = error
        }
        shutdown(writeFD, Int32(SHUT_WR))
        close(writeFD)
        let result = await reader.result
        try? await readerPool.shutdownGracefully()
        switch result {
        case .success(let archive):
            // The reader stops at the tar's end marker; padding after it may find it gone.
            if let writeError, !(writeError is ReaderGone) { throw writeError }
            return archive
        case .failure(let readError):
            // The reader's complaint is the precise one, unless the daemon's stream broke first
            // (then the reader only saw a truncated archive).
            if let writeError, !(writeError is ReaderGone) { throw writeError }
            throw readError
        }
    }

    /// The reader stopped reading (it refused the archive); its error says why.
    struct ReaderGone: Error {}

    static func sendAll(_ fd: Int32, _ buffer: ByteBuffer) throws {
        do {
            try buffer.withUnsafeReadableBytes { bytes in try Syscall.sendAll(fd, bytes, subject: "the image reader") }
        } catch {
            throw ReaderGone()
        }
    }
}
