import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// The clone's uncommitted work as a tree: its index (staged changes) plus what differs in its
/// working tree, found the way git's status finds it (stat data against the index entries,
/// contents hashed only where those differ or are racy) but reading the guest's files only
/// through `GuestTree`. Symlinks are stored as symlinks; large files, nested repositories and
/// submodules are left out and named.
struct WorkingTreeScan {
    private struct Entry {
        var mode: UInt32
        var size: UInt32
        var seconds: Int32
        var nanoseconds: UInt32
        var id: git_oid
    }

    let repository: Repository
    let clone: String
    /// When the clone's index was written: files changed in that same instant are hashed.
    let indexTime: timespec?
    private(set) var refused: [String] = []
    private(set) var changedPaths: [String] = []

    private var entries: [String: Entry] = [:]
    private var directoriesInIndex: Set<String> = []
    /// Entries of candidates that were in the index (to compare their contents).
    private var indexEntries: [String: Entry] = [:]
    private var candidates: [String] = []

    init(repository: Repository, clone: String, indexTime: timespec?) {
        self.repository = repository
        self.clone = clone
        self.indexTime = indexTime
    }

    /// The tree of the clone's index with its working tree's changes applied (written to
    /// `repository`), from `index` (the clone's index, modified here in memory only).
    mutating func tree(index: OpaquePointer?) throws -> ObjectID {
        try GitError.check(git_repository_set_workdir(repository.pointer, clone, 0), "use \(clone) as the working tree")
        // Conflicted paths (stages 1–3) become whatever the working tree holds.
        var conflicted = Set<String>()
        let count = git_index_entrycount(index)
        entries.reserveCapacity(count)
        for position in 0..<count {
            guard let entry = git_index_get_byindex(index, position)?.pointee, let cPath = entry.path else { continue }
            let path = String(cString: cPath)
            if git_index_entry_stage(git_index_get_byindex(index, position)) != 0 {
                conflicted.insert(path)
                continue
            }
            entries[path] = Entry(mode: entry.mode, size: entry.file_size, seconds: entry.mtime.seconds, nanoseconds: entry.mtime.nanoseconds, id: entry.id)
            var directory = path
            while let slash = directory.lastIndex(of: "/") {
                directory = String(directory[..<slash])
                if !directoriesInIndex.insert(directory).inserted { break }
            }
        }
        for path in conflicted {
            git_index_conflict_remove(index, path)
            entries.removeValue(forKey: path)
            candidates.append(path)
        }

        let root = try GuestTree.open(clone)
        walk(root, prefix: "", depth: 0)

        // What is left was not seen in the working tree: deleted (submodules aside).
        for (path, entry) in entries where entry.mode != 0o160000 {
            git_index_remove(index, path, 0)
            changedPaths.append(path)
        }
        for path in candidates { try capture(path, from: root, into: index) }
        var tree = git_oid()
        try GitError.check(git_index_write_tree_to(&tree, index, repository.pointer), "write the uncommitted tree")
        changedPaths.sort()
        return ObjectID(tree)
    }

    private mutating func walk(_ directory: GuestTree, prefix: String, depth: Int) {
        guard depth < 256 else {
            refused.append("\(directory.path) left out: nested too deep")
            return
        }
        for (name, info) in directory.entriesWithStatus(sorted: false) {
            if prefix.isEmpty && name == ".git" { continue }
            let path = prefix + name
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                if entries[path]?.mode == 0o160000 {
                    entries.removeValue(forKey: path)  // a submodule: not part of this repository's content
                    continue
                }
                let tracked = directoriesInIndex.contains(path)
                if !tracked && isIgnored(path + "/") { continue }
                if !tracked, directory.kind(name + "/.git") != nil {
                    refused.append("\(clone)/\(path) left out: a nested repository")
                    continue
                }
                guard let child = try? directory.directory(name) else {
                    refused.append("\(clone)/\(path) left out: unreadable")
                    continue
                }
                walk(child, prefix: path + "/", depth: depth + 1)
            case S_IFREG, S_IFLNK:
                if let entry = entries.removeValue(forKey: path) {
                    if !matches(entry, info) {
                        candidates.append(path)
                        indexEntries[path] = entry
                    }
                } else if !isIgnored(path) {
                    candidates.append(path)
                }
            default:
                continue  // sockets, fifos, devices: not content git tracks
            }
        }
    }

    /// Whether the stat data still says "as in the index" (and the entry is not racy).
    private func matches(_ entry: Entry, _ info: stat) -> Bool {
        let isLink = info.st_mode & S_IFMT == S_IFLNK
        let mode: UInt32 = isLink ? 0o120000 : (info.st_mode & 0o100 != 0 ? 0o100755 : 0o100644)
        guard entry.mode == mode, entry.size == UInt32(truncatingIfNeeded: info.st_size),
              entry.seconds == Int32(truncatingIfNeeded: info.st_mtim.tv_sec), entry.nanoseconds == UInt32(truncatingIfNeeded: info.st_mtim.tv_nsec)
        else { return false }
        if let indexTime, info.st_mtim.tv_sec > indexTime.tv_sec || (info.st_mtim.tv_sec == indexTime.tv_sec && info.st_mtim.tv_nsec >= indexTime.tv_nsec) {
            return false  // changed in the instant the index was written: compare contents
        }
        return true
    }

    private func isIgnored(_ path: String) -> Bool {
        var ignored: Int32 = 0
        return git_ignore_path_is_ignored(&ignored, repository.pointer, path) == 0 && ignored == 1
    }

    /// Stores the working tree's version of `path` in the index (when it differs).
    private mutating func capture(_ path: String, from root: GuestTree, into index: OpaquePointer?) throws {
        let bytes: [UInt8]
        let mode: UInt32
        switch root.kind(path) {
        case .file(let size, let executable)?:
            guard size <= SandboxFetch.maxWorkingFileBytes else {
                refused.append("\(clone)/\(path) left out: \(formatBytes(size)) is more than the limit of \(formatBytes(Int64(SandboxFetch.maxWorkingFileBytes))) for one file")
                return
            }
            do {
                bytes = try root.read(path, limit: SandboxFetch.maxWorkingFileBytes)
            } catch {
                refused.append("\(error); left out")
                return
            }
            mode = executable ? 0o100755 : 0o100644
        case .symlink?:
            do {
                bytes = Array(try root.readLink(path).utf8)
            } catch {
                refused.append("\(error); left out")
                return
            }
            mode = 0o120000
        default:
            return  // gone (or replaced by a directory) since the walk
        }
        var id = git_oid()
        try GitError.check(bytes.withUnsafeBytes { git_odb_hash(&id, $0.baseAddress, $0.count, GIT_OBJECT_BLOB) }, "hash \(path)")
        if let entry = indexEntries[path], entry.mode == mode, ObjectID(entry.id) == ObjectID(id) { return }
        try GitError.check(bytes.withUnsafeBytes { git_blob_create_from_buffer(&id, repository.pointer, $0.baseAddress, $0.count) }, "store \(path)")
        var entry = git_index_entry()
        entry.mode = mode
        entry.id = id
        entry.file_size = UInt32(truncatingIfNeeded: bytes.count)
        let code = path.withCString { cPath in
            entry.path = cPath
            return git_index_add(index, &entry)
        }
        try GitError.check(code, "add \(path)")
        changedPaths.append(path)
    }
}
