import ArgumentParser
import Sandbox

struct ConfigValidate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check every configuration layer; print each error with file:line:column.",
        discussion: "Exits 0 when the configuration is valid, 2 when it is not."
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let context = try ProjectContext.load()
        let layers = context.loaded.layers.map(\.displayPath)
        if !global.quiet {
            Terminal.standardOutput.write(
                layers.isEmpty
                    ? "ok: no configuration files; the defaults apply\n"
                    : "ok: " + layers.joined(separator: ", ") + "\n")
        }
    }
}
