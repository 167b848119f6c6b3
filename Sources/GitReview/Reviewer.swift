import Clibgit2

/// What the user decided for one file in `airlock review`.
public enum FileDecision: Sendable, Equatable {
    case accept
    case reject
    /// Per hunk, in order (`true` = accepted). Only for text files.
    case hunks([Bool])

    public var acceptsAnything: Bool {
        switch self {
        case .accept: true
        case .reject: false
        case .hunks(let picks): picks.contains(true)
        }
    }
}

/// Applies the accepted parts of a diff: the accepted set as a tree, then as a commit on the
/// user's branch or as a change to their working tree.
public struct Reviewer {
    let repository: Repository

    public init(repository: Repository) {
        self.repository = repository
    }

    /// `base`'s tree with the accepted changes of `changes` (the diff `base` → `target`).
    public func acceptedTree(base: ObjectID, changes: [FileChange], decisions: [FileDecision]) throws(GitError) -> ObjectID {
        let baseTree = try repository.treeOfCommit(base)
        defer { git_tree_free(baseTree) }
        var index: OpaquePointer?
        try GitError.check(git_index_new(&index), "make an index")
        defer { git_index_free(index) }
        try GitError.check(git_index_read_tree(index, baseTree), "read the base tree")
        for (change, decision) in zip(changes, decisions) {
            switch decision {
            case .reject:
                continue
            case .accept:
                try put(change.newID, mode: change.newMode, path: change.path, in: index)
            case .hunks(let picks):
                guard picks.contains(true) else { continue }
                if !picks.contains(false) {
                    try put(change.newID, mode: change.newMode, path: change.path, in: index)
                    continue
                }
                let old = try change.oldID.map { id throws(GitError) in try blob(id) } ?? []
                let new = try change.newID.map { id throws(GitError) in try blob(id) } ?? []
                let merged = HunkApplier.apply(old: old, new: new, hunks: change.hunks, accepted: picks)
                var blobID = git_oid()
                try GitError.check(
                    merged.withUnsafeBytes { git_blob_create_from_buffer(&blobID, repository.pointer, $0.baseAddress, $0.count) },
                    "store \(change.path)")
                try put(ObjectID(blobID), mode: change.newMode == 0 ? change.oldMode : change.newMode, path: change.path, in: index)
            }
        }
        var tree = git_oid()
        try GitError.check(git_index_write_tree_to(&tree, index, repository.pointer), "write the accepted tree")
        return ObjectID(tree)
    }

    /// Three-way: the accepted tree (relative to `base`) onto HEAD's tree. The merged tree, or
    /// the paths that conflict.
    public func onto(head: ObjectID, base: ObjectID, accepted: ObjectID) throws(GitError) -> Result<ObjectID, ConflictList> {
        let baseTree = try repository.treeOfCommit(base)
        defer { git_tree_free(baseTree) }
        let headTree = try repository.treeOfCommit(head)
        defer { git_tree_free(headTree) }
        var acceptedTree: OpaquePointer?
        var raw = accepted.raw
        try GitError.check(git_tree_lookup(&acceptedTree, repository.pointer, &raw), "find the accepted tree")
        defer { git_tree_free(acceptedTree) }
        var options = git_merge_options()
        try GitError.check(git_merge_options_init(&options, UInt32(GIT_MERGE_OPTIONS_VERSION)), "merge options")
        var index: OpaquePointer?
        try GitError.check(git_merge_trees(&index, repository.pointer, baseTree, headTree, acceptedTree, &options), "combine with your branch")
        defer { git_index_free(index) }
        if git_index_has_conflicts(index) == 1 {
            var iterator: OpaquePointer?
            var paths: [String] = []
            if git_index_conflict_iterator_new(&iterator, index) == 0 {
                var a: UnsafePointer<git_index_entry>?, o: UnsafePointer<git_index_entry>?, t: UnsafePointer<git_index_entry>?
                while git_index_conflict_next(&a, &o, &t, iterator) == 0 {
                    if let path = (o ?? t ?? a)?.pointee.path { paths.append(String(cString: path)) }
                }
                git_index_conflict_iterator_free(iterator)
            }
            return .failure(ConflictList(paths: paths))
        }
        var tree = git_oid()
        try GitError.check(git_index_write_tree_to(&tree, index, repository.pointer), "write the combined tree")
        return .success(ObjectID(tree))
    }

    public struct ConflictList: Error, Sendable, Equatable {
        public var paths: [String]
    }

