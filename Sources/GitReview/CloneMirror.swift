import AirlockSystem
import Clibgit2

#if canImport(Glibc)
import Glibc
#endif

/// A private copy of the git data in a sandbox's clone, which libgit2 then reads instead of
/// the clone itself. The clone is hostile, so the copy takes only what a fetch needs, through
/// `ConfinedDirectory` (no symlink is ever followed), with every file size bounded:
/// - `HEAD`, branch refs (`refs/heads/…` and their `packed-refs` lines) with valid names only,
/// - loose objects and pack files, and the index (for uncommitted work).
/// Never copied: the clone's `config`, hooks, `info/` (attributes, excludes), `objects/info`
/// (alternates would point libgit2 at other repositories), `commondir`, logs. The mirror gets
/// a config of our own. Pack files are immutable under their content-hash names and copied once.
struct CloneMirror {
    struct Limits: Sendable {
        /// A single loose object file (compressed) or index file.
        var fileBytes: Int = 512 << 20
        /// A single pack file.
        var packBytes: Int = 4 << 30
        /// Everything copied in one sync.
        var totalBytes: Int64 = 16 << 30
        /// The size an object may declare (checked on loose objects through their header).
        var objectBytes: Int = 512 << 20
        /// Loose objects imported in one sync, inflated (what their import costs in memory,
        /// time and disk: a few MB of compressed zeros can declare gigabytes).
        var looseBytes: Int64 = 4 << 30

        static let standard = Limits()
    }

    /// The mirror's path (a bare repository the host owns).
    let path: String
    /// What was refused or ignored, each as one sentence.
    private(set) var refusals: [String] = []
    /// When the clone's index was last written (nil without an index).
    private(set) var indexTime: timespec?
    private let limits: Limits
    private var copiedBytes: Int64 = 0

    /// The user's own object directory (trusted), which the mirror reads as an alternate: a
    /// pack of the clone that the project holds under the same name (the clone's first packs,
    /// copied by the workspace clone) is not copied again, however large. A pack's name is the
    /// hash of its contents; a clone that puts something else under such a name gets the
    /// project's pack instead, so nothing of its own is read from it.
    let projectObjects: String

    /// Brings the mirror at `mirror` up to date with the clone at `clone`.
    static func sync(clone: String, into mirror: String, projectObjects: String, limits: Limits = .standard) throws(GitReviewError) -> CloneMirror {
        var result = CloneMirror(path: mirror, projectObjects: projectObjects, limits: limits)
        try result.sync(clone: clone)
        return result
    }

    private init(path: String, projectObjects: String, limits: Limits) {
        self.path = path
        self.projectObjects = projectObjects
        self.limits = limits
    }

    private mutating func sync(clone: String) throws(GitReviewError) {
        let workspace: ConfinedDirectory
        let git: ConfinedDirectory
        do {
            workspace = try ConfinedDirectory.open(clone)
        } catch {
            throw GitReviewError("cannot read the sandbox's clone", cause: error)
        }
        switch workspace.kind(".git") {
        case .directory?: break
        case .file?:
            throw GitReviewError(
                "\(clone)/.git is a file (a link to a git directory elsewhere); airlock reads only a real .git directory in the clone")
        case .symlink?: throw GitReviewError("\(clone)/.git is a symlink; airlock never follows symlinks in a sandbox's clone")
        default:
            throw GitReviewError("\(clone) has no .git directory", hint: "the clone may have been deleted; `airlock start --fresh` makes a new one")
        }
        do {
            git = try workspace.directory(".git")
        } catch {
            throw GitReviewError("cannot read \(clone)/.git", cause: error)
        }

        try makeDirectories()
        try writeOwn("config", "[core]\n\trepositoryformatversion = 0\n\tbare = true\n\tfilemode = true\n")
        try writeOwn("objects/info/alternates", projectObjects + "\n" + path + "/loose\n")
        if git.kind("commondir") != nil { refuse("\(git.path)/commondir ignored (it would point git at another directory)") }
        copyHead(from: git)
        copyRefs(from: git)
        copyPackedRefs(from: git)
        try copyObjects(from: git)
        copyOptional("index", from: git)
        if regularFileSize(path + "/index") != nil { indexTime = git.status("index")?.st_mtim }
        copyOptional("shallow", from: git)
    }

    private mutating func refuse(_ sentence: String) {
        refusals.append(sentence)
    }

