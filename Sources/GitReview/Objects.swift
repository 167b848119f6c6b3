import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// A git object id (SHA-1), comparable and printable.
public struct ObjectID: Hashable, Sendable, CustomStringConvertible, Codable {
    let raw: git_oid

    init(_ raw: git_oid) { self.raw = raw }

    public init?(hex: String) {
        var raw = git_oid()
        guard hex.utf8.count == 40, git_oid_fromstr(&raw, hex) == 0 else { return nil }
        self.raw = raw
    }

    public var hex: String {
        var copy = raw
        var buffer = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&buffer, 41, &copy)
        return String(decoding: buffer.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var short: String { String(hex.prefix(10)) }
    public var description: String { hex }

    public static func == (a: ObjectID, b: ObjectID) -> Bool {
        var x = a.raw, y = b.raw
        return git_oid_equal(&x, &y) != 0
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: raw) { hasher.combine(bytes: $0) }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ObjectID(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an object id: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// One commit's facts for listings.
public struct CommitInfo: Sendable, Codable, Equatable {
    public var id: ObjectID
    public var summary: String
    public var message: String
    public var authorName: String
    public var authorEmail: String
    /// Seconds since the epoch.
    public var time: Int64
    public var parents: [ObjectID]
}

extension Repository {
    /// The commit HEAD points at, nil when unborn.
    public var headCommit: ObjectID? {
        var raw = git_oid()
        guard git_reference_name_to_id(&raw, pointer, "HEAD") == 0 else { return nil }
        return ObjectID(raw)
    }

    /// Whether HEAD is detached (points at a commit, not a branch).
    public var isHeadDetached: Bool { git_repository_head_detached(pointer) == 1 }

    /// The commit a revision (`main`, `HEAD~2`, an id) names.
    public func resolveCommit(_ revision: String) throws(GitError) -> ObjectID {
        var object: OpaquePointer?
        try GitError.check(git_revparse_single(&object, pointer, revision), "resolve `\(revision)`")
        defer { git_object_free(object) }
        var commit: OpaquePointer?
        try GitError.check(git_object_peel(&commit, object, GIT_OBJECT_COMMIT), "`\(revision)` is not a commit")
        defer { git_object_free(commit) }
        guard let id = git_object_id(commit) else { throw GitError(operation: "resolve \(revision)", code: -1, message: "no id") }
        return ObjectID(id.pointee)
    }

    /// Every reference under `prefix` (`refs/remotes/airlock/x/`) with the commit it points at.
    public func references(under prefix: String) -> [String: ObjectID] {
        var result: [String: ObjectID] = [:]
        var iterator: OpaquePointer?
        guard git_reference_iterator_glob_new(&iterator, pointer, prefix + "*") == 0 else { return [:] }
        defer { git_reference_iterator_free(iterator) }
        var reference: OpaquePointer?
        while git_reference_next(&reference, iterator) == 0, let current = reference {
            defer { git_reference_free(current) }
            guard let name = git_reference_name(current).map({ String(cString: $0) }) else { continue }
            var resolved: OpaquePointer?
            guard git_reference_resolve(&resolved, current) == 0 else { continue }
            defer { git_reference_free(resolved) }
            if let target = git_reference_target(resolved) { result[name] = ObjectID(target.pointee) }
        }
        return result
    }

    /// Points `name` at `id` (creating or moving it).
    public func setReference(_ name: String, to id: ObjectID, message: String) throws(GitError) {
        var reference: OpaquePointer?
        var raw = id.raw
        try GitError.check(git_reference_create(&reference, pointer, name, &raw, 1, message), "set \(name)")
        git_reference_free(reference)
    }

    public func deleteReference(_ name: String) throws(GitError) {
        var reference: OpaquePointer?
        guard git_reference_lookup(&reference, pointer, name) == 0 else { return }
        defer { git_reference_free(reference) }
        try GitError.check(git_reference_delete(reference), "delete \(name)")
    }

    /// Copies into this repository, as one pack, the objects of the commits `tips` that it
    /// lacks, read from `source`, which must see this repository's objects too (the mirror has
    /// the project as an alternate). The walk stops at what this repository's refs reach, and
    /// each new commit adds only what differs from its first parent, skipping every subtree
    /// they share: libgit2's fetch instead reads every tree of the commits it stops at (about
    /// 5,000 on a repository of 50,000 files). An object already here may be packed again,
    /// never one missing (a first parent's objects are here, or packed with it).
    func receive(_ tips: [ObjectID], from source: Repository) throws(GitError) {
        let walk = try source.walk(from: tips, hidingWhatReaches: self)
        defer { git_revwalk_free(walk) }
        var builder: OpaquePointer?
        try GitError.check(git_packbuilder_new(&builder, source.pointer), "pack the new objects")
        defer { git_packbuilder_free(builder) }
        git_packbuilder_set_threads(builder, 1)
        var packed = Set<ObjectID>()
        func insert(_ raw: UnsafePointer<git_oid>) throws(GitError) -> Bool {
            guard packed.insert(ObjectID(raw.pointee)).inserted else { return false }
            try GitError.check(git_packbuilder_insert(builder, raw, nil), "pack \(ObjectID(raw.pointee).short)")
            return true
        }
        /// The entries of `new` that `old` lacks or has otherwise, and below them.
        func insertChanges(_ old: OpaquePointer?, _ new: OpaquePointer, depth: Int) throws(GitError) {
            guard depth < Differ.maxTreeDepth else {
                throw GitError(operation: "pack the new objects", code: -1, message: "a tree nested more than \(Differ.maxTreeDepth) deep")
            }
            for index in 0..<git_tree_entrycount(new) {
                guard let entry = git_tree_entry_byindex(new, index), let id = git_tree_entry_id(entry) else { continue }
                let previous = old.flatMap { git_tree_entry_byname($0, git_tree_entry_name(entry)) }
                // Same id and same mode: the same object (a submodule's commit id may equal a
                // tree's or a blob's, which then still has to be packed).
                if let previous, git_oid_equal(git_tree_entry_id(previous), id) != 0,
                    git_tree_entry_filemode_raw(previous) == git_tree_entry_filemode_raw(entry)
                {
                    continue
                }
                switch git_tree_entry_type(entry) {
                case GIT_OBJECT_TREE:
                    guard try insert(id) else { continue }
                    var tree: OpaquePointer?, oldTree: OpaquePointer?
                    try GitError.check(git_tree_lookup(&tree, source.pointer, id), "read a tree")
                    defer { git_tree_free(tree) }
                    if let previous, git_tree_entry_type(previous) == GIT_OBJECT_TREE {
                        _ = git_tree_lookup(&oldTree, source.pointer, git_tree_entry_id(previous))
                    }
                    defer { git_tree_free(oldTree) }
                    guard let tree else { continue }
                    try insertChanges(oldTree, tree, depth: depth + 1)
                case GIT_OBJECT_BLOB:
                    _ = try insert(id)
                default:
                    continue  // a submodule's commit lives in its own repository
                }
            }
        }
        var next = git_oid()
        while true {
            let step = git_revwalk_next(&next, walk)
            if step == GIT_ITEROVER.rawValue { break }
            try GitError.check(step, "walk the new commits")
            var commit: OpaquePointer?
            try GitError.check(git_commit_lookup(&commit, source.pointer, &next), "read commit \(ObjectID(next).short)")
            defer { git_commit_free(commit) }
            _ = try insert(&next)
            var tree: OpaquePointer?, parentTree: OpaquePointer?
            try GitError.check(git_commit_tree(&tree, commit), "read the tree of \(ObjectID(next).short)")
            defer { git_tree_free(tree) }
            if git_commit_parentcount(commit) > 0 {
                var parent: OpaquePointer?
                try GitError.check(git_commit_parent(&parent, commit, 0), "read the parent of \(ObjectID(next).short)")
                defer { git_commit_free(parent) }
                try GitError.check(git_commit_tree(&parentTree, parent), "read the tree of \(ObjectID(next).short)'s parent")
            }
            defer { git_tree_free(parentTree) }
            guard let tree, let treeID = git_tree_id(tree) else { continue }
            if parentTree.map({ git_oid_equal(git_tree_id($0), treeID) != 0 }) == true { continue }
            if try insert(treeID) { try insertChanges(parentTree, tree, depth: 0) }
        }
        guard git_packbuilder_object_count(builder) > 0 else { return }
        try GitError.check(git_packbuilder_write(builder, objectsDirectory + "/pack", 0, nil, nil), "write the fetched pack")
    }

    /// How many commits `a` has that `b` has not, and the other way round.
    public func aheadBehind(_ a: ObjectID, _ b: ObjectID) -> (ahead: Int, behind: Int) {
        var ahead = 0, behind = 0
        var x = a.raw, y = b.raw
        guard git_graph_ahead_behind(&ahead, &behind, pointer, &x, &y) == 0 else { return (0, 0) }
        return (ahead, behind)
    }

    public func mergeBase(_ a: ObjectID, _ b: ObjectID) -> ObjectID? {
        var out = git_oid()
        var x = a.raw, y = b.raw
        guard git_merge_base(&out, pointer, &x, &y) == 0 else { return nil }
        return ObjectID(out)
    }

    public func isAncestor(_ ancestor: ObjectID, of descendant: ObjectID) -> Bool {
        if ancestor == descendant { return true }
        var x = descendant.raw, y = ancestor.raw
        return git_graph_descendant_of(pointer, &x, &y) == 1
    }

    public func commitInfo(_ id: ObjectID) throws(GitError) -> CommitInfo {
        let commit = try lookupCommit(id)
        defer { git_commit_free(commit) }
        let author = git_commit_author(commit)
        var parents: [ObjectID] = []
        for index in 0..<git_commit_parentcount(commit) {
            if let parent = git_commit_parent_id(commit, index) { parents.append(ObjectID(parent.pointee)) }
        }
        return CommitInfo(
            id: id,
            summary: git_commit_summary(commit).map { String(cString: $0) } ?? "",
            message: git_commit_message(commit).map { String(cString: $0) } ?? "",
            authorName: author?.pointee.name.map { String(cString: $0) } ?? "",
            authorEmail: author?.pointee.email.map { String(cString: $0) } ?? "",
            time: Int64(git_commit_time(commit)),
            parents: parents)
    }

    /// A walk (the caller frees it) over the commits of this repository reachable from `tips`
    /// and from no reference (nor HEAD) of `known`: the commits `known` lacks.
    func walk(from tips: [ObjectID], hidingWhatReaches known: Repository) throws(GitError) -> OpaquePointer? {
        var walk: OpaquePointer?
        try GitError.check(git_revwalk_new(&walk, pointer), "walk the new commits")
        for tip in tips {
            var raw = tip.raw
            do {
                try GitError.check(git_revwalk_push(walk, &raw), "walk from \(tip.short)")
            } catch {
                git_revwalk_free(walk)
                throw error
            }
        }
        for id in Set(known.references(under: "refs/").values).union(known.headCommit.map { [$0] } ?? []) {
            var raw = id.raw
            _ = git_revwalk_hide(walk, &raw)  // a ref to a tag or a blob hides nothing
        }
        return walk
    }

    /// The commits reachable from `tip` but not from `base`, newest first.
    public func commits(from tip: ObjectID, excluding base: ObjectID?) throws(GitError) -> [ObjectID] {
        var walker: OpaquePointer?
        try GitError.check(git_revwalk_new(&walker, pointer), "walk history")
        defer { git_revwalk_free(walker) }
        git_revwalk_sorting(walker, UInt32(GIT_SORT_TOPOLOGICAL.rawValue | GIT_SORT_TIME.rawValue))
        var raw = tip.raw
        try GitError.check(git_revwalk_push(walker, &raw), "walk from \(tip.short)")
        if var hidden = base?.raw { try GitError.check(git_revwalk_hide(walker, &hidden), "hide \(base?.short ?? "")") }
        var result: [ObjectID] = []
        var next = git_oid()
        while git_revwalk_next(&next, walker) == 0 { result.append(ObjectID(next)) }
        return result
    }

    func lookupCommit(_ id: ObjectID) throws(GitError) -> OpaquePointer {
        var commit: OpaquePointer?
        var raw = id.raw
        try GitError.check(git_commit_lookup(&commit, pointer, &raw), "find commit \(id.short)")
        guard let commit else { throw GitError(operation: "find commit \(id.short)", code: -1, message: "missing") }
        return commit
    }

    /// The tree of commit `id` (caller frees).
    func treeOfCommit(_ id: ObjectID) throws(GitError) -> OpaquePointer {
        let commit = try lookupCommit(id)
        defer { git_commit_free(commit) }
        var tree: OpaquePointer?
        try GitError.check(git_commit_tree(&tree, commit), "read the tree of \(id.short)")
        guard let tree else { throw GitError(operation: "tree of \(id.short)", code: -1, message: "missing") }
        return tree
    }

    func treeID(ofCommit id: ObjectID) throws(GitError) -> ObjectID {
        let tree = try treeOfCommit(id)
        defer { git_tree_free(tree) }
        return ObjectID(git_tree_id(tree).pointee)
    }

    /// A commit from `tree` with `parents`, not attached to any reference.
    func createCommit(tree treeID: ObjectID, parents: [ObjectID], message: String, author: Signature, committer: Signature? = nil) throws(GitError)
        -> ObjectID
    {
        var tree: OpaquePointer?
        var rawTree = treeID.raw
        try GitError.check(git_tree_lookup(&tree, pointer, &rawTree), "find tree \(treeID.short)")
        defer { git_tree_free(tree) }
        var parentCommits: [OpaquePointer?] = []
        defer { parentCommits.forEach { git_commit_free($0) } }
        for parent in parents { parentCommits.append(try lookupCommit(parent)) }
        let authorSignature = try author.make()
        defer { git_signature_free(authorSignature) }
        let committerSignature = try (committer ?? author).make()
        defer { git_signature_free(committerSignature) }
        var out = git_oid()
        let code = parentCommits.withUnsafeMutableBufferPointer { buffer in
            git_commit_create(&out, pointer, nil, authorSignature, committerSignature, "UTF-8", message, tree, buffer.count, buffer.baseAddress)
        }
        try GitError.check(code, "create a commit")
        return ObjectID(out)
    }

    /// Someone who writes commits; `time` nil means now.
    public struct Signature: Sendable, Equatable {
        public var name: String
        public var email: String
        public var time: Int64?
        public var offsetMinutes: Int32 = 0

        public init(name: String, email: String, time: Int64? = nil) {
            self.name = name
            self.email = email
            self.time = time
        }

        func make() throws(GitError) -> UnsafeMutablePointer<git_signature>? {
            var signature: UnsafeMutablePointer<git_signature>?
            if let time {
                try GitError.check(git_signature_new(&signature, name, email, git_time_t(time), offsetMinutes), "signature \(name) <\(email)>")
            } else {
                try GitError.check(git_signature_now(&signature, name, email), "signature \(name) <\(email)>")
            }
            return signature
        }
    }

    /// The user's identity from their git config (user.name, user.email).
    public func defaultSignature() -> Signature? {
        guard let name = configValue("user.name"), let email = configValue("user.email") else { return nil }
        return Signature(name: name, email: email)
    }
}

/// Calls `body` with a git_strarray of `strings` (valid only during the call).
func withStringArray<R>(_ strings: [String], _ body: (UnsafePointer<git_strarray>) -> R) -> R {
    var pointers = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        var array = git_strarray(strings: buffer.baseAddress, count: buffer.count)
        return body(&array)
    }
}
