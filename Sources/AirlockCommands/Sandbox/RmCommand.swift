import ArgumentParser
import Sandbox

struct RmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Delete a sandbox: its disk, its clone of the project and its logs.",
        discussion: "Refuses while the sandbox runs unless --force, which stops it first."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Flag(name: .shortAndLong, help: "Stop the sandbox first if it is running.")
    var force = false

    func run() async throws {
        let manager = try ProjectContext.load().manager(quiet: global.quiet)
        do {
            try await manager.remove(sandbox.name, force: force)
            if !global.quiet { Terminal.standardError.write("removed sandbox \(sandbox.name)\n") }
        } catch {
            throw reportAndExit(error)
        }
    }
}
