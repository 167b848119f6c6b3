import AirlockSystem
import ArgumentParser
import OCI

#if canImport(Glibc)
import Glibc
#endif

struct ImageList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List pulled images.")

    @OptionGroup var global: GlobalOptions

    @OptionGroup var output: FormatOption

    struct Row: Encodable {
        var reference: String
        var digest: String
        var platform: String
        /// `registry` or `docker` (the local daemon's copy).
        var source: String
        var dockerImageID: String?
        var layers: Int
        var downloadSize: Int64
        var extractedSize: Int64
        var pulledAt: Int64
    }

    func run() throws {
        let store = ImageStore(root: ImageStore.defaultRoot(environment: processEnvironment()))
        let rows = store.records().map {
            Row(
                reference: $0.reference, digest: $0.manifestDigest.description, platform: $0.platform, source: $0.sourceName,
                dockerImageID: $0.dockerImageID, layers: $0.layers.count,
                downloadSize: $0.downloadSize, extractedSize: $0.extractedSize, pulledAt: $0.pulledAt)
        }
        try Render.list(
            rows, format: output, empty: "no images in \(store.root); `airlock image pull REF` fetches one",
            columns: [
                ("REFERENCE", \.reference), ("DIGEST", { String($0.digest.dropFirst(7).prefix(12)) }), ("SOURCE", \.source),
                ("LAYERS", { "\($0.layers)" }),
                ("SIZE", { formatBytes($0.extractedSize) }), ("PULLED", { formatDuration(Int64(time(nil)) - $0.pulledAt) + " ago" }),
            ])
    }
}
