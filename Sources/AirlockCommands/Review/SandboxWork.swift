import ArgumentParser
import FoundationEssentials
import GitReview
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// What the review commands share: the sandbox's paths, a fetch of its clone (so every command
/// sees the agent's latest work), the user's repository, and the audit log.
struct SandboxWork {
    let context: ProjectContext
    let paths: SandboxPaths

    init(sandbox: SandboxNameOption) throws {
        context = try ProjectContext.load()
        paths = try sandbox.paths(in: context.project)
        guard context.project.gitCommonDir != nil else {
            throw SandboxError("\(context.project.root) is not a git repository")
        }
        guard isDirectory(paths.stateDirectory) else {
            throw SandboxError(
                "this project has no sandbox \(paths.name)", hint: "`airlock ps` lists the sandboxes; `airlock start --name \(paths.name)` makes one")
        }
    }

    /// The last fetch's report when nothing can have changed the clone since (the sandbox is
    /// stopped, no session ended and no git operation ran in the clone after that fetch, and the
    /// fetched refs are as they were); otherwise a new fetch.
    func current() throws -> FetchReport {
        if let report = reusableReport() { return report }
        return try fetch()
    }

    private var lastFetchFile: String { paths.stateDirectory + "/last-fetch.json" }

    private func reusableReport() -> FetchReport? {
        guard !SandboxLock.isHeld(paths.lockFile), let fetched = modificationTime(lastFetchFile) else { return nil }
        for path in [paths.sessionMarker, paths.workspace + "/.git/index", paths.workspace + "/.git/HEAD", paths.workspace + "/.git/logs/HEAD"] {
            if let changed = modificationTime(path), changed >= fetched { return nil }
        }
        guard let text = try? LocalFiles().readText(lastFetchFile), let report = try? JSONDecoder().decode(FetchReport.self, from: Data(text.utf8)),
            let repository = try? repository()
        else { return nil }
        let refs = repository.references(under: SandboxFetch.referencePrefix(sandbox: paths.name))
        for branch in report.branches where refs[branch.ref] != branch.after { return nil }
        return report
    }

    /// Fetches the clone's branches and uncommitted work; refusals are printed as warnings.
    /// With the sandbox stopped, the last session's change journal spares a scan of the whole
    /// working tree, unless `rescan`.
    func fetch(quietRefusals: Bool = false, rescan: Bool = false) throws -> FetchReport {
        let journal = rescan || SandboxLock.isHeld(paths.lockFile) ? nil : ChangeJournal.load(paths.changeJournal)
        let report = try SandboxFetch.run(
            project: context.project.root, clone: paths.workspace, mirror: paths.mirror, sandbox: paths.name,
            base: SandboxRunner.recordedBase(paths), journal: journal)
        if !quietRefusals {
            for refusal in report.refused {
                Terminal.standardError.write(Terminal.standardError.style("warning:", .yellow) + " refused in the clone: \(refusal)\n")
            }
        }
        if report.hasNews || !report.refused.isEmpty {
            var details: [String: AuditEvent.Value] = [
                "refs": .list(report.branches.filter { $0.change != .unchanged }.map { "\($0.change.rawValue) \($0.ref) \($0.after?.hex ?? "-")" })
            ]
            if !report.refused.isEmpty { details["refused"] = .list(report.refused) }
            try? paths.auditLog.append(AuditEvent(sandbox: paths.name, event: "fetch", details: details))
        }
        if let data = try? JSONEncoder().encode(report) { try? writeFileAtomically(lastFetchFile, String(decoding: data, as: UTF8.self)) }
        return report
    }

    func repository() throws -> Repository {
        try Repository.open(context.project.root)
    }

    /// The fetched ref for `branch` (a clone branch name, `uncommitted` or `detached`), or the
    /// agent's work (uncommitted capture, else its current branch) when nil.
    func target(_ report: FetchReport, branch: String?) throws -> String {
        if let branch {
            let ref = SandboxFetch.referencePrefix(sandbox: paths.name) + branch
            guard report.branches.contains(where: { $0.ref == ref && $0.after != nil }) else {
                let known = report.branches.filter { $0.after != nil }.map(\.name).joined(separator: ", ")
                throw SandboxError(
                    "sandbox \(paths.name) has no branch \(branch)", hint: known.isEmpty ? "the clone has no branches" : "its branches: \(known)")
            }
            return ref
        }
        guard let ref = report.workRef else {
            throw SandboxError("sandbox \(paths.name) has no work to show: its clone has no commits")
        }
        return ref
    }

    /// Where the agent started: the recorded base, else where the target and HEAD meet.
    func base(in repository: Repository, target: ObjectID) throws -> ObjectID {
        if let base = SandboxRunner.recordedBase(paths) { return base }
        if let head = repository.headCommit, let base = repository.mergeBase(head, target) { return base }
        throw SandboxError("cannot tell where sandbox \(paths.name) started", hint: "name a base commit: `airlock diff main`")
    }

    func audit(_ event: String, _ details: [String: AuditEvent.Value]) {
        try? paths.auditLog.append(AuditEvent(sandbox: paths.name, event: event, details: details))
    }
}

/// mtime in nanoseconds (lstat), nil when absent.
func modificationTime(_ path: String) -> Int64? {
    var info = stat()
    guard lstat(path, &info) == 0 else { return nil }
    return Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
}
