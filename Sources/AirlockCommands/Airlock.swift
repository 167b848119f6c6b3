import ArgumentParser

/// The `airlock` command tree.
public struct Airlock: ParsableCommand {
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
        subcommands: [DoctorCommand.self, ConfigCommand.self]
    )

    public init() {}
}