    private func makeDirectories() throws(GitReviewError) {
        for directory in ["", "/objects", "/objects/info", "/objects/pack", "/loose", "/loose/pack", "/refs", "/refs/heads", "/refs/tags"] {
            do {
                try FileSystem.makeDirectory(path + directory, mode: 0o700)
            } catch {
                throw GitReviewError("cannot make the clone's mirror", cause: error)
            }
        }
    }

    private func writeOwn(_ name: String, _ text: String) throws(GitReviewError) {
        do {
            try FileSystem.writeAtomically(path + "/" + name, text, durable: false)
        } catch {
            throw GitReviewError("cannot write the clone's mirror", cause: error)
        }
    }

    /// HEAD: `ref: refs/heads/<valid name>` or a commit id; anything else leaves the mirror
    /// with an unborn HEAD.
    private mutating func copyHead(from git: ConfinedDirectory) {
        var head = "ref: refs/heads/airlock-no-head\n"
        do {
            let text = String(decoding: try git.read("HEAD", limit: 4096), as: UTF8.self).trimmingWhitespace()
            if text.hasPrefix("ref: "), Self.isValidBranchRef(String(text.dropFirst(5))) {
                head = text + "\n"
            } else if Self.isObjectID(text) {
                head = text + "\n"
            } else {
                refuse("\(git.path)/HEAD ignored: it is neither a branch reference nor a commit id")
            }
        } catch {
            refuse("\(git.path)/HEAD ignored: \(error)")
        }
        try? FileSystem.writeAtomically(path + "/HEAD", head, durable: false)
    }

    /// `refs/heads/**`: the mirror's copy is rebuilt on every sync, so deleted branches vanish.
    private mutating func copyRefs(from git: ConfinedDirectory) {
        try? FileSystem.removeTree(path + "/refs/heads")
        mkdir(path + "/refs/heads", 0o700)
        guard git.kind("refs/heads") == .directory else {
            if git.kind("refs") == .symlink || git.kind("refs/heads") == .symlink { refuse("\(git.path)/refs ignored: it is a symlink") }
            return
        }
        copyRefDirectory(git, relative: "refs/heads", depth: 0)
    }

    private mutating func copyRefDirectory(_ git: ConfinedDirectory, relative: String, depth: Int) {
        guard depth < 32, let directory = try? git.directory(relative) else {
            refuse("\(git.path)/\(relative) ignored: too deep or unreadable")
            return
        }
        for (name, kind) in directory.entries() {
            let ref = relative + "/" + name
            switch kind {
            case .directory:
                mkdir(path + "/" + ref, 0o700)
                copyRefDirectory(git, relative: ref, depth: depth + 1)
            case .file:
                guard Self.isValidBranchRef(ref) else {
                    refuse("\(git.path)/\(ref) ignored: not a valid branch name")
                    continue
                }
                guard let bytes = try? git.read(ref, limit: 4096) else {
                    refuse("\(git.path)/\(ref) ignored: unreadable")
                    continue
                }
                let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
                guard Self.isObjectID(text) else {
                    refuse("\(git.path)/\(ref) ignored: it does not hold a commit id")
                    continue
                }
                try? FileSystem.writeAtomically(path + "/" + ref, (text + "\n"), durable: false)
            case .symlink:
                refuse("\(git.path)/\(ref) ignored: it is a symlink")
            case .other:
                refuse("\(git.path)/\(ref) ignored: not a regular file")
            }
        }
    }

