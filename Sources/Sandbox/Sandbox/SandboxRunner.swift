import GitReview
import GuestLink
import Logging
import NIOCore
import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Boots a sandbox and runs sessions in it. The process that boots the VM owns it (the VMM dies
/// with it), holds the sandbox's lock and serves the attach socket for other sessions; when its
/// own session ends it powers the VM off. A second `start` while it runs attaches instead.
public struct SandboxRunner: Sendable {
    public var paths: SandboxPaths
    public var config: AirlockConfig
    public var environment: [String: String]
    public var logger: Logger
    /// Status lines for the user (stderr); nil for quiet.
    public var progress: (@Sendable (String) -> Void)?
    /// Warnings that are printed even when quiet (security events).
    public var warn: @Sendable (String) -> Void = { _ in }
    public var workspace = WorkspaceOptions()
    /// The OCI image the root is built from; nil for `image = "host"`.
    public var image: ImageRoot?

    /// How the clone is made at this start.
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

    public typealias MachineFactory = @Sendable (MachineSpec, EgressHandler?) async throws -> any VirtualMachine

    public init(paths: SandboxPaths, config: AirlockConfig, environment: [String: String], logger: Logger, progress: (@Sendable (String) -> Void)?) {
        self.paths = paths
        self.config = config
        self.environment = environment
        self.logger = logger
        self.progress = progress
    }

    /// How long the guest may take from VMM start to answering setup (TCG is slow; a first
    /// boot formats the disk).
    public static let bootTimeout: Duration = .seconds(180)

    /// The session's spec for `command` (the login shell when empty), started in the
    /// directory matching the caller's, inside the workspace.
    public func execSpec(command: [String], extraEnvironment: [String: String], terminal: WindowSize?, workingDirectory: String) -> ExecSpec {
        let root = HostRoot(hostname: hostname)
        let terminalName = terminal == nil ? nil : (self.environment["TERM"] ?? "xterm-256color")
        var environment = image?.baseEnvironment(terminal: terminalName, hostname: hostname) ?? root.baseEnvironment(terminal: terminalName)
        for (key, value) in config.env { environment[key] = value }
        for (key, value) in extraEnvironment { environment[key] = value }
        let arguments = image?.arguments(for: command) ?? (command.isEmpty ? [root.user.shell, "-l"] : command)
        var directory = paths.project.root
        if workingDirectory == paths.project.root || workingDirectory.hasPrefix(paths.project.root + "/") {
            let relative = workingDirectory.dropFirst(paths.project.root.count)
            if relative.isEmpty || isDirectory(paths.workspace + relative) { directory = workingDirectory }
        }
        // The image's own command runs where the image says; the user's runs in the project.
        if let image, command.isEmpty, !(image.entrypoint + image.command).isEmpty, let imageDirectory = image.workingDirectory,
            imageDirectory.hasPrefix("/")
        {
            directory = imageDirectory
        }
        return ExecSpec(
            arguments: arguments, environment: environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            workingDirectory: directory, terminal: terminal, user: image?.user.uid ?? root.user.uid, group: image?.user.gid ?? root.user.gid)
    }

    var hostname: String { "airlock-" + paths.name }

    /// Runs `spec` in the sandbox, booting it first unless it is already running (then the
    /// session attaches to it). Returns the session's exit status.
    public func run(_ spec: ExecSpec, selection: BackendSelection, assets: (kernel: String, initramfs: String), machine: MachineFactory) async throws
        -> HostSession.Ended
    {
        try makeDirectory(paths.stateRoot, mode: 0o755)
        try makeDirectory(paths.stateDirectory, mode: 0o700)
        guard let lock = try SandboxLock.acquire(paths.lockFile) else {
            if workspace.fresh {
                throw SandboxError("sandbox \(paths.name) is running; --fresh needs it stopped", hint: "`airlock stop --name \(paths.name)` first")
            }
            progress?("sandbox \(paths.name) is running: attaching a new session")
            return try await attach(spec)
        }
        return try await boot(spec, lock: lock, selection: selection, assets: assets, machine: machine)
    }

    /// Runs `spec` in the already running sandbox.
    public func attach(_ spec: ExecSpec) async throws -> HostSession.Ended {
        let client = try await connectAttach()
        defer { Task { await client.close() } }
        do {
            return try await HostSession(spec: spec).run(on: client)
        } catch {
            throw explained(error)
        }
    }

    /// A session that ended because `airlock stop` powered the sandbox off says so.
    private func explained(_ error: any Error) -> any Error {
        guard access(paths.stopMarker, F_OK) == 0 else { return error }
        return SandboxError("sandbox \(paths.name) was stopped (`airlock stop`) before the command ended")
    }

    public func connectAttach() async throws -> LinkClient {
        let socket = paths.attachSocket(environment: environment)
        do {
            return try await LinkClient.connect(unixSocket: socket)
        } catch {
            throw SandboxError(
                "sandbox \(paths.name) is not running (\(socket): \(error))", hint: "start it with `airlock start --name \(paths.name)`")
        }
    }

    private func boot(
        _ spec: ExecSpec, lock: SandboxLock, selection: BackendSelection, assets: (kernel: String, initramfs: String), machine factory: MachineFactory
    ) async throws -> HostSession.Ended {
        let started = monotonicSeconds()
        unlink(paths.stopMarker)
        defer { unlink(paths.stopMarker) }
        try prepareWorkspace()
        try prepareDisk()
        let audit = paths.auditLog
        try? audit.append(AuditEvent(sandbox: paths.name, event: "session.start", details: ["command": .list(spec.arguments)]))
        try? writeFileAtomically(paths.sessionMarker, "\(time(nil))\n")
        // The project must look the same after the session: nothing in the VM can reach it.
        let fingerprint = ProjectFingerprint.take(project: paths.project.root)
        defer { checkFingerprint(fingerprint) }
        // Sealed when boot returns: every way out of it has shut the VM down by then.
        let journalStart = monotonicSeconds()
        let journal = ChangeJournal.Recorder.begin(
            project: paths.project.root, clone: paths.workspace, mirror: paths.mirror, file: paths.changeJournal)
        defer { journal?.seal() }
        logger.debug(
            "change journal begun", metadata: ["milliseconds": "\(Int((monotonicSeconds() - journalStart) * 1000))", "watching": "\(journal != nil)"])
        let runtime = paths.runtimeDirectory(environment: environment)
        try makeDirectory(paths.runtimeBase(environment: environment), mode: 0o700)
        try makeDirectory(runtime, mode: 0o700)
        // A fresh console log per boot.
        close(open(paths.consoleLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))

        var layout =
            try image.map { try $0.layout(projectRoot: paths.project.root, workspace: paths.workspace, hostname: hostname) }
            ?? HostRoot(hostname: hostname).layout(projectRoot: paths.project.root, workspace: paths.workspace)
        layout.setup.forwardPorts = config.network.guestForwards.map(\.guestPort)
        layout.setup.forwardSockets = config.network.socketForwards.map { SetupSpec.SocketForward(name: $0.entry, path: $0.guestPath) }
        let machineSpec = MachineSpec(
            kernel: assets.kernel, initramfs: assets.initramfs, cpus: config.vm.cpus,
            memoryMiB: max(256, config.vm.memory.bytes >> 20), shares: layout.shares, disk: paths.disk,
            readOnlyDisks: image?.blockDisks ?? [],
            runtimeDirectory: runtime, consoleLog: paths.consoleLog, accelerator: selection.accelerator ?? .tcg)
        progress?("booting sandbox \(paths.name) (\(selection.backend?.rawValue ?? "?"), \(machineSpec.accelerator.rawValue))")
        let proxy = networkProxy(audit: audit)
        let elapsed = { "\(Int((monotonicSeconds() - started) * 1000)) ms" }
        logger.debug("starting the VMM", metadata: ["after": "\(elapsed())"])
        let vm = try await factory(
            machineSpec,
            { channel in
                proxy.configure(channel).map { connection in
                    // Served until the guest's egress connection ends (with the VM).
                    Task { try? await proxy.serve(connection) }
                }
            })
        let state = SandboxState(
            pid: getpid(), vmmPID: vm.processID, backend: vm.backend.rawValue, accelerator: machineSpec.accelerator.rawValue,
            startedAt: Int64(time(nil)), project: paths.project.root)
        do {
            try writeFileAtomically(paths.stateFile, state.text)
        } catch {
            await shutdown(vm, link: nil, attach: nil)
            throw error
        }

        let link: LinkClient
        let attachServer: AttachServer
        var forwarder: PortForwarder?
        var connected: LinkClient?
        do {
            logger.debug("VMM started; connecting to the guest", metadata: ["after": "\(elapsed())"])
            let client = try await withBootDeadline(vm) { try await vm.connectControl() }
            connected = client
            logger.debug("connected; sending the setup", metadata: ["after": "\(elapsed())"])
            let setup = layout.setup.encoded()
            _ = try await withBootDeadline(vm) { try await client.call(LinkNames.Path.setup, body: setup) }
            logger.debug("the guest is set up", metadata: ["after": "\(elapsed())"])
            // Host port forwards (127.0.0.1 only) are carried into the guest over the control link.
            let forwards = try await PortForwarder.bind(
                config.network.hostForwards, link: client, logger: logger,
                records: { record in
                    try? audit.append(AuditEvent(sandbox: paths.name, connection: record))
                })
            forwarder = forwards
            Task { await forwards.run() }
            attachServer = try await AttachServer.start(path: paths.attachSocket(environment: environment), relayingTo: client)
            link = client
        } catch {
            await forwarder?.close()
            await shutdown(vm, link: connected, attach: nil)
            if let machineError = error as? MachineError { throw machineError }
            throw MachineError("the sandbox did not start: \(error)", consoleTail: tailLines(of: paths.consoleLog))
        }
        logger.info("sandbox ready", metadata: ["milliseconds": "\(Int((monotonicSeconds() - started) * 1000))"])

        // The lock is held (and the attach socket served) until the session has ended.
        defer { withExtendedLifetime(lock) {} }
        do {
            let ended = try await HostSession(spec: spec).run(on: link)
            await forwarder?.close()
            await shutdown(vm, link: link, attach: attachServer)
            try? audit.append(AuditEvent(sandbox: paths.name, event: "session.end", details: ["exit": .number(Int64(ended.code))]))
            return ended
        } catch {
            await forwarder?.close()
            await shutdown(vm, link: link, attach: attachServer)
            throw explained(error)
        }
    }

    /// The host side of the sandbox's network: every TCP connection of the guest is judged by
    /// the `[network]` rules, carried when allowed, and recorded in the audit log. Names resolve
    /// through the system resolver (the test harness may override it through the environment
    /// of this process only, never from a config file).
    private func networkProxy(audit: AuditLog) -> EgressServer {
        let sandbox = paths.name
        let configuration = EgressConfiguration(
            rules: config.network.networkRules,
            resolver: StaticResolver.fromTestEnvironment(environment) ?? SystemResolver(),
            guestForwards: config.network.guestForwards,
            socketForwards: config.network.socketForwards)
        return EgressServer(
            configuration: configuration, logger: logger,
            records: { record in
                try? audit.append(AuditEvent(sandbox: sandbox, connection: record))
            })
    }

    /// Runs `body`, but fails as soon as the VMM exits or the boot deadline passes.
    private func withBootDeadline<T: Sendable>(_ vm: any VirtualMachine, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let console = paths.consoleLog
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                // nil: cancelled because the body finished first.
                guard let status = await vm.waitForExit() else { return nil }
                throw MachineError(
                    "the VM stopped during boot (\(vm.backend.rawValue) exit status \(status >> 8))", consoleTail: tailLines(of: console))
            }
            group.addTask {
                do { try await Task.sleep(for: Self.bootTimeout) } catch { return nil }
                throw MachineError("the guest did not answer within \(Self.bootTimeout)", consoleTail: tailLines(of: console))
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            throw CancellationError()
        }
    }

    private func shutdown(_ vm: any VirtualMachine, link: LinkClient?, attach: AttachServer?) async {
        defer { try? writeFileAtomically(paths.sessionMarker, "\(time(nil))\n") }
        await attach?.close()
        unlink(paths.attachSocket(environment: environment))
        if let link {
            // The guest syncs its disk and powers off; QEMU then exits by itself.
            _ = try? await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await link.call(LinkNames.Path.powerOff, body: .init()) }
                group.addTask { try await Task.sleep(for: .seconds(5)) }
                try await group.next()
                group.cancelAll()
            }
            await link.close()
        }
        await vm.stop(grace: link == nil ? .seconds(1) : .seconds(10))
        unlink(paths.stateFile)
    }

    /// Reports a change of the project during the session as a security event.
    private func checkFingerprint(_ before: ProjectFingerprint) {
        let changes = ProjectFingerprint.take(project: paths.project.root).differences(since: before)
        guard !changes.isEmpty else { return }
        try? paths.auditLog.append(AuditEvent(sandbox: paths.name, event: "security.project-changed", details: ["changes": .list(changes)]))
        let listed = changes.prefix(10).joined(separator: "\n  ") + (changes.count > 10 ? "\n  … and \(changes.count - 10) more" : "")
        warn(
            "the project changed while sandbox \(paths.name) ran:\n  \(listed)\nairlock never writes there during a session. If you did not make these changes, treat this as a security event (recorded in \(paths.auditLog.path))."
        )
    }

    /// The clone the VM works on: made at first start (every branch and the history, the
    /// current branch checked out); later starts reuse it. `--fresh` fetches the old clone's
    /// work home and makes a new one; `--with-changes` carries the project's uncommitted
    /// changes into a new clone as a commit.
    func prepareWorkspace() throws {
        if workspace.fresh && isDirectory(paths.workspace + "/.git") {
            progress?("fetching the old clone's work before re-cloning")
            do {
                let report = try SandboxFetch.run(
                    project: paths.project.root, clone: paths.workspace, mirror: paths.mirror, sandbox: paths.name, base: recordedBase)
                try? paths.auditLog.append(
                    AuditEvent(sandbox: paths.name, event: "fetch", details: ["reason": .text("--fresh"), "refs": .list(report.branches.map(\.ref))]))
            } catch {
                throw SandboxError(
                    "--fresh refused: the old clone's work could not be fetched first: \(error)",
                    hint: "`airlock fetch --name \(paths.name)` shows why; `airlock rm --name \(paths.name)` discards the sandbox with its work")
            }
            try removeTree(paths.workspace)
            try removeTree(paths.mirror)
        }
        if isDirectory(paths.workspace + "/.git") {
            if workspace.withChanges { warn("--with-changes ignored: sandbox \(paths.name) already has its clone (add --fresh to make a new one)") }
            return
        }
        guard paths.project.gitCommonDir != nil else {
            throw SandboxError(
                "\(paths.project.root) is not a git repository",
                hint: "airlock gives the agent a clone of your repository: run `git init` and commit first")
        }
        progress?("cloning \(paths.project.root) for sandbox \(paths.name)")
        do {
            let project = try Repository.open(paths.project.root)
            let clone = try Repository.cloneLocal(from: paths.project.root, to: paths.workspace, branch: project.currentBranch)
            try clone.setConfig("user.name", project.configValue("user.name") ?? "airlock agent")
            try clone.setConfig("user.email", project.configValue("user.email") ?? "agent@airlock.invalid")
            let missing = try clone.initialiseSubmodules(fromProject: paths.project.root)
            if !missing.isEmpty {
                warn("submodules left uninitialised in the clone (not checked out in your project): " + missing.joined(separator: ", "))
            }
            if workspace.withChanges {
                let patch = try project.uncommittedPatch()
                let author = project.defaultSignature() ?? Repository.Signature(name: "airlock", email: "airlock@localhost")
                if try clone.commitPatch(
                    patch, message: "Uncommitted changes from \(paths.project.root)\n\nCarried over by `airlock start --with-changes`.\n",
                    author: author) != nil
                {
                    progress?("your uncommitted changes are a commit on top in the sandbox's clone")
                }
            }
            // Where the agent's work starts (after the carried-over changes, which are yours).
            if let base = clone.headCommit { try writeFileAtomically(paths.baseFile, base.hex + "\n") }
        } catch {
            removeTreeQuietly(paths.workspace)
            throw SandboxError("cannot clone the project: \(error)", hint: "a repository needs at least one commit to be cloned")
        }
    }

    /// The commit the clone was made from, when recorded.
    public var recordedBase: ObjectID? { Self.recordedBase(paths) }

    public static func recordedBase(_ paths: SandboxPaths) -> ObjectID? {
        (try? LocalFiles().readText(paths.baseFile)).flatMap { $0.flatMap { ObjectID(hex: $0.trimmingWhitespace()) } }
    }

    /// The sparse state disk, created at `[disk] size` or grown to it (never shrunk).
    func prepareDisk() throws {
        let fd = open(paths.disk, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SandboxError("cannot create \(paths.disk): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        if UInt64(info.st_size) < config.disk.size.bytes, ftruncate(fd, off_t(config.disk.size.bytes)) != 0 {
            throw SandboxError("cannot size \(paths.disk) to \(config.disk.size): \(String(cString: strerror(errno)))")
        }
    }
}

