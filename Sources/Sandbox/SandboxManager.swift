import AirlockSystem
import Config
import FoundationEssentials
import GitReview
import GuestLink
import Logging
import Machine
import NIOCore
import NetworkPolicy
import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Where a sandbox's messages for people go. The command layer decides what reaches the
/// terminal; the manager only says what happened.
public struct SandboxReporter: Sendable {
    /// Status lines while something takes time (nil: not shown).
    public var progress: (@Sendable (String) -> Void)?
    /// Details for `--verbose` (nil: not shown).
    public var verbose: (@Sendable (String) -> Void)?
    /// Things worth knowing that are not a problem of the user's making (nil: quiet).
    public var notice: (@Sendable (String) -> Void)?
    /// Warnings, shown even when quiet (security events among them).
    public var warning: @Sendable (String) -> Void

    public init(
        progress: (@Sendable (String) -> Void)? = nil, verbose: (@Sendable (String) -> Void)? = nil, notice: (@Sendable (String) -> Void)? = nil,
        warning: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.progress = progress
        self.verbose = verbose
        self.notice = notice
        self.warning = warning
    }
}

/// A command to run in a sandbox, as the caller sees it.
public struct SessionRequest: Sendable, Equatable {
    /// Empty: the login shell (or an image's own command).
    public var command: [String]
    /// Set in the session after `[env]`.
    public var environment: [String: String]
    /// The caller's terminal size when it is a terminal (the session gets a PTY).
    public var terminal: WindowSize?
    /// The caller's directory: the session starts at the same place inside the workspace.
    public var workingDirectory: String

    public init(command: [String], environment: [String: String] = [:], terminal: WindowSize? = nil, workingDirectory: String) {
        self.command = command
        self.environment = environment
        self.terminal = terminal
        self.workingDirectory = workingDirectory
    }
}

/// One sandbox of a project, as `list` and the control socket report it.
public struct SandboxStatus: Sendable, Codable, Equatable {
    public var name: String
    /// `running` or `stopped`.
    public var state: String
    public var backend: String?
    public var accelerator: String?
    public var uptimeSeconds: Int64?
    /// The airlock process that runs it.
    public var pid: Int32?
    /// Its VMM process.
    public var vmmPID: Int32?
    public var project: String
    /// `[disk.cache.*]`: what its state disk keeps apart from the root's writable layer.
    public var caches: [Cache]
    /// `[daemons.*]`: as the guest reports them while the sandbox runs (`SandboxManager.live`),
    /// else each `stopped`.
    public var daemons: [DaemonStatus]
    /// The sign-in of each service with one that is on (`[network.services.*]`): the user's,
    /// shared by every sandbox; never a token.
    public var signIns: [SignInState]?

    public struct SignInState: Sendable, Codable, Equatable {
        public var service: String
        public var signedIn: Bool
        public var account: String?
        public var scopes: [String]
        /// Seconds since 1970.
        public var savedAt: Int64?
        public var expiresAt: Int64?
    }

    public struct Cache: Sendable, Codable, Equatable {
        public var name: String
        /// As configured: absolute, `~/…` (the agent's home) or relative to the project.
        public var paths: [String]
        /// A switched-off cache keeps its contents on the disk, unused.
        public var enabled: Bool
    }

    init(paths: SandboxPaths, state: SandboxState?, config: AirlockConfig = .init()) {
        let disk = config.disk
        self.name = paths.name
        self.state = state == nil ? "stopped" : "running"
        self.backend = state?.backend
        self.accelerator = state?.accelerator
        self.uptimeSeconds = state.map { Int64(time(nil)) - $0.startedAt }
        self.pid = state?.pid
        self.vmmPID = state?.vmmPID
        self.project = paths.project.root
        self.caches = disk.keptCaches.map { Cache(name: $0, paths: disk.caches[$0] ?? [], enabled: disk.caches[$0] != nil) }
        self.daemons = config.daemons.keys.sorted().map { DaemonStatus(name: $0, state: .stopped) }
    }
}

