import ArgumentParser
import Sandbox

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Power a running sandbox off (its disk and clone stay for the next start)."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    func run() async throws {
        let manager = try ProjectContext.load().manager(quiet: global.quiet)
        do {
            let stopped = try await manager.stop(sandbox.name)
            if !global.quiet {
                Terminal.standardError.write(stopped ? "stopped sandbox \(sandbox.name)\n" : "sandbox \(sandbox.name) is not running\n")
            }
        } catch {
            throw reportAndExit(error)
        }
    }
}
