import Clibgit2

/// `[mask.<name>] paths`: project paths the sandbox never sees and a fetch never brings home.
///
/// The VM works on a clone, which holds every commit of the project's branches and tags: a
/// path git tracks there is already in the VM, and no mask can take it back. A mask therefore
/// hides only what git does not track (`Repository.maskedPathsInHistory` finds the paths that
/// break that rule, and the start refuses them), `--with-changes` leaves masked paths out of
/// the changes it carries over, and a fetch leaves them out of the uncommitted capture and
/// refuses a branch whose new commits hold one.
public struct MaskedPaths: Sendable, Equatable {
    public struct Path: Sendable, Equatable {
        /// The entry that hides it: `mask.<name>`, or `mounts.<name>` for a project path a
        /// mount covers (what is there in the VM is the mount's, not the agent's work).
        public var entry: String
        /// Relative to the project, `/`-separated, without `.` parts or a trailing `/`.
        public var path: String

        public init(entry: String, path: String) {
            self.entry = entry
            self.path = path
        }

        /// `path` as written in the configuration, in that form.
        public static func normalised(_ path: String) -> String {
            path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        }
    }

    public var paths: [Path]

    /// From `AirlockConfig.masks` (entry name → its paths).
    public init(_ masks: [String: [String]]) {
        paths = masks.sorted { $0.key < $1.key }.flatMap { name, list in list.map { Path(entry: "mask." + name, path: Path.normalised($0)) } }
            .filter { !$0.path.isEmpty }
    }

    public init(paths: [Path]) {
        self.paths = paths
    }

    public var isEmpty: Bool { paths.isEmpty }

    /// Only the `[mask.*]` paths: a commit may hold what a mount covers (tracked files below a
    /// mounted directory), never what a mask hides.
    public var fromMasks: MaskedPaths { MaskedPaths(paths: paths.filter { $0.entry.hasPrefix("mask.") }) }

    public static func + (a: MaskedPaths, b: MaskedPaths) -> MaskedPaths { MaskedPaths(paths: a.paths + b.paths) }

    /// The mask that hides `path` (relative to the project): the path itself or anything below.
    public func covering(_ path: String) -> Path? {
        paths.first { path == $0.path || path.hasPrefix($0.path + "/") }
    }
}

/// A masked path git has in a commit.
public struct MaskedPathInHistory: Sendable, Equatable {
    public var path: MaskedPaths.Path
    public var commit: ObjectID
    /// The branch or tag whose tip holds it; nil when only an older commit does.
    public var reference: String?
}

extension Repository {
    /// The masked paths git has in a commit a clone of this repository would hold, each with
    /// one commit that has it. With `history`, every commit reachable from the branches, the
    /// tags and HEAD is looked at; otherwise only their tips (quick enough for every start).
    public func maskedPathsInHistory(_ masks: MaskedPaths, history: Bool) throws(GitError) -> [MaskedPathInHistory] {
        guard !masks.isEmpty else { return [] }
        var found: [MaskedPathInHistory] = []
        func look(at commit: ObjectID, reference: String?) throws(GitError) {
            let missing = masks.paths.filter { path in !found.contains { $0.path == path } }
            for path in try held(missing, byTreeOf: commit) {
                found.append(MaskedPathInHistory(path: path, commit: commit, reference: reference))
            }
        }
        var tips = references(under: "refs/heads/").merging(references(under: "refs/tags/")) { first, _ in first }
        if let head = headCommit { tips["HEAD"] = head }
        for (name, _) in tips.sorted(by: { $0.key < $1.key }) {
            guard let commit = try? resolveCommit(name) else { continue }  // a tag of a blob or tree
            try look(at: commit, reference: name.hasPrefix("refs/heads/") ? String(name.dropFirst("refs/heads/".count)) : name)
        }
        guard history, found.count < masks.paths.count else { return found }
        var walker: OpaquePointer?
        try GitError.check(git_revwalk_new(&walker, pointer), "walk history")
        defer { git_revwalk_free(walker) }
        for glob in ["refs/heads/*", "refs/tags/*"] { _ = git_revwalk_push_glob(walker, glob) }
        _ = git_revwalk_push_head(walker)
        var next = git_oid()
        while found.count < masks.paths.count {
            let step = git_revwalk_next(&next, walker)
            if step == GIT_ITEROVER.rawValue { break }
            try GitError.check(step, "walk history")
            try look(at: ObjectID(next), reference: nil)
        }
        return found
    }

    /// The first commit reachable from `tip` (and from no reference of `known`) whose tree has
    /// a masked path, with that path.
    func maskedPath(in masks: MaskedPaths, from tip: ObjectID, notIn known: Repository) throws(GitError) -> MaskedPathInHistory? {
        guard !masks.isEmpty else { return nil }
        let walker = try walk(from: [tip], hidingWhatReaches: known)
        defer { git_revwalk_free(walker) }
        var next = git_oid()
        while true {
            let step = git_revwalk_next(&next, walker)
            if step == GIT_ITEROVER.rawValue { return nil }
            try GitError.check(step, "walk the new commits")
            if let path = try held(masks.paths, byTreeOf: ObjectID(next)).first {
                return MaskedPathInHistory(path: path, commit: ObjectID(next), reference: nil)
            }
        }
    }

    /// Those of `paths` that commit `commit`'s tree holds, in their order.
    private func held(_ paths: [MaskedPaths.Path], byTreeOf commit: ObjectID) throws(GitError) -> [MaskedPaths.Path] {
        let tree = try treeOfCommit(commit)
        defer { git_tree_free(tree) }
        return paths.filter { path in
            var entry: OpaquePointer?
            defer { git_tree_entry_free(entry) }
            return git_tree_entry_bypath(&entry, tree, path.path) == 0
        }
    }
}
