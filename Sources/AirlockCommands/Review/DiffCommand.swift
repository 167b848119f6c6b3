import ArgumentParser
import CShim
import GitReview
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show the agent's changes: its work (uncommitted included) against where it started.",
        discussion: """
            Fetches first when the sandbox ran since the last fetch, so the diff is current. \
            Colored on a terminal and shown through $PAGER (default `less -FRX`), like git.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Flag(help: "Show a diffstat instead of the patch.")
    var stat = false

    @Flag(name: .customLong("name-only"), help: "Show only the names of changed files.")
    var nameOnly = false

    @Option(help: "A branch of the sandbox's clone instead of its current work (`uncommitted`, `main`, …).")
    var branch: String?

    @Argument(help: "Compare against this commit of your repository instead of where the sandbox started.")
    var base: String?

    func run() throws {
        do {
            let (context, work) = try loadWork(sandbox, quiet: global.quiet)
            let report = try work.current()
            let repository = try work.repository()
            let targetRef = try work.target(report, branch: branch)
            let target = try repository.resolveCommit(targetRef)
            let from =
                try base.map { revision throws(GitError) in try repository.resolveCommit(revision) } ?? work.base(in: repository, target: target)
            let differ = Differ(repository: repository)
            // On stderr: the diff on stdout stays what git would print.
            Terminal.standardError.write(
                flaggedSection(FlaggedChange.among(try differ.changedPaths(from: from, to: target)), terminal: .standardError))
            let output: String
            if nameOnly {
                output = try differ.changedPaths(from: from, to: target).map { $0 + "\n" }.joined()
            } else if stat {
                var rows: UInt16 = 0, columns: UInt16 = 0
                _ = airlock_get_window_size(1, &rows, &columns)
                output = try differ.stat(from: from, to: target, width: columns == 0 ? 80 : Int(columns))
            } else {
                output = colorizeDiff(try differ.patch(from: from, to: target), for: .standardOutput)
            }
            Pager.show(output, environment: context.environment)
        } catch {
            throw reportAndExit(error)
        }
    }
}
