import ArgumentParser
import Sandbox

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a running sandbox.",
        discussion: "Like `start`, but never boots: fails when the sandbox is not running."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(
        name: .shortAndLong, parsing: .unconditionalSingleValue, help: ArgumentHelp("Set a variable in the session.", valueName: "NAME=VALUE"))
    var env: [String] = []

    @Argument(parsing: .captureForPassthrough, help: "The command to run (after --).")
    var command: [String] = []

    func validate() throws {
        try validateAssignments(env)
    }

    func run() async throws {
        let manager = try ProjectContext.load(secrets: true).manager(quiet: global.quiet)
        do {
            let ended = try await manager.exec(sandbox.name, sessionRequest(command: command, environment: env))
            throw ExitCode(ended.code)
        } catch {
            throw reportAndExit(error)
        }
    }
}

/// `-e` values must be NAME=VALUE with a name.
func validateAssignments(_ entries: [String]) throws {
    for entry in entries where !entry.contains("=") || entry.hasPrefix("=") {
        throw ValidationError("-e \(entry): write NAME=VALUE")
    }
}