/// Everything front ends do with a project's sandboxes: start (or join), exec, stop, remove,
/// list, fetch. The CLI's commands and the web monitor call this; neither knows how a sandbox
/// boots. The process that starts a sandbox owns it (its VMM dies with it) and serves its
/// control socket; every other operation on a running sandbox goes through that socket.
public struct SandboxManager: Sendable {
    public let project: Project
    /// The loaded configuration: the typed values and where each was written.
    public let loaded: ConfigLoader.Result
    public var config: AirlockConfig { loaded.config }
    public let environment: [String: String]
    public var logger: Logger
    public var reporter: SandboxReporter
    /// How the egress proxy resolves names the policy allows.
    public var resolver: any Resolver
    /// Certificates (PEM) the interception trusts for upstreams besides the host's store: set
    /// only by the command layer from its test-only variable, never by a file.
    public var testOnlyUpstreamRoots: String?
    /// The vault's values the configuration read: watched for in every intercepted request
    /// and answer unless the VM holds them anyway (`SandboxBoot.watchedSecrets`).
    public var vaultValues: [String: String] = [:]
    /// The vault's directory (the command layer knows where `Secrets` keeps it): no
    /// `[mounts.*]` entry may show it, read-only included.
    public var vaultDirectory: String?
    /// Opens the store of sign-ins made inside sandboxes (sealed with the vault's key); asked
    /// only when a service with a sign-in is on. nil, or a throw: those sign-ins are unavailable.
    public var signInStore: (@Sendable () throws -> SignInStore)?
    public var images: Images
    /// How long a guest may take from the VMM's start to answering setup (TCG is slow; a first
    /// boot formats the disk).
    public var bootTimeout: Duration = .seconds(180)

    public init(
        project: Project, loaded: ConfigLoader.Result, environment: [String: String], logger: Logger, reporter: SandboxReporter = .init(),
        resolver: any Resolver = SystemResolver(), images: Images? = nil
    ) {
        self.project = project
        self.loaded = loaded
        self.environment = environment
        self.logger = logger
        self.reporter = reporter
        self.resolver = resolver
        self.images = images ?? Images(config: loaded.config, environment: environment)
    }

    /// The configuration's problems for a start on this host: entries this airlock cannot act
    /// on yet, `[env]` values whose host variables are unset, masks of paths git tracks, more
    /// CPUs or memory than the host has, a state disk larger than the free space (less what
    /// sandbox `name`'s disk already holds).
    public func startProblems(_ name: String) throws -> [ConfigDiagnostic] {
        let paths = try paths(name)
        return loaded.startRefusals + trackedMasks(paths)
            + loaded.problems(on: HostFacts.capacity(at: paths.stateDirectory), existingDisk: UInt64(max(0, FileSystem.allocatedSize(paths.disk))))
            + diskBudgetProblems(paths)
    }

    /// The sandbox's disk budget (`DiskBudget`) as a start finds it: the workspace already over
    /// `[workspace] max_size`, or the host's disk already under airlock's floor.
    private func diskBudgetProblems(_ paths: SandboxPaths) -> [ConfigDiagnostic] {
        let budget = diskBudget(paths)
        guard FileSystem.isDirectory(budget.workspace) else { return [] }
        // Only the VM writes the clone while it runs, and the guard recorded its size then: a
        // recorded size under the limit spares a walk of the tree (one over it is checked
        // again: files may have been removed since).
        let recorded = ((try? FileSystem.readText(paths.workspaceSize, limit: 64)) ?? nil).flatMap { UInt64($0.trimmingWhitespace()) }
        if config.workspace.mode == .clone, let recorded, recorded <= budget.maxSize, budget.hostBreach() == nil { return [] }
        guard let breach = budget.breach() else { return [] }
        let (message, hint) = DiskBudget.explain(breach, sandbox: paths.name, workspace: budget.workspace)
        let location = loaded.merged["workspace"]?["max_size"]?.origin.location
        if case .workspace = breach { return [ConfigDiagnostic(at: location, message, hint: hint)] }
        return [ConfigDiagnostic(at: nil, message, hint: hint)]
    }

    /// What sandbox `paths` may take of the host's disk.
    func diskBudget(_ paths: SandboxPaths) -> DiskBudget {
        let mountMode = config.workspace.mode == .mount
        let workspace = mountMode ? project.root : paths.workspace
        return DiskBudget(
            workspace: workspace, excluding: mountMode ? [paths.stateRoot] : [], maxSize: config.workspace.maxSize.bytes,
            watched: [project.root])
    }

