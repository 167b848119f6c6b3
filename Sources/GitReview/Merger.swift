import Clibgit2

/// How a merge of the agent's branch into the user's ended.
public enum MergeOutcome: Sendable, Equatable {
    case upToDate
    case fastForwarded(to: ObjectID)
    case merged(commit: ObjectID)
    /// `--squash`: the result is staged, not committed (as `git merge --squash`).
    case squashed(paths: [String])
    /// The repository is left in git's merge state with conflict markers in these files.
    case conflicts(paths: [String])
}

/// Writes to the user's repository: merges and commits on the checked-out branch, always
/// after checking that the working tree is clean and HEAD is a branch.
public struct Merger {
    let repository: Repository

    public init(repository: Repository) {
        self.repository = repository
    }

    /// Tracked files with changes in the index or the working tree (untracked files don't count).
    public func dirtyPaths() throws(GitError) -> [String] {
        var options = git_status_options()
        try GitError.check(git_status_options_init(&options, UInt32(GIT_STATUS_OPTIONS_VERSION)), "status options")
        options.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR
        options.flags = UInt32(GIT_STATUS_OPT_EXCLUDE_SUBMODULES.rawValue)
        var list: OpaquePointer?
        try GitError.check(git_status_list_new(&list, repository.pointer, &options), "read the status")
        defer { git_status_list_free(list) }
        var paths: [String] = []
        for index in 0..<git_status_list_entrycount(list) {
            guard let entry = git_status_byindex(list, index)?.pointee else { continue }
            let delta = entry.head_to_index ?? entry.index_to_workdir
            if let path = delta?.pointee.new_file.path ?? delta?.pointee.old_file.path { paths.append(String(cString: path)) }
        }
        return paths
    }

    /// The checked-out branch's full name, refusing a detached HEAD.
    public func currentBranchReference() throws(GitReviewError) -> String {
        guard !repository.isHeadDetached, let branch = repository.currentBranch else {
            throw GitReviewError(
                "HEAD is detached; airlock merges only into a branch", hint: "check out the branch to merge into (`git switch main`)")
        }
        return "refs/heads/" + branch
    }

    /// Refuses a dirty working tree, naming the first files.
    public func requireClean(for action: String) throws(GitReviewError) {
        let dirty: [String]
        do { dirty = try dirtyPaths() } catch { throw GitReviewError(error) }
        guard dirty.isEmpty else {
            let listed = dirty.prefix(10).joined(separator: ", ") + (dirty.count > 10 ? " and \(dirty.count - 10) more" : "")
            throw GitReviewError(
                "your working tree has uncommitted changes (\(listed)); \(action) refused", hint: "commit or stash them first (`git stash`)")
        }
    }

    /// Merges `reference` (a fetched airlock ref) into the current branch.
    public func merge(_ reference: String, squash: Bool, fastForwardOnly: Bool, message: String) throws(GitReviewError) -> MergeOutcome {
        let branch = try currentBranchReference()
        try requireClean(for: "merge")
        do {
            let theirs = try repository.resolveCommit(reference)
            var annotated: OpaquePointer?
            var raw = theirs.raw
            try GitError.check(git_annotated_commit_lookup(&annotated, repository.pointer, &raw), "look up \(reference)")
            defer { git_annotated_commit_free(annotated) }
            var analysis = GIT_MERGE_ANALYSIS_NONE
            var preference = GIT_MERGE_PREFERENCE_NONE
            var heads: [OpaquePointer?] = [annotated]
            try GitError.check(git_merge_analysis(&analysis, &preference, repository.pointer, &heads, 1), "analyse the merge")
            if analysis.rawValue & GIT_MERGE_ANALYSIS_UP_TO_DATE.rawValue != 0 { return .upToDate }
            let canFastForward = analysis.rawValue & (GIT_MERGE_ANALYSIS_FASTFORWARD.rawValue | GIT_MERGE_ANALYSIS_UNBORN.rawValue) != 0
            if canFastForward && !squash {
                if let head = repository.headCommit {
                    try PendingCheckout(branch: branch, from: head, to: theirs, message: "airlock merge: fast-forward to \(reference)")
                        .perform(in: repository)
                } else {
                    try checkout(commit: theirs)
                    try repository.setReference(branch, to: theirs, message: "airlock merge: fast-forward to \(reference)")
                }
                return .fastForwarded(to: theirs)
            }
            if fastForwardOnly && !canFastForward {
                throw GitReviewError(
                    "\(reference) is not a fast-forward of \(branch.dropFirst("refs/heads/".count))",
                    hint: "run without --ff-only to make a merge commit")
            }
            var mergeOptions = git_merge_options()
            try GitError.check(git_merge_options_init(&mergeOptions, UInt32(GIT_MERGE_OPTIONS_VERSION)), "merge options")
            // Without conflicts, the merge commit is made from objects alone and then checked
            // out as one `PendingCheckout` (a crash leaves the project before or after it).
            if !squash, let head = repository.headCommit, let merged = try mergedTree(head, theirs, &mergeOptions) {
                guard let author = repository.defaultSignature() else {
                    throw GitReviewError(
                        "cannot commit the merge: git's user.name and user.email are not set",
                        hint: "git config --global user.name 'You' && git config --global user.email you@example.com")
                }
                let commit = try repository.createCommit(tree: merged, parents: [head, theirs], message: message, author: author)
                try PendingCheckout(branch: branch, from: head, to: commit, message: "airlock merge \(reference)").perform(in: repository)
                return .merged(commit: commit)
            }
            // With conflicts (or for --squash): git_merge writes them into the working tree.
            var checkoutOptions = git_checkout_options()
            try GitError.check(git_checkout_options_init(&checkoutOptions, UInt32(GIT_CHECKOUT_OPTIONS_VERSION)), "checkout options")
            checkoutOptions.checkout_strategy = UInt32(
                GIT_CHECKOUT_SAFE.rawValue | GIT_CHECKOUT_ALLOW_CONFLICTS.rawValue | GIT_CHECKOUT_CONFLICT_STYLE_MERGE.rawValue)
            try GitError.check(git_merge(repository.pointer, &heads, 1, &mergeOptions, &checkoutOptions), "merge \(reference)")
            var index: OpaquePointer?
            try GitError.check(git_repository_index(&index, repository.pointer), "open the index")
            defer { git_index_free(index) }
            if git_index_has_conflicts(index) == 1 {
                return .conflicts(paths: conflictPaths(index))
            }
            var tree = git_oid()
            try GitError.check(git_index_write_tree(&tree, index), "write the merged tree")
            if squash {
                git_repository_state_cleanup(repository.pointer)
                let head = repository.headCommit
                let paths = try head.map { head throws(GitError) in try Differ(repository: repository).changedPaths(from: head, to: theirs) } ?? []
                return .squashed(paths: paths)
            }
            guard let head = repository.headCommit, let author = repository.defaultSignature() else {
                throw GitReviewError(
                    "cannot commit the merge: git's user.name and user.email are not set",
                    hint: "git config --global user.name 'You' && git config --global user.email you@example.com")
            }
            let commit = try repository.createCommit(tree: ObjectID(tree), parents: [head, theirs], message: message, author: author)
            try repository.setReference(branch, to: commit, message: "airlock merge \(reference)")
            git_repository_state_cleanup(repository.pointer)
            return .merged(commit: commit)
        } catch let error as GitReviewError {
            throw error
        } catch let error as GitError {
            throw GitReviewError(error)
        } catch {
            throw GitReviewError("the merge failed", cause: error)
        }
    }

