import AirlockSystem
import ArgumentParser
import Config
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
            var images = try ProjectContext.load().images(quiet: global.quiet)
            if let from { images.resolution = AirlockConfig.Resolution(rawValue: from.rawValue) ?? .auto }
            let record = try await images.pull(parsed)
            Terminal.standardOutput.write("\(record.reference)@\(record.manifestDigest)\n")
        } catch {
            throw reportAndExit(error)
        }
    }
}
