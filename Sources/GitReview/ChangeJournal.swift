import AirlockSystem
import Clibgit2
import Dispatch
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// What a session changed in the clone's working tree, so that `fetch` looks at those paths
/// instead of every file (a scan of 50,000 files is ~90% of a fetch).
///
/// A session begins the journal before its VM starts: every directory of the clone (but
/// `.git`) gets an inotify watch; then, while the VM boots, the working tree is scanned once as
/// a baseline: HEAD's tree and the paths that already differed from it (staged or not). While
/// the VM runs, every change the guest makes reaches the host's file system through the VMM
/// (9p or virtio-fs), so its path is recorded; when the VM has exited, the journal is sealed
/// into a file. A fetch with the sandbox stopped then looks only at: the recorded paths, the
/// paths that differed at the start, and the paths whose index entry differs from that HEAD
/// tree now. Every other path holds what that tree holds, and so does the index.
///
/// Anything the journal cannot vouch for makes `fetch` scan everything instead: no sealed
/// journal (a session that crashed, or still runs), a watch that could not be added, a lost
/// event (queue overflow), too many changes, a hard link, a name that is not UTF-8, a refusal
/// in the baseline, a changed `.gitignore`, a baseline tree the mirror no longer has. What it
/// cannot see: changes made on the host outside a session (the next session's baseline finds
/// them; `fetch --rescan` at once); a file changed only through a second name (a hard link)
/// the host did not see made: one in `.git` or in a directory made during the session (not
/// watched), or one removed again before the host looked; and writes through a mapping of the
/// host file (virtio-fs DAX, which airlock does not enable). Only the agent can do those, and
/// what it hides that way is its own uncommitted work: never anything of the host's or the
/// project's, and never its commits (read from `.git` on every fetch).
public struct ChangeJournal: Codable, Sendable, Equatable {
    /// The tree of the clone's HEAD when the session began (an object of the clone's, so the
    /// mirror has it as long as the clone does).
    public var headTree: ObjectID
    /// Paths whose working-tree version differed from that tree then: staged, or changed in
    /// the working tree.
    public var differing: [String]
    /// Paths created, changed, moved or removed during the session (a directory: all below it).
    public var changed: [String]

    /// Sessions with more changed paths than this (or more bytes of them) are scanned whole.
    static let maxChanged = 200_000
    static let maxChangedBytes = 32 << 20

    /// The sealed journal at `file`, if there is one.
    public static func load(_ file: String) -> ChangeJournal? {
        guard let data = try? Data(contentsOf: URL(filePath: file)) else { return nil }
        return try? JSONDecoder().decode(ChangeJournal.self, from: data)
    }

    /// The paths a fetch must look at, given the tree of the clone's index now; nil when the
    /// journal cannot vouch for the rest (then everything is scanned).
    /// (The clone's `info/exclude` needs no watching: the mirror leaves `info/` out, so it
    /// never counts.)
    func paths(indexTreeNow: ObjectID, in mirror: Repository) -> [String]? {
        guard !changed.contains(where: { $0 == ".gitignore" || $0.hasSuffix("/.gitignore") }) else { return nil }
        guard let moved = try? Differ(repository: mirror).treeChanges(fromTree: headTree, toTree: indexTreeNow) else { return nil }
        return changed + differing + moved.map(\.path)
    }

    /// A session's journal being recorded: begun before the VM starts, sealed after it exits.
    public final class Recorder: @unchecked Sendable {
        private let file: String
        private let watcher: TreeWatcher
        /// Taken on another thread while the VM boots; read only after `taken` is signalled.
        private var baseline: (headTree: ObjectID, differing: [String])?
        private let taken = DispatchSemaphore(value: 0)

