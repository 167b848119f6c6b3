import ArgumentParser

/// The `airlock` command tree.
public struct Airlock: AsyncParsableCommand {
    public static let version = "0.1.0"

    public static let configuration = CommandConfiguration(
        commandName: "airlock",
        abstract: "Run AI coding agents in disposable microVMs; bring their work home as git commits.",
        discussion: """
            airlock boots a microVM for the project in the current directory, gives the agent a \
            clone of the repository and a deny-by-default network, and lets it do anything \
            inside. Its commits come home for review.

            Start with `airlock doctor` to see what this host can run.
            """,
        version: version,
        subcommands: [
            StartCommand.self, ExecCommand.self, PsCommand.self, StopCommand.self, RmCommand.self,
            FetchCommand.self, DiffCommand.self, LogCommand.self, ReviewCommand.self, MergeCommand.self,
            DoctorCommand.self, ConfigCommand.self, NetworkCommand.self, ImageCommand.self, SecretsCommand.self,
        ]
    )

    public init() {}
}

extension Airlock {
    /// Parses the command line and runs the chosen command (async: sessions stream over NIO).
    public static func runFromCommandLine() async {
        await (Airlock.self as any AsyncParsableCommand.Type).main(nil)
    }
}