    /// `[mask.*]` paths git has in a commit the clone holds or would hold: no mask can hide
    /// them. With a clone already made, the tips of the branches, tags and HEAD are looked at
    /// (quick enough for every start); before the first clone, the whole history.
    private func trackedMasks(_ paths: SandboxPaths) -> [ConfigDiagnostic] {
        let masks = MaskedPaths(config.masks)
        // In mount mode the VM sees the project's .git, every commit in it.
        let cloned = config.workspace.mode == .clone && FileSystem.isDirectory(paths.workspace + "/.git")
        guard !masks.isEmpty, project.gitCommonDir != nil, let repository = try? Repository.open(project.root),
            let found = try? repository.maskedPathsInHistory(masks, history: !cloned)
        else { return [] }
        return found.map { hit in
            let written = loaded.merged["mask"]?[String(hit.path.entry.dropFirst("mask.".count))]?["paths"]?.elements.first {
                $0.string.map(MaskedPaths.Path.normalised) == hit.path.path
            }
            return ConfigDiagnostic(at: written?.origin.location, Self.trackedMaskMessage(hit), hint: Self.trackedMaskHint(hit.path.path))
        }
    }

    /// What a mask of a path git has in a commit is told.
    static func trackedMaskMessage(_ hit: MaskedPathInHistory) -> String {
        if let reference = hit.reference {
            return "[\(hit.path.entry)] hides \(hit.path.path), which git tracks (in \(reference)): the sandbox's git data has it"
        }
        return "[\(hit.path.entry)] hides \(hit.path.path), which git has in commit \(hit.commit.short): the sandbox's git data would hold it"
    }

    /// How to hide a path git tracks.
    static func trackedMaskHint(_ path: String) -> String {
        "a mask hides only what git does not track: stop tracking it (`git rm --cached -r \(path)`, commit, and add it to "
            + ".gitignore; remove it from older commits too if it is secret), or drop the mask"
    }

    public func paths(_ name: String) throws -> SandboxPaths {
        try SandboxPaths(project: project, name: name)
    }

    // MARK: The host

    /// What this host can run (child processes and file probes, on the blocking pool).
    public func probeHost(libraries: [HostFacts.Library] = []) async throws -> HostFacts {
        let configured = GuestAssets.Configured(kernel: config.vm.kernel, initramfs: config.vm.initramfs)
        return try await Blocking.run { [environment] in
            HostFacts.probe(environment: environment, configuredAssets: configured, libraries: libraries)
        }
    }

    // MARK: Sessions

