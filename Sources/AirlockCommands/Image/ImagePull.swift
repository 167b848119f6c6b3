import ArgumentParser
import Logging
import OCI
import Sandbox

struct ImagePull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download and unpack an image (for this host's platform).",
        discussion: """
            Examples:
              airlock image pull alpine
              airlock image pull debian:bookworm
              airlock image pull localhost:5000/team/ci@sha256:…
            An interrupted pull resumes where it stopped when run again.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The image reference.")
    var reference: String

    func validate() throws {
        do { _ = try ImageReference(parsing: reference) } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        do {
            let parsed = try ImageReference(parsing: reference)
            let context = try ImageContext.load()
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
/// configuration, pulling with progress, and turning a record into a sandbox root.
struct ImageContext {
    var store: ImageStore
    var options: RegistryClient.Options

    static func load(environment: [String: String] = ProcessEnvironment.current, config: AirlockConfig? = nil) throws -> ImageContext {
        let config = try config ?? ProjectContext.load(environment: environment).loaded.config
        return ImageContext(
            store: ImageStore(root: ImageStore.defaultRoot(environment: environment)),
            options: RegistryClient.Options(insecureRegistries: config.insecureRegistries, environment: environment))
    }

    func pull(_ reference: ImageReference, quiet: Bool) async throws -> ImageRecord {
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
    func root(_ record: ImageRecord) throws -> ImageRoot {
        var layers: [ImageRoot.Layer] = []
        for layer in record.layers {
            guard store.hasLayer(layer.digest), let info = store.layerInfo(layer.digest) else {
                throw SandboxError("layer \(layer.digest.short) of \(record.reference) is missing from \(store.root)", hint: "`airlock image pull \(record.reference)` again")
            }
            layers.append(.init(hostPath: store.layerPath(layer.digest), whiteouts: info.whiteouts))
        }
        let text = { (path: String) in store.readImageFile(record, path).map { String(decoding: $0, as: UTF8.self) } }
        let user = try ImageRoot.resolveUser(record.settings.user, passwd: text("etc/passwd"), group: text("etc/group"))
        return ImageRoot(
            reference: record.reference, manifestDigest: record.manifestDigest.description, layers: layers,
            environment: record.settings.env ?? [], entrypoint: record.settings.entrypoint ?? [], command: record.settings.cmd ?? [],
            workingDirectory: record.settings.workingDir.flatMap { $0.isEmpty ? nil : $0 }, user: user)
    }
}
