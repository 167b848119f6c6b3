import NetworkPolicy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
            if isDirectory(dotGit) { return Project(root: candidate, gitCommonDir: dotGit) }
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

    /// Adds `excludedPaths` to `.git/info/exclude` once (idempotent; only appends).
    public func ensureExcluded() throws {
        guard let gitCommonDir else { return }
        let info = gitCommonDir + "/info"
        if !isDirectory(info) && mkdir(info, 0o755) != 0 && errno != EEXIST {
            throw FileError(path: info, errno: errno)
        }
        let path = info + "/exclude"
        let existing = try LocalFiles().readText(path) ?? ""
        let lines = Set(existing.split(separator: "\n").map { String($0).trimmingWhitespace() })
        let missing = Self.excludedPaths.filter { !lines.contains($0) }
        guard !missing.isEmpty else { return }
        var addition = existing.isEmpty || existing.hasSuffix("\n") ? "" : "\n"
        addition += "# added by airlock: personal config and sandbox state\n"
        addition += missing.joined(separator: "\n") + "\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError(path: path, errno: errno) }
        defer { close(fd) }
        let bytes = Array(addition.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, errno: errno)
            }
            written += n
        }
    }
}

/// Whether `path` is a directory (following a final symbolic link).
public func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}
