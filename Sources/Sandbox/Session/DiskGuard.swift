import AirlockSystem
import Config
import Machine
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a sandbox may take of the host's disk: the workspace (the clone, or the project in
/// mount mode without `.airlock/`) at most `[workspace] max_size`, and every file system the
/// VM writes to (the workspace's, the state disk's) left with a floor of free space.
struct DiskBudget: Sendable {
    /// The tree measured against `maxSize`.
    var workspace: String
    /// Directories in it left out (mount mode: the project's `.airlock/`).
    var excluding: Set<String> = []
    var maxSize: UInt64
    /// Directories whose file systems keep the floor free.
    var watched: [String]

    /// The free space airlock leaves on a file system of `total` bytes: 1 GiB, or 5% of a
    /// file system smaller than 20 GiB.
    static func floor(total: UInt64) -> UInt64 { min(1 << 30, total / 20) }

    enum Breach: Sendable, Equatable {
        case workspace(used: UInt64, limit: UInt64)
        case hostSpace(path: String, free: UInt64, floor: UInt64)

        /// As the audit log records it.
        var details: [String: AuditEvent.Value] {
            switch self {
            case .workspace(let used, let limit):
                ["limit": .text("workspace.max_size"), "bytes": .number(Int64(used)), "max": .number(Int64(limit))]
            case .hostSpace(let path, let free, let floor):
                ["limit": .text("host.free_space"), "path": .text(path), "free": .number(Int64(free)), "floor": .number(Int64(floor))]
            }
        }
    }

    /// The workspace's allocated bytes: a walk of the tree, plus the files in it that were
    /// deleted but are still open in one of `holders` (the processes serving the share: a guest
    /// writing to a file it has unlinked still fills the host's disk).
    func used(holders: [pid_t] = []) -> UInt64 {
        var total = UInt64(max(0, FileSystem.allocatedSize(workspace, excluding: excluding)))
        var seen = Set<[UInt64]>()
        for pid in holders {
            let directory = "/proc/\(pid)/fd"
            for name in FileSystem.entries(directory) {
                let link = directory + "/" + name
                guard let target = FileSystem.linkTarget(link), target.hasSuffix(" (deleted)"), target.hasPrefix(workspace + "/") else { continue }
                var info = stat()
                // stat through the descriptor's link: the file itself, deleted or not.
                guard stat(link, &info) == 0, info.st_mode & S_IFMT == S_IFREG, seen.insert([UInt64(info.st_dev), UInt64(info.st_ino)]).inserted
                else { continue }
                total += UInt64(info.st_blocks) * 512
            }
        }
        return total
    }

    /// (available, total) bytes of the file system holding `path`, for an unprivileged writer.
    static func space(at path: String) -> (free: UInt64, total: UInt64)? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return (UInt64(info.f_bavail) * UInt64(info.f_frsize), UInt64(info.f_blocks) * UInt64(info.f_frsize))
    }

    /// The first watched file system under its floor, if any.
    func hostBreach() -> Breach? {
        for path in watched {
            guard let space = Self.space(at: path) else { continue }
            let floor = Self.floor(total: space.total)
            if space.free < floor { return .hostSpace(path: path, free: space.free, floor: floor) }
        }
        return nil
    }

    /// Both checks, the walk last.
    func breach(holders: [pid_t] = []) -> Breach? {
        if let host = hostBreach() { return host }
        let used = used(holders: holders)
        return used > maxSize ? .workspace(used: used, limit: maxSize) : nil
    }

    /// `44.1 MiB`, `1.5 GiB`: in the units `max_size` is written in.
    static func binary(_ bytes: UInt64) -> String {
        let (unit, name): (UInt64, String) = bytes >= 1 << 30 ? (1 << 30, "GiB") : (1 << 20, "MiB")
        let tenths = (bytes * 10 + unit / 2) / unit
        return (tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)") + " " + name
    }

    /// What went over, and how to go on.
    static func explain(_ breach: Breach, sandbox: String, workspace: String) -> (message: String, hint: String) {
        switch breach {
        case .workspace(let used, let limit):
            return (
                "sandbox \(sandbox)'s workspace holds \(Self.binary(used)), over [workspace] max_size = \(ByteSize(bytes: limit))",
                "remove files from \(workspace) (`airlock fetch --name \(sandbox)` first keeps the agent's commits), or raise [workspace] max_size in airlock.local.toml"
            )
        case .hostSpace(let path, let free, let floor):
            return (
                "the file system of \(path) has \(Self.binary(free)) free, below the \(Self.binary(floor)) airlock leaves free on the host",
                "free space on that file system"
            )
        }
    }
}

