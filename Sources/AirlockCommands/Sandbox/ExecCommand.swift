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

    @Option(name: .shortAndLong, parsing: .unconditionalSingleValue, help: ArgumentHelp("Set a variable in the session.", valueName: "NAME=VALUE"))
    var env: [String] = []

    @Argument(parsing: .captureForPassthrough, help: "The command to run (after --).")
    var command: [String] = []

    func run() async throws {
        let context = try ProjectContext.load()
        let launcher = SessionLauncher(context: context, sandbox: sandbox, verbose: false, quiet: global.quiet)
        let arguments = command.first == "--" ? Array(command.dropFirst()) : command
        do {
            var runner = try launcher.runner()
            try await launcher.applyImage(&runner, booting: nil, pullIfMissing: false)
            let spec = launcher.spec(runner, command: arguments, environment: Dictionary(env.map(splitAssignment), uniquingKeysWith: { $1 }))
            let ended = try await runner.attach(spec)
            throw ExitCode(ended.code)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw reportAndExit(error)
        }
    }
}
