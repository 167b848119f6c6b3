import AirlockSystem
import GitReview
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// What fetch, diff, log, review and merge start from: the project and the sandbox's work.
func loadWork(_ sandbox: SandboxNameOption, quiet: Bool) throws -> (context: ProjectContext, work: SandboxWork) {
    let context = try ProjectContext.load()
    return (context, try context.manager(quiet: quiet).work(sandbox.name))
}

/// The section fetch, diff, log, review and merge show for changes to files the host or the
/// user's tools act on (`FlaggedChange`); empty when there are none.
func flaggedSection(_ flags: [FlaggedChange], terminal: Terminal) -> String {
    guard !flags.isEmpty else { return "" }
    var text = terminal.style("security-relevant changes", .yellow) + " (your machine or the sandbox acts on these; read them first):\n"
    for flag in flags {
        text += "  " + terminal.style(flag.path.padding(to: 28), .bold) + " " + flag.reason + "\n"
    }
    return text
}

/// Before merge or review take a change to the sandbox's own configuration: with `yes` (a
/// script said so) it goes on; on a terminal the user is asked; otherwise it is refused.
func confirmPolicyChanges(_ flags: [FlaggedChange], yes: Bool, action: String) throws {
    let policy = flags.filter(\.policy)
    guard !policy.isEmpty, !yes else { return }
    let names = policy.map(\.path).joined(separator: " and ")
    guard isatty(0) == 1 else {
        throw SandboxError(
            "the agent changed \(names), the sandbox's own configuration: \(action) asks before taking that, and there is no terminal to ask on",
            hint: "read the change (`airlock diff`), then run again with --yes")
    }
    Terminal.standardError.write(
        "the agent changed \(names), the sandbox's own configuration (its network rules, mounts and secrets). \(action) it anyway? [y/N] ")
    guard let answer = readLine(), answer.trimmingWhitespace().lowercased().hasPrefix("y") else {
        throw SandboxError("\(action) cancelled: nothing changed")
    }
}

/// After merge or review took a change to the sandbox's configuration: the next start says
/// what changed (`SandboxManager.start`).
func notePolicyChange(_ flags: [FlaggedChange], work: SandboxWork, repository: Repository, from: ObjectID, to: ObjectID, how: String) {
    let policy = flags.filter(\.policy).map(\.path)
    guard !policy.isEmpty else { return }
    let patch = (try? Differ(repository: repository).patch(from: from, to: to, only: policy)) ?? ""
    work.notePolicyChange("\(how) brought the agent's change to \(policy.joined(separator: " and ")):\n" + patch)
}