/// Keeps a running sandbox within its `DiskBudget`: pauses the VM (QMP `stop`, Cloud
/// Hypervisor's `vm.pause`) as soon as it goes over, says which limit and how to raise it, and
/// resumes it by itself once there is room again (files removed, space freed, or `max_size`
/// raised: the configuration is read again while paused). Without a terminal, a pause that
/// lasts `grace` ends the session: the VM is resumed only to power off cleanly (its disk synced,
/// nothing already written lost), and the owner's command fails with the message.
///
/// Watching costs little: the free space of the workspace's file system is read every
/// `interval`, and the tree is walked only when that space shrank enough to maybe cross the
/// limit (at most a fifth of the time, by what the last walk took) or every `walkInterval`,
/// so a guest writing fast is caught within about one interval of writing.
final class DiskGuard: Sendable {
    let budget: Mutex<DiskBudget>
    let sandbox: String
    let vm: any VirtualMachine
    let interactive: Bool
    let reporter: SandboxReporter
    let record: @Sendable (AuditEvent) -> Void
    /// `[workspace] max_size` as the configuration says now (nil: unreadable, keep the old).
    let reloadMaxSize: @Sendable () -> UInt64?
    /// Records why the session ends when a pause lasts `grace` without a terminal (for the
    /// owner's error), before `powerOff`.
    let giveUp: @Sendable (_ message: String, _ hint: String) -> Void
    /// Asks the guest to power off (it syncs its disk, the VMM then ends).
    let powerOff: @Sendable () async -> Void
    /// Where each measured size is recorded (`SandboxPaths.workspaceSize`).
    let sizeFile: String?
    var interval: Duration { .milliseconds(100) }
    var walkInterval: Duration { .seconds(30) }
    var grace: Duration { .seconds(15) }

    private struct State {
        var paused = false
        var released = false
    }
    private let state = Mutex(State())

    init(
        budget: DiskBudget, sandbox: String, vm: any VirtualMachine, interactive: Bool, reporter: SandboxReporter,
        record: @escaping @Sendable (AuditEvent) -> Void, reloadMaxSize: @escaping @Sendable () -> UInt64?,
        sizeFile: String? = nil, giveUp: @escaping @Sendable (String, String) -> Void, powerOff: @escaping @Sendable () async -> Void
    ) {
        self.sizeFile = sizeFile
        self.powerOff = powerOff
        self.budget = Mutex(budget)
        self.sandbox = sandbox
        self.vm = vm
        self.interactive = interactive
        self.reporter = reporter
        self.record = record
        self.reloadMaxSize = reloadMaxSize
        self.giveUp = giveUp
    }

