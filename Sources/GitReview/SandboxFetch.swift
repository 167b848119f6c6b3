import Clibgit2

/// What `airlock fetch` brought home.
public struct FetchReport: Sendable, Codable, Equatable {
    public struct Branch: Sendable, Codable, Equatable {
        public enum Change: String, Sendable, Codable {
            case new, updated, rewritten, unchanged, deleted
        }

        /// The clone's branch name (`main`, `feature/x`), or `uncommitted` / `detached`.
        public var name: String
        /// Where it is in the project: `refs/remotes/airlock/<sandbox>/<name>`.
        public var ref: String
        public var change: Change
        public var before: ObjectID?
        public var after: ObjectID?
        /// Commits `after` has that `before` had not (all since the base when new).
        public var newCommits: Int
        /// Files that differ between the sandbox's base and `after`.
        public var filesChanged: Int
    }

    public var sandbox: String
    /// The clone's current branch; nil when its HEAD is detached.
    public var currentBranch: String?
    /// The commit the sandbox started from, when known.
    public var base: ObjectID?
    public var branches: [Branch]
    /// Paths of the uncommitted work captured on `<prefix>uncommitted`, if any.
    public var uncommittedPaths: [String]
    /// Things in the clone that were refused or ignored, one sentence each.
    public var refused: [String]
    /// How the working tree was looked at: every file, or only the paths the last session's
    /// `ChangeJournal` names.
    public var workingTreeCheck: WorkingTreeCheck = .scan
    public enum WorkingTreeCheck: String, Sendable, Codable { case scan, journal }
    /// Changes (in any fetched branch, since the base) to files the host or the user's tools
    /// act on (`FlaggedChange`).
    public var flagged: [FlaggedChange] = []

    /// What the agent's work is: the uncommitted capture when there is one, else the
    /// current branch, else the detached HEAD.
    public var workRef: String? {
        if let uncommitted = branches.first(where: { $0.name == SandboxFetch.uncommittedName && $0.after != nil }) { return uncommitted.ref }
        if let currentBranch, let branch = branches.first(where: { $0.name == currentBranch && $0.after != nil }) { return branch.ref }
        return branches.first(where: { $0.name == SandboxFetch.detachedName && $0.after != nil })?.ref
    }

    public var hasNews: Bool { branches.contains { $0.change != .unchanged } }
}

/// Brings a sandbox's clone home: its branches become `refs/remotes/airlock/<sandbox>/<branch>`
/// in the project, its uncommitted work a commit on `…/uncommitted`. The clone itself is not
/// changed, and only read through `CloneMirror`. In the project, only objects and references
/// under that prefix are written.
public enum SandboxFetch {
    public static let uncommittedName = "uncommitted"
    public static let detachedName = "detached"
    /// A file of the uncommitted work larger than this is left out (and named as refused).
    public static let maxWorkingFileBytes = 100 << 20

    public static func referencePrefix(sandbox: String) -> String { "refs/remotes/airlock/\(sandbox)/" }

    /// - Parameters:
    ///   - project: the user's repository (its working tree root).
    ///   - clone: the sandbox's clone (its working tree root).
    ///   - mirror: the host's private mirror directory for this sandbox.
    ///   - base: the commit the sandbox started from, when recorded.
    ///   - journal: what the last session changed, when it can be used (the sandbox is
    ///     stopped); nil scans the whole working tree.
    ///   - masks: paths never brought home: left out of the uncommitted capture; a branch
    ///     whose new commits hold a `[mask.*]` path is not fetched.
    public static func run(
        project: String, clone: String, mirror: String, sandbox: String, base: ObjectID?, journal: ChangeJournal? = nil,
        masks: MaskedPaths = MaskedPaths([:])
    ) throws(GitReviewError) -> FetchReport {
        _ = LibGit2Runtime.initialised
        let user: Repository
        do {
            user = try Repository.open(project)
        } catch {
            throw GitReviewError(error)
        }
        let mirrored = try CloneMirror.sync(clone: clone, into: mirror, projectObjects: user.objectsDirectory)
        do {
            return try fetch(user: user, mirror: mirrored, clone: clone, sandbox: sandbox, base: base, journal: journal, masks: masks)
        } catch {
            // What was refused usually explains the failure (a pack left out, say).
            guard !mirrored.refusals.isEmpty else { throw error }
            throw GitReviewError(
                error.message + "\nrefused in the clone:\n" + mirrored.refusals.map { "  " + $0 }.joined(separator: "\n"), hint: error.hint)
        }
    }

