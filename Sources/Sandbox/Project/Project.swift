import AirlockSystem
import Config

/// The project a command works on: the nearest directory at or above the working directory
/// that holds `.git` (a directory, or a file as in worktrees), else the working directory.
public struct Project: Sendable, Equatable {
    public var root: String
    /// The git directory holding `info/exclude` (the common dir for worktrees), when a git project.
    public var gitCommonDir: String?

    public init(root: String, gitCommonDir: String?) {
        self.root = root
        self.gitCommonDir = gitCommonDir
    }

    public static func discover(from directory: String, files: any FileReading = LocalFiles()) -> Project {
        var candidate = directory
        while true {
            let dotGit = candidate == "/" ? "/.git" : candidate + "/.git"
            if FileSystem.isDirectoryFollowingLinks(dotGit) { return Project(root: candidate, gitCommonDir: dotGit) }
            if let text = try? files.readText(dotGit), let line = text.split(separator: "\n").first, line.hasPrefix("gitdir:") {
                var gitDir = String(line.dropFirst("gitdir:".count)).trimmingWhitespace()
                if !gitDir.hasPrefix("/") { gitDir = candidate + "/" + gitDir }
                var common = gitDir
                if let relative = try? files.readText(gitDir + "/commondir")?.trimmingWhitespace(), !relative.isEmpty {
                    common = relative.hasPrefix("/") ? relative : gitDir + "/" + relative
                }
                return Project(root: candidate, gitCommonDir: common)
            }
            guard candidate != "/", let slash = candidate.lastIndex(of: "/") else { break }
            candidate = slash == candidate.startIndex ? "/" : String(candidate[..<slash])
        }
        return Project(root: directory, gitCommonDir: nil)
    }

    /// What airlock keeps out of git in every project: personal config and sandbox state.
    public static let excludedPaths = ["/airlock.local.toml", "/.airlock/"]

    /// Adds `excludedPaths` to `.git/info/exclude` once (idempotent; the file is rewritten
    /// whole, atomically, with the lines added at its end).
    public func ensureExcluded() throws(SystemError) {
        guard let gitCommonDir else { return }
        let info = gitCommonDir + "/info"
        try FileSystem.makeDirectory(info)
        let path = info + "/exclude"
        let existing = try FileSystem.readText(path) ?? ""
        let lines = Set(existing.split(separator: "\n").map { String($0).trimmingWhitespace() })
        let missing = Self.excludedPaths.filter { !lines.contains($0) }
        guard !missing.isEmpty else { return }
        var text = existing
        if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
        text += "# added by airlock: personal config and sandbox state\n"
        text += missing.joined(separator: "\n") + "\n"
        try FileSystem.writeAtomically(path, text, mode: 0o644)
    }
}
