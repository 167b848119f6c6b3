import AirlockSystem
import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// The state of the user's repository that no sandbox may touch: HEAD, every reference outside
/// `refs/remotes/airlock/`, the index, and the working tree's files (type, size, mode, mtime;
/// `.git` and `.airlock` excluded). Taken before and after a session; a difference means
/// something changed the project while the agent ran.
public struct ProjectFingerprint: Sendable, Equatable {
    /// What each item looked like, by name (`HEAD`, `ref refs/heads/main`, `index`, `file src/a.c`).
    var items: [String: String]

    /// `files`: the working tree's files too (a project shared with the VM, `[workspace] mode =
    /// "mount"`, is the agent's to change; its git data is not).
    public static func take(project: String, files: Bool = true) -> ProjectFingerprint {
        _ = LibGit2Runtime.initialised
        var items: [String: String] = [:]
        if let repository = try? Repository.open(project) {
            items["HEAD"] = repository.currentBranch.map { "branch " + $0 } ?? repository.headCommit?.hex ?? "unborn"
            for (name, id) in repository.references(under: "refs/") where !name.hasPrefix("refs/remotes/airlock/") {
                items["ref " + name] = id.hex
            }
            if let gitDirectory = git_repository_path(repository.pointer).map({ String(cString: $0) }) {
                var id = git_oid()
                if git_odb_hashfile(&id, gitDirectory + "index", GIT_OBJECT_BLOB) == 0 { items["index"] = ObjectID(id).hex }
            }
        }
        if files { walk(project, relative: "", into: &items, depth: 0) }
        return ProjectFingerprint(items: items)
    }

    /// What differs from `earlier`, one line per item (`changed: file src/a.c`).
    public func differences(since earlier: ProjectFingerprint) -> [String] {
        var result: [String] = []
        for key in Set(items.keys).union(earlier.items.keys).sorted() {
            switch (earlier.items[key], items[key]) {
            case (nil, _?): result.append("added: " + key)
            case (_?, nil): result.append("removed: " + key)
            case (let a?, let b?) where a != b: result.append("changed: " + key)
            default: break
            }
        }
        return result
    }

    private static func walk(_ root: String, relative: String, into items: inout [String: String], depth: Int) {
        guard depth < 64, let directory = try? ConfinedDirectory.open(relative.isEmpty ? root : root + "/" + relative) else { return }
        for (name, _) in directory.entries() {
            if relative.isEmpty && (name == ".git" || name == ".airlock") { continue }
            let path = relative.isEmpty ? name : relative + "/" + name
            var info = stat()
            guard fstatat(directory.fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            items["file " + path] = "\(info.st_mode) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
            if info.st_mode & S_IFMT == S_IFDIR { walk(root, relative: path, into: &items, depth: depth + 1) }
        }
    }
}
