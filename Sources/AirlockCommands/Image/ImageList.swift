import ArgumentParser
import OCI

#if canImport(Glibc)
import Glibc
#endif

struct ImageList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List pulled images.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print a JSON array, one object per image.")
    var json = false

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
        let store = ImageStore(root: ImageStore.defaultRoot(environment: ProcessEnvironment.current))
        let rows = store.records().map {
            Row(
                reference: $0.reference, digest: $0.manifestDigest.description, platform: $0.platform, source: $0.sourceName,
                dockerImageID: $0.dockerImageID, layers: $0.layers.count,
                downloadSize: $0.downloadSize, extractedSize: $0.extractedSize, pulledAt: $0.pulledAt)
        }
        if json {
            try printJSON(rows)
            return
        }
        let out = Terminal.standardOutput
        guard !rows.isEmpty else {
            out.write("no images in \(store.root); `airlock image pull REF` fetches one\n")
            return
        }
        let table =
            [["REFERENCE", "DIGEST", "SOURCE", "LAYERS", "SIZE", "PULLED"]]
            + rows.map {
                [
                    $0.reference, String($0.digest.dropFirst(7).prefix(12)), $0.source, "\($0.layers)", formatBytes($0.extractedSize),
                    formatDuration(Int64(time(nil)) - $0.pulledAt) + " ago",
                ]
            }
        let widths = (0..<6).map { column in table.map { $0[column].count }.max() ?? 0 }
        for row in table {
            out.write(zip(row, widths).map { $0.padding(to: $1) }.joined(separator: "  ").trimmingTrailingSpaces() + "\n")
        }
    }
}
