import ArgumentParser
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

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
        let context = try ProjectContext.load()
        do {
            let paths = try sandbox.paths(in: context.project)
            guard isDirectoryPath(paths.stateDirectory) else {
                throw SandboxError("there is no sandbox \(paths.name) in \(context.project.root)", hint: "`airlock ps` lists them")
            }
            if SandboxLock.isHeld(paths.lockFile) {
                guard force else {
                    throw SandboxError(
                        "sandbox \(paths.name) is running", hint: "stop it with `airlock stop --name \(paths.name)`, or use `airlock rm --force`")
                }
                _ = try await stop(paths, environment: context.environment)
            }
            try removeTree(paths.stateDirectory)
            if !global.quiet { Terminal.standardError.write("removed sandbox \(paths.name)\n") }
        } catch {
            throw reportAndExit(error)
        }
    }
}

func isDirectoryPath(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}
