import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

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
        try treeChanges(from: old, to: new).map(\.path)
    }

    /// One path that differs between two trees, with each side's object and mode (nil where
    /// the path is absent; a submodule's side is its commit).
    struct TreeChange {
        struct Side {
            var id: git_oid
            var mode: UInt32
        }
        var path: String
        var old: Side?
        var new: Side?
    }

    func treeChanges(from old: ObjectID, to new: ObjectID) throws(GitError) -> [TreeChange] {
        let oldTree = try repository.treeOfCommit(old)
        defer { git_tree_free(oldTree) }
        let newTree = try repository.treeOfCommit(new)
        defer { git_tree_free(newTree) }
        return try treeChanges(oldTree, newTree)
    }

    func treeChanges(fromTree old: ObjectID, toTree new: ObjectID) throws(GitError) -> [TreeChange] {
        var oldID = old.raw, newID = new.raw
        var oldTree: OpaquePointer?, newTree: OpaquePointer?
        try GitError.check(git_tree_lookup(&oldTree, repository.pointer, &oldID), "read the tree \(old.short)")
        defer { git_tree_free(oldTree) }
        try GitError.check(git_tree_lookup(&newTree, repository.pointer, &newID), "read the tree \(new.short)")
        defer { git_tree_free(newTree) }
        guard let oldTree, let newTree else { throw GitError(operation: "read two trees", code: -1, message: "missing") }
        return try treeChanges(oldTree, newTree)
    }

    private func treeChanges(_ oldTree: OpaquePointer, _ newTree: OpaquePointer) throws(GitError) -> [TreeChange] {
        var changes: [TreeChange] = []
        try collectChanges(oldTree, newTree, prefix: "", depth: 0, into: &changes)
        return changes.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }

    /// Trees deeper than this are refused (the fetched objects come from a hostile clone).
    static let maxTreeDepth = 1024

    /// Appends the paths below `prefix` that differ between two trees (either may be nil: all
    /// of the other's files). Both trees' entries are in git's order, so they merge like two
    /// sorted lists; equal subtrees are skipped unread.
    private func collectChanges(_ old: OpaquePointer?, _ new: OpaquePointer?, prefix: String, depth: Int, into changes: inout [TreeChange])
        throws(GitError)
    {
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
                if git_oid_equal(git_tree_entry_id(a), git_tree_entry_id(b)) != 0 && git_tree_entry_filemode(a) == git_tree_entry_filemode(b) {
                    continue
                }
                try visit(a, b, prefix: prefix, depth: depth, into: &changes)
            } else if order < 0 {
                i += 1
                try visit(a, nil, prefix: prefix, depth: depth, into: &changes)
            } else {
                j += 1
                try visit(nil, b, prefix: prefix, depth: depth, into: &changes)
            }
        }
    }

    /// One changed entry (same name on both sides, or present on one side only).
    private func visit(_ a: OpaquePointer?, _ b: OpaquePointer?, prefix: String, depth: Int, into changes: inout [TreeChange]) throws(GitError) {
        guard let named = a ?? b else { return }
        let path = prefix + String(cString: git_tree_entry_name(named))
        guard git_tree_entry_type(named) == GIT_OBJECT_TREE else {
            func side(_ entry: OpaquePointer?) -> TreeChange.Side? {
                entry.map { TreeChange.Side(id: git_tree_entry_id($0).pointee, mode: git_tree_entry_filemode_raw($0).rawValue) }
            }
            changes.append(TreeChange(path: path, old: side(a), new: side(b)))
            return
        }
        let oldTree = try a.map { entry throws(GitError) in try subtree(entry, path) }
        defer { git_tree_free(oldTree) }
        let newTree = try b.map { entry throws(GitError) in try subtree(entry, path) }
        defer { git_tree_free(newTree) }
        try collectChanges(oldTree, newTree, prefix: path + "/", depth: depth + 1, into: &changes)
    }

    private func subtree(_ entry: OpaquePointer, _ path: String) throws(GitError) -> OpaquePointer {
        var tree: OpaquePointer?
        try GitError.check(git_tree_lookup(&tree, repository.pointer, git_tree_entry_id(entry)), "read the tree of \(path)")
        guard let tree else { throw GitError(operation: "read the tree of \(path)", code: -1, message: "missing") }
        return tree
    }

    /// The unified diff (`git diff old new`), binary files as "Binary files differ".
    public func patch(from old: ObjectID, to new: ObjectID) throws(GitError) -> String {
        try patch(from: old, to: new, restrictedTo: nil)
    }

    /// The unified diff of only the files at `paths` (a pathspec of exact paths: whatever the
    /// files hold, nothing of another file's diff can appear in it).
    public func patch(from old: ObjectID, to new: ObjectID, only paths: [String]) throws(GitError) -> String {
        try patch(from: old, to: new, restrictedTo: Set(paths))
    }

    private func patch(from old: ObjectID, to new: ObjectID, restrictedTo only: Set<String>?) throws(GitError) -> String {
        try withDiff(old, new, only: only, empty: "") { diff throws(GitError) in
            var buffer = git_buf()
            defer { git_buf_dispose(&buffer) }
            try GitError.check(git_diff_to_buf(&buffer, diff, GIT_DIFF_FORMAT_PATCH), "format the diff")
            return buffer.ptr.map { String(cString: $0) } ?? ""
        }
    }

    /// One file's line counts between two commits (`git diff --numstat`).
    public struct FileStat: Sendable, Equatable {
        public var path: String
        public var insertions: Int
        public var deletions: Int
        /// Binary files have no line counts: their sizes instead (0 when only the mode changed).
        public var binary: Bool
        public var oldSize: Int
        public var newSize: Int
        /// 0 where the file is absent on that side.
        public var oldMode: UInt32
        public var newMode: UInt32
    }

    /// Line counts of every changed file, in git's order (a file that became a symlink or a
    /// submodule, or the reverse, is one change of contents and mode, as git shows it).
    ///
    /// Each pair of blobs goes through libgit2's xdiff with no repository attached
    /// (`git_patch_from_buffers`): a patch made from the repository looks the path up in every
    /// `.gitattributes` of the working tree first, which costs about 100 µs a file (20 ms for
    /// 200 files against 1.5 ms), and an attribute lookup reads the whole index. So attributes
    /// are looked up only when there are some (`attributeSources`): then a file whose `diff`
    /// attribute is unset (`-diff`, `binary`) is binary, as git shows it.
    public func lineStats(from old: ObjectID, to new: ObjectID) throws(GitError) -> [FileStat] {
        let changes = try treeChanges(from: old, to: new)
        let attributes = hasAttributeSources(for: changes.map(\.path))
        var stats: [FileStat] = []
        for change in changes {
            stats.append(try lineStat(change.path, old: change.old, new: change.new, attributes: attributes))
        }
        return stats
    }

    /// Whether any attributes file could apply to `paths`: the repository's `info/attributes`,
    /// the global and system files, or a `.gitattributes` in a directory on the way to one of
    /// them, in the working tree or in HEAD's tree.
    private func hasAttributeSources(for paths: [String]) -> Bool {
        var files = ["/etc/gitattributes"]
        if let gitDirectory = git_repository_path(repository.pointer).map({ String(cString: $0) }) { files.append(gitDirectory + "info/attributes") }
        if let configured = repository.configValue("core.attributesFile") {
            files.append(configured.hasPrefix("~/") ? (getenv("HOME").map { String(cString: $0) } ?? "") + configured.dropFirst() : configured)
        } else if let xdg = getenv("XDG_CONFIG_HOME").map({ String(cString: $0) }), !xdg.isEmpty {
            files.append(xdg + "/git/attributes")
        } else if let home = getenv("HOME").map({ String(cString: $0) }) {
            files.append(home + "/.config/git/attributes")
        }
        var directories: Set<Substring> = [""]
        for path in paths {
            var end = path.endIndex
            while let slash = path[..<end].lastIndex(of: "/"), directories.insert(path[..<slash]).inserted { end = slash }
        }
        let names = directories.map { $0.isEmpty ? ".gitattributes" : $0 + "/.gitattributes" }
        if let workdir = git_repository_workdir(repository.pointer).map({ String(cString: $0) }) { files += names.map { workdir + $0 } }
        if files.contains(where: { access($0, F_OK) == 0 }) { return true }
        guard let head = repository.headCommit, let tree = try? repository.treeOfCommit(head) else { return false }
        defer { git_tree_free(tree) }
        return names.contains { name in
            var entry: OpaquePointer?
            defer { git_tree_entry_free(entry) }
            return git_tree_entry_bypath(&entry, tree, name) == 0
        }
    }

    private func lineStat(_ path: String, old: TreeChange.Side?, new: TreeChange.Side?, attributes: Bool) throws(GitError) -> FileStat {
        let oldBytes = try content(old, path), newBytes = try content(new, path)
        var stat = FileStat(
            path: path, insertions: 0, deletions: 0, binary: false, oldSize: oldBytes.count, newSize: newBytes.count,
            oldMode: old?.mode ?? 0, newMode: new?.mode ?? 0)
        var value: UnsafePointer<CChar>?
        let markedBinary =
            attributes && git_attr_get(&value, repository.pointer, 0, path, "diff") == 0 && git_attr_value(value) == GIT_ATTR_VALUE_FALSE
        if var oldID = old?.id, var newID = new?.id, git_oid_equal(&oldID, &newID) != 0 {
            // The mode alone changed: no lines, and for a binary file no bytes (as git shows it).
            stat.binary = markedBinary || oldBytes.prefix(8000).contains(0)
            if stat.binary { (stat.oldSize, stat.newSize) = (0, 0) }
            return stat
        }
        if markedBinary {
            stat.binary = true
            return stat
        }
        var options = git_diff_options()
        try GitError.check(git_diff_options_init(&options, UInt32(GIT_DIFF_OPTIONS_VERSION)), "diff options")
        var patch: OpaquePointer?
        let code = oldBytes.withUnsafeBytes { oldRaw in
            newBytes.withUnsafeBytes { newRaw in
                git_patch_from_buffers(&patch, oldRaw.baseAddress, oldRaw.count, path, newRaw.baseAddress, newRaw.count, path, &options)
            }
        }
        try GitError.check(code, "diff \(path)")
        defer { git_patch_free(patch) }
        if let delta = git_patch_get_delta(patch), delta.pointee.flags & UInt32(GIT_DIFF_FLAG_BINARY.rawValue) != 0 {
            stat.binary = true
            return stat
        }
        var context = 0
        git_patch_line_stats(&context, &stat.insertions, &stat.deletions, patch)
        return stat
    }

    /// A side's bytes as git diffs them: a blob's content, a submodule as its commit line.
    private func content(_ side: TreeChange.Side?, _ path: String) throws(GitError) -> [UInt8] {
        guard var side else { return [] }
        if side.mode == 0o160000 { return Array("Subproject commit \(ObjectID(side.id).hex)\n".utf8) }
        var blob: OpaquePointer?
        try GitError.check(git_blob_lookup(&blob, repository.pointer, &side.id), "read \(path)")
        defer { git_blob_free(blob) }
        guard let bytes = git_blob_rawcontent(blob) else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: Int(git_blob_rawsize(blob))))
    }

    /// `git diff --stat` output for `width` columns (at least 40), from `lineStats`.
    public func stat(from old: ObjectID, to new: ObjectID, width: Int = 80) throws(GitError) -> String {
        Self.formatStat(try lineStats(from: old, to: new), width: max(40, width))
    }

    /// git's `--stat` layout: name, count and a bar scaled to fit `width`, then the totals and
    /// the created, deleted and mode-changed files. (Unlike git, long names are never cut.)
    static func formatStat(_ stats: [FileStat], width: Int) -> String {
        guard !stats.isEmpty else { return "" }
        let names = stats.map { quoted($0.path) }
        let nameWidth = names.map(\.utf8.count).max() ?? 0
        let largest = stats.map { $0.insertions + $0.deletions }.max() ?? 0
        // As git: counts right-aligned (as wide as "Bin" when a file is binary), bars in what
        // the names and counts leave of the width, six columns at least.
        let digits = max(String(largest).count, stats.contains(where: \.binary) ? 3 : 1)
        let barWidth = max(6, width - nameWidth - digits - 6)
        // git's scaling: the total scaled, the smaller side scaled, the larger the rest.
        func bars(_ stat: FileStat) -> (plus: Int, minus: Int) {
            guard barWidth <= largest else { return (stat.insertions, stat.deletions) }
            func scaled(_ lines: Int) -> Int { lines == 0 ? 0 : 1 + lines * (barWidth - 1) / largest }
            var total = scaled(stat.insertions + stat.deletions)
            if total < 2 && stat.insertions > 0 && stat.deletions > 0 { total = 2 }
            if stat.insertions < stat.deletions {
                let plus = scaled(stat.insertions)
                return (plus, total - plus)
            }
            let minus = scaled(stat.deletions)
            return (total - minus, minus)
        }
        var text = ""
        for (stat, name) in zip(stats, names) {
            text += " " + name + String(repeating: " ", count: nameWidth - name.utf8.count) + " | "
            if stat.binary {
                text += String(repeating: " ", count: digits - 3) + "Bin"
                text +=
                    stat.oldSize == 0 && stat.newSize == 0 && stat.oldMode != 0 && stat.newMode != 0
                    ? "\n" : " \(stat.oldSize) -> \(stat.newSize) bytes\n"
                continue
            }
            let total = stat.insertions + stat.deletions
            let count = String(total)
            text += String(repeating: " ", count: digits - count.count) + count
            if total > 0 {
                text += " " + String(repeating: "+", count: bars(stat).plus) + String(repeating: "-", count: bars(stat).minus)
            }
            text += "\n"
        }
        let insertions = stats.reduce(0) { $0 + $1.insertions }, deletions = stats.reduce(0) { $0 + $1.deletions }
        text += " \(stats.count) file\(stats.count == 1 ? "" : "s") changed"
        if insertions > 0 || deletions == 0 { text += ", \(insertions) insertion\(insertions == 1 ? "" : "s")(+)" }
        if deletions > 0 || insertions == 0 { text += ", \(deletions) deletion\(deletions == 1 ? "" : "s")(-)" }
        text += "\n"
        for stat in stats where stat.oldMode != stat.newMode {
            if stat.oldMode == 0 {
                text += " create mode \(octal(stat.newMode)) \(stat.path)\n"
            } else if stat.newMode == 0 {
                text += " delete mode \(octal(stat.oldMode)) \(stat.path)\n"
            } else {
                text += " mode change \(octal(stat.oldMode)) => \(octal(stat.newMode)) \(stat.path)\n"
            }
        }
        return text
    }

    /// A path as git prints it in a stat (`core.quotePath`): in double quotes with C escapes
    /// when it holds a quote, a backslash, a control character or a non-ASCII byte.
    static func quoted(_ path: String) -> String {
        let bytes = Array(path.utf8)
        guard bytes.contains(where: { $0 < 0x20 || $0 >= 0x7F || $0 == 0x22 || $0 == 0x5C }) else { return path }
        var text = "\""
        for byte in bytes {
            switch byte {
            case 0x07: text += "\\a"
            case 0x08: text += "\\b"
            case 0x09: text += "\\t"
            case 0x0A: text += "\\n"
            case 0x0B: text += "\\v"
            case 0x0C: text += "\\f"
            case 0x0D: text += "\\r"
            case 0x22: text += "\\\""
            case 0x5C: text += "\\\\"
            case 0x20..<0x7F: text.unicodeScalars.append(UnicodeScalar(byte))
            default: text += "\\" + String(byte, radix: 8).leftPadded(to: 3)
            }
        }
        return text + "\""
    }

    private static func octal(_ mode: UInt32) -> String {
        String(mode, radix: 8).leftPadded(to: 6)
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
                            let text =
                                line.content.map { content in
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
                        hunks.append(
                            .init(
                                header: header, oldStart: Int(hunk.old_start), oldLines: Int(hunk.old_lines),
                                newStart: Int(hunk.new_start), newLines: Int(hunk.new_lines), lines: lines))
                    }
                }
                var context = 0, additions = 0, deletions = 0
                git_patch_line_stats(&context, &additions, &deletions, patch)
                let path = (delta.new_file.path ?? delta.old_file.path).map { String(cString: $0) } ?? ""
                files.append(
                    FileChange(
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
    private func withDiff<R>(
        _ old: ObjectID, _ new: ObjectID, only: Set<String>? = nil, empty: R, _ body: (OpaquePointer?) throws(GitError) -> R
    ) throws(GitError) -> R {
        let oldTree = try repository.treeOfCommit(old)
        defer { git_tree_free(oldTree) }
        let newTree = try repository.treeOfCommit(new)
        defer { git_tree_free(newTree) }
        let paths = try treeChanges(oldTree, newTree).map(\.path).filter { only?.contains($0) ?? true }
        guard !paths.isEmpty else { return empty }
        var options = git_diff_options()
        try GitError.check(git_diff_options_init(&options, UInt32(GIT_DIFF_OPTIONS_VERSION)), "diff options")
        options.flags |= GIT_DIFF_DISABLE_PATHSPEC_MATCH.rawValue
        var diff: OpaquePointer?
        /// The diff limited to `pathspec` (none: the whole diff).
        func make(_ pathspec: [String]) -> Int32 {
            withStringArray(pathspec) { array in
                options.pathspec = array.pointee
                return git_diff_tree_to_tree(&diff, repository.pointer, oldTree, newTree, &options)
            }
        }
        try GitError.check(make(paths), "diff \(old.short)..\(new.short)")
        // The exact paths cover what the tree walk found; else (a type change libgit2 splits)
        // the whole diff, or for `only`, its paths matched as git does.
        if Set(Self.deltaPaths(diff)) != Set(paths) {
            git_diff_free(diff)
            diff = nil
            options.flags &= ~GIT_DIFF_DISABLE_PATHSPEC_MATCH.rawValue
            try GitError.check(make(only == nil ? [] : paths), "diff \(old.short)..\(new.short)")
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

extension String {
    /// Zeros in front, up to `width` characters.
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
