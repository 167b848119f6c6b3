import AirlockSystem
import ArgumentParser
import Sandbox

struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List this project's sandboxes: name, state, backend, accelerator, uptime."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: FormatOption

    func run() throws {
        let manager = try ProjectContext.load().manager(quiet: global.quiet)
        try Render.list(
            manager.list(), format: output, empty: "no sandboxes in \(manager.project.root); `airlock start` creates one",
            columns: [
                ("NAME", \.name), ("STATE", \.state), ("BACKEND", { $0.backend ?? "-" }), ("ACCEL", { $0.accelerator ?? "-" }),
                ("UPTIME", { $0.uptimeSeconds.map(formatDuration) ?? "-" }), ("PROJECT", \.project),
            ])
    }
}
