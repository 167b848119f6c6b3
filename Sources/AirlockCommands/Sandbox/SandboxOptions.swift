import ArgumentParser
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

    func paths(in project: Project) throws -> SandboxPaths {
        try SandboxPaths(project: project, name: name)
    }
}

/// Prints a sandbox error and exits 1 (the user's command never ran).
func reportAndExit(_ error: any Error) -> ExitCode {
    Terminal.standardError.write(Terminal.standardError.styleDiagnostics("error: \(error)") + "\n")
    return ExitCode(1)
}