        /// Removes the last session's journal and watches the clone, then takes the baseline
        /// (through the sandbox's mirror) in the background: whatever changes from the moment
        /// the watches are in place is recorded, so the baseline may be read while the guest
        /// starts. Nil when the clone can't be watched (the next fetch then reads every file).
        public static func begin(project: String, clone: String, mirror: String, file: String) -> Recorder? {
            unlink(file)
            guard let watcher = TreeWatcher(root: clone) else { return nil }
            let recorder = Recorder(file: file, watcher: watcher)
            DispatchQueue.global().async {
                recorder.baseline = try? Self.baseline(project: project, clone: clone, mirror: mirror)
                recorder.taken.signal()
            }
            return recorder
        }

        private init(file: String, watcher: TreeWatcher) {
            self.file = file
            self.watcher = watcher
        }

        /// HEAD's tree and the paths whose working-tree version differs from it: staged (the
        /// index against HEAD) or not (the working tree against the index, as `fetch` finds it).
        private static func baseline(project: String, clone: String, mirror: String) throws -> (headTree: ObjectID, differing: [String])? {
            _ = LibGit2Runtime.initialised
            let user = try Repository.open(project)
            let mirrored = try CloneMirror.sync(clone: clone, into: mirror, projectObjects: user.objectsDirectory)
            let source = try Repository.open(mirrored.path)
            guard mirrored.indexTime != nil, let head = source.headCommit else { return nil }
            let headTree = try source.treeID(ofCommit: head)
            var index: OpaquePointer?
            defer { git_index_free(index) }
            guard git_index_open(&index, mirrored.path + "/index") == 0 else { return nil }
            var indexTree = git_oid()
            guard git_index_write_tree_to(&indexTree, index, source.pointer) == 0 else { return nil }  // conflicts
            let staged = try Differ(repository: source).treeChanges(fromTree: headTree, toTree: ObjectID(indexTree)).map(\.path)
            var scan = WorkingTreeScan(repository: source, clone: clone, indexTime: mirrored.indexTime)
            _ = try scan.tree(index: index)
            guard scan.refused.isEmpty, !scan.sawHardLink else { return nil }
            return (headTree, staged + scan.changedPaths)
        }

        /// Waits until the baseline has been taken (it runs while the VM boots); whether one
        /// could be taken.
        public func waitForBaseline() -> Bool {
            taken.wait()
            taken.signal()
            return baseline != nil
        }

        /// Stops watching (the VM has exited, so nothing more can change) and writes the
        /// journal, unless something made it unreliable.
        public func seal() {
            let recorded = watcher.stop()
            taken.wait()
            guard let baseline, recorded.complete else { return }
            let journal = ChangeJournal(headTree: baseline.headTree, differing: baseline.differing, changed: recorded.paths.sorted())
            guard let data = try? JSONEncoder().encode(journal) else { return }
            let temporary = file + ".\(getpid()).tmp"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { return }
            let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            if written == data.count { rename(temporary, file) } else { unlink(temporary) }
        }
    }
}

/// inotify watches on every directory of a tree (but the top `.git`), recording the relative
/// path of everything created, written, re-moded, moved or removed. A new directory is
/// recorded as a whole (and not watched: everything below it is looked at anyway).
final class TreeWatcher: @unchecked Sendable {
    private let fd: Int32
    private let stopPipe: (read: Int32, write: Int32)
    private let root: String
    /// The root again, for looking at what the guest made (never through a symlink).
    private let tree: ConfinedDirectory
    private var recordedBytes = 0
    /// Watch descriptor → directory relative to the root ("" for the root).
    private var directories: [Int32: String] = [:]
    // Written by the reader only, read after it has finished (`stop`).
    private var paths: Set<String> = []
    private var complete = true
    private let finished = DispatchSemaphore(value: 0)

