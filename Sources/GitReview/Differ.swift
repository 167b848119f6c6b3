import Clibgit2

/// One file's change between two commits, with its hunks when it is text.
public struct FileChange: Sendable, Equatable {
    public enum Status: String, Sendable {
        case added = "A", modified = "M", deleted = "D", typeChanged = "T"
    }

    public struct Hunk: Sendable, Equatable {
        /// `@@ -1,3 +1,4 @@ context`
        public var header: String
        public var oldStart: Int
        public var oldLines: Int
        public var newStart: Int
        public var newLines: Int
        /// Each line with its origin first (` `, `+`, `-`, or `\` for "No newline at end of file").
        public var lines: [String]

        public init(header: String, oldStart: Int, oldLines: Int, newStart: Int, newLines: Int, lines: [String]) {
            self.header = header
            self.oldStart = oldStart
            self.oldLines = oldLines
            self.newStart = newStart
            self.newLines = newLines
            self.lines = lines
        }
    }

    public var path: String
    public var status: Status
    public var binary: Bool
    public var oldID: ObjectID?
    public var newID: ObjectID?
    public var oldMode: UInt32
    public var newMode: UInt32
    public var hunks: [Hunk]
    public var additions: Int
    public var deletions: Int
}

/// Diffs between commits (tree to tree, no rename detection), rendered like git does.
public struct Differ {
    let repository: Repository

    public init(repository: Repository) {
        self.repository = repository
    }

    /// Paths that differ between the two commits, sorted bytewise: a walk of both trees that
    /// skips every subtree they share. (libgit2's tree-to-tree diff reads every subtree of both
    /// sides: about ten times slower on a repository of 50,000 files.)
    public func changedPaths(from old: ObjectID, to new: ObjectID) throws(GitError) -> [String] {
        let oldTree = try repository.treeOfCommit(old)
        defer { git_tree_free(oldTree) }
        let newTree = try repository.treeOfCommit(new)
        defer { git_tree_free(newTree) }
        return try changedPaths(oldTree, newTree)
    }

