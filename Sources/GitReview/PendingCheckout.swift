import AirlockSystem
import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// Moves the current branch and the working tree from one commit to another (a merge's or a
/// review's result) so that a crash at any moment, `kill -9` included, leaves the project as it
/// was or, after the next airlock command, as the operation leaves it; never between.
///
/// The intent (branch, from, to) is written durably to `<git dir>/airlock-checkout` before the
/// working tree is touched; the branch moves after the working tree is done; the intent is
/// removed last. `resume` (run by every airlock command in the project) finishes one it finds:
/// the paths that differ between the two commits are checked out by force (they were clean
/// when the operation began: merge and review refuse a dirty tree), then the branch moves.
///
/// The operation holds an flock on the git directory while it runs, so another airlock command
/// started meanwhile leaves its record alone. Once that lock is free the operation is dead, and
/// git's own lock files (`index.lock`, `refs/heads/<branch>.lock`) made since its record was
/// written are its leftovers: they are removed, or the branch could never move.
public struct PendingCheckout: Equatable, Sendable {
    public var branch: String
    public var from: ObjectID
    public var to: ObjectID
    public var message: String

    static func directory(_ repository: Repository) -> String {
        let directory = git_repository_path(repository.pointer).map { String(cString: $0) } ?? ".git/"
        return directory.hasSuffix("/") ? directory : directory + "/"
    }

    static func file(_ repository: Repository) -> String { directory(repository) + "airlock-checkout" }

    /// An flock on the git directory: held by a running operation, taken by `resume`.
    /// Returns the descriptor, or nil when another process holds it (`wait: false`).
    static func lock(_ repository: Repository, wait: Bool) -> Int32? {
        let fd = open(directory(repository), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            if errno == EINTR { continue }
            close(fd)
            return nil
        }
        return fd
    }

    var text: String { "\(branch)\n\(from.hex)\n\(to.hex)\n\(message)\n" }

    init(branch: String, from: ObjectID, to: ObjectID, message: String) {
        self.branch = branch
        self.from = from
        self.to = to
        self.message = message
    }

    init?(text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.count >= 4, lines[0].hasPrefix("refs/heads/"), let from = ObjectID(hex: lines[1]), let to = ObjectID(hex: lines[2]) else {
            return nil
        }
        self.init(branch: lines[0], from: from, to: to, message: lines[3])
    }

    /// Checks `to` out (safely: local changes are never overwritten) and moves `branch` there.
    func perform(in repository: Repository) throws(GitError) {
        let file = Self.file(repository)
        guard let held = Self.lock(repository, wait: true) else {
            throw GitError(operation: "lock the git directory", code: -1, message: "\(SystemError.last("flock", Self.directory(repository)))")
        }
        defer { close(held) }
        do {
            try FileSystem.writeAtomically(file, text, mode: 0o644, durable: true)
        } catch {
            throw GitError(operation: "record the checkout in \(file)", code: -1, message: "\(error)")
        }
        try Merger(repository: repository).checkout(commit: to)
        try repository.setReference(branch, to: to, message: message)
        unlink(file)
    }

    /// Finishes a checkout a crash interrupted, if any; returns what was done, for the user.
    public static func resume(repositoryAt path: String) -> String? {
        guard let repository = try? Repository.open(path) else { return nil }
        let file = file(repository)
        guard FileSystem.exists(file), let held = lock(repository, wait: false) else { return nil }
        defer { close(held) }
        guard let text = (try? FileSystem.readText(file, limit: 64 << 10)) ?? nil else { return nil }
        guard let pending = PendingCheckout(text: text) else {
            unlink(file)
            return "removed \(file), which did not name a checkout"
        }
        let current = repository.references(under: pending.branch)[pending.branch]
        let name = String(pending.branch.dropFirst("refs/heads/".count))
        if current == pending.to {
            unlink(file)
            return nil
        }
        guard current == pending.from else {
            unlink(file)
            return "an interrupted \(pending.message) left \(name) alone: the branch has moved since"
        }
        if let begun = FileSystem.modificationTime(file) {
            for leftover in [directory(repository) + "index.lock", directory(repository) + pending.branch + ".lock"] {
                if let made = FileSystem.modificationTime(leftover), made >= begun { unlink(leftover) }
            }
        }
        do {
            let paths = try Differ(repository: repository).changedPaths(from: pending.from, to: pending.to)
            try Merger(repository: repository).checkout(commit: pending.to, forcing: paths)
            try repository.setReference(pending.branch, to: pending.to, message: pending.message)
            unlink(file)
            return "finished the \(pending.message) that was interrupted: \(name) is at \(pending.to.short)"
        } catch {
            return "could not finish the interrupted \(pending.message) (\(error)); \(file) is kept: remove it and run `git status`"
        }
    }
}
