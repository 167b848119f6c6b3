import AirlockSystem
import Config
import Machine
import NIOPosix
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// Shows an image pull as it happens (the command layer draws it on the terminal).
public protocol PullReporting: Sendable {
    func handle(_ event: PullEvent)
    /// The pull ended; `succeeded` false when it threw.
    func finish(succeeded: Bool)
}

/// What the image commands and a sandbox's start share: the store, the registry options from
/// the configuration, pulling (from the registry or the local Docker daemon, by `[vm]
/// resolution`), and turning a record into a sandbox root.
public struct Images: Sendable {
    public var store: ImageStore
    public var options: RegistryClient.Options
    public var resolution: AirlockConfig.Resolution
    /// One reporter per pull; nil shows nothing.
    public var reporter: (@Sendable () -> any PullReporting)?
    /// Notes for the user (which source `auto` chose, block images being built); nil for quiet.
    public var note: (@Sendable (String) -> Void)?

    public init(
        config: AirlockConfig, environment: [String: String], credentials: (@Sendable (String) -> Credentials?)? = nil,
        reporter: (@Sendable () -> any PullReporting)? = nil, note: (@Sendable (String) -> Void)? = nil
    ) {
        var insecure = config.insecureRegistries
        if config.vm.imageInsecure, let reference = try? ImageReference(parsing: config.vm.image) { insecure.insert(reference.registry) }
        var options = RegistryClient.Options(insecureRegistries: insecure, environment: environment)
        options.prompt = credentials
        self.store = ImageStore(root: ImageStore.defaultRoot(environment: environment))
        self.options = options
        self.resolution = config.vm.resolution
        self.reporter = reporter
        self.note = note
    }

    /// Pulls `reference` from where `resolution` says; `auto` notes which it chose.
    public func pull(_ reference: ImageReference) async throws -> ImageRecord {
        let note = { (text: String) in self.note?("\(reference): \(text)") }
        switch resolution {
        case .registry:
            return try await pullFromRegistry(reference)
        case .docker:
            let socket = try DockerDaemonClient.socketPath(environment: options.environment)
            let daemon = DockerDaemonClient(socketPath: socket)
            let image: DockerImage
            do {
                if let reason = await daemon.ping() {
                    throw OCIError(
                        .transport, "resolution \"docker\": no Docker daemon answers on \(socket): \(reason)",
                        hint: DockerDaemonClient.startHint(socket))
                }
                guard let found = try await daemon.inspect(reference) else {
                    throw OCIError(
                        .notFound, "the Docker daemon at \(socket) has no image \(reference)",
                        hint:
                            "`docker pull \(reference)` (or build it) first, or read it from its registry: `--from registry` / [vm] resolution = \"registry\""
                    )
                }
                image = found
            } catch {
                await daemon.shutdown()
                throw error
            }
            note("reading the Docker daemon's copy (\(socket), image \(image.id.dropFirst(7).prefix(12)))")
            return try await importFromDocker(reference, image: image, daemon: daemon)
        case .auto:
            let socket: String
            do { socket = try DockerDaemonClient.socketPath(environment: options.environment) } catch {
                note("pulling from the registry (\(error.message))")
                return try await pullFromRegistry(reference)
            }
            let daemon = DockerDaemonClient(socketPath: socket)
            var image: DockerImage?
            var why: String
            if let reason = await daemon.ping(timeout: .seconds(2)) {
                why = "no Docker daemon: \(reason)"
            } else {
                do {
                    image = try await daemon.inspect(reference)
                    why = "the Docker daemon at \(socket) does not have it"
                } catch {
                    why = "the Docker daemon at \(socket) failed: \((error as? OCIError)?.message ?? "\(error)")"
                }
            }
            guard let image else {
                await daemon.shutdown()
                note("pulling from the registry (\(why))")
                return try await pullFromRegistry(reference)
            }
            note(
                "using the Docker daemon's copy (\(socket), image \(image.id.dropFirst(7).prefix(12))); [vm] resolution = \"registry\" or `--from registry` pulls instead"
            )
            return try await importFromDocker(reference, image: image, daemon: daemon)
        }
    }

    /// Imports `image` from the daemon, then shuts `daemon`'s client down.
    private func importFromDocker(_ reference: ImageReference, image: DockerImage, daemon: DockerDaemonClient) async throws -> ImageRecord {
        let shown = reporter?()
        do {
            let record = try await DockerImporter(store: store, daemon: daemon).pull(reference, image: image) { shown?.handle($0) }
            shown?.finish(succeeded: true)
            await daemon.shutdown()
            return record
        } catch {
            shown?.finish(succeeded: false)
            await daemon.shutdown()
            throw error
        }
    }

