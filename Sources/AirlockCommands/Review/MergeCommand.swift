import ArgumentParser
import GitReview
import Sandbox

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge the agent's branch into your current branch.",
        discussion: """
            Fetches first, then merges refs/remotes/airlock/<sandbox>/<branch> (default: the \
            clone's current branch) into the branch you have checked out. Refuses a dirty \
            working tree or a detached HEAD. On conflicts the repository is left as `git merge` \
            leaves it: fix the files, then `git commit` (or `git merge --abort`).
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(help: "The sandbox's branch to merge (`uncommitted` for its uncommitted work too).")
    var branch: String?

    @Flag(help: "Stage the result without committing, as `git merge --squash`.")
    var squash = false

    @Flag(name: .customLong("ff-only"), help: "Refuse unless your branch can fast-forward.")
    var fastForwardOnly = false

    @Flag(help: "Take a change to the sandbox's configuration (airlock.toml, airlock.local.toml) without asking.")
    var yes = false

    func validate() throws {
        if squash && fastForwardOnly { throw ValidationError("--squash and --ff-only exclude each other") }
    }

    func run() throws {
        do {
            let work = try loadWork(sandbox, quiet: global.quiet).work
            let report = try work.current()
            let name = branch ?? report.currentBranch ?? SandboxFetch.detachedName
            let ref = try work.target(report, branch: name)
            let repository = try work.repository()
            let merger = Merger(repository: repository)
            let current = try merger.currentBranchReference().dropFirst("refs/heads/".count)
            let shortRef = String(ref.dropFirst("refs/remotes/".count))
            // What the merge would bring: from where both meet to the agent's work.
            let target = try repository.resolveCommit(ref)
            let from = try repository.headCommit.flatMap { repository.mergeBase($0, target) } ?? work.base(in: repository, target: target)
            let flags = FlaggedChange.among(try Differ(repository: repository).changedPaths(from: from, to: target))
            Terminal.standardError.write(flaggedSection(flags, terminal: .standardError))
            try confirmPolicyChanges(flags, yes: yes, action: "merge")
            let outcome = try merger.merge(
                ref, squash: squash, fastForwardOnly: fastForwardOnly,
                message: "Merge \(shortRef) into \(current)\n\nAirlock-Sandbox: \(work.paths.name)\n")
            let out = Terminal.standardOutput
            switch outcome {
            case .fastForwarded, .merged, .squashed:
                notePolicyChange(flags, work: work, repository: repository, from: from, to: target, how: "`airlock merge` of \(shortRef)")
            default: break
            }
            switch outcome {
            case .upToDate:
                out.write("\(current) already contains \(shortRef)\n")
            case .fastForwarded(let id):
                out.write("fast-forwarded \(current) to \(shortRef) (\(id.short))\n")
                work.audit("merge", ["ref": .text(ref), "into": .text(String(current)), "result": .text("fast-forward \(id.hex)")])
            case .merged(let id):
                out.write("merged \(shortRef) into \(current) (\(id.short))\n")
                work.audit("merge", ["ref": .text(ref), "into": .text(String(current)), "result": .text("merge \(id.hex)")])
            case .squashed(let paths):
                out.write(
                    "staged \(shortRef) as one change (\(paths.count) file\(paths.count == 1 ? "" : "s")); review with `git diff --cached`, then `git commit`\n"
                )
                work.audit("merge", ["ref": .text(ref), "into": .text(String(current)), "result": .text("squash staged")])
            case .conflicts(let paths):
                work.audit("merge", ["ref": .text(ref), "into": .text(String(current)), "result": .text("conflicts"), "paths": .list(paths)])
                Terminal.standardError.write(
                    Terminal.standardError.styleDiagnostics(
                        "error: merging \(shortRef) into \(current) conflicts in:\n" + paths.map { "  \($0)\n" }.joined()
                            + "  hint: fix them and `git commit`, or `git merge --abort` to go back") + "\n")
                throw ExitCode(1)
            }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw reportAndExit(error)
        }
    }
}