    /// `packed-refs`, keeping only well-formed branch lines (and their peel lines).
    private mutating func copyPackedRefs(from git: ConfinedDirectory) {
        unlink(path + "/packed-refs")
        switch git.kind("packed-refs") {
        case nil: return
        case .symlink?:
            refuse("\(git.path)/packed-refs ignored: it is a symlink")
            return
        default: break
        }
        guard let bytes = try? git.read("packed-refs", limit: limits.fileBytes) else {
            refuse("\(git.path)/packed-refs ignored: unreadable or larger than \(formatBytes(Int64(limits.fileBytes)))")
            return
        }
        var kept = "# pack-refs with: peeled fully-peeled sorted \n"
        var dropped = 0
        var keepingPeel = false
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("#") { continue }
            if line.hasPrefix("^") {
                if keepingPeel, Self.isObjectID(String(line.dropFirst())) { kept += line + "\n" }
                continue
            }
            let parts = line.split(separator: " ", maxSplits: 1)
            keepingPeel = false
            guard parts.count == 2, Self.isObjectID(String(parts[0])) else {
                dropped += 1
                continue
            }
            let name = String(parts[1])
            guard name.hasPrefix("refs/heads/") else { continue }
            guard Self.isValidBranchRef(name) else {
                dropped += 1
                continue
            }
            kept += line + "\n"
            keepingPeel = true
        }
        if dropped > 0 { refuse("\(git.path)/packed-refs: \(dropped) malformed or invalid line(s) ignored") }
        try? FileSystem.writeAtomically(path + "/packed-refs", kept, durable: false)
    }

    /// Loose objects (those neither the mirror nor the project has, imported as a pack) and
    /// packs (copied once).
    private mutating func copyObjects(from git: ConfinedDirectory) throws(GitReviewError) {
        guard git.kind("objects") == .directory, let objects = try? git.directory("objects") else {
            throw GitReviewError("\(git.path)/objects is missing, a symlink or unreadable; nothing can be fetched")
        }
        var seenLoose = Set<String>()
        var loose: [(directory: ConfinedDirectory, file: String, size: Int64)] = []
        for (name, kind) in objects.entries() {
            if name == "info" {
                if objects.kind("info/alternates") != nil || objects.kind("info/http-alternates") != nil {
                    refuse("\(objects.path)/info/alternates ignored: airlock does not read objects from other repositories")
                }
                continue
            }
            if name == "pack" {
                guard kind == .directory else {
                    refuse("\(objects.path)/pack ignored: not a directory (a symlink?)")
                    continue
                }
                try copyPacks(from: objects)
                continue
            }
            guard name.count == 2, name.allSatisfy(\.isHexDigit) else { continue }
            guard kind == .directory, let directory = try? objects.directory(name) else {
                refuse("\(objects.path)/\(name) ignored: not a directory (a symlink?)")
                continue
            }
            for (file, fileKind) in directory.entries() where file.count == 38 && file.allSatisfy(\.isHexDigit) {
                seenLoose.insert(name + "/" + file)
                guard case .file(let size, _) = fileKind else {
                    refuse("\(directory.path)/\(file) ignored: not a regular file (a symlink?)")
                    continue
                }
                loose.append((directory, file, size))
            }
        }
        try importLooseObjects(loose)
        removeVanishedLooseObjects(keeping: seenLoose)
    }

    private mutating func copyPacks(from objects: ConfinedDirectory) throws(GitReviewError) {
        guard let pack = try? objects.directory("pack") else {
            refuse("\(objects.path)/pack ignored: unreadable or a symlink")
            return
        }
        let entries = pack.entries()
        let names = Set(entries.map(\.name))
        var kept = Set<String>()
        for (name, kind) in entries where name.hasPrefix("pack-") && name.hasSuffix(".pack") {
            let base = String(name.dropLast(".pack".count))
            guard names.contains(base + ".idx") else { continue }
            guard case .file(let size, _) = kind, case .file(let indexSize, _)? = pack.kind(base + ".idx") else {
                refuse("\(pack.path)/\(base).pack or .idx ignored: not a regular file (a symlink?)")
                continue
            }
            guard size <= limits.packBytes, indexSize <= limits.packBytes else {
                refuse(
                    "\(pack.path)/\(name) ignored: \(formatBytes(size)) is more than the limit of \(formatBytes(Int64(limits.packBytes))) for one pack"
                )
                continue
            }
            if regularFileSize(projectObjects + "/pack/" + base + ".pack") != nil, regularFileSize(projectObjects + "/pack/" + base + ".idx") != nil {
                continue  // the project's own copy serves (an alternate); a mirror copy goes
            }
            kept.insert(base)
            let target = path + "/objects/pack/" + base
            if regularFileSize(target + ".pack") == size && regularFileSize(target + ".idx") == indexSize { continue }
            try account(size + indexSize)
            do {
                // The index last: libgit2 only looks at packs that have one.
                try pack.copy(base + ".pack", to: target + ".pack", limit: limits.packBytes)
                try pack.copy(base + ".idx", to: target + ".idx", limit: limits.packBytes)
            } catch {
                unlink(target + ".idx")
                unlink(target + ".pack")
                kept.remove(base)
                refuse("\(error); that pack was ignored")
            }
        }
        // Packs gone from the clone (repacked) go from the mirror too.
        if let mine = try? ConfinedDirectory.open(path + "/objects/pack") {
            for (name, _) in mine.entries() {
                let base = name.split(separator: ".").first.map(String.init) ?? name
                if !kept.contains(base) { unlink(path + "/objects/pack/" + name) }
            }
        }
    }

    /// Imports the clone's loose objects that neither the mirror nor the project has, as one
    /// pack in `loose/` (an object directory of the mirror's own, one of its alternates). Each
    /// is inflated (no further than its declared size and the limit), and its content must
    /// hash to its name. Packs, not a file per object: creating hundreds of small files cost
    /// more than everything else a fetch does. Past 16 packs, `loose/` starts over.
    private mutating func importLooseObjects(_ candidates: [(directory: ConfinedDirectory, file: String, size: Int64)]) throws(GitReviewError) {
        let packs = path + "/loose/pack"
        if let existing = try? ConfinedDirectory.open(packs), existing.entries().filter({ $0.name.hasSuffix(".pack") }).count > 16 {
            for (name, _) in existing.entries() { unlink(packs + "/" + name) }
        }
        let repository: Repository
        do {
            repository = try Repository.open(path)
        } catch {
            throw GitReviewError(error)
        }
        // The odb and the pack builders below use it: kept until they are freed.
        defer { withExtendedLifetime(repository) {} }
        var odb: OpaquePointer?
        defer { git_odb_free(odb) }
        try Self.check(git_repository_odb(&odb, repository.pointer), "open the mirror's objects")
        var wanted: [(directory: ConfinedDirectory, file: String, size: Int64, id: git_oid)] = []
        for candidate in candidates {
            var id = git_oid()
            guard git_oid_fromstr(&id, String(candidate.directory.path.suffix(2)) + candidate.file) == 0 else { continue }
            // NO_REFRESH: a miss would otherwise list every pack directory again.
            if git_odb_exists_ext(odb, &id, UInt32(GIT_ODB_LOOKUP_NO_REFRESH.rawValue)) == 0 {
                wanted.append((candidate.directory, candidate.file, candidate.size, id))
            }
        }
        guard !wanted.isEmpty else { return }
        var memory: UnsafeMutablePointer<git_odb_backend>?
        try Self.check(git_mempack_new(&memory), "make an in-memory object store")
        guard let memory, let write = memory.pointee.write else { throw GitReviewError("libgit2 made no writable in-memory object store") }
        try Self.check(git_odb_add_backend(odb, memory, 1000), "add an in-memory object store to the mirror")
        // Objects wait in memory until 64 MiB of them are written as a pack.
        var builder: OpaquePointer?
        defer { git_packbuilder_free(builder) }
        var pending = 0
        func flush() throws(GitReviewError) {
            if let builder, git_packbuilder_object_count(builder) > 0 {
                try Self.check(git_packbuilder_write(builder, packs, 0o600, nil, nil), "write the mirror's pack of loose objects")
            }
            git_packbuilder_free(builder)
            builder = nil
            _ = git_mempack_reset(memory)
            pending = 0
            try Self.check(git_packbuilder_new(&builder, repository.pointer), "pack the loose objects")
            git_packbuilder_set_threads(builder, 1)
        }
        try flush()
        var inflated: Int64 = 0
        for object in wanted {
            let where_ = "\(object.directory.path)/\(object.file)"
            guard object.size <= limits.fileBytes else {
                refuse(
                    "\(where_) ignored: \(formatBytes(object.size)) is more than the limit of \(formatBytes(Int64(limits.fileBytes))) for one object")
                continue
            }
            try account(object.size)
            let compressed: [UInt8]
            do {
                compressed = try object.directory.read(object.file, limit: limits.fileBytes)
            } catch {
                refuse("\(error); ignored")
                continue
            }
            let room = Int(min(Int64(limits.objectBytes), max(0, limits.looseBytes - inflated)))
            guard let (type, content) = Self.inflateLoose(compressed, limit: room) else {
                refuse(
                    "\(where_) ignored: not a well-formed loose object, or larger than \(formatBytes(Int64(room))) (\(formatBytes(Int64(limits.objectBytes))) an object, \(formatBytes(limits.looseBytes)) of loose objects a fetch)"
                )
                continue
            }
            inflated += Int64(content.count)
            var hashed = git_oid(), expected = object.id
            guard content.withUnsafeBytes({ git_odb_hash(&hashed, $0.baseAddress, $0.count, type) }) == 0, git_oid_equal(&hashed, &expected) != 0
            else {
                refuse("\(where_) ignored: its content does not hash to its name")
                continue
            }
            if pending > 0 && pending + content.count > 64 << 20 { try flush() }
            // Straight into the in-memory backend: git_odb_write first looks for the object
            // everywhere (listing every pack directory again when it is not found).
            try Self.check(content.withUnsafeBytes { write(memory, &hashed, $0.baseAddress, $0.count, type) }, "import \(where_)")
            try Self.check(git_packbuilder_insert(builder, &hashed, nil), "pack \(where_)")
            pending += content.count
        }
        try flush()
    }

    /// A loose object's type and content (zlib-inflated, then `blob 12\0` and the content),
    /// nil when malformed or when the content is not the declared size. Inflation stops as
    /// soon as the output passes the declared size or `limit`: a zlib bomb costs at most a
    /// chunk more than what it declares.
    static func inflateLoose(_ compressed: [UInt8], limit: Int) -> (git_object_t, [UInt8])? {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var header: (type: git_object_t, end: Int, size: Int)?
        var status = Z_OK
        compressed.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = UInt32(input.count)
            while status == Z_OK {
                status = chunk.withUnsafeMutableBufferPointer { buffer in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = UInt32(buffer.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                output += chunk[..<(chunk.count - Int(stream.avail_out))]
                if header == nil, let zero = output.prefix(64).firstIndex(of: 0) {
                    header = Self.looseHeader(output[..<zero]).map { ($0.type, zero + 1, $0.size) }
                    if let header, header.size <= limit { output.reserveCapacity(header.end + header.size) }
                }
                // No header in the first 64 bytes, a size past the limit, or more than declared.
                guard let header = header ?? (output.count < 64 ? (GIT_OBJECT_INVALID, 0, limit) : nil),
                    header.size <= limit, output.count <= header.end + header.size
                else {
                    status = Z_DATA_ERROR
                    break
                }
            }
        }
        guard status == Z_STREAM_END, let header, output.count == header.end + header.size else { return nil }
        output.removeSubrange(..<header.end)  // in place: a large object is never held twice
        return (header.type, output)
    }

    /// `blob 12` → (blob, 12).
    private static func looseHeader(_ bytes: ArraySlice<UInt8>) -> (type: git_object_t, size: Int)? {
        guard let parts = String(validating: bytes, as: UTF8.self)?.split(separator: " ", omittingEmptySubsequences: false),
            parts.count == 2, let size = Int(parts[1]), size >= 0, String(size) == parts[1]
        else { return nil }
        switch parts[0] {
        case "blob": return (GIT_OBJECT_BLOB, size)
        case "tree": return (GIT_OBJECT_TREE, size)
        case "commit": return (GIT_OBJECT_COMMIT, size)
        case "tag": return (GIT_OBJECT_TAG, size)
        default: return nil
        }
    }

    /// A libgit2 call on the mirror, its failure told as `GitError` tells it.
    private static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(GitReviewError) {
        do {
            try GitError.check(code, operation())
        } catch {
            throw GitReviewError(error)
        }
    }

    private func removeVanishedLooseObjects(keeping seen: Set<String>) {
        guard let objects = try? ConfinedDirectory.open(path + "/objects") else { return }
        for (name, kind) in objects.entries() where kind == .directory && name.count == 2 {
            guard let directory = try? objects.directory(name) else { continue }
            for (file, _) in directory.entries() where !seen.contains(name + "/" + file) {
                unlink(path + "/objects/" + name + "/" + file)
            }
        }
    }

    private mutating func copyOptional(_ name: String, from git: ConfinedDirectory) {
        unlink(path + "/" + name)
        switch git.kind(name) {
        case nil: return
        case .symlink?: refuse("\(git.path)/\(name) ignored: it is a symlink")
        case .file?:
            do {
                try git.copy(name, to: path + "/" + name, limit: limits.fileBytes)
            } catch {
                refuse("\(error); ignored")
            }
        default: refuse("\(git.path)/\(name) ignored: not a regular file")
        }
    }

    private mutating func account(_ bytes: Int64) throws(GitReviewError) {
        copiedBytes += bytes
        guard copiedBytes <= limits.totalBytes else {
            throw GitReviewError("the clone's git data exceeds \(formatBytes(limits.totalBytes)); fetch refused")
        }
    }

    static func isObjectID(_ text: String) -> Bool {
        text.utf8.count == 40 && text.allSatisfy(\.isHexDigit)
    }

    /// A name git accepts for a branch (`refs/heads/…`): no `..`, no control characters, no
    /// `.lock` component, and so on (libgit2's own check).
    static func isValidBranchRef(_ name: String) -> Bool {
        guard name.hasPrefix("refs/heads/"), name.utf8.count < 1024 else { return false }
        var valid: Int32 = 0
        return git_reference_name_is_valid(&valid, name) == 0 && valid == 1
    }
}

/// The size of a regular file (lstat); nil when absent or not a regular file.
func regularFileSize(_ path: String) -> Int64? {
    guard let info = FileSystem.status(path), info.st_mode & S_IFMT == S_IFREG else { return nil }
    return Int64(info.st_size)
}
