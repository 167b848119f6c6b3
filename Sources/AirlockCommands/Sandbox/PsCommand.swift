import AirlockSystem
import ArgumentParser
import GuestLink
import Sandbox

struct PsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract:
            "List this project's sandboxes: name, state, backend, accelerator, uptime, daemons, the services' sign-ins (and, with --json, their [disk.cache.*])."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: FormatOption

    func run() async throws {
        let manager = try ProjectContext.load().manager(quiet: global.quiet)
        var sandboxes: [SandboxStatus] = []
        for sandbox in manager.list() { sandboxes.append(await manager.live(sandbox)) }
        try Render.list(
            sandboxes, format: output, empty: "no sandboxes in \(manager.project.root); `airlock start` creates one",
            columns: [
                ("NAME", \.name), ("STATE", \.state), ("BACKEND", { $0.backend ?? "-" }), ("ACCEL", { $0.accelerator ?? "-" }),
                ("UPTIME", { $0.uptimeSeconds.map(formatDuration) ?? "-" }),
                ("DAEMONS", { $0.daemons.isEmpty ? "-" : $0.daemons.map { "\($0.name) \($0.state.rawValue)" }.joined(separator: ", ") }),
                ("SIGN-IN", Self.signIns),
                ("PROJECT", \.project),
            ])
    }

    /// `anthropic dev@example.com`, `openai not signed in`; `-` without a service.
    static func signIns(_ status: SandboxStatus) -> String {
        guard let signIns = status.signIns, !signIns.isEmpty else { return "-" }
        return signIns.map { "\($0.service) \($0.signedIn ? ($0.account ?? "signed in") : "not signed in")" }.joined(separator: ", ")
    }
}
