import ArgumentParser
import GitReview
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List the agent's commits since the sandbox started, with their stats."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(help: "A branch of the sandbox's clone instead of its current work.")
    var branch: String?

    @OptionGroup var output: FormatOption

    struct Entry: Encodable {
        var commit: CommitInfo
        var files: [String]
        var additions: Int
        var deletions: Int
        /// Changes to files the host or the user's tools act on.
        var flagged: [FlaggedChange]
    }

    func run() throws {
        do {
            let (context, work) = try loadWork(sandbox, quiet: global.quiet)
            let report = try work.current()
            let repository = try work.repository()
            let target = try repository.resolveCommit(try work.target(report, branch: branch))
            let base = try work.base(in: repository, target: target)
            let differ = Differ(repository: repository)
            var entries: [Entry] = []
            for id in try repository.commits(from: target, excluding: base) {
                let info = try repository.commitInfo(id)
                let stats = try info.parents.first.map { parent throws(GitError) in try differ.lineStats(from: parent, to: id) } ?? []
                entries.append(
                    Entry(
                        commit: info, files: stats.map(\.path),
                        additions: stats.reduce(0) { $0 + $1.insertions }, deletions: stats.reduce(0) { $0 + $1.deletions },
                        flagged: FlaggedChange.among(stats.map(\.path))))
            }
            if output.isJSON {
                try printJSON(entries)
                return
            }
            let out = Terminal.standardOutput
            var text = ""
            for entry in entries {
                let date = formatTime(entry.commit.time)
                text += out.style(entry.commit.id.short, .yellow) + " " + entry.commit.summary + "\n"
                text += "    \(entry.commit.authorName) <\(entry.commit.authorEmail)>, \(date)\n"
                text +=
                    "    \(entry.files.count) file\(entry.files.count == 1 ? "" : "s") changed, "
                    + out.style("+\(entry.additions)", .green) + " " + out.style("-\(entry.deletions)", .red) + "\n"
                for flag in entry.flagged {
                    text += "    " + out.style("security-relevant: \(flag.path)", .yellow) + " (\(flag.reason))\n"
                }
            }
            if entries.isEmpty { text = "sandbox \(work.paths.name): no commits since it started\n" }
            Pager.show(text, environment: context.environment)
        } catch {
            throw reportAndExit(error)
        }
    }
}
