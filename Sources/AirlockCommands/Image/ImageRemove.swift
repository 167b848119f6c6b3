import AirlockSystem
import ArgumentParser
import OCI

struct ImageRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Forget an image and free the layers nothing else uses.",
        discussion: "Layers a sandbox still boots from are kept until `airlock rm` removes that sandbox and `airlock image prune` runs."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The image reference, as pulled.")
    var references: [String]

    func run() async throws {
        do {
            let store = ImageStore(root: ImageStore.defaultRoot(environment: processEnvironment()))
            let lock = try await store.lock()
            defer { withExtendedLifetime(lock) {} }
            var missing: [String] = []
            for text in references {
                let reference = try ImageReference(parsing: text)
                if store.removeRecord(reference) {
                    Terminal.standardOutput.write("removed \(reference)\n")
                } else {
                    missing.append(reference.description)
                }
            }
            let report = try store.prune(keepPartialDownloads: true)
            if !global.quiet && report.layers > 0 {
                Terminal.standardError.write("airlock: freed \(report.layers) layer(s), \(formatBytes(report.bytes))\n")
            }
            if !missing.isEmpty {
                throw OCIError(.store, "no such image: " + missing.joined(separator: ", "), hint: "`airlock image ls` lists the pulled ones")
            }
        } catch {
            throw reportAndExit(error)
        }
    }
}

struct ImagePrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove layers and blobs no image and no existing sandbox references, and interrupted downloads."
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        do {
            let store = ImageStore(root: ImageStore.defaultRoot(environment: processEnvironment()))
            let lock = try await store.lock()
            defer { withExtendedLifetime(lock) {} }
            let report = try store.prune()
            Terminal.standardOutput.write("removed \(report.layers) layer(s) and \(report.blobs) blob(s), \(formatBytes(report.bytes)) freed\n")
        } catch {
            throw reportAndExit(error)
        }
    }
}
