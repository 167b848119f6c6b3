import ArgumentParser

/// `--format table|json` (and `--json`, its alias), for every command that prints a list or a
/// record.
struct FormatOption: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @Option(help: "How to print the result: a table for people, or JSON for scripts.")
    var format: Format = .table

    @Flag(help: "The same as --format json.")
    var json = false

    var isJSON: Bool { json || format == .json }
}