    private func changedPaths(_ oldTree: OpaquePointer, _ newTree: OpaquePointer) throws(GitError) -> [String] {
        var paths: [String] = []
        try collectChanges(oldTree, newTree, prefix: "", depth: 0, into: &paths)
        return paths.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// Trees deeper than this are refused (the fetched objects come from a hostile clone).
    static let maxTreeDepth = 1024

    /// Appends the paths below `prefix` that differ between two trees (either may be nil: all
    /// of the other's files). Both trees' entries are in git's order, so they merge like two
    /// sorted lists; equal subtrees are skipped unread.
    private func collectChanges(_ old: OpaquePointer?, _ new: OpaquePointer?, prefix: String, depth: Int, into paths: inout [String]) throws(GitError) {
        guard depth < Self.maxTreeDepth else {
            throw GitError(operation: "compare trees", code: -1, message: "\(prefix) is nested more than \(Self.maxTreeDepth) directories deep")
        }
        let oldCount = old.map { git_tree_entrycount($0) } ?? 0
        let newCount = new.map { git_tree_entrycount($0) } ?? 0
        var i = 0, j = 0
        while i < oldCount || j < newCount {
            let a = i < oldCount ? git_tree_entry_byindex(old, i) : nil
            let b = j < newCount ? git_tree_entry_byindex(new, j) : nil
            // git_tree_entry_cmp orders like git: a tree "x" as "x/", so a file and a tree of
            // the same name are two entries (one removed, one added).
            let order: Int32 = a == nil ? 1 : b == nil ? -1 : git_tree_entry_cmp(a, b)
            if order == 0 {
                i += 1
                j += 1
                if git_oid_equal(git_tree_entry_id(a), git_tree_entry_id(b)) != 0 && git_tree_entry_filemode(a) == git_tree_entry_filemode(b) { continue }
                try visit(a, b, prefix: prefix, depth: depth, into: &paths)
            } else if order < 0 {
                i += 1
                try visit(a, nil, prefix: prefix, depth: depth, into: &paths)
            } else {
                j += 1
                try visit(nil, b, prefix: prefix, depth: depth, into: &paths)
            }
        }
    }

    /// One changed entry (same name on both sides, or present on one side only).
    private func visit(_ a: OpaquePointer?, _ b: OpaquePointer?, prefix: String, depth: Int, into paths: inout [String]) throws(GitError) {
        guard let named = a ?? b else { return }
        let path = prefix + String(cString: git_tree_entry_name(named))
        guard git_tree_entry_type(named) == GIT_OBJECT_TREE else {
            paths.append(path)
            return
        }
        let oldTree = try a.map { entry throws(GitError) in try subtree(entry, path) }
        defer { git_tree_free(oldTree) }
        let newTree = try b.map { entry throws(GitError) in try subtree(entry, path) }
        defer { git_tree_free(newTree) }
        try collectChanges(oldTree, newTree, prefix: path + "/", depth: depth + 1, into: &paths)
    }

    private func subtree(_ entry: OpaquePointer, _ path: String) throws(GitError) -> OpaquePointer {
        var tree: OpaquePointer?
        try GitError.check(git_tree_lookup(&tree, repository.pointer, git_tree_entry_id(entry)), "read the tree of \(path)")
        guard let tree else { throw GitError(operation: "read the tree of \(path)", code: -1, message: "missing") }
        return tree
    }

    /// The unified diff (`git diff old new`), binary files as "Binary files differ".
    public func patch(from old: ObjectID, to new: ObjectID) throws(GitError) -> String {
        try withDiff(old, new, empty: "") { diff throws(GitError) in
            var buffer = git_buf()
            defer { git_buf_dispose(&buffer) }
            try GitError.check(git_diff_to_buf(&buffer, diff, GIT_DIFF_FORMAT_PATCH), "format the diff")
            return buffer.ptr.map { String(cString: $0) } ?? ""
        }
    }

    /// `git diff --stat` output for `width` columns.
    public func stat(from old: ObjectID, to new: ObjectID, width: Int = 80) throws(GitError) -> String {
        try withDiff(old, new, empty: "") { diff throws(GitError) in
            var stats: OpaquePointer?
            try GitError.check(git_diff_get_stats(&stats, diff), "count the changes")
            defer { git_diff_stats_free(stats) }
            var buffer = git_buf()
            defer { git_buf_dispose(&buffer) }
            let format = git_diff_stats_format_t(GIT_DIFF_STATS_FULL.rawValue | GIT_DIFF_STATS_INCLUDE_SUMMARY.rawValue)
            try GitError.check(git_diff_stats_to_buf(&buffer, stats, format, max(40, width)), "format the stat")
            return buffer.ptr.map { String(cString: $0) } ?? ""
        }
    }

    /// Every changed file with its hunks (the model `review` works on).
    public func changes(from old: ObjectID, to new: ObjectID) throws(GitError) -> [FileChange] {
        try withDiff(old, new, empty: []) { diff throws(GitError) in
            var files: [FileChange] = []
            for index in 0..<git_diff_num_deltas(diff) {
                var patch: OpaquePointer?
                try GitError.check(git_patch_from_diff(&patch, diff, index), "read a change")
                defer { git_patch_free(patch) }
                guard let delta = git_patch_get_delta(patch)?.pointee else { continue }
                let status: FileChange.Status
                switch delta.status {
                case GIT_DELTA_ADDED: status = .added
                case GIT_DELTA_DELETED: status = .deleted
                case GIT_DELTA_TYPECHANGE: status = .typeChanged
                default: status = .modified
                }
                var hunks: [FileChange.Hunk] = []
                let binary = delta.flags & UInt32(GIT_DIFF_FLAG_BINARY.rawValue) != 0
                if !binary {
                    for hunkIndex in 0..<git_patch_num_hunks(patch) {
                        var hunkPointer: UnsafePointer<git_diff_hunk>?
                        var lineCount = 0
                        try GitError.check(git_patch_get_hunk(&hunkPointer, &lineCount, patch, hunkIndex), "read a hunk")
                        guard let hunk = hunkPointer?.pointee else { continue }
                        var lines: [String] = []
                        for lineIndex in 0..<lineCount {
                            var linePointer: UnsafePointer<git_diff_line>?
                            try GitError.check(git_patch_get_line_in_hunk(&linePointer, patch, hunkIndex, lineIndex), "read a line")
                            guard let line = linePointer?.pointee else { continue }
                            let text = line.content.map { content in
                                String(decoding: UnsafeRawBufferPointer(start: content, count: line.content_len), as: UTF8.self)
                            } ?? ""
                            switch UInt8(bitPattern: line.origin) {
                            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: " "):
                                lines.append(String(UnicodeScalar(UInt8(bitPattern: line.origin))) + text)
                            default:
                                lines.append("\\ No newline at end of file\n")
                            }
                        }
                        let header = withUnsafeBytes(of: hunk.header) { raw in
                            String(decoding: raw.prefix(min(Int(hunk.header_len), raw.count)), as: UTF8.self)
                        }
                        hunks.append(.init(
                            header: header, oldStart: Int(hunk.old_start), oldLines: Int(hunk.old_lines),
                            newStart: Int(hunk.new_start), newLines: Int(hunk.new_lines), lines: lines))
                    }
                }
                var context = 0, additions = 0, deletions = 0
                git_patch_line_stats(&context, &additions, &deletions, patch)
                let path = (delta.new_file.path ?? delta.old_file.path).map { String(cString: $0) } ?? ""
                files.append(FileChange(
                    path: path, status: status, binary: binary,
                    oldID: status == .added ? nil : ObjectID(delta.old_file.id),
                    newID: status == .deleted ? nil : ObjectID(delta.new_file.id),
                    oldMode: UInt32(delta.old_file.mode), newMode: UInt32(delta.new_file.mode),
                    hunks: hunks, additions: additions, deletions: deletions))
            }
            return files
        }
    }

