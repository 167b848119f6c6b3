/// A change to a file the host or the user's tools act on. An agent that changes one can make
/// the user's machine run code (git's attributes and hooks, direnv, editor tasks, CI) or
/// loosen its own sandbox's policy (airlock's configuration), so fetch, diff, log, review and
/// merge name such changes in a section of their own, and merge and review ask before taking
/// a change to the sandbox's configuration.
public struct FlaggedChange: Sendable, Codable, Equatable {
    /// Relative to the project, `/`-separated.
    public var path: String
    /// Why it matters, one phrase.
    public var reason: String
    /// The sandbox's own configuration (`airlock.toml`, `airlock.local.toml`).
    public var policy: Bool

    public init(path: String, reason: String, policy: Bool) {
        self.path = path
        self.reason = reason
        self.policy = policy
    }

    /// The flag for `path`, or nil when nothing acts on it.
    public static func classify(_ path: String) -> FlaggedChange? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        func flag(_ reason: String, policy: Bool = false) -> FlaggedChange { FlaggedChange(path: path, reason: reason, policy: policy) }
        switch path {
        case "airlock.toml", "airlock.local.toml":
            return flag("the sandbox's configuration: its network rules, mounts and secrets", policy: true)
        case ".gitmodules": return flag("submodules: where git fetches from")
        case ".pre-commit-config.yaml": return flag("hooks that pre-commit runs on your machine")
        case ".gitlab-ci.yml": return flag("CI: runs with the project's CI secrets")
        default: break
        }
        if name == ".gitattributes" { return flag("git attributes: filters and diff drivers run programs") }
        if name == ".envrc" { return flag("direnv runs it when you enter the directory") }
        for (prefix, reason) in [
            (".husky/", "git hooks (husky) run on your machine"), (".githooks/", "git hooks run on your machine"),
            (".claude/", "agent settings: commands and permissions an agent on your machine obeys"),
            (".cursor/", "editor settings and rules an agent on your machine obeys"),
            (".vscode/", "editor settings and tasks that run on your machine"),
            (".github/workflows/", "CI workflows: run with the repository's secrets"),
        ] where path.hasPrefix(prefix) {
            return flag(reason)
        }
        return nil
    }

    /// The flagged ones among `paths`, in order.
    public static func among(_ paths: [String]) -> [FlaggedChange] {
        paths.compactMap(classify)
    }
}