    /// Watches until cancelled or released.
    func run() async {
        var measured = await walk()
        var freeAtWalk = DiskBudget.space(at: budget.withLock(\.workspace))?.free ?? 0
        var walked = ContinuousClock.now
        var walkCost = Duration.zero
        while !Task.isCancelled, !isReleased {
            try? await Task.sleep(for: interval)
            let current = budget.withLock { $0 }
            var breach = current.hostBreach()
            if breach == nil {
                // What the workspace may have grown by: the space its file system lost.
                let free = DiskBudget.space(at: current.workspace)?.free ?? freeAtWalk
                // Space freed meanwhile (by anyone) is no credit for the guest.
                freeAtWalk = max(freeAtWalk, free)
                let estimate = measured + (freeAtWalk > free ? freeAtWalk - free : 0)
                // A walk is due when the limit may be crossed (no sooner than five times the
                // last walk took: a busy host writing elsewhere must not keep us walking), or
                // every `walkInterval`.
                let since = ContinuousClock.now - walked
                if (estimate > current.maxSize && since >= walkCost * 5) || since > walkInterval {
                    let started = ContinuousClock.now
                    measured = await walk()
                    walkCost = ContinuousClock.now - started
                    freeAtWalk = free
                    walked = ContinuousClock.now
                }
                if measured > current.maxSize { breach = .workspace(used: measured, limit: current.maxSize) }
            }
            if let breach {
                guard await hold(breach) else { return }
                measured = await walk()
                freeAtWalk = DiskBudget.space(at: current.workspace)?.free ?? 0
                walked = ContinuousClock.now
            }
        }
    }

    /// The workspace's size, walked on the blocking pool; recorded for the next start.
    private func walk() async -> UInt64 {
        let current = budget.withLock { $0 }
        let holders = vm.shareServerIDs
        let used = (try? await Blocking.run { current.used(holders: holders) }) ?? 0
        if let sizeFile { try? FileSystem.writeAtomically(sizeFile, "\(used)\n", durable: false) }
        return used
    }

    /// Both checks, on the blocking pool.
    private func breach() async -> DiskBudget.Breach? {
        let current = budget.withLock { $0 }
        let holders = vm.shareServerIDs
        return (try? await Blocking.run { current.breach(holders: holders) }) ?? nil
    }

    /// Pauses the VM for `breach` until it is over (true: resumed) or the session ends (false).
    private func hold(_ first: DiskBudget.Breach) async -> Bool {
        do {
            try await vm.pause()
        } catch {
            reporter.warning("could not pause sandbox \(sandbox) at its disk limit: \(error)")
            return false
        }
        state.withLock { $0.paused = true }

        let workspace = budget.withLock(\.workspace)
        let (message, hint) = DiskBudget.explain(first, sandbox: sandbox, workspace: workspace)
        record(AuditEvent(sandbox: sandbox, event: "limit.disk", details: first.details))
        let way =
            interactive
            ? "it goes on by itself once there is room; to end it instead: `airlock stop --name \(sandbox)` (from another terminal)"
            : "without a terminal the session ends in \(grace.text) unless there is room by then"
        reporter.warning("sandbox \(sandbox) is paused: \(message). To go on: \(hint); \(way).")
        let since = ContinuousClock.now
        while !Task.isCancelled, !isReleased {
            try? await Task.sleep(for: .seconds(1))
            if let raised = reloadMaxSize() { budget.withLock { $0.maxSize = raised } }
            let now = await breach()
            if now == nil, (try? await vm.resume()) != nil {
                state.withLock { $0.paused = false }
                reporter.notice?("sandbox \(sandbox) goes on: there is room again")
                return true
            }
            if !interactive, ContinuousClock.now - since >= grace {
                let (message, hint) = DiskBudget.explain(now ?? first, sandbox: sandbox, workspace: workspace)
                giveUp(message, hint)
                await release(during: powerOff)
                return false
            }
        }
        // Released (the session is ending): `release` may have come before the pause.
        if isReleased { try? await vm.resume() }
        return false
    }

    private var isReleased: Bool { state.withLock(\.released) }

    /// Stops watching and runs `request` (a power-off), letting a paused VM run again once
    /// the request is on its way: the guest takes it before it writes much more.
    func release(during request: @escaping @Sendable () async -> Void) async {
        async let requested: Void = request()
        try? await Task.sleep(for: .milliseconds(20))
        await release()
        await requested
    }

    /// Stops watching; a paused VM runs again.
    func release() async {
        let wasPaused = state.withLock { state in
            state.released = true
            defer { state.paused = false }
            return state.paused
        }
        if wasPaused { try? await vm.resume() }
    }
}
