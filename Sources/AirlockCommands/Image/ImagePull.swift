import ArgumentParser
import Logging
import NIOPosix
import OCI
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct ImagePull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download and unpack an image (for this host's platform).",
        discussion: """
            Examples:
              airlock image pull alpine
              airlock image pull debian:bookworm
              airlock image pull localhost:5000/team/ci@sha256:…
              airlock image pull --from docker my-local-build:dev
            By default ([vm] resolution = "auto") the local Docker daemon's copy is used when \
            its socket ($DOCKER_HOST if unix://…, else /var/run/docker.sock) answers and has the \
            reference; otherwise the image comes from its registry. An interrupted registry pull \
            resumes where it stopped when run again. A registry that wants a password and has \
            none in ~/.docker/config.json is asked for one on the terminal.
            """
    )

    enum Source: String, ExpressibleByArgument, CaseIterable {
        case auto, registry, docker
    }

    @OptionGroup var global: GlobalOptions

    @Option(help: "Where to read the image: docker (the local daemon), registry, or auto (overrides [vm] resolution).")
    var from: Source?

    @Argument(help: "The image reference.")
    var reference: String

    func validate() throws {
        do { _ = try ImageReference(parsing: reference) } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        do {
            let parsed = try ImageReference(parsing: reference)
            var context = try ImageContext.load()
            if let from { context.resolution = AirlockConfig.Resolution(rawValue: from.rawValue) ?? .auto }
            let record = try await context.pull(parsed, quiet: global.quiet)
            Terminal.standardOutput.write("\(record.reference)@\(record.manifestDigest)\n")
        } catch let error as ExitCode {
            throw error
        } catch {
            throw reportAndExit(error)
        }
    }
}

/// What the image commands and `start` share: the store, the registry options from the
/// configuration, pulling (from the registry or the local Docker daemon, by `[vm] resolution`)
/// with progress, and turning a record into a sandbox root.
struct ImageContext {
    var store: ImageStore
    var options: RegistryClient.Options
    var resolution: AirlockConfig.Resolution

    static func load(environment: [String: String] = ProcessEnvironment.current, config: AirlockConfig? = nil) throws -> ImageContext {
        let config = try config ?? ProjectContext.load(environment: environment).loaded.config
        var options = RegistryClient.Options(insecureRegistries: config.insecureRegistries, environment: environment)
        options.prompt = CredentialPrompt.forTerminal()
        return ImageContext(
            store: ImageStore(root: ImageStore.defaultRoot(environment: environment)), options: options, resolution: config.vm.resolution)
    }

    /// Pulls `reference` from where `resolution` says; `auto` says on stderr which it chose.
    func pull(_ reference: ImageReference, quiet: Bool) async throws -> ImageRecord {
        let note = { (text: String) in if !quiet { Terminal.standardError.write("airlock: \(reference): \(text)\n") } }
        switch resolution {
        case .registry:
            return try await pullFromRegistry(reference, quiet: quiet)
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
            return try await importFromDocker(reference, image: image, daemon: daemon, quiet: quiet)
        case .auto:
            let socket: String
            do { socket = try DockerDaemonClient.socketPath(environment: options.environment) } catch {
                note("pulling from the registry (\(error.message))")
                return try await pullFromRegistry(reference, quiet: quiet)
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
                return try await pullFromRegistry(reference, quiet: quiet)
            }
            note(
                "using the Docker daemon's copy (\(socket), image \(image.id.dropFirst(7).prefix(12))); [vm] resolution = \"registry\" or `--from registry` pulls instead"
            )
            return try await importFromDocker(reference, image: image, daemon: daemon, quiet: quiet)
        }
    }

    /// Imports `image` from the daemon, then shuts `daemon`'s client down.
    func importFromDocker(_ reference: ImageReference, image: DockerImage, daemon: DockerDaemonClient, quiet: Bool) async throws -> ImageRecord {
        let renderer = PullProgress(quiet: quiet)
        do {
            let record = try await DockerImporter(store: store, daemon: daemon).pull(reference, image: image) { renderer.handle($0) }
            renderer.finish()
            await daemon.shutdown()
            return record
        } catch {
            renderer.finish(succeeded: false)
            await daemon.shutdown()
            throw error
        }
    }

    func pullFromRegistry(_ reference: ImageReference, quiet: Bool) async throws -> ImageRecord {
        let client = RegistryClient(options: options)
        let renderer = PullProgress(quiet: quiet)
        do {
            let record = try await ImagePuller(store: store, client: client).pull(reference) { renderer.handle($0) }
            renderer.finish()
            await client.shutdown()
            return record
        } catch {
            renderer.finish(succeeded: false)
            await client.shutdown()
            throw error
        }
    }

    /// The sandbox root for `record`: its layers (all must be extracted) and its settings.
    /// With `tar2sqfs`, each layer also reaches the guest as a squashfs disk (`LayerTransport`),
    /// built the first time it is needed, with a line of progress for each.
    func root(_ record: ImageRecord, blockImagesWith tar2sqfs: String? = nil, quiet: Bool = true) async throws -> ImageRoot {
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
                    if !quiet {
                        Terminal.standardError.write(
                            "airlock: \(record.reference): building the block image of layer \(index + 1)/\(record.layers.count) (\(layer.digest.short), \(formatBytes(info.bytes)))\n"
                        )
                    }
                }
                let store = self.store
                blockImage = try await NIOThreadPool.singleton.runIfActive {
                    try store.layerImage(layer.digest) { output, log in
                        let status = try ChildProcess.feed(
                            tar2sqfs, ["--quiet", "--no-skip", "--force", "--compressor", "zstd", "--defaults", "uid=0,gid=0,mode=0755", output],
                            log: log
                        ) { fd in
                            try LayerTar.write(layer: store.layerPath(layer.digest), to: fd)
                        }
                        guard status == 0 else {
                            let reason = tailLines(of: log, count: 5).joined(separator: "; ")
                            throw SandboxError(
                                "tar2sqfs could not build the block image of layer \(layer.digest.short) (exit status \(status))\(reason.isEmpty ? "" : ": \(reason)")",
                                hint:
                                    "check the free space of \(store.root); `airlock image rm \(record.reference)` and pull it again if the layer is damaged"
                            )
                        }
                    }
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
}