    /// Commits `tree` on the current branch (working tree and index updated safely).
    public func commit(tree: ObjectID, message: String, branch: String) throws(GitReviewError) -> ObjectID {
        guard let head = repository.headCommit else { throw GitReviewError("the current branch has no commit yet") }
        guard let author = repository.defaultSignature() else {
            throw GitReviewError(
                "cannot commit: git's user.name and user.email are not set",
                hint: "git config --global user.name 'You' && git config --global user.email you@example.com")
        }
        do {
            let commit = try repository.createCommit(tree: tree, parents: [head], message: message, author: author)
            try PendingCheckout(branch: branch, from: head, to: commit, message: "airlock review").perform(in: repository)
            return commit
        } catch {
            throw GitReviewError(error)
        }
    }

    /// Applies the difference between HEAD's tree and `tree` to the working tree only.
    public func applyToWorkingTree(tree: ObjectID) throws(GitReviewError) {
        do {
            guard let head = repository.headCommit else { throw GitReviewError("the current branch has no commit yet") }
            let headTree = try repository.treeOfCommit(head)
            defer { git_tree_free(headTree) }
            var target: OpaquePointer?
            var raw = tree.raw
            try GitError.check(git_tree_lookup(&target, repository.pointer, &raw), "find the accepted tree")
            defer { git_tree_free(target) }
            var diff: OpaquePointer?
            try GitError.check(git_diff_tree_to_tree(&diff, repository.pointer, headTree, target, nil), "diff the accepted changes")
            defer { git_diff_free(diff) }
            try GitError.check(
                git_apply(repository.pointer, diff, GIT_APPLY_LOCATION_WORKDIR, nil), "apply the accepted changes to your working tree")
        } catch let error as GitReviewError {
            throw error
        } catch {
            throw GitReviewError(
                "cannot apply the accepted changes", cause: error, hint: "your working tree has changes in the same files; commit or stash them first"
            )
        }
    }

    private func blob(_ id: ObjectID) throws(GitError) -> [UInt8] {
        var blob: OpaquePointer?
        var raw = id.raw
        try GitError.check(git_blob_lookup(&blob, repository.pointer, &raw), "read blob \(id.short)")
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        guard size > 0, let content = git_blob_rawcontent(blob) else { return [] }
        return Array(UnsafeRawBufferPointer(start: content, count: size))
    }

    private func put(_ id: ObjectID?, mode: UInt32, path: String, in index: OpaquePointer?) throws(GitError) {
        guard let id else {
            git_index_remove(index, path, 0)
            return
        }
        var entry = git_index_entry()
        entry.mode = mode
        entry.id = id.raw
        let code = path.withCString { cPath in
            entry.path = cPath
            return git_index_add(index, &entry)
        }
        try GitError.check(code, "stage \(path)")
    }
}

/// Rebuilds a file from its old and new versions, taking the new side of accepted hunks and
/// the old side of rejected ones. Lines are split after each `\n` (the last may lack one),
/// as libgit2 counts them for hunk ranges.
public enum HunkApplier {
    public static func apply(old: [UInt8], new: [UInt8], hunks: [FileChange.Hunk], accepted: [Bool]) -> [UInt8] {
        let oldLines = lines(old)
        let newLines = lines(new)
        var result: [UInt8] = []
        var next = 0  // the next old line (0-based) not yet copied
        for (hunk, take) in zip(hunks, accepted) {
            // A range of zero lines starts *after* line `start`; otherwise at line `start`.
            let oldFrom = hunk.oldLines == 0 ? hunk.oldStart : hunk.oldStart - 1
            let newFrom = hunk.newLines == 0 ? hunk.newStart : hunk.newStart - 1
            let clampedOld = min(max(oldFrom, next), oldLines.count)
            for line in oldLines[next..<clampedOld] { result += line }
            if take {
                let end = min(newFrom + hunk.newLines, newLines.count)
                for line in newLines[min(newFrom, end)..<end] { result += line }
            } else {
                let end = min(clampedOld + hunk.oldLines, oldLines.count)
                for line in oldLines[clampedOld..<end] { result += line }
            }
            next = min(clampedOld + hunk.oldLines, oldLines.count)
        }
        for line in oldLines[next...] { result += line }
        return result
    }

    static func lines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        var start = 0
        for (offset, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
            result.append(bytes[start...offset])
            start = offset + 1
        }
        if start < bytes.count { result.append(bytes[start...]) }
        return result
    }
}