    private func pullFromRegistry(_ reference: ImageReference) async throws -> ImageRecord {
        let client = RegistryClient(options: options)
        let shown = reporter?()
        do {
            let record = try await ImagePuller(store: store, client: client).pull(reference) { shown?.handle($0) }
            shown?.finish(succeeded: true)
            await client.shutdown()
            return record
        } catch {
            shown?.finish(succeeded: false)
            await client.shutdown()
            throw error
        }
    }

    /// The sandbox root for `record`: its layers (all must be extracted) and its settings.
    /// With `tar2sqfs`, each layer also reaches the guest as a squashfs disk (`LayerTransport`),
    /// built (on NIO's blocking pool) the first time it is needed, with a note for each.
    public func root(_ record: ImageRecord, blockImagesWith tar2sqfs: String? = nil) async throws -> ImageRoot {
        var layers: [ImageRoot.Layer] = []
        var lock: StoreLock?
        defer { withExtendedLifetime(lock) {} }
        for (index, layer) in record.layers.enumerated() {
            guard store.hasLayer(layer.digest), let info = store.layerInfo(layer.digest) else {
                throw SandboxError(
                    "layer \(layer.digest.short) of \(record.reference) is missing from \(store.root)",
                    hint: "`airlock image pull \(record.reference)` again")
            }
            var blockImage: String?
            if let tar2sqfs {
                let path = store.layerImagePath(layer.digest)
                if access(path, R_OK) != 0 {
                    // Taken once, before the first build: `image prune` must not sweep tmp/ meanwhile.
                    if lock == nil { lock = try await store.lock() }
                    note?(
                        "\(record.reference): building the block image of layer \(index + 1)/\(record.layers.count) (\(layer.digest.short), \(formatBytes(info.bytes)))"
                    )
                }
                blockImage = try await NIOThreadPool.singleton.runIfActive { [store] in
                    try Self.buildBlockImage(store: store, layer: layer.digest, reference: record.reference, tar2sqfs: tar2sqfs)
                }
            }
            layers.append(.init(hostPath: store.layerPath(layer.digest), whiteouts: info.whiteouts, blockImage: blockImage))
        }
        let text = { (path: String) in store.readImageFile(record, path).map { String(decoding: $0, as: UTF8.self) } }
        let user = try ImageRoot.resolveUser(record.settings.user, passwd: text("etc/passwd"), group: text("etc/group"))
        return ImageRoot(
            reference: record.reference, manifestDigest: record.manifestDigest.description, layers: layers,
            environment: record.settings.env ?? [], entrypoint: record.settings.entrypoint ?? [], command: record.settings.cmd ?? [],
            workingDirectory: record.settings.workingDir.flatMap { $0.isEmpty ? nil : $0 }, user: user)
    }

    /// The layer's squashfs image, built by `tar2sqfs` from the layer written back as a tar
    /// (`LayerTar`) when the store has none yet. Blocking.
    private static func buildBlockImage(store: ImageStore, layer: Digest, reference: String, tar2sqfs: String) throws -> String {
        try store.layerImage(layer) { output, log in
            let status = try ChildProcess.feed(
                tar2sqfs, ["--quiet", "--no-skip", "--force", "--compressor", "zstd", "--defaults", "uid=0,gid=0,mode=0755", output], log: log
            ) { fd in
                try LayerTar.write(layer: store.layerPath(layer), to: fd)
            }
            guard status == 0 else {
                let reason = FileSystem.tailLines(of: log, count: 5).joined(separator: "; ")
                throw SandboxError(
                    "tar2sqfs could not build the block image of layer \(layer.short) (exit status \(status))\(reason.isEmpty ? "" : ": \(reason)")",
                    hint: "check the free space of \(store.root); `airlock image rm \(reference)` and pull it again if the layer is damaged")
            }
        }
    }

    /// For `[vm] image = "REF"`: the image's root from the store, pulled first when missing and
    /// `pullIfMissing`, and noted as used by the sandbox in `stateDirectory` (so `image prune`
    /// keeps it). `transport`: how its layers reach the guest (block images need `tar2sqfs`).
    func sandboxRoot(
        _ image: String, stateDirectory: String, pullIfMissing: Bool, transport: LayerTransport?, tar2sqfs: String?
    ) async throws -> ImageRoot {
        let reference = try ImageReference(parsing: image)
        var record = store.record(for: reference)
        if record == nil {
            guard pullIfMissing else {
                throw SandboxError("the image \(reference) is not pulled", hint: "`airlock image pull \(image)`")
            }
            record = try await pull(reference)
        }
        guard let record else { throw SandboxError("the image \(reference) is not pulled", hint: "`airlock image pull \(image)`") }
        let root = try await root(record, blockImagesWith: transport == .block ? tar2sqfs : nil)
        if pullIfMissing { try store.recordSandbox(stateDirectory: stateDirectory, record: record) }
        return root
    }
}