    /// Runs `request` in sandbox `name`: boots it when it is not running (this process then
    /// owns it until the last session ends), else joins it: at once when it runs, once it is
    /// up when another airlock is booting it, and by booting it again when it is shutting
    /// down. Returns the session's exit status.
    public func start(_ name: String, _ request: SessionRequest, workspace: WorkspaceOptions = .init()) async throws -> HostSession.Ended {
        let paths = try paths(name)
        // A first clone's mask check walks the project's history: off the cooperative pool.
        let problems = try await Blocking.run { [self] in try startProblems(name) }
        if !problems.isEmpty { throw ConfigError(problems) }
        try FileSystem.makeDirectory(paths.stateRoot, mode: 0o755)
        try FileSystem.makeDirectory(paths.stateDirectory, mode: 0o700)
        // The first start after a merge or review took the agent's change to the configuration.
        if let change = (try? FileSystem.readText(paths.policyChange, limit: 64 << 10)) ?? nil {
            reporter.warning("this start runs with a configuration the agent changed; " + change)
            unlink(paths.policyChange)
        }
        let deadline = ContinuousClock.now + bootTimeout + .seconds(60)
        var waiting = false
        while true {
            if let lock = try SandboxLock.acquire(paths.lockFile) {
                return try await boot(paths, request, workspace: workspace, lock: lock)
            }
            if workspace.fresh {
                throw SandboxError("sandbox \(name) is running; --fresh needs it stopped", hint: "`airlock stop --name \(name)` first")
            }
            if let ended = try await join(paths, request, announce: !waiting) { return ended }
            // Another airlock holds the sandbox: booting it (no control socket yet) or shutting
            // it down (no new session taken). Join it once it is up, or boot it once it is down.
            if !waiting { reporter.progress?("sandbox \(name) is starting or stopping in another airlock: waiting for it") }
            waiting = true
            guard ContinuousClock.now < deadline else {
                throw SandboxError(
                    "sandbox \(name) neither came up nor went down within \((bootTimeout + .seconds(60)).text)",
                    hint: "`airlock ps` shows which process holds it; `airlock stop --name \(name)` ends it")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Boots sandbox `paths` for `request`, holding `lock` until its last session has ended.
    private func boot(_ paths: SandboxPaths, _ request: SessionRequest, workspace: WorkspaceOptions, lock: SandboxLock) async throws
        -> HostSession.Ended
    {
        let host = try await probeHost()
        let selection = BackendSelection.choose(config.vm.backend, on: host)
        let launcher = try MachineLauncher.make(selection, host: host, config: config, progress: reporter.progress)
        reporter.verbose?("backend \(launcher.backend.rawValue): \(selection.reason)")
        let layers = config.vm.image == "host" ? nil : try? LayerTransport.choose(config.vm.imageLayers, backend: launcher.backend, on: host)
        reporter.verbose?("shares: \(ShareTransport.explain(backend: launcher.backend, on: host, layers: layers))")
        if launcher.accelerator == .tcg {
            reporter.notice?("no usable KVM; the VM runs under TCG software emulation (slow)")
        }
        var image: ImageRoot?
        if config.vm.image != "host" {
            // Checked before a pull: a missing tar2sqfs is said at once.
            let transport = try LayerTransport.choose(config.vm.imageLayers, backend: launcher.backend, on: host)
            image = try await images.sandboxRoot(
                config.vm.image, stateDirectory: paths.stateDirectory, pullIfMissing: true, transport: transport, tar2sqfs: host.tar2sqfs?.path)
        }
        let assets = try await Blocking.run { [environment, reporter] in
            try EmbeddedAssets.locate(host.assets, environment: environment, progress: reporter.progress)
        }
        let boot = SandboxBoot(
            paths: paths, config: config, environment: environment, logger: logger, reporter: reporter, resolver: resolver,
            testOnlyUpstreamRoots: testOnlyUpstreamRoots, vaultValues: vaultValues, vaultDirectory: vaultDirectory, signInStore: signInStore,
            workspace: workspace,
            image: image, launcher: launcher,
            assets: assets,
            bootTimeout: bootTimeout, hostname: Self.hostname(paths),
            budget: diskBudget(paths),
            currentMaxSize: { [project, environment] in
                (try? ConfigLoader.forProject(project.root, environment: environment).load())?.config.workspace.maxSize.bytes
            })
        return try await boot.run(sessionSpec(request, paths: paths, image: image), lock: lock)
    }

    /// Runs `request` in the running sandbox `name` (never boots it).
    public func exec(_ name: String, _ request: SessionRequest) async throws -> HostSession.Ended {
        let paths = try paths(name)
        guard let ended = try await join(paths, request, announce: false) else {
            let why = SandboxLock.isHeld(paths.lockFile) ? "is starting or shutting down" : "is not running"
            throw SandboxError("sandbox \(name) \(why)", hint: "start it with `airlock start --name \(name)`")
        }
        return ended
    }

    /// The session in the running sandbox `paths`, or nil when it takes none now: its control
    /// socket is not up (not running, or still booting) or it is shutting down.
    private func join(_ paths: SandboxPaths, _ request: SessionRequest, announce: Bool) async throws -> HostSession.Ended? {
        guard let client = try? await LinkClient.connect(unixSocket: paths.controlSocket(environment: environment)) else { return nil }
        let ended: Result<HostSession.Ended?, any Error>
        do {
            var image: ImageRoot?
            if config.vm.image != "host" {
                image = try await images.sandboxRoot(
                    config.vm.image, stateDirectory: paths.stateDirectory, pullIfMissing: false, transport: nil, tar2sqfs: nil)
            }
            if announce { reporter.progress?("sandbox \(paths.name) is running: attaching a new session") }
            ended = .success(try await HostSession(spec: sessionSpec(request, paths: paths, image: image)).run(on: client))
        } catch HostSession.Failure.stopping {
            ended = .success(nil)
        } catch {
            ended = .failure(Self.explained(error, paths: paths))
        }
        await client.close()
        return try ended.get()
    }

    /// A session that ended because `airlock stop` powered the sandbox off says so.
    static func explained(_ error: any Error, paths: SandboxPaths) -> any Error {
        guard let marker = (try? FileSystem.readText(paths.stopMarker, limit: 64 << 10)) ?? nil else { return error }
        // The disk guard's: "limit", what went over, how to go on.
        let lines = marker.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.first == "limit", lines.count >= 3 {
            return SandboxError("sandbox \(paths.name) was stopped, paused too long at its disk limit: \(lines[1])", hint: lines[2])
        }
        return SandboxError("sandbox \(paths.name) was stopped (`airlock stop`) before the command ended")
    }

    static func hostname(_ paths: SandboxPaths) -> String { "airlock-" + paths.name }

    /// The session's spec: the command (the login shell, or the image's own, when empty), the
    /// environment (the root's, `[env]`, then the request's), started in the directory matching
    /// the caller's inside the workspace.
    func sessionSpec(_ request: SessionRequest, paths: SandboxPaths, image: ImageRoot?) -> ExecSpec {
        let hostname = Self.hostname(paths)
        let root = HostRoot(hostname: hostname)
        let terminalName = request.terminal == nil ? nil : (environment["TERM"] ?? "xterm-256color")
        var variables =
            image?.baseEnvironment(terminal: terminalName, hostname: hostname)
            ?? HostCommands.environment(root.baseEnvironment(terminal: terminalName), config.commands)
        // A CLI's sign-in opens in the host's browser (`BrowserRelay` in the guest).
        if config.network.services.contains(where: { $0.service.signIn != nil }) {
            variables["BROWSER"] = LinkNames.browserShim
            variables["PATH"] = LinkNames.browserShimDirectory + (variables["PATH"].map { ":" + $0 } ?? "")
        }
        for (key, value) in config.env { variables[key] = value }
        for (key, value) in request.environment { variables[key] = value }
        let command = request.command
        let arguments = image?.arguments(for: command) ?? (command.isEmpty ? [root.user.shell, "-l"] : command)
        var directory = paths.project.root
        let caller = request.workingDirectory
        if caller == paths.project.root || caller.hasPrefix(paths.project.root + "/") {
            let relative = caller.dropFirst(paths.project.root.count)
            if relative.isEmpty || FileSystem.isDirectoryFollowingLinks(paths.workspace + relative) { directory = caller }
        }
        // The image's own command runs where the image says; the user's runs in the project.
        if let image, command.isEmpty, !(image.entrypoint + image.command).isEmpty, let imageDirectory = image.workingDirectory,
            imageDirectory.hasPrefix("/")
        {
            directory = imageDirectory
        }
        return ExecSpec(
            arguments: arguments, environment: variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }, workingDirectory: directory,
            terminal: request.terminal, user: image?.user.uid ?? root.user.uid, group: image?.user.gid ?? root.user.gid)
    }

    // MARK: Lifecycle

    /// Powers sandbox `name` off through its control socket; if its owner is still there after
    /// 5 s, SIGTERM to it (the VMM dies with it). False when it was not running.
    public func stop(_ name: String) async throws -> Bool {
        let paths = try paths(name)
        guard SandboxLock.isHeld(paths.lockFile) else { return false }
        try? FileSystem.writeAtomically(paths.stopMarker, "\(getpid())\n", durable: false)
        if let client = try? await LinkClient.connect(unixSocket: paths.controlSocket(environment: environment)) {
            _ = try? await client.call(ControlServer.Path.stop, body: .init())
            await client.close()
        }
        // 5 s (plus the daemons' timeouts) for the guest to power off, then the owner's turn.
        let grace = config.daemonStopTime ?? 0
        let term = 100 + grace * 20
        for attempt in 0..<(term + 200) {
            if !SandboxLock.isHeld(paths.lockFile) { return true }
            if attempt == term, let state = Self.state(paths) { kill(state.pid, SIGTERM) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw SandboxError(
            "sandbox \(name) did not stop within \(15 + grace) s", hint: "its process may be stuck; see `airlock ps` for its pid")
    }

    /// Deletes sandbox `name` (disk, clone, logs); a running one only with `force`, stopped first.
    public func remove(_ name: String, force: Bool) async throws {
        let paths = try paths(name)
        guard FileSystem.isDirectory(paths.stateDirectory) else {
            throw SandboxError("there is no sandbox \(name) in \(project.root)", hint: "`airlock ps` lists them")
        }
        if SandboxLock.isHeld(paths.lockFile) {
            guard force else {
                throw SandboxError("sandbox \(name) is running", hint: "stop it with `airlock stop --name \(name)`, or use `airlock rm --force`")
            }
            _ = try await stop(name)
        }
        try FileSystem.removeTree(paths.stateDirectory)
    }

    /// The project's sandboxes, by name.
    public func list() -> [SandboxStatus] {
        let root = project.root + "/.airlock"
        return FileSystem.entries(root).compactMap { name in
            guard !name.hasPrefix("."), FileSystem.isDirectory(root + "/" + name), let paths = try? paths(name) else { return nil }
            var status = SandboxStatus(paths: paths, state: SandboxLock.isHeld(paths.lockFile) ? Self.state(paths) : nil, config: config)
            status.signIns = signIns()
            return status
        }
    }

    /// Each sign-in service's state, from the store's summary (no key, no token needed).
    func signIns() -> [SandboxStatus.SignInState]? {
        let services = config.network.services.map(\.service).filter { $0.signIn != nil }
        guard !services.isEmpty else { return nil }
        let summaries = vaultDirectory.map { SignInStore.summaries(directory: $0) } ?? []
        return services.map { service in
            guard let latest = summaries.filter({ $0.service == service.name }).max(by: { $0.savedAt < $1.savedAt }) else {
                return SandboxStatus.SignInState(service: service.name, signedIn: false, scopes: [])
            }
            return SandboxStatus.SignInState(
                service: service.name, signedIn: true, account: latest.account, scopes: latest.scopes, savedAt: latest.savedAt,
                expiresAt: latest.expiresAt)
        }
    }

    /// `status` as its owner reports it (its daemons live), when it runs and answers within 2 s.
    public func live(_ status: SandboxStatus) async -> SandboxStatus {
        guard status.state == "running", let paths = try? paths(status.name),
            let client = try? await LinkClient.connect(unixSocket: paths.controlSocket(environment: environment))
        else { return status }
        let answer = try? await withDeadline(.seconds(2), what: "the state of sandbox \(status.name)") {
            try await client.call(ControlServer.Path.state, body: .init())
        }
        await client.close()
        guard let answer, var decoded = try? JSONDecoder().decode(SandboxStatus.self, from: Data(answer.readableBytesView)) else { return status }
        decoded.signIns = status.signIns
        return decoded
    }

    static func state(_ paths: SandboxPaths) -> SandboxState? {
        ((try? FileSystem.readText(paths.stateFile, limit: 64 << 10)) ?? nil).flatMap(SandboxState.init(text:))
    }

    // MARK: The agent's work

    /// The work of sandbox `name`, for fetch, diff, log, review and merge.
    public func work(_ name: String) throws -> SandboxWork {
        let paths = try paths(name)
        guard project.gitCommonDir != nil else { throw SandboxError("\(project.root) is not a git repository") }
        guard FileSystem.isDirectory(paths.stateDirectory) else {
            throw SandboxError(
                "this project has no sandbox \(name)", hint: "`airlock ps` lists the sandboxes; `airlock start --name \(name)` makes one")
        }
        // A clone from before a switch to mount mode still has its work to bring home.
        if config.workspace.mode == .mount && !FileSystem.isDirectory(paths.workspace + "/.git") {
            throw SandboxError(
                "sandbox \(name) shares the project itself ([workspace] mode = \"mount\"): its work is already in \(project.root), there is no clone to fetch from",
                hint: "look at it with `git status` and `git diff`, and commit what you keep (the VM cannot: .git is read-only there)")
        }
        // What a mount covers in the project is the mount's, not the agent's work. (A `~/`
        // target is placed in the host root's home; an image's user may have another.)
        let mounted = Mounts.projectTargets(config.mounts, project: project.root, guestHome: HostRoot.User.current.home)
        return SandboxWork(paths: paths, reporter: reporter, masks: MaskedPaths(config.masks) + MaskedPaths(paths: mounted))
    }
}

/// A sandbox's clone as the review commands see it: fetched into the project (or the last
/// fetch's report when nothing can have changed since), the refs it made, where the agent
/// started, and the audit log. Blocking (libgit2).
public struct SandboxWork: Sendable {
    public let paths: SandboxPaths
    let reporter: SandboxReporter
    /// `[mask.*]` paths and the project paths `[mounts.*]` cover: never brought home.
    let masks: MaskedPaths

    /// The last fetch's report when nothing can have changed the clone since (the sandbox is
    /// stopped, no session ended and no git operation ran in the clone after that fetch, and the
    /// fetched refs are as they were); otherwise a new fetch.
    public func current() throws -> FetchReport {
        if let report = reusableReport() { return report }
        return try fetch()
    }

    private func reusableReport() -> FetchReport? {
        guard !SandboxLock.isHeld(paths.lockFile), let fetched = FileSystem.modificationTime(paths.lastFetchFile) else { return nil }
        for path in [paths.sessionMarker, paths.workspace + "/.git/index", paths.workspace + "/.git/HEAD", paths.workspace + "/.git/logs/HEAD"] {
            if let changed = FileSystem.modificationTime(path), changed >= fetched { return nil }
        }
        guard let bytes = (try? FileSystem.read(paths.lastFetchFile, limit: 64 << 20)) ?? nil,
            let report = try? JSONDecoder().decode(FetchReport.self, from: Data(bytes)), let repository = try? repository()
        else { return nil }
        let refs = repository.references(under: SandboxFetch.referencePrefix(sandbox: paths.name))
        for branch in report.branches where refs[branch.ref] != branch.after { return nil }
        return report
    }

    /// Fetches the clone's branches and uncommitted work; refusals are reported as warnings
    /// unless `quietRefusals`. With the sandbox stopped, the last session's change journal
    /// spares a scan of the whole working tree, unless `rescan`.
    public func fetch(quietRefusals: Bool = false, rescan: Bool = false) throws -> FetchReport {
        let journal = rescan || SandboxLock.isHeld(paths.lockFile) ? nil : ChangeJournal.load(paths.changeJournal)
        let report = try SandboxFetch.run(
            project: paths.project.root, clone: paths.workspace, mirror: paths.mirror, sandbox: paths.name, base: Workspace.recordedBase(paths),
            journal: journal, masks: masks)
        if !quietRefusals {
            for refusal in report.refused { reporter.warning("refused in the clone: \(refusal)") }
        }
        if report.hasNews || !report.refused.isEmpty {
            var details: [String: AuditEvent.Value] = [
                "refs": .list(report.branches.filter { $0.change != .unchanged }.map { "\($0.change.rawValue) \($0.ref) \($0.after?.hex ?? "-")" })
            ]
            if !report.refused.isEmpty { details["refused"] = .list(report.refused) }
            audit("fetch", details)
        }
        if let data = try? JSONEncoder().encode(report) { try? FileSystem.writeAtomically(paths.lastFetchFile, Array(data), durable: false) }
        return report
    }

    public func repository() throws -> Repository {
        try Repository.open(paths.project.root)
    }

    /// The fetched ref for `branch` (a clone branch name, `uncommitted` or `detached`), or the
    /// agent's work (uncommitted capture, else its current branch) when nil.
    public func target(_ report: FetchReport, branch: String?) throws -> String {
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
    public func base(in repository: Repository, target: ObjectID) throws -> ObjectID {
        if let base = Workspace.recordedBase(paths) { return base }
        if let head = repository.headCommit, let base = repository.mergeBase(head, target) { return base }
        throw SandboxError("cannot tell where sandbox \(paths.name) started", hint: "name a base commit: `airlock diff main`")
    }

    /// Kept for the next start to show (`SandboxPaths.policyChange`): what a merge or review
    /// took from the agent's changes to the sandbox's configuration.
    public func notePolicyChange(_ text: String) {
        try? FileSystem.writeAtomically(paths.policyChange, String(text.utf8.prefix(16 << 10)) ?? text)
        audit("security.policy-changed", ["text": .text(String(text.prefix(4096)))])
    }

    public func audit(_ event: String, _ details: [String: AuditEvent.Value]) {
        try? paths.auditLog.append(AuditEvent(sandbox: paths.name, event: event, details: details))
    }
}