    static let maxDirectories = 100_000
    private static let mask =
        UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO)
        | UInt32(IN_DELETE_SELF | IN_MOVE_SELF) | UInt32(IN_DONT_FOLLOW) | UInt32(IN_ONLYDIR) | UInt32(IN_EXCL_UNLINK)

    /// Watches `root`; nil when inotify is unavailable or a watch can't be added (the
    /// per-user limit, `fs.inotify.max_user_watches`).
    init?(root: String) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            close(fd)
            return nil
        }
        for end in pipeFDs { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        self.fd = fd
        self.stopPipe = (pipeFDs[0], pipeFDs[1])
        self.root = root
        guard let tree = try? ConfinedDirectory.open(root) else {
            close(fd)
            close(pipeFDs[0])
            close(pipeFDs[1])
            return nil
        }
        self.tree = tree
        guard watchTree("", depth: 0) else {
            close(fd)
            close(stopPipe.read)
            close(stopPipe.write)
            return nil
        }
        DispatchQueue(label: "airlock.journal").async { self.read() }
    }

    /// Adds a watch to `relative` and every directory below it (never through a symlink: the
    /// tree is not changing while this runs, before the VM starts).
    private func watchTree(_ relative: String, depth: Int) -> Bool {
        guard depth < 256, directories.count < Self.maxDirectories else { return false }
        let path = relative.isEmpty ? root : root + "/" + relative
        let wd = inotify_add_watch(fd, path, Self.mask)
        guard wd >= 0 else { return false }
        directories[wd] = relative
        guard let stream = opendir(path) else { return false }
        defer { closedir(stream) }
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." || (relative.isEmpty && name == ".git") { continue }
            let child = relative.isEmpty ? name : relative + "/" + name
            var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                var info = stat()
                isDirectory = lstat(root + "/" + child, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
            }
            if isDirectory && !watchTree(child, depth: depth + 1) { return false }
        }
        return true
    }

    private func read() {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var polls = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
        while true {
            _ = poll(&polls, 2, -1)
            let stopping = polls[1].revents != 0
            // Everything queued so far (after the stop, the VM has exited: that is all).
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                handle(buffer[..<count])
            }
            if stopping { break }
        }
        finished.signal()
    }

    private func handle(_ events: ArraySlice<UInt8>) {
        var offset = events.startIndex
        let header = MemoryLayout<inotify_event>.size
        while offset + header <= events.endIndex {
            let (wd, mask, length) = events.withUnsafeBytes { raw in
                (
                    raw.loadUnaligned(fromByteOffset: offset - events.startIndex, as: Int32.self),
                    raw.loadUnaligned(fromByteOffset: offset - events.startIndex + 4, as: UInt32.self),
                    Int(raw.loadUnaligned(fromByteOffset: offset - events.startIndex + 12, as: UInt32.self))
                )
            }
            let nameBytes = events[(offset + header)..<min(events.endIndex, offset + header + length)].prefix { $0 != 0 }
            offset += header + length
            if mask & UInt32(IN_Q_OVERFLOW) != 0 { complete = false }
            if mask & UInt32(IN_IGNORED) != 0 {
                directories.removeValue(forKey: wd)
                continue
            }
            guard let directory = directories[wd] else { continue }
            if nameBytes.isEmpty {
                // The watched directory itself moved or went away: all of it is looked at.
                if mask & UInt32(IN_MOVE_SELF | IN_DELETE_SELF) != 0 {
                    if directory.isEmpty { complete = false } else { record(directory) }
                }
                continue
            }
            // A name that is not UTF-8 can't be named again exactly: everything is read.
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                complete = false
                continue
            }
            if directory.isEmpty && name == ".git" { continue }
            let path = directory.isEmpty ? name : directory + "/" + name
            record(path)
            // A second name for a file: a change through one is not seen on the other.
            if mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 {
                if let info = tree.status(path), info.st_mode & S_IFMT != S_IFDIR, info.st_nlink > 1 { complete = false }
            }
        }
    }

    private func record(_ path: String) {
        guard paths.count < ChangeJournal.maxChanged, recordedBytes < ChangeJournal.maxChangedBytes else {
            complete = false
            return
        }
        if paths.insert(path).inserted { recordedBytes += path.utf8.count }
    }

    /// Stops watching; what was recorded, and whether it is all that changed.
    func stop() -> (paths: Set<String>, complete: Bool) {
        var byte: UInt8 = 1
        _ = write(stopPipe.write, &byte, 1)
        finished.wait()
        close(fd)
        close(stopPipe.read)
        close(stopPipe.write)
        return (paths, complete)
    }
}
