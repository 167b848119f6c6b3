import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// An open libgit2 repository; freed when released.
public final class Repository {
    let pointer: OpaquePointer

    private init(pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit { git_repository_free(pointer) }

    public static func open(_ path: String) throws(GitError) -> Repository {
        _ = LibGit2Runtime.initialised
        var pointer: OpaquePointer?
        try GitError.check(
            git_repository_open_ext(&pointer, path, UInt32(GIT_REPOSITORY_OPEN_NO_SEARCH.rawValue), nil), "open the repository at \(path)")
        guard let pointer else { throw GitError(operation: "open \(path)", code: -1, message: "no repository") }
        return Repository(pointer: pointer)
    }

    /// The object directory (`<common git dir>/objects`).
    var objectsDirectory: String {
        let common = git_repository_commondir(pointer).map { String(cString: $0) } ?? ""
        return (common.hasSuffix("/") ? common : common + "/") + "objects"
    }

    /// The branch HEAD points at (`main`), or nil when HEAD is detached or unborn.
    public var currentBranch: String? {
        var reference: OpaquePointer?
        guard git_repository_head(&reference, pointer) == 0, let reference else { return nil }
        defer { git_reference_free(reference) }
        guard git_reference_is_branch(reference) != 0, let name = git_reference_shorthand(reference) else { return nil }
        return String(cString: name)
    }

    /// Clones `source` (a local repository) into `destination` with every branch and the
    /// history, checking out `branch` (or the source's current branch). Objects are copied,
    /// never hard-linked, so nothing in the clone shares an inode with the user's repository.
    public static func cloneLocal(from source: String, to destination: String, branch: String?) throws(GitError) -> Repository {
        _ = LibGit2Runtime.initialised
        var options = git_clone_options()
        try GitError.check(git_clone_options_init(&options, UInt32(GIT_CLONE_OPTIONS_VERSION)), "clone options")
        options.local = GIT_CLONE_LOCAL_NO_LINKS
        options.checkout_opts.checkout_strategy = UInt32(GIT_CHECKOUT_SAFE.rawValue)
        var pointer: OpaquePointer?
        let code: Int32
        if let branch {
            code = branch.withCString { name in
                options.checkout_branch = name
                return git_clone(&pointer, source, destination, &options)
            }
        } else {
            code = git_clone(&pointer, source, destination, &options)
        }
        try GitError.check(code, "clone \(source) into \(destination)")
        guard let pointer else { throw GitError(operation: "clone", code: -1, message: "no repository") }
        let repository = Repository(pointer: pointer)
        try repository.createLocalBranches()
        return repository
    }

    /// A local branch for each `origin/*` branch the clone has no branch for, so the agent
    /// sees the project's branches as its own.
    private func createLocalBranches() throws(GitError) {
        var iterator: OpaquePointer?
        try GitError.check(git_branch_iterator_new(&iterator, pointer, GIT_BRANCH_REMOTE), "list branches")
        defer { git_branch_iterator_free(iterator) }
        var reference: OpaquePointer?
        var type = GIT_BRANCH_REMOTE
        while git_branch_next(&reference, &type, iterator) == 0, let remote = reference {
            defer { git_reference_free(remote) }
            guard let shorthand = git_reference_shorthand(remote).map({ String(cString: $0) }), shorthand.hasPrefix("origin/") else { continue }
            let name = String(shorthand.dropFirst("origin/".count))
            guard name != "HEAD" else { continue }
            var existing: OpaquePointer?
            if git_branch_lookup(&existing, pointer, name, GIT_BRANCH_LOCAL) == 0 {
                git_reference_free(existing)
                continue
            }
            var commit: OpaquePointer?
            guard let target = git_reference_target(remote), git_commit_lookup(&commit, pointer, target) == 0 else { continue }
            defer { git_commit_free(commit) }
            var created: OpaquePointer?
            try GitError.check(git_branch_create(&created, pointer, name, commit, 0), "create branch \(name)")
            git_reference_free(created)
        }
    }

    /// Sets a value in the repository's own config file.
    public func setConfig(_ key: String, _ value: String) throws(GitError) {
        var config: OpaquePointer?
        try GitError.check(git_repository_config(&config, pointer), "open the config")
        defer { git_config_free(config) }
        try GitError.check(git_config_set_string(config, key, value), "set \(key)")
    }

    /// A value from the repository's effective config (its own, the user's, the system's).
    public func configValue(_ key: String) -> String? {
        var config: OpaquePointer?
        guard git_repository_config_snapshot(&config, pointer) == 0 else { return nil }
        defer { git_config_free(config) }
        var value: UnsafePointer<CChar>?
        guard git_config_get_string(&value, config, key) == 0, let value else { return nil }
        return String(cString: value)
    }
}

extension Repository {
    /// The working tree's changes against HEAD (staged, unstaged and untracked files), as a
    /// patch with binary content, leaving out the files `masks` hide; empty when the tree is
    /// clean.
    public func uncommittedPatch(excluding masks: MaskedPaths = MaskedPaths([:])) throws(GitError) -> [UInt8] {
        guard let head = headCommit else { return [] }
        let tree = try treeOfCommit(head)
        defer { git_tree_free(tree) }
        var options = git_diff_options()
        try GitError.check(git_diff_options_init(&options, UInt32(GIT_DIFF_OPTIONS_VERSION)), "diff options")
        options.flags = UInt32(
            GIT_DIFF_INCLUDE_UNTRACKED.rawValue | GIT_DIFF_RECURSE_UNTRACKED_DIRS.rawValue
                | GIT_DIFF_SHOW_UNTRACKED_CONTENT.rawValue | GIT_DIFF_SHOW_BINARY.rawValue)
        var diff: OpaquePointer?
        try GitError.check(git_diff_tree_to_workdir_with_index(&diff, pointer, tree, &options), "diff your working tree")
        defer { git_diff_free(diff) }
        guard git_diff_num_deltas(diff) > 0 else { return [] }
        var patch: [UInt8] = []
        // One file's patch at a time, leaving out what a mask hides.
        for index in 0..<git_diff_num_deltas(diff) {
            guard let delta = git_diff_get_delta(diff, index) else { continue }
            let paths = [delta.pointee.old_file.path, delta.pointee.new_file.path].compactMap { $0.map { String(cString: $0) } }
            if paths.contains(where: { masks.covering($0) != nil }) { continue }
            var filePatch: OpaquePointer?
            try GitError.check(git_patch_from_diff(&filePatch, diff, index), "format your changes")
            defer { git_patch_free(filePatch) }
            var buffer = git_buf()
            defer { git_buf_dispose(&buffer) }
            try GitError.check(git_patch_to_buf(&buffer, filePatch), "format your changes")
            if let bytes = buffer.ptr { patch += UnsafeRawBufferPointer(start: bytes, count: buffer.size) }
        }
        return patch
    }

