import AirlockSystem
import ArgumentParser
import CShim
import GuestLink
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Boot the project's sandbox (or join it if running) and run a command in it.",
        discussion: """
            Runs COMMAND (default: your login shell) in a microVM that sees a clone of this \
            repository at the project's own path. With a terminal, the session is interactive \
            (raw mode, window size, ^C reaches the command); without one, stdin and stdout are \
            pipes. airlock exits with the command's exit status.

            Examples:
              airlock start -- claude
              airlock start --name tests -- make test
              printf 'a\\nb\\n' | airlock start -- wc -l
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(name: .shortAndLong, parsing: .unconditionalSingleValue, help: ArgumentHelp("Set a variable in the session.", valueName: "NAME=VALUE"))
    var env: [String] = []

    @Flag(name: .shortAndLong, help: "Show the VM's console and what airlock decides.")
    var verbose = false

    @Flag(help: "Make a new clone of the project (the old clone's work is fetched home first).")
    var fresh = false

    @Flag(name: .customLong("with-changes"), help: "Carry your uncommitted changes into a new clone, as a commit on top.")
    var withChanges = false

    @Argument(parsing: .captureForPassthrough, help: "The command to run (after --).")
    var command: [String] = []

    func validate() throws {
        try validateAssignments(env)
    }

    func run() async throws {
        let context = try ProjectContext.load(secrets: true)
        let manager = context.manager(verbose: verbose, quiet: global.quiet)
        let request = sessionRequest(command: command, environment: env)
        do {
            let ended = try await manager.start(sandbox.name, request, workspace: WorkspaceOptions(fresh: fresh, withChanges: withChanges))
            if verbose { showConsole(try manager.paths(sandbox.name)) }
            throw ExitCode(ended.code)
        } catch {
            throw reportAndExit(error)
        }
    }

    func showConsole(_ paths: SandboxPaths) {
        Terminal.standardError.write("airlock: console (\(paths.consoleLog)):\n")
        for line in FileSystem.tailLines(of: paths.consoleLog, count: 200) { Terminal.standardError.write("  | \(line)\n") }
    }
}

/// What `start` and `exec` run: the command after `--`, `-e NAME=VALUE` settings, this
/// terminal's size when stdin and stdout are one, and the working directory.
func sessionRequest(command: [String], environment: [String]) -> SessionRequest {
    var size: WindowSize?
    if isatty(0) == 1 && isatty(1) == 1 {
        var rows: UInt16 = 0
        var columns: UInt16 = 0
        _ = airlock_get_window_size(0, &rows, &columns)
        size = WindowSize(rows: rows == 0 ? 24 : rows, columns: columns == 0 ? 80 : columns)
    }
    let arguments = command.first == "--" ? Array(command.dropFirst()) : command
    let variables = Dictionary(environment.map(splitAssignment), uniquingKeysWith: { $1 })
    return SessionRequest(command: arguments, environment: variables, terminal: size, workingDirectory: currentDirectory())
}

func splitAssignment(_ entry: String) -> (String, String) {
    let equals = entry.firstIndex(of: "=") ?? entry.endIndex
    return (String(entry[..<equals]), equals == entry.endIndex ? "" : String(entry[entry.index(after: equals)...]))
}
