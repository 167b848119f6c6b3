import AirlockSystem
import Config
import GitReview
import GuestLink
import Machine

#if canImport(Glibc)
import Glibc
#endif

/// `[mounts.<name>]`: host directories and single files shared into the VM at their targets.
///
/// What the VM may do with a mount is decided by what the host shares, never by a mount inside
/// the guest (the agent may be root there and undo any of those):
/// - a directory is its own share, read-only in the VMM (9p `readonly=on`, virtiofsd
///   `--readonly`) unless `read_only = false`;
/// - a single file is hard-linked (the same inode: a write on either side is seen on the other)
///   into this sandbox's staging directory `mounts/ro` or `mounts/rw`, and that directory is
///   shared instead, so the VM reaches the file and none of its siblings. Where no hard link can
///   be made (another file system, a file of another owner under `protected_hardlinks`), the
///   file is copied: read-only, the VM then sees it as it was at the start; read-write, its
///   writes stay in the VM, and the start says so.
///
/// `[disk.cache.*]` paths are placed here too (`caches`): the guest binds a directory of the
/// state disk over each.
///
/// The guest bind-mounts each at its target, parents first. Refused at the start, naming the
/// entry: a source that holds the project (the VM would see the project instead of its clone,
/// masked paths included), one inside the project's `.git` or `.airlock`, a read-write one
/// inside the project (airlock never lets a session write the project) or in airlock's own
/// configuration or cache (the agent could change its own policy), and one that would show a
/// masked path, or airlock's vault (read-only too).
struct Mounts: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        /// The `[mounts.<name>]` entry.
        var name: String
        /// The host path, symbolic links resolved.
        var source: String
        /// Absolute, in the VM.
        var target: String
        var readOnly: Bool
        var isDirectory: Bool
    }

    var entries: [Entry]

    static let stagingTags = (readOnly: "mounts-ro", readWrite: "mounts-rw")

    /// What no read-write mount may reach: airlock's configuration (a change there is a change
    /// of every sandbox's policy) and its cache (kernels, images), symbolic links resolved. Of
    /// `~/.airlock`, the Rust airlock's configuration file: the agents' settings the presets
    /// keep beside it (`~/.airlock/claude`) are the VM's to write.
    static func protectedPaths(environment: [String: String]) -> [String] {
        let configured =
            [ConfigLoader.userConfigPath(environment: environment).map(FileSystem.parent(of:)), HostFacts.cacheDirectory(environment: environment)]
            + ConfigLoader.sharedUserConfigPaths(environment: environment)
        return configured.compactMap { $0 }.map { FileSystem.realPath($0) ?? $0 }
    }

    /// Resolves the configuration's mounts, making what a `missing = "create-…"` entry asks for
    /// and skipping what `warn` and `ignore` allow; throws for the first entry that cannot be.
    static func resolve(
        _ mounts: [String: AirlockConfig.Mount], project: String, guestHome: String, masks: MaskedPaths, protected: [String],
        secret: [String] = [], reporter: SandboxReporter
    ) throws -> Mounts {
        let projectReal = FileSystem.realPath(project) ?? project
        var entries: [Entry] = []
        for (name, mount) in mounts.sorted(by: { $0.key < $1.key }) {
            func refuse(_ message: String, hint: String? = nil) -> SandboxError {
                SandboxError("[mounts.\(name)] \(message)", hint: hint)
            }
            let written = mount.source.hasPrefix("/") ? mount.source : project + "/" + mount.source
            if FileSystem.status(written) == nil {  // lstat: a dangling symbolic link is not missing
                switch mount.missing {
                case .fail:
                    throw refuse(
                        "source \(written) does not exist",
                        hint: "create it, or set missing = \"warn\", \"ignore\", \"create-dir\" or \"create-file\" in that entry")
                case .warn:
                    reporter.warning("[mounts.\(name)] skipped: its source \(written) does not exist")
                    continue
                case .ignore:
                    continue
                case .create, .createDir:
                    try FileSystem.makeDirectories(written)
                    chmod(written, mode_t(mount.createMode ?? 0o755))
                case .createFile:
                    try FileSystem.makeDirectories(FileSystem.parent(of: written))
                    let fd = open(written, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_t(mount.createMode ?? 0o644))
                    guard fd >= 0 else { throw SystemError.last("create", written) }
                    defer { close(fd) }
                    try Syscall.writeAll(fd, Array(mount.fileContent.utf8), subject: written)
                    fchmod(fd, mode_t(mount.createMode ?? 0o644))
                }
            }
            guard let source = FileSystem.realPath(written), let info = FileSystem.status(source) else {
                throw refuse("source \(written) cannot be resolved: \(errorText(errno))", hint: "fix the path or its symbolic links")
            }
            let kind = info.st_mode & S_IFMT
            guard kind == S_IFDIR || kind == S_IFREG else {
                throw refuse("source \(source) is neither a directory nor a regular file", hint: "mount a directory or a file")
            }
            if source == projectReal || projectReal.hasPrefix(source == "/" ? "/" : source + "/") {
                throw refuse(
                    "source \(source) holds the project: the VM would see the project itself (its .git, masked paths) instead of its clone",
                    hint: "mount a directory beside the project or inside it")
            }
            if source.hasPrefix(projectReal + "/") {
                let relative = String(source.dropFirst(projectReal.count + 1))
                let first = relative.split(separator: "/").first.map(String.init) ?? relative
                if first == ".git" || first == ".airlock" {
                    throw refuse(
                        "source \(source) is inside the project's \(first): the VM must not reach airlock's state or the repository's hooks and configuration",
                        hint: "remove the entry")
                }
                if !mount.readOnly {
                    throw refuse(
                        "mounts \(source), inside the project, read-write: a session never writes the project; the agent's work comes home as commits",
                        hint: "set read_only = true (the clone holds its own copy the agent may change)")
                }
                if let hidden = masks.paths.first(where: {
                    $0.path == relative || $0.path.hasPrefix(relative + "/") || relative.hasPrefix($0.path + "/")
                }) {
                    throw refuse("would show \(hidden.path), which [\(hidden.entry)] hides", hint: "mount a path the mask does not cover")
                }
            }
            if !mount.readOnly, let guarded = protected.first(where: { $0 == source || $0.hasPrefix(source + "/") || source.hasPrefix($0 + "/") }) {
                throw refuse(
                    "mounts \(source) read-write, which would let the agent change \(guarded) (airlock's own configuration or cache)",
                    hint: "set read_only = true, or mount a directory that does not hold it")
            }
            if let vault = secret.first(where: { $0 == source || $0.hasPrefix(source + "/") || source.hasPrefix($0 + "/") }) {
                throw refuse(
                    "source \(source) would show \(vault), airlock's vault: the VM must never hold its secrets",
                    hint: "mount a directory that does not hold it")
            }
            let target = try guestTarget(mount.target, "target", home: guestHome, project: project, refuse: refuse)
            if let other = entries.first(where: { $0.target == target }) {
                throw refuse("has the target \(target) of [mounts.\(other.name)] too", hint: "give each mount its own target")
            }
            entries.append(Entry(name: name, source: source, target: target, readOnly: mount.readOnly, isDirectory: kind == S_IFDIR))
        }
        return Mounts(entries: entries)
    }

    /// `path` with a leading `~` as the agent's `home` in the VM.
    static func expandingHome(_ path: String, home: String) -> String {
        path == "~" ? home : path.hasPrefix("~/") ? home + path.dropFirst(1) : path
    }

    /// `target` as an absolute path in the VM: `~` is `home`, a relative path the project's.
    /// `what` names it in a refusal.
    static func guestTarget(
        _ target: String, _ what: String, home: String, project: String, refuse: (String, String?) -> SandboxError
    ) throws -> String {
        let expanded = expandingHome(target, home: home)
        let absolute = expanded.hasPrefix("/") ? expanded : project + "/" + expanded
        let parts = absolute.split(separator: "/").filter { $0 != "." }
        guard !parts.contains("..") else { throw refuse("\(what) \(target) has `..`", "write the path without `..`") }
        let path = "/" + parts.joined(separator: "/")
        if path == "/" { throw refuse("\(what) / would cover the VM's whole root", "choose a directory or file inside it") }
        if let reserved = ["/proc", "/sys", "/dev"].first(where: { path == $0 || path.hasPrefix($0 + "/") }) {
            throw refuse("\(what) \(path) is in \(reserved), which the VM's kernel provides", "choose another path")
        }
        if path == project || project.hasPrefix(path + "/") {
            throw refuse("\(what) \(path) would cover the project's clone at \(project)", "choose a path inside the project or beside it")
        }
        return path
    }

    /// The project paths (relative) that mounts cover: a fetch leaves them out, since what is
    /// there in the VM is the mount's, not the agent's work.
    static func projectTargets(_ mounts: [String: AirlockConfig.Mount], project: String, guestHome: String) -> [MaskedPaths.Path] {
        mounts.sorted { $0.key < $1.key }.compactMap { name, mount in
            guard let target = try? guestTarget(mount.target, "target", home: guestHome, project: project, refuse: { SandboxError($0, hint: $1) }),
                target.hasPrefix(project + "/")
            else { return nil }
            return MaskedPaths.Path(entry: "mounts.\(name)", path: String(target.dropFirst(project.count + 1)))
        }
    }

    /// `[disk.cache.*]` paths as the guest binds them, absolute in the VM.
    static func caches(_ disk: AirlockConfig.Disk, project: String, guestHome: String) throws -> [SetupSpec.Cache] {
        var caches: [SetupSpec.Cache] = []
        for (name, paths) in disk.caches.sorted(by: { $0.key < $1.key }) {
            for path in paths {
                let target = try guestTarget(path, "path", home: guestHome, project: project) { SandboxError("[disk.cache.\(name)] \($0)", hint: $1) }
                caches.append(SetupSpec.Cache(name: name, path: target))
            }
        }
        return caches
    }

    /// Makes `directory` (this sandbox's `mounts`) afresh with the single files: hard links, or
    /// copies where no link can be made.
    func stage(in directory: String, reporter: SandboxReporter) throws {
        try FileSystem.removeTree(directory)
        for (index, entry) in entries.enumerated() where !entry.isDirectory {
            let folder = directory + (entry.readOnly ? "/ro" : "/rw")
            try FileSystem.makeDirectories(folder, mode: 0o700)
            let staged = folder + "/" + Self.stagedName(index)
            if link(entry.source, staged) == 0 { continue }
            let reason = errno
            guard reason == EXDEV || reason == EPERM || reason == EMLINK else { throw SystemError.last("link", entry.source) }
            try copy(entry.source, to: staged)
            if !entry.readOnly {
                reporter.warning(
                    "[mounts.\(entry.name)] \(entry.source) is copied, not linked (\(errorText(reason))): what the VM writes to it stays in the VM")
            }
        }
    }

    static func stagedName(_ index: Int) -> String { "file\(index)" }

    /// Adds the shares and the guest's mounts to a root's layout.
    func add(to layout: inout (shares: [MachineSpec.Share], setup: SetupSpec), staging: String) {
        for (index, entry) in entries.enumerated() {
            if entry.isDirectory {
                let tag = "mount\(index)"
                layout.shares.append(.init(tag: tag, hostPath: entry.source, readOnly: entry.readOnly))
                layout.setup.shares.append(.init(tag: tag, path: entry.target, readOnly: entry.readOnly, kind: .direct))
            } else {
                let tag = entry.readOnly ? Self.stagingTags.readOnly : Self.stagingTags.readWrite
                layout.setup.fileMounts.append(.init(tag: tag, name: Self.stagedName(index), path: entry.target))
            }
        }
        for (readOnly, tag) in [(true, Self.stagingTags.readOnly), (false, Self.stagingTags.readWrite)]
        where entries.contains(where: { !$0.isDirectory && $0.readOnly == readOnly }) {
            layout.shares.append(.init(tag: tag, hostPath: staging + (readOnly ? "/ro" : "/rw"), readOnly: readOnly))
            layout.setup.shares.append(.init(tag: tag, path: "/", readOnly: readOnly, kind: .staging))
        }
    }
}

/// Copies a regular file's bytes (the fallback where a hard link cannot be made: across file
/// systems, where `copy_file_range` fails the same way, hence read and write).
private func copy(_ source: String, to destination: String) throws {
    let input = open(source, O_RDONLY | O_CLOEXEC)
    guard input >= 0 else { throw SystemError.last("open", source) }
    defer { close(input) }
    var info = stat()
    fstat(input, &info)
    let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, info.st_mode & 0o777)
    guard output >= 0 else { throw SystemError.last("create", destination) }
    defer { close(output) }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = try Syscall.retrying("read", source) { buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) } }
        if count == 0 { return }
        try buffer.withUnsafeBytes { try Syscall.writeAll(output, UnsafeRawBufferPointer(rebasing: $0[0..<count]), subject: destination) }
    }
}
