import ArgumentParser
import Config
import Sandbox

struct ConfigValidate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check every configuration layer; print each error with file:line:column.",
        discussion:
            "Also checks it against this host: CPUs, memory, free space for the state disk. Exits 0 when the configuration is valid, 2 when it is not."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    func run() throws {
        let context = try ProjectContext.load(secrets: true)
        let problems = try context.manager(quiet: global.quiet).startProblems(sandbox.name)
        if !problems.isEmpty { throw reportAndExit(ConfigError(problems)) }
        let layers = context.loaded.layers.map(\.displayPath)
        if !global.quiet {
            Terminal.standardOutput.write(
                layers.isEmpty
                    ? "ok: no configuration files; the defaults apply\n"
                    : "ok: " + layers.joined(separator: ", ") + "\n")
        }
    }
}
