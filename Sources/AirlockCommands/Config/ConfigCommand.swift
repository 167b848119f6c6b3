import ArgumentParser

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show or check the configuration of this project.",
        discussion: """
            Layers, lowest first: ~/.airlock/config.toml or ~/.airlock.toml (the Rust \
            airlock's user file), ~/.config/airlock/config.toml (user), presets named by \
            `presets = [...]`, airlock.toml (project, shared), airlock.local.toml (personal, \
            git-ignored). Tables merge, arrays concatenate, scalars override; `enabled = false` \
            switches off a named entry from a lower layer.
            """,
        subcommands: [ConfigShow.self, ConfigValidate.self],
        defaultSubcommand: ConfigShow.self
    )
}