    private static func fetch(
        user: Repository, mirror: CloneMirror, clone: String, sandbox: String, base: ObjectID?, journal: ChangeJournal?,
        masks: MaskedPaths
    ) throws(GitReviewError) -> FetchReport {
        var refused = mirror.refusals
        let source: Repository
        do {
            source = try Repository.open(mirror.path)
        } catch {
            throw GitReviewError(error)
        }
        let prefix = referencePrefix(sandbox: sandbox)
        let currentBranch = source.currentBranch
        // Where each fetched ref goes: the clone's branches, then the captures (which win over
        // a branch of the same name).
        var targets: [String: ObjectID] = [:]
        for (name, id) in source.references(under: "refs/heads/") { targets[prefix + name.dropFirst("refs/heads/".count)] = id }
        var uncommittedPaths: [String] = []
        var check = FetchReport.WorkingTreeCheck.scan

        if let head = source.headCommit {
            do {
                let captured = try captureUncommitted(
                    in: source, mirror: mirror, clone: clone, head: head, sandbox: sandbox, journal: journal, masks: masks, refused: &refused)
                check = captured.check
                if let captured = captured.work {
                    if targets[prefix + uncommittedName] != nil {
                        refused.append("the clone's branch `\(uncommittedName)` is not fetched: that name holds the captured uncommitted work")
                    }
                    targets[prefix + uncommittedName] = captured.commit
                    uncommittedPaths = captured.paths
                }
                if currentBranch == nil {
                    targets[prefix + detachedName] = head
                }
            } catch {
                throw GitReviewError("cannot capture the sandbox's uncommitted work", cause: error)
            }
        }

        let before = user.references(under: prefix)
        // A masked path in a new commit: that ref keeps what an earlier fetch brought, if any.
        for (name, id) in targets.sorted(by: { $0.key < $1.key }) {
            let found: MaskedPathInHistory?
            do {
                found = try source.maskedPath(in: masks.fromMasks, from: id, notIn: user)
            } catch {
                throw GitReviewError("cannot look for masked paths in the sandbox's commits", cause: error)
            }
            guard let found else { continue }
            refused.append(
                "`\(name.dropFirst(prefix.count))` is not fetched: commit \(found.commit.short) has \(found.path.path), which [\(found.path.entry)] hides; "
                    + "remove it from that history in the sandbox, or drop the mask")
            targets[name] = before[name]
            if name == prefix + uncommittedName { uncommittedPaths = [] }
        }
        do {
            try user.receive(Array(Set(targets.values)), from: source)
            for (name, id) in targets where before[name] != id { try user.setReference(name, to: id, message: "airlock fetch") }
        } catch {
            throw GitReviewError("cannot fetch from the sandbox's clone", cause: error)
        }
        // Branches deleted in the clone (and a capture that is gone) are removed here too.
        for name in user.references(under: prefix).keys where targets[name] == nil {
            try? user.deleteReference(name)
        }
        let after = user.references(under: prefix)

        var branches: [FetchReport.Branch] = []
        var flagged: [FlaggedChange] = []
        for name in Set(before.keys).union(after.keys).sorted() {
            let old = before[name], new = after[name]
            let change: FetchReport.Branch.Change
            var newCommits = 0
            switch (old, new) {
            case (nil, let new?):
                change = .new
                newCommits = (try? user.commits(from: new, excluding: base).count) ?? 0
            case (let old?, nil):
                change = .deleted
                _ = old
            case (let old?, let new?) where old == new:
                change = .unchanged
            case (let old?, let new?):
                let counts = user.aheadBehind(new, old)
                change = counts.behind > 0 ? .rewritten : .updated
                newCommits = counts.ahead
            default:
                continue
            }
            var files = 0
            if let new, let from = base ?? user.headCommit {
                let paths = (try? Differ(repository: user).changedPaths(from: from, to: new)) ?? []
                files = paths.count
                for flag in FlaggedChange.among(paths) where !flagged.contains(flag) { flagged.append(flag) }
            }
            branches.append(
                .init(
                    name: String(name.dropFirst(prefix.count)), ref: name, change: change, before: old, after: new,
                    newCommits: newCommits, filesChanged: files))
        }
        return FetchReport(
            sandbox: sandbox, currentBranch: currentBranch, base: base, branches: branches,
            uncommittedPaths: uncommittedPaths, refused: refused, workingTreeCheck: check, flagged: flagged.sorted { $0.path < $1.path })
    }

