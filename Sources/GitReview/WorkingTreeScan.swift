import AirlockSystem
import Clibgit2
import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// The clone's uncommitted work as a tree: its index (staged changes) plus what differs in its
/// working tree, found the way git's status finds it (stat data against the index entries,
/// contents hashed only where those differ or are racy) but reading the guest's files only
/// through `ConfinedDirectory`. Symlinks are stored as symlinks; large files, nested repositories and
/// submodules are left out and named.
struct WorkingTreeScan {
    /// An index entry: its path (bytes, as the index sorts them) and the stat data git keeps.
    private struct Entry {
        var path: [UInt8]
        var mode: UInt32
        var size: UInt32
        var seconds: Int32
        var nanoseconds: UInt32
        var id: git_oid
    }

    let repository: Repository
    let clone: String
    /// Paths left out whatever the clone holds there (and named in `refused`).
    let masks: MaskedPaths
    /// When the clone's index was written: files changed in that same instant are hashed.
    let indexTime: timespec?
    private(set) var refused: [String] = []
    private(set) var changedPaths: [String] = []
    /// A file with more than one name was seen (a change through one name is not a change
    /// event on the other: `ChangeJournal` can't vouch for such a tree).
    private(set) var sawHardLink = false

    /// Stage-0 entries in index order (bytewise by path), walked together with the tree.
    private var entries: [Entry] = []
    private var cursor = 0
    private var deleted: [String] = []
    /// Paths whose working-tree version must be read, with their index entry when tracked.
    private var candidates: [(path: String, entry: Entry?)] = []

    init(repository: Repository, clone: String, indexTime: timespec?, masks: MaskedPaths = MaskedPaths([:])) {
        self.repository = repository
        self.clone = clone
        self.masks = masks
        self.indexTime = indexTime
    }

    /// The tree of the clone's index with its working tree's changes applied (written to
    /// `repository`), from `index` (the clone's index, modified here in memory only).
    ///
    /// The working tree is walked in git's order (a directory sorts as its name plus `/`), so
    /// the walk and the sorted index entries are merged like two sorted lists: no lookups.
    /// With `only`, just those paths are looked at (a directory with everything below it):
    /// the caller knows nothing else can differ from the index (see `ChangeJournal`).
    mutating func tree(index: OpaquePointer?, only: [String]? = nil) throws -> ObjectID {
        try GitError.check(git_repository_set_workdir(repository.pointer, clone, 0), "use \(clone) as the working tree")
        // Conflicted paths (stages 1–3) become whatever the working tree holds.
        var conflicted: [String] = []
        let count = git_index_entrycount(index)
        entries.reserveCapacity(count)
        for position in 0..<count {
            guard let pointer = git_index_get_byindex(index, position), let cPath = pointer.pointee.path else { continue }
            if git_index_entry_stage(pointer) != 0 {
                conflicted.append(String(cString: cPath))
                continue
            }
            let entry = pointer.pointee
            let length = strlen(cPath)
            let path = cPath.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
            entries.append(
                Entry(
                    path: path, mode: entry.mode, size: entry.file_size, seconds: entry.mtime.seconds, nanoseconds: entry.mtime.nanoseconds,
                    id: entry.id))
        }
        for path in Set(conflicted) { git_index_conflict_remove(index, path) }

        let root = try ConfinedDirectory.open(clone)
        if let only {
            check(only, in: root)
        } else {
            listings = Self.prefetch(trackedDirectories(), in: root)
            walk(root, root: root, prefix: [], depth: 0)
            while cursor < entries.count {
                missing(entries[cursor])
                cursor += 1
            }
        }
        for path in deleted {
            git_index_remove(index, path, 0)
            changedPaths.append(path)
        }
        for path in Set(conflicted) where !candidates.contains(where: { $0.path == path }) { candidates.append((path, nil)) }
        var masked: [String] = []
        for candidate in candidates {
            if masks.covering(candidate.path) != nil {
                masked.append(candidate.path)
                continue
            }
            try capture(candidate.path, entry: candidate.entry, from: root, into: index)
        }
        // Staged there too: out of the index as well.
        if !masks.isEmpty {
            for position in (0..<git_index_entrycount(index)).reversed() {
                guard let entry = git_index_get_byindex(index, position), let cPath = entry.pointee.path else { continue }
                let path = String(cString: cPath)
                if masks.covering(path) != nil {
                    masked.append(path)
                    git_index_remove(index, path, 0)
                }
            }
        }
        for path in Set(masked).sorted() {
            refused.append("\(path) left out: [\(masks.covering(path)?.entry ?? "mask")] hides it")
        }
        changedPaths.removeAll { masks.covering($0) != nil }
        var tree = git_oid()
        try GitError.check(git_index_write_tree_to(&tree, index, repository.pointer), "write the uncommitted tree")
        changedPaths.sort()
        return ObjectID(tree)
    }

