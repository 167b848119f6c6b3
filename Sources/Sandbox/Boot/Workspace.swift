import AirlockSystem
import Config
import GitReview
import Machine
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// How the clone is made at a start.
public struct WorkspaceOptions: Sendable, Equatable {
    /// Make a new clone (the old one's work is fetched first, or the start refuses).
    public var fresh = false
    /// Carry the project's uncommitted changes into a new clone as a commit.
    public var withChanges = false

    public init(fresh: Bool = false, withChanges: Bool = false) {
        self.fresh = fresh
        self.withChanges = withChanges
    }
}

/// The host side of a sandbox's files before it boots: the clone the VM works on and the state
/// disk. Blocking (libgit2, file I/O): run through `Blocking.run`.
struct Workspace {
    var paths: SandboxPaths
    var config: AirlockConfig
    var options: WorkspaceOptions
    var reporter: SandboxReporter

    /// The clone the VM works on: made at first start (every branch and the history, the
    /// current branch checked out); later starts reuse it. `--fresh` fetches the old clone's
    /// work home and makes a new one; `--with-changes` carries the project's uncommitted
    /// changes into a new clone as a commit.
    func prepareClone() throws {
        if options.fresh && FileSystem.isDirectory(paths.workspace + "/.git") {
            reporter.progress?("fetching the old clone's work before re-cloning")
            do {
                let report = try SandboxFetch.run(
                    project: paths.project.root, clone: paths.workspace, mirror: paths.mirror, sandbox: paths.name, base: Self.recordedBase(paths),
                    masks: MaskedPaths(config.masks))
                try? paths.auditLog.append(
                    AuditEvent(sandbox: paths.name, event: "fetch", details: ["reason": .text("--fresh"), "refs": .list(report.branches.map(\.ref))]))
            } catch {
                throw SandboxError(
                    "--fresh refused: the old clone's work could not be fetched first", cause: error,
                    hint: "`airlock fetch --name \(paths.name)` shows why; `airlock rm --name \(paths.name)` discards the sandbox with its work")
            }
            try FileSystem.removeTree(paths.workspace)
            try FileSystem.removeTree(paths.mirror)
        }
        if FileSystem.isDirectory(paths.workspace + "/.git") {
            if options.withChanges {
                reporter.warning("--with-changes ignored: sandbox \(paths.name) already has its clone (add --fresh to make a new one)")
            }
            return
        }
        guard paths.project.gitCommonDir != nil else {
            throw SandboxError(
                "\(paths.project.root) is not a git repository",
                hint: "airlock gives the agent a clone of your repository: run `git init` and commit first")
        }
        let masks = MaskedPaths(config.masks)
        if !masks.isEmpty {
            reporter.progress?("looking for masked paths in the project's history")
            if let hit = try Repository.open(paths.project.root).maskedPathsInHistory(masks, history: true).first {
                throw SandboxError(SandboxManager.trackedMaskMessage(hit), hint: SandboxManager.trackedMaskHint(hit.path.path))
            }
        }
        reporter.progress?("cloning \(paths.project.root) for sandbox \(paths.name)")
        do {
            let project = try Repository.open(paths.project.root)
            let clone = try Repository.cloneLocal(from: paths.project.root, to: paths.workspace, branch: project.currentBranch)
            try clone.setConfig("user.name", project.configValue("user.name") ?? "airlock agent")
            try clone.setConfig("user.email", project.configValue("user.email") ?? "agent@airlock.invalid")
            let missing = try clone.initialiseSubmodules(fromProject: paths.project.root)
            if !missing.isEmpty {
                reporter.warning("submodules left uninitialised in the clone (not checked out in your project): " + missing.joined(separator: ", "))
            }
            if options.withChanges {
                let patch = try project.uncommittedPatch(excluding: masks)
                let author = project.defaultSignature() ?? Repository.Signature(name: "airlock", email: "airlock@localhost")
                let message = "Uncommitted changes from \(paths.project.root)\n\nCarried over by `airlock start --with-changes`.\n"
                if try clone.commitPatch(patch, message: message, author: author) != nil {
                    reporter.progress?("your uncommitted changes are a commit on top in the sandbox's clone")
                }
            }
            // Where the agent's work starts (after the carried-over changes, which are yours).
            if let base = clone.headCommit { try FileSystem.writeAtomically(paths.baseFile, base.hex + "\n") }
        } catch {
            try? FileSystem.removeTree(paths.workspace)
            throw SandboxError("cannot clone the project", cause: error, hint: "a repository needs at least one commit to be cloned")
        }
    }

