import AirlockSystem
import ArgumentParser
import GitReview
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct ReviewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "review",
        abstract: "Accept or reject the agent's changes file by file and hunk by hunk.",
        discussion: """
            Walks through the agent's changes (its work, uncommitted included, against where it \
            started). The accepted set becomes one commit on your current branch, with the agent \
            named in Co-authored-by trailers; with --apply it is applied to your working tree \
            instead. Keys: y accept, n reject, h choose hunks, d show the diff, u undo, q stop \
            (the rest is rejected), ? help. Without a terminal use --accept-all or --accept PATH.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(help: "A branch of the sandbox's clone instead of its current work.")
    var branch: String?

    @Flag(help: "Apply the accepted changes to your working tree instead of committing.")
    var apply = false

    @Flag(name: .customLong("accept-all"), help: "Accept every change (no questions).")
    var acceptAll = false

    @Option(name: .customLong("accept"), parsing: .upToNextOption, help: "Accept these files (no questions); the rest is rejected.")
    var acceptPaths: [String] = []

    @Option(name: .shortAndLong, help: "The commit message (default: asked on a terminal, else generated).")
    var message: String?

    @Flag(help: "Take a change to the sandbox's configuration (airlock.toml, airlock.local.toml) without asking.")
    var yes = false

    func validate() throws {
        if acceptAll && !acceptPaths.isEmpty { throw ValidationError("--accept-all and --accept exclude each other") }
    }

    func run() throws {
        do {
            try review()
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw reportAndExit(error)
        }
    }

    private func review() throws {
        let work = try loadWork(sandbox, quiet: global.quiet).work
        let report = try work.current()
        let repository = try work.repository()
        let targetRef = try work.target(report, branch: branch)
        let target = try repository.resolveCommit(targetRef)
        let base = try work.base(in: repository, target: target)
        let merger = Merger(repository: repository)
        let branchRef = try merger.currentBranchReference()
        if !apply { try merger.requireClean(for: "review") }
        let changes = try Differ(repository: repository).changes(from: base, to: target)
        guard !changes.isEmpty else {
            Terminal.standardOutput.write("sandbox \(work.paths.name) has no changes to review\n")
            return
        }
        Terminal.standardError.write(flaggedSection(FlaggedChange.among(changes.map(\.path)), terminal: .standardError))

        let decisions: [FileDecision]
        if acceptAll {
            decisions = changes.map { _ in .accept }
        } else if !acceptPaths.isEmpty {
            let unknown = acceptPaths.filter { path in !changes.contains { $0.path == path } }
            guard unknown.isEmpty else {
                throw SandboxError(
                    "not changed by the agent: \(unknown.joined(separator: ", "))", hint: "`airlock diff --name-only` lists the changed files")
            }
            decisions = changes.map { acceptPaths.contains($0.path) ? .accept : .reject }
        } else {
            guard isatty(0) == 1 && isatty(1) == 1 else {
                throw SandboxError("review asks questions and needs a terminal", hint: "without one, use --accept-all or --accept PATH…")
            }
            guard let answered = InteractiveReview(changes: changes).run() else {
                Terminal.standardOutput.write("review abandoned; nothing changed\n")
                return
            }
            decisions = answered
        }

        let acceptedPaths = zip(changes, decisions).filter { $0.1.acceptsAnything }.map(\.0.path)
        let rejectedCount = changes.count - acceptedPaths.count
        guard !acceptedPaths.isEmpty else {
            Terminal.standardOutput.write("nothing accepted; nothing changed\n")
            work.audit("review", ["ref": .text(targetRef), "accepted": .list([]), "rejected": .number(Int64(rejectedCount))])
            return
        }
        let acceptedFlags = FlaggedChange.among(acceptedPaths)
        try confirmPolicyChanges(acceptedFlags, yes: yes, action: apply ? "apply" : "commit")
        let reviewer = Reviewer(repository: repository)
        let acceptedTree = try reviewer.acceptedTree(base: base, changes: changes, decisions: decisions)
        guard let head = repository.headCommit else { throw SandboxError("your branch has no commit yet") }
        let tree: ObjectID
        switch try reviewer.onto(head: head, base: base, accepted: acceptedTree) {
        case .success(let merged): tree = merged
        case .failure(let conflicts):
            throw SandboxError(
                "the accepted changes conflict with your branch in: \(conflicts.paths.joined(separator: ", "))",
                hint: "nothing was changed; merge instead (`airlock merge`) to resolve conflicts")
        }

        if apply {
            try reviewer.applyToWorkingTree(tree: tree)
            notePolicyChange(acceptedFlags, work: work, repository: repository, from: base, to: target, how: "`airlock review --apply`")
            Terminal.standardOutput.write(
                "applied \(acceptedPaths.count) file\(acceptedPaths.count == 1 ? "" : "s") to your working tree (not committed)\n")
            work.audit(
                "review",
                ["ref": .text(targetRef), "mode": .text("apply"), "accepted": .list(acceptedPaths), "rejected": .number(Int64(rejectedCount))])
            return
        }
        let text = try commitMessage(repository: repository, base: base, target: target, targetRef: targetRef, sandbox: work.paths.name)
        let commit = try reviewer.commit(tree: tree, message: text, branch: branchRef)
        notePolicyChange(acceptedFlags, work: work, repository: repository, from: base, to: target, how: "`airlock review` (commit \(commit.short))")
        let branchName = branchRef.dropFirst("refs/heads/".count)
        Terminal.standardOutput.write(
            "committed \(commit.short) on \(branchName): \(acceptedPaths.count) file\(acceptedPaths.count == 1 ? "" : "s") accepted, \(rejectedCount) rejected\n"
        )
        work.audit(
            "review",
            [
                "ref": .text(targetRef), "mode": .text("commit \(commit.hex)"), "accepted": .list(acceptedPaths),
                "rejected": .number(Int64(rejectedCount)),
            ])
    }

    /// The message (asked for on a terminal unless given) with the agent's attribution trailers.
    private func commitMessage(repository: Repository, base: ObjectID, target: ObjectID, targetRef: String, sandbox: String) throws -> String {
        let commits = try repository.commits(from: target, excluding: base).map { id throws(GitError) in try repository.commitInfo(id) }
        let agentCommits = commits.filter { !$0.authorEmail.hasSuffix(".sandbox.invalid") }
        var subject = message ?? (agentCommits.count == 1 ? agentCommits[0].summary : "Changes from sandbox \(sandbox)")
        if message == nil, isatty(0) == 1 {
            Terminal.standardOutput.write("commit message [\(subject)]: ")
            if let line = readLine(), !line.trimmingWhitespace().isEmpty { subject = line.trimmingWhitespace() }
        }
        var text = subject + "\n\n"
        if agentCommits.count > 1 { text += agentCommits.reversed().map { "- \($0.summary)\n" }.joined() + "\n" }
        text += "Airlock-Sandbox: \(sandbox)\nAirlock-Source: \(targetRef) \(target.hex)\n"
        var seen = Set<String>()
        for commit in agentCommits where seen.insert(commit.authorEmail).inserted {
            text += "Co-authored-by: \(commit.authorName) <\(commit.authorEmail)>\n"
        }
        return text
    }
}

/// The question-and-answer loop of `airlock review`: one question per file, and per hunk when
/// the user chooses hunks. Every answer can be undone. Line-based input (answer + Enter).
struct InteractiveReview {
    let changes: [FileChange]
    private let out = Terminal.standardOutput

    init(changes: [FileChange]) {
        self.changes = changes
    }

    /// One step the user answered, so `u` can go back to it.
    private enum Step {
        case file(Int)
        case hunk(Int, Int)
    }

    /// The decisions, or nil when the input ended (Ctrl-D) before the review finished.
    func run() -> [FileDecision]? {
        var decisions: [FileDecision?] = Array(repeating: nil, count: changes.count)
        var history: [Step] = []
        var position: Step = .file(0)
        out.write("\(changes.count) changed file\(changes.count == 1 ? "" : "s"); answer y, n, h, d, u, q or ? and press Enter\n")
        while true {
            switch position {
            case .file(let index):
                guard index < changes.count else { return decisions.map { $0 ?? .reject } }
                let change = changes[index]
                out.write(
                    "\n" + out.style("(\(index + 1)/\(changes.count)) \(change.status.rawValue) \(change.path)", .bold)
                        + "  " + out.style("+\(change.additions)", .green) + " " + out.style("-\(change.deletions)", .red)
                        + (change.binary ? " (binary)" : " in \(change.hunks.count) hunk\(change.hunks.count == 1 ? "" : "s")") + "\n")
                guard let answer = ask("accept this file? [y,n,h,d,u,q,?] ") else { return nil }
                switch answer {
                case "y":
                    decisions[index] = .accept
                    history.append(position)
                    position = .file(index + 1)
                case "n":
                    decisions[index] = .reject
                    history.append(position)
                    position = .file(index + 1)
                case "h":
                    if change.binary || change.hunks.isEmpty {
                        out.write("this file has no hunks to choose from (binary or mode change); accept or reject it whole\n")
                    } else {
                        decisions[index] = .hunks(Array(repeating: false, count: change.hunks.count))
                        history.append(position)
                        position = .hunk(index, 0)
                    }
                case "d": out.write(colorizeDiff(render(change), for: out))
                case "u": undo(&history, &position, &decisions)
                case "q": return decisions.map { $0 ?? .reject }
                default: help()
                }
            case .hunk(let index, let hunkIndex):
                let change = changes[index]
                guard hunkIndex < change.hunks.count else {
                    position = .file(index + 1)
                    continue
                }
                let hunk = change.hunks[hunkIndex]
                out.write("\n" + out.style("\(change.path) hunk \(hunkIndex + 1)/\(change.hunks.count)", .bold) + "\n")
                out.write(colorizeDiff(hunk.header + hunk.lines.joined(), for: out))
                guard let answer = ask("accept this hunk? [y,n,d,u,q,?] ") else { return nil }
                switch answer {
                case "y", "n":
                    if case .hunks(var picks)? = decisions[index] {
                        picks[hunkIndex] = answer == "y"
                        decisions[index] = .hunks(picks)
                    }
                    history.append(position)
                    position = .hunk(index, hunkIndex + 1)
                case "d": out.write(colorizeDiff(render(change), for: out))
                case "u": undo(&history, &position, &decisions)
                case "q": return decisions.map { $0 ?? .reject }
                default: help()
                }
            }
        }
    }

    private func undo(_ history: inout [Step], _ position: inout Step, _ decisions: inout [FileDecision?]) {
        guard let last = history.popLast() else {
            out.write("nothing to undo\n")
            return
        }
        switch last {
        case .file(let index): decisions[index] = nil
        case .hunk(let index, let hunkIndex):
            if case .hunks(var picks)? = decisions[index] {
                picks[hunkIndex] = false
                decisions[index] = .hunks(picks)
            }
        }
        position = last
    }

    private func ask(_ prompt: String) -> String? {
        out.write(out.style(prompt, .cyan))
        guard let line = readLine() else { return nil }
        return String(line.trimmingWhitespace().prefix(1)).lowercased()
    }

    private func help() {
        out.write(
            """
            y - accept (this file / this hunk)
            n - reject
            h - choose hunk by hunk (files only)
            d - show this file's whole diff
            u - undo the last answer
            q - stop here: what is not accepted yet is rejected
            ? - this help

            """)
    }

    private func render(_ change: FileChange) -> String {
        var text = "diff \(change.path)\n"
        for hunk in change.hunks { text += hunk.header + hunk.lines.joined() }
        if change.binary { text += "Binary file\n" }
        return text
    }
}
