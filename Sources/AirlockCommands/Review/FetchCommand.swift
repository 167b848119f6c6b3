import ArgumentParser
import GitReview
import Sandbox

struct FetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Bring the sandbox's branches and uncommitted work into this repository.",
        discussion: """
            Imports every branch of the sandbox's clone as refs/remotes/airlock/<sandbox>/<branch>; \
            uncommitted work in the clone becomes a commit on …/uncommitted (the clone is left as \
            it was). Nothing else in your repository changes. Works whether the sandbox runs or not. \
            With the sandbox stopped, only the files its last session touched are read (inotify \
            watched the clone while it ran); --rescan reads every file, e.g. after editing the \
            clone by hand.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @OptionGroup var output: FormatOption

    @Flag(help: "Read every file of the clone's working tree, not just those the last session touched.")
    var rescan = false

    func run() throws {
        do {
            let work = try loadWork(sandbox, quiet: global.quiet).work
            let report = try work.fetch(rescan: rescan)
            try Render.emit(report, format: output) { text(report, terminal: .standardOutput) }
        } catch {
            throw reportAndExit(error)
        }
    }

    private func text(_ report: FetchReport, terminal: Terminal) -> String {
        let prefix = SandboxFetch.referencePrefix(sandbox: report.sandbox)
        guard report.hasNews else { return "sandbox \(report.sandbox): nothing new (\(prefix)*)\n" }
        var text = "sandbox \(report.sandbox) → \(prefix)\n"
        for branch in report.branches where branch.change != .unchanged {
            let name = branch.name + (branch.name == report.currentBranch ? " (current)" : "")
            var what: String
            switch branch.change {
            case .deleted: what = "deleted in the clone"
            case .rewritten: what = "rewritten, \(branch.newCommits) new commit\(branch.newCommits == 1 ? "" : "s")"
            default: what = "\(branch.newCommits) new commit\(branch.newCommits == 1 ? "" : "s")"
            }
            if branch.name == SandboxFetch.uncommittedName {
                what = "\(report.uncommittedPaths.count) uncommitted file\(report.uncommittedPaths.count == 1 ? "" : "s")"
            }
            if branch.after != nil && branch.newCommits == 0 && branch.filesChanged == 0 && branch.name != SandboxFetch.uncommittedName {
                what = "no changes since the start"
            } else if branch.after != nil {
                what += ", \(branch.filesChanged) file\(branch.filesChanged == 1 ? "" : "s") changed since the start"
            }
            let label = terminal.style(branch.change.rawValue.padding(to: 9), branch.change == .deleted ? .red : .green)
            text += "  \(label) \(name.padding(to: 24)) \(what)\n"
        }
        return text + flaggedSection(report.flagged, terminal: terminal) + "next: `airlock diff`, `airlock review` or `airlock merge`\n"
    }
}