    /// `[workspace] mode = "mount"`: the project itself is the VM's workspace. What the host
    /// acts on stays out of the agent's reach, on the host side (`ShareView`, which even root in
    /// the VM cannot undo): `.git` (hooks, config), `airlock.toml` and `airlock.local.toml` are
    /// read-only, `.airlock/` and the masked paths are hidden; with `read_only`, everything is
    /// read-only. Missing configuration files are created empty, or the agent could write one
    /// for the next start to obey. The view is shown at `paths.projectView`.
    func projectView() throws -> ShareView {
        let root = paths.project.root
        func kind(_ path: String) -> mode_t? {
            var info = stat()
            return lstat(path, &info) == 0 ? info.st_mode & S_IFMT : nil
        }
        guard kind(root + "/.git") != nil else {
            throw SandboxError(
                "[workspace] mode = \"mount\" needs a git repository at \(root)",
                hint:
                    "run `git init` there: mount mode keeps .git read-only in the VM, so the agent cannot give git hooks or config to run on your machine"
            )
        }
        for name in ["airlock.toml", "airlock.local.toml"] where kind(root + "/" + name) == nil {
            let fd = open(root + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw SandboxError("cannot create \(name)", cause: SystemError.last("open", root + "/" + name)) }
            close(fd)
            reporter.notice?("created an empty \(name): in mount mode the VM could otherwise write one for the next start to read")
        }
        var steps: [ShareView.Step] = config.workspace.readOnly ? [.readOnly("")] : []
        for name in [".git", "airlock.toml", "airlock.local.toml"] {
            guard kind(root + "/" + name) != S_IFLNK else {
                throw SandboxError(
                    "\(root)/\(name) is a symbolic link: mount mode cannot keep it read-only in the VM",
                    hint: "replace the link with what it points to, or use mode = \"clone\"")
            }
            steps.append(.readOnly(name))
        }
        let empty = paths.stateDirectory + "/empty"
        unlink(empty)  // read-only: made anew, so it is surely empty
        let fd = open(empty, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        guard fd >= 0 else { throw SandboxError("cannot create \(empty)", cause: SystemError.last("open", empty)) }
        close(fd)
        let masks = MaskedPaths(config.masks)
        for (index, mask) in masks.paths.enumerated() {
            // One below another is hidden with it.
            if masks.paths[..<index].contains(where: { mask.path == $0.path || mask.path.hasPrefix($0.path + "/") }) { continue }
            if masks.paths[(index + 1)...].contains(where: { mask.path.hasPrefix($0.path + "/") }) { continue }
            guard kind(root + "/" + mask.path) != nil else { continue }  // nothing there to hide
            guard let real = FileSystem.realPath(root + "/" + mask.path), real.hasPrefix(root + "/"), let type = kind(real) else {
                throw SandboxError(
                    "[\(mask.entry)] hides \(mask.path), which leads out of the project through a symbolic link",
                    hint: "mask the path the link points to, inside the project")
            }
            let relative = String(real.dropFirst(root.count + 1))
            steps.append(type == S_IFDIR ? .hideDirectory(relative) : .hideFile(relative, emptyFile: empty))
        }
        steps.append(.hideDirectory(".airlock"))
        try FileSystem.makeDirectory(paths.projectView, mode: 0o700)
        return ShareView(source: root, steps: steps)
    }

    /// The sparse state disk, created at `[disk] size` or grown to it (never shrunk).
    func prepareDisk() throws {
        let fd = open(paths.disk, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SandboxError("cannot create the state disk", cause: SystemError.last("open", paths.disk)) }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        if UInt64(info.st_size) < config.disk.size.bytes, ftruncate(fd, off_t(config.disk.size.bytes)) != 0 {
            throw SandboxError("cannot size the state disk to \(config.disk.size)", cause: SystemError.last("ftruncate", paths.disk))
        }
    }

    /// The commit the clone was made from, when recorded.
    static func recordedBase(_ paths: SandboxPaths) -> ObjectID? {
        ((try? FileSystem.readText(paths.baseFile, limit: 4096)) ?? nil).flatMap { ObjectID(hex: $0.trimmingWhitespace()) }
    }
}

/// Blocking work (libgit2, directory walks, child processes, waits on semaphores) run on NIO's
/// blocking pool, never on the cooperative pool.
enum Blocking {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
