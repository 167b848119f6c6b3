import AirlockSystem
import ArgumentParser
import Config
import Sandbox

/// `--name`, shared by the commands that act on one sandbox.
struct SandboxNameOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "The sandbox, when a project has several.")
    var name: String = SandboxPaths.defaultName

    func validate() throws {
        do {
            try SandboxPaths.validate(name: name)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

/// Prints an error and gives the exit status for it: 2 for configuration errors (each with its
/// `file:line:column`), 1 for everything else (the user's command never ran). An `ExitCode`
/// passes through unchanged.
func reportAndExit(_ error: any Error) -> ExitCode {
    if let exit = error as? ExitCode { return exit }
    if let config = error as? ConfigError {
        Terminal.standardError.write(Terminal.standardError.styleDiagnostics(config.description) + "\n")
        return ExitCode(2)
    }
    Terminal.standardError.write(Terminal.standardError.styleDiagnostics("error: \(error)") + "\n")
    return ExitCode(1)
}