    /// Checks out `commit`'s tree over the current one (safe: never overwrites local changes).
    func checkout(commit: ObjectID) throws(GitError) {
        try checkout(commit: commit, forcing: nil)
    }

    /// With `forcing`: only those paths, overwritten whatever the working tree holds (to finish
    /// a `PendingCheckout` a crash interrupted part way).
    func checkout(commit: ObjectID, forcing paths: [String]?) throws(GitError) {
        let tree = try repository.treeOfCommit(commit)
        defer { git_tree_free(tree) }
        var options = git_checkout_options()
        try GitError.check(git_checkout_options_init(&options, UInt32(GIT_CHECKOUT_OPTIONS_VERSION)), "checkout options")
        options.checkout_strategy = UInt32(paths == nil ? GIT_CHECKOUT_SAFE.rawValue : GIT_CHECKOUT_FORCE.rawValue)
        guard let paths else {
            try GitError.check(git_checkout_tree(repository.pointer, tree, &options), "check out \(commit.short)")
            return
        }
        guard !paths.isEmpty else { return }
        options.checkout_strategy |= UInt32(GIT_CHECKOUT_DISABLE_PATHSPEC_MATCH.rawValue)
        let result = withStringArray(paths) { array in
            options.paths = array.pointee
            return git_checkout_tree(repository.pointer, tree, &options)
        }
        try GitError.check(result, "check out \(commit.short)")
    }

    /// The tree merging `theirs` into `ours` makes, without touching the working tree; nil
    /// when it has conflicts.
    private func mergedTree(_ ours: ObjectID, _ theirs: ObjectID, _ options: inout git_merge_options) throws(GitError) -> ObjectID? {
        let ourCommit = try repository.lookupCommit(ours)
        defer { git_commit_free(ourCommit) }
        let theirCommit = try repository.lookupCommit(theirs)
        defer { git_commit_free(theirCommit) }
        var index: OpaquePointer?
        try GitError.check(git_merge_commits(&index, repository.pointer, ourCommit, theirCommit, &options), "merge \(theirs.short)")
        defer { git_index_free(index) }
        if git_index_has_conflicts(index) == 1 { return nil }
        var tree = git_oid()
        try GitError.check(git_index_write_tree_to(&tree, index, repository.pointer), "write the merged tree")
        return ObjectID(tree)
    }

    private func conflictPaths(_ index: OpaquePointer?) -> [String] {
        var iterator: OpaquePointer?
        guard git_index_conflict_iterator_new(&iterator, index) == 0 else { return [] }
        defer { git_index_conflict_iterator_free(iterator) }
        var paths: [String] = []
        var ancestor: UnsafePointer<git_index_entry>?, ours: UnsafePointer<git_index_entry>?, theirs: UnsafePointer<git_index_entry>?
        while git_index_conflict_next(&ancestor, &ours, &theirs, iterator) == 0 {
            if let path = (ours ?? theirs ?? ancestor)?.pointee.path { paths.append(String(cString: path)) }
        }
        return paths
    }
}