/// `mkdir` with `mode`; one that exists already is fine.
public func makeDirectory(_ path: String, mode: mode_t) throws {
    if mkdir(path, mode) != 0 && errno != EEXIST {
        throw SandboxError("cannot create \(path): \(String(cString: strerror(errno)))")
    }
}

/// Writes `text` to `path` (0600) through a temporary name, so readers never see half of it.
public func writeFileAtomically(_ path: String, _ text: String) throws {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SandboxError("cannot write \(path): \(String(cString: strerror(errno)))") }
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    guard written == bytes.count, rename(temporary, path) == 0 else {
        throw SandboxError("cannot write \(path): \(String(cString: strerror(errno)))")
    }
}

/// Removes a directory tree (symlinks are removed, never followed). Only for trees no running
/// guest can change while this runs.
public func removeTree(_ path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if (info.st_mode & S_IFMT) == S_IFDIR {
        for name in directoryEntries(path) { try removeTree(path + "/" + name) }
        guard rmdir(path) == 0 else { throw SandboxError("cannot remove \(path): \(String(cString: strerror(errno)))") }
    } else {
        guard unlink(path) == 0 else { throw SandboxError("cannot remove \(path): \(String(cString: strerror(errno)))") }
    }
}

private func removeTreeQuietly(_ path: String) {
    try? removeTree(path)
}