    /// Looks at `paths` only: each against its index entry, or as a new file; a directory with
    /// everything below it, merged with the index entries under it like the full walk. Index
    /// entries at or below a path that is gone are deletions. A path below a directory the
    /// index tracks nothing in stands for that whole directory, which is then looked at as the
    /// full walk would (ignored, a nested repository, or walked).
    private mutating func check(_ paths: [String], in root: ConfinedDirectory) {
        var normalized: Set<[UInt8]> = []
        for text in paths {
            var path = Array(text.utf8)
            guard !path.isEmpty, path.first != 0x2F, path.last != 0x2F, !path.contains(0) else { continue }
            for (offset, byte) in path.enumerated() where byte == 0x2F && !tracks(Array(path[..<offset]) + [0x2F]) {
                path = Array(path[..<offset])
                break
            }
            normalized.insert(path)
        }
        var walked: Set<[UInt8]> = []
        for path in normalized.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let text = String(decoding: path, as: UTF8.self)
            // Below a directory walked already (sorted: an ancestor comes first).
            var below = false
            for (offset, byte) in path.enumerated() where byte == 0x2F && walked.contains(Array(path[..<offset])) { below = true }
            if below || path == Self.dotGit || path.starts(with: Self.dotGit + [0x2F]) { continue }
            let slashed = path + [0x2F]
            cursor = lowerBound(path)
            let entry = cursor < entries.count && entries[cursor].path == path ? entries[cursor] : nil
            let status = root.status(text)
            switch status.map({ $0.st_mode & S_IFMT }) {
            case S_IFDIR?:
                if let entry, entry.mode == 0o160000 { continue }  // a submodule: left alone
                if let entry { missing(entry) }  // a file that became a directory
                walked.insert(path)
                if !tracks(slashed) {
                    if isIgnored(text + "/") { continue }
                    if root.kind(text + "/.git") != nil {
                        refused.append("\(clone)/\(text) left out: a nested repository")
                        continue
                    }
                }
                cursor = lowerBound(slashed)
                walk(nil, root: root, prefix: slashed, depth: path.count(where: { $0 == 0x2F }) + 1)
                missingBelow(slashed)
            case S_IFREG?, S_IFLNK?:
                if let status, status.st_nlink > 1 && status.st_mode & S_IFMT == S_IFREG { sawHardLink = true }
                if let entry {
                    if let status, !matches(entry, status) { candidates.append((text, entry)) }
                } else if !isIgnored(text) {
                    candidates.append((text, nil))
                }
                // Files tracked below a directory that is now this file: deleted.
                cursor = lowerBound(slashed)
                missingBelow(slashed)
            default:
                // Gone (or a socket, fifo or device): whatever the index had here is deleted.
                if let entry { missing(entry) }
                cursor = lowerBound(slashed)
                missingBelow(slashed)
            }
        }
    }

    /// Index entries from the cursor on that lie below `slashed` (a directory with its `/`):
    /// deleted.
    private mutating func missingBelow(_ slashed: [UInt8]) {
        while cursor < entries.count, entries[cursor].path.starts(with: slashed) {
            missing(entries[cursor])
            cursor += 1
        }
    }

    /// Whether the index tracks anything below `slashed` (a directory with its `/`).
    private func tracks(_ slashed: [UInt8]) -> Bool {
        let first = lowerBound(slashed)
        return first < entries.count && entries[first].path.starts(with: slashed)
    }

    /// The position of the first index entry not ordered before `path` (bytewise).
    private func lowerBound(_ path: [UInt8]) -> Int {
        var low = 0, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].path.lexicographicallyPrecedes(path) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Listings (names with lstat data) of the directories the index tracks files in, read
    /// ahead in parallel: most of a scan is one lstat per file, which git spreads over threads
    /// too (`core.preloadIndex`). Keyed by path with its trailing slash ("" for the top).
    private var listings: [[UInt8]: Listing] = [:]
    private typealias Listing = [(name: [UInt8], status: stat)]

    /// The directories holding index entries, as walk prefixes ("", "src/", "src/a/", …).
    private func trackedDirectories() -> [[UInt8]] {
        var directories: Set<[UInt8]> = [[]]
        for entry in entries {
            var end = entry.path.count
            while let slash = entry.path[..<end].lastIndex(of: 0x2F) {
                guard directories.insert(Array(entry.path[...slash])).inserted else { break }
                end = slash
            }
        }
        return Array(directories)
    }

    /// Lists `directories` (beneath `root`, never through a symlink) on a few threads.
    private static func prefetch(_ directories: [[UInt8]], in root: ConfinedDirectory) -> [[UInt8]: Listing] {
        let workers = max(1, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        guard workers > 1, directories.count > 64 else { return [:] }
        var results = [Listing?](repeating: nil, count: directories.count)
        results.withUnsafeMutableBufferPointer { slots in
            // Each index is written by exactly one worker.
            nonisolated(unsafe) let slots = slots
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                for index in stride(from: worker, to: directories.count, by: workers) {
                    let relative = String(decoding: directories[index].dropLast(), as: UTF8.self)
                    let directory = relative.isEmpty ? root : try? root.directory(relative)
                    slots[index] = directory?.rawEntries()
                }
            }
        }
        var listings: [[UInt8]: Listing] = [:]
        for (directory, listing) in zip(directories, results) {
            if let listing { listings[directory] = listing }
        }
        return listings
    }

    /// An index entry with nothing in the working tree: deleted (a submodule is left alone).
    private mutating func missing(_ entry: Entry) {
        if entry.mode != 0o160000 { deleted.append(String(decoding: entry.path, as: UTF8.self)) }
    }

    /// Walks the directory at `prefix` (open as `directory`, or nil when its listing was read
    /// ahead and it need not be opened again).
    private mutating func walk(_ directory: ConfinedDirectory?, root: ConfinedDirectory, prefix: [UInt8], depth: Int) {
        let relative = String(decoding: prefix.dropLast(), as: UTF8.self)
        guard depth < 256 else {
            refused.append("\(clone)/\(relative) left out: nested too deep")
            return
        }
        let listing: Listing
        if let prefetched = listings.removeValue(forKey: prefix) {
            listing = prefetched
        } else if let opened = directory ?? (try? root.directory(relative)) {
            listing = opened.rawEntries()
        } else {
            refused.append("\(clone)/\(relative) left out: unreadable")
            return
        }
        // Git's order: names compared bytewise, a directory as if it ended in "/".
        let listed = listing.map { item -> (key: [UInt8], name: [UInt8], status: stat) in
            (item.status.st_mode & S_IFMT == S_IFDIR ? item.name + [0x2F] : item.name, item.name, item.status)
        }.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        for item in listed {
            if prefix.isEmpty && item.name == Self.dotGit { continue }
            let path = prefix + item.name
            switch item.status.st_mode & S_IFMT {
            case S_IFDIR:
                let slashed = path + [0x2F]
                // Index entries before this directory are gone; a submodule here is skipped.
                var submodule = false
                while cursor < entries.count, entries[cursor].path.lexicographicallyPrecedes(slashed) {
                    if entries[cursor].path == path && entries[cursor].mode == 0o160000 {
                        submodule = true
                        cursor += 1
                        continue
                    }
                    // A tracked file where a directory now is: deleted (the files below are new).
                    missing(entries[cursor])
                    cursor += 1
                }
                if submodule { continue }
                let tracked = cursor < entries.count && entries[cursor].path.starts(with: slashed)
                let text = String(decoding: path, as: UTF8.self)
                if !tracked {
                    if isIgnored(text + "/") { continue }
                    if root.kind(text + "/.git") != nil {
                        refused.append("\(clone)/\(text) left out: a nested repository")
                        continue
                    }
                }
                walk(nil, root: root, prefix: slashed, depth: depth + 1)
            case S_IFREG, S_IFLNK:
                if item.status.st_nlink > 1 && item.status.st_mode & S_IFMT == S_IFREG { sawHardLink = true }
                while cursor < entries.count, entries[cursor].path.lexicographicallyPrecedes(path) {
                    missing(entries[cursor])
                    cursor += 1
                }
                if cursor < entries.count, entries[cursor].path == path {
                    let entry = entries[cursor]
                    cursor += 1
                    if !matches(entry, item.status) { candidates.append((String(decoding: path, as: UTF8.self), entry)) }
                } else {
                    let text = String(decoding: path, as: UTF8.self)
                    if !isIgnored(text) { candidates.append((text, nil)) }
                }
            default:
                continue  // sockets, fifos, devices: not content git tracks
            }
        }
    }

    private static let dotGit = Array(".git".utf8)

    /// Whether the stat data still says "as in the index" (and the entry is not racy).
    private func matches(_ entry: Entry, _ info: stat) -> Bool {
        let isLink = info.st_mode & S_IFMT == S_IFLNK
        let mode: UInt32 = isLink ? 0o120000 : (info.st_mode & 0o100 != 0 ? 0o100755 : 0o100644)
        guard entry.mode == mode, entry.size == UInt32(truncatingIfNeeded: info.st_size),
            entry.seconds == Int32(truncatingIfNeeded: info.st_mtim.tv_sec), entry.nanoseconds == UInt32(truncatingIfNeeded: info.st_mtim.tv_nsec)
        else { return false }
        if let indexTime,
            info.st_mtim.tv_sec > indexTime.tv_sec || (info.st_mtim.tv_sec == indexTime.tv_sec && info.st_mtim.tv_nsec >= indexTime.tv_nsec)
        {
            return false  // changed in the instant the index was written: compare contents
        }
        return true
    }

    private func isIgnored(_ path: String) -> Bool {
        var ignored: Int32 = 0
        return git_ignore_path_is_ignored(&ignored, repository.pointer, path) == 0 && ignored == 1
    }

    /// Stores the working tree's version of `path` in the index (when it differs from `entry`).
    private mutating func capture(_ path: String, entry indexEntry: Entry?, from root: ConfinedDirectory, into index: OpaquePointer?) throws {
        let bytes: [UInt8]
        let mode: UInt32
        switch root.kind(path) {
        case .file(let size, let executable)?:
            guard size <= SandboxFetch.maxWorkingFileBytes else {
                refused.append(
                    "\(clone)/\(path) left out: \(formatBytes(size)) is more than the limit of \(formatBytes(Int64(SandboxFetch.maxWorkingFileBytes))) for one file"
                )
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
        if let indexEntry, indexEntry.mode == mode, ObjectID(indexEntry.id) == ObjectID(id) { return }
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