    /// libgit2's diff of the two commits, limited to the paths `changedPaths` found (exact
    /// paths: libgit2 then reads only the subtrees on their way); `empty` when nothing changed.
    /// A name the agent chose must never hide its file from review, whatever libgit2 makes of
    /// it as a pathspec (names starting with `!` or `#`, with backslashes, stars or spaces are
    /// taken literally today, and tested): unless the limited diff names exactly those paths,
    /// the whole diff is made instead.
    private func withDiff<R>(_ old: ObjectID, _ new: ObjectID, empty: R, _ body: (OpaquePointer?) throws(GitError) -> R) throws(GitError) -> R {
        let oldTree = try repository.treeOfCommit(old)
        defer { git_tree_free(oldTree) }
        let newTree = try repository.treeOfCommit(new)
        defer { git_tree_free(newTree) }
        let paths = try changedPaths(oldTree, newTree)
        guard !paths.isEmpty else { return empty }
        var options = git_diff_options()
        try GitError.check(git_diff_options_init(&options, UInt32(GIT_DIFF_OPTIONS_VERSION)), "diff options")
        options.flags |= GIT_DIFF_DISABLE_PATHSPEC_MATCH.rawValue
        var diff: OpaquePointer?
        let code = withStringArray(paths) { pathspec in
            options.pathspec = pathspec.pointee
            return git_diff_tree_to_tree(&diff, repository.pointer, oldTree, newTree, &options)
        }
        try GitError.check(code, "diff \(old.short)..\(new.short)")
        if Set(Self.deltaPaths(diff)) != Set(paths) {
            git_diff_free(diff)
            diff = nil
            options.flags &= ~GIT_DIFF_DISABLE_PATHSPEC_MATCH.rawValue
            options.pathspec = git_strarray()
            try GitError.check(git_diff_tree_to_tree(&diff, repository.pointer, oldTree, newTree, &options), "diff \(old.short)..\(new.short)")
        }
        defer { git_diff_free(diff) }
        return try body(diff)
    }

    private static func deltaPaths(_ diff: OpaquePointer?) -> [String] {
        (0..<git_diff_num_deltas(diff)).compactMap { index in
            git_diff_get_delta(diff, index).flatMap { delta in
                (delta.pointee.new_file.path ?? delta.pointee.old_file.path).map { String(cString: $0) }
            }
        }
    }
}