    /// The clone's index and working tree against its HEAD, as one commit on top of HEAD (in
    /// the mirror); nil when there is nothing uncommitted. See `WorkingTreeScan`; with a
    /// `journal` that can vouch for the rest, only the paths it names are looked at.
    static func captureUncommitted(
        in source: Repository, mirror: CloneMirror, clone: String, head: ObjectID, sandbox: String, journal: ChangeJournal?,
        masks: MaskedPaths, refused: inout [String]
    ) throws -> (work: (commit: ObjectID, paths: [String])?, check: FetchReport.WorkingTreeCheck) {
        var index: OpaquePointer?
        defer { git_index_free(index) }
        if mirror.indexTime == nil || git_index_open(&index, mirror.path + "/index") != 0 {
            if mirror.indexTime != nil { refused.append("the clone's index could not be read; its staged changes are taken from the working tree") }
            git_index_free(index)
            try GitError.check(git_index_new(&index), "make an index")
            let headTree = try source.treeOfCommit(head)
            defer { git_tree_free(headTree) }
            try GitError.check(git_index_read_tree(index, headTree), "read HEAD's tree")
        }
        var only: [String]?
        if let journal, mirror.indexTime != nil, git_index_has_conflicts(index) == 0 {
            var tree = git_oid()
            if git_index_write_tree_to(&tree, index, source.pointer) == 0 {
                only = journal.paths(indexTreeNow: ObjectID(tree), in: source)
            }
        }
        var scan = WorkingTreeScan(repository: source, clone: clone, indexTime: mirror.indexTime, masks: masks)
        var tree = try scan.tree(index: index, only: only)
        if only != nil && scan.sawHardLink {
            // A second name for a file: what changed through it can't be told. Everything.
            git_index_free(index)
            index = nil
            try GitError.check(git_index_open(&index, mirror.path + "/index"), "read the clone's index")
            only = nil
            scan = WorkingTreeScan(repository: source, clone: clone, indexTime: mirror.indexTime, masks: masks)
            tree = try scan.tree(index: index)
        }
        let check: FetchReport.WorkingTreeCheck = only == nil ? .scan : .journal
        refused += scan.refused
        guard tree != (try source.treeID(ofCommit: head)) else { return (nil, check) }
        // Dated like HEAD, so the same uncommitted work gives the same commit on every fetch.
        let headTime = (try? source.commitInfo(head).time) ?? 0
        let signature = Repository.Signature(name: "airlock", email: "airlock@\(sandbox).sandbox.invalid", time: headTime)
        let commit = try source.createCommit(
            tree: tree, parents: [head],
            message:
                "Uncommitted work in sandbox \(sandbox)\n\nCaptured by `airlock fetch` from the sandbox's working tree; the clone itself was left as it was.\n",
            author: signature)
        return ((commit, try Differ(repository: source).changedPaths(from: head, to: commit)), check)
    }
}
