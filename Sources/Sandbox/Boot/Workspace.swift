import AirlockSystem
import Config
import GitReview
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