    /// Applies `patch` (from `uncommittedPatch`) to this repository's working tree and index
    /// and commits it on HEAD. Returns the commit, nil for an empty patch.
    public func commitPatch(_ patch: [UInt8], message: String, author: Signature) throws(GitError) -> ObjectID? {
        guard !patch.isEmpty, let head = headCommit else { return nil }
        var diff: OpaquePointer?
        try GitError.check(
            patch.withUnsafeBytes { git_diff_from_buffer(&diff, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }, "read the patch")
        defer { git_diff_free(diff) }
        try GitError.check(git_apply(pointer, diff, GIT_APPLY_LOCATION_BOTH, nil), "apply your uncommitted changes")
        var index: OpaquePointer?
        try GitError.check(git_repository_index(&index, pointer), "open the index")
        defer { git_index_free(index) }
        var tree = git_oid()
        try GitError.check(git_index_write_tree(&tree, index), "write the tree")
        let commit = try createCommit(tree: ObjectID(tree), parents: [head], message: message, author: author)
        if let branch = currentBranch {
            try setReference("refs/heads/" + branch, to: commit, message: "airlock: uncommitted changes carried over")
        } else {
            try GitError.check(withUnsafePointer(to: commit.raw) { git_repository_set_head_detached(pointer, $0) }, "move HEAD")
        }
        return commit
    }
}

extension Repository {
    /// A submodule as the superproject records it.
    public struct Submodule: Sendable, Equatable {
        public var name: String
        public var path: String
        /// The commit the superproject's index records for it.
        public var commit: ObjectID?
    }

    public var submodules: [Submodule] {
        final class Collected {
            var list: [Submodule] = []
        }
        let collected = Collected()
        let payload = Unmanaged.passUnretained(collected).toOpaque()
        _ = git_submodule_foreach(
            pointer,
            { submodule, _, payload in
                guard let submodule, let payload else { return 0 }
                let collected = Unmanaged<Collected>.fromOpaque(payload).takeUnretainedValue()
                collected.list.append(
                    Submodule(
                        name: git_submodule_name(submodule).map { String(cString: $0) } ?? "",
                        path: git_submodule_path(submodule).map { String(cString: $0) } ?? "",
                        commit: git_submodule_index_id(submodule).map { ObjectID($0.pointee) }))
                return 0
            }, payload)
        return withExtendedLifetime(collected) { collected.list }
    }

    /// Clones the project's checked-out submodules into this (freshly cloned) repository at
    /// their recorded commits, from the project's own copies (no network, no hard links), and
    /// registers them in this repository's config. Returns the paths it could not initialise.
    public func initialiseSubmodules(fromProject project: String) throws(GitError) -> [String] {
        var missing: [String] = []
        guard let workdir = git_repository_workdir(pointer).map({ String(cString: $0) }) else { return [] }
        for submodule in submodules {
            let source = project + "/" + submodule.path
            var info = stat()
            guard let commit = submodule.commit, lstat(source + "/.git", &info) == 0 else {
                missing.append(submodule.path)
                continue
            }
            let destination = workdir + submodule.path
            let clone = try Repository.cloneLocal(from: source, to: destination, branch: nil)
            var raw = commit.raw
            guard git_repository_set_head_detached(clone.pointer, &raw) == 0 else {
                missing.append(submodule.path)
                continue
            }
            var options = git_checkout_options()
            try GitError.check(git_checkout_options_init(&options, UInt32(GIT_CHECKOUT_OPTIONS_VERSION)), "checkout options")
            options.checkout_strategy = UInt32(GIT_CHECKOUT_FORCE.rawValue)
            try GitError.check(git_checkout_head(clone.pointer, &options), "check out submodule \(submodule.path)")
            var handle: OpaquePointer?
            if git_submodule_lookup(&handle, pointer, submodule.name) == 0 {
                git_submodule_init(handle, 0)
                git_submodule_free(handle)
            }
        }
        return missing
    }
}
