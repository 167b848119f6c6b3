import ArgumentParser

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Inspect the sandbox's network: every connection the policy judged.",
        discussion: """
            The VM has no network card: each TCP connection it makes is judged on the host by \
            [network] policy and [network.rules.*] in airlock.toml, and every decision is \
            written to the sandbox's audit log.
            """,
        subcommands: [NetworkLogCommand.self],
        defaultSubcommand: NetworkLogCommand.self
    )
}
