import AirlockSystem
import CShim
import Config
import GitReview
import GuestLink
import Logging
import Machine
import Middleware
import NIOCore
import NetworkPolicy
import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

/// Boots a sandbox and runs the session of the process that owns it, in phases:
///
/// 1. host preparation (the clone, the state disk, the project's fingerprint, the change
///    journal, the runtime directory), on NIO's blocking pool;
/// 2. the backend's start (`MachineLauncher`);
/// 3. the guest connection and its setup, within the boot deadline;
/// 4. the services (egress proxy, host port forwards, control socket) and the session, all
///    children of one task group.
///
/// Every way out, a failed boot included, goes through `shutDown`; the host preparation's
/// counterpart (sealing the journal, comparing the fingerprint) runs after it.
struct SandboxBoot: Sendable {
    var paths: SandboxPaths
    var config: AirlockConfig
    var environment: [String: String]
    var logger: Logger
    var reporter: SandboxReporter
    var resolver: any Resolver
    var testOnlyUpstreamRoots: String?
    var vaultValues: [String: String]
    /// Where the vault lives: no mount may show it.
    var vaultDirectory: String?
    var signInStore: (@Sendable () throws -> SignInStore)?
    var workspace: WorkspaceOptions
    var image: ImageRoot?
    var launcher: MachineLauncher
    var assets: (kernel: String, initramfs: String)
    var bootTimeout: Duration
    var hostname: String
    /// What the sandbox may take of the host's disk.
    var budget: DiskBudget
    /// `[workspace] max_size` as the configuration files say now (the disk guard reads it
    /// again while the VM is paused for it).
    var currentMaxSize: @Sendable () -> UInt64? = { nil }

    /// The virtio-mmio transports QEMU's microvm machine offers.
    static let maxTransports = 24

    /// What phase 1 leaves for the end of the session.
    struct Prepared: Sendable {
        var fingerprint: ProjectFingerprint
        /// `[workspace] mode = "mount"`: the project's view, shared as the workspace.
        var projectView: ShareView?
        var journal: ChangeJournal.Recorder?
        var runtime: String
    }

    /// Runs `spec` as the owner's session; `lock` is held until everything has been torn down.
    func run(_ spec: ExecSpec, lock: SandboxLock) async throws -> HostSession.Ended {
        let started = ContinuousClock.now
        unlink(paths.stopMarker)
        defer { unlink(paths.stopMarker) }
        let prepared = try await Blocking.run { [self] in try prepareHost(spec) }
        let result: Result<HostSession.Ended, any Error>
        do {
            result = .success(try await boot(spec, prepared: prepared, started: started))
        } catch let stalled as StalledBoot {
            // Once: a stall that comes back is the guest's, and fails as one.
            reporter.progress?("\(stalled.description); booting again")
            do {
                result = .success(try await boot(spec, prepared: prepared, started: started))
            } catch {
                result = .failure(
                    error is StalledBoot ? MachineError(stalled.description, consoleTail: FileSystem.tailLines(of: paths.consoleLog)) : error)
            }
        } catch {
            result = .failure(error)
        }
        // Sealed only now: every way out of `boot` has shut the VM down.
        await
            (try? Blocking.run { [self] in
                prepared.journal?.seal()
                checkFingerprint(prepared.fingerprint, files: prepared.projectView == nil)
            }) ?? ()
        withExtendedLifetime(lock) {}
        return try result.get()
    }

    // MARK: Phase 1: the host side

    private func prepareHost(_ spec: ExecSpec) throws -> Prepared {
        let files = Workspace(paths: paths, config: config, options: workspace, reporter: reporter)
        let mountMode = config.workspace.mode == .mount
        if mountMode && (workspace.fresh || workspace.withChanges) {
            throw SandboxError(
                "\(workspace.fresh ? "--fresh" : "--with-changes") makes a new clone, and sandbox \(paths.name) shares the project itself ([workspace] mode = \"mount\")",
                hint: "leave it out: the VM already sees your working tree as it is")
        }
        let projectView = mountMode ? try files.projectView() : nil
        if !mountMode { try files.prepareClone() }
        try files.prepareDisk()
        try? paths.auditLog.append(
            AuditEvent(sandbox: paths.name, event: "session.start", details: ["command": .list(spec.arguments)]).redacting {
                [secrets = Self.watchedSecrets(config, vaultValues: vaultValues)] in
                MaskedSecret.redact($0, secrets)
            })
        try? FileSystem.writeAtomically(paths.sessionMarker, "\(time(nil))\n", durable: false)
        // The project must look the same after the session: nothing in the VM can reach it (in
        // mount mode: nothing but its working tree).
        let fingerprint = ProjectFingerprint.take(project: paths.project.root, files: !mountMode)
        let journalStart = ContinuousClock.now
        let journal =
            mountMode
            ? nil
            : ChangeJournal.Recorder.begin(project: paths.project.root, clone: paths.workspace, mirror: paths.mirror, file: paths.changeJournal)
        logger.debug(
            "change journal begun",
            metadata: ["milliseconds": "\((ContinuousClock.now - journalStart).milliseconds)", "watching": "\(journal != nil)"])
        let runtime = paths.runtimeDirectory(environment: environment)
        try FileSystem.makeDirectory(paths.runtimeBase(environment: environment), mode: 0o700)
        try FileSystem.makeDirectory(runtime, mode: 0o700)
        // A fresh console log per boot.
        close(open(paths.consoleLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))
        unlink(paths.consoleLog + ".1")
        return Prepared(fingerprint: fingerprint, projectView: projectView, journal: journal, runtime: runtime)
    }

    /// Reports a change of the project during the session as a security event.
    private func checkFingerprint(_ before: ProjectFingerprint, files: Bool) {
        let changes = ProjectFingerprint.take(project: paths.project.root, files: files).differences(since: before)
        guard !changes.isEmpty else { return }
        try? paths.auditLog.append(AuditEvent(sandbox: paths.name, event: "security.project-changed", details: ["changes": .list(changes)]))
        let listed = changes.prefix(10).joined(separator: "\n  ") + (changes.count > 10 ? "\n  … and \(changes.count - 10) more" : "")
        reporter.warning(
            "the project changed while sandbox \(paths.name) ran:\n  \(listed)\nairlock never writes there during a session. If you did not make these changes, treat this as a security event (recorded in \(paths.auditLog.path))."
        )
    }

    /// `[daemons.*]` as the guest runs them: the root's base environment (a session's, without
    /// `[env]` or a terminal) and the daemon's own, `cwd` with `~` the agent's home.
    /// The real values no request from the VM may carry and no answer may bring back: every
    /// masked `[env]` value and service token, and every vault value the configuration read that the VM does not
    /// hold in the clear (one a plain `[env]` or daemon entry hands it is the VM's to send).
    /// Values under 8 bytes are too short to look for.
    static func watchedSecrets(_ config: AirlockConfig, vaultValues: [String: String]) -> [MaskedSecret] {
        let masked = config.maskedEnv.values.sorted { $0.name < $1.name } + config.network.services.flatMap(\.tokens)
        let held = Array(config.env.values) + config.daemons.values.flatMap(\.env.values)
        // A vault value a service or a masked entry took is watched under that name already.
        let vault = vaultValues.sorted { $0.key < $1.key }.filter { _, value in
            value.utf8.count >= MaskedSecret.minimumReplaced && !held.contains { $0.contains(value) } && !masked.contains { $0.value == value }
        }
        return masked + vault.map { MaskedSecret(name: "\($0.key) (from the vault)", value: $0.value) }
    }

    private func daemons(home: String) -> [SetupSpec.Daemon] {
        let base =
            image?.baseEnvironment(terminal: nil, hostname: hostname)
            ?? HostCommands.environment(HostRoot(hostname: hostname).baseEnvironment(terminal: nil), config.commands)
        return config.daemons.sorted { $0.key < $1.key }.map { name, daemon in
            let environment = base.merging(daemon.env) { $1 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            let directory = Mounts.expandingHome(daemon.cwd, home: home)
            return SetupSpec.Daemon(
                name: name, arguments: daemon.command, environment: environment, workingDirectory: directory, signal: daemon.signal,
                timeout: UInt32(daemon.timeout), restart: daemon.restart == .always ? .always : .onFailure, maxRestarts: UInt32(daemon.maxRestarts))
        }
    }

    /// The sign-ins of the services that have one; their store sealed with the vault's key.
    /// Without it they are unavailable: their token hosts refuse, with the reason.
    private func openSignIns() -> SignIns? {
        let services = config.network.services.map(\.service).filter { $0.signIn != nil }
        guard !services.isEmpty else { return nil }
        do {
            guard let signInStore else { return SignIns(services: services, store: nil, unavailable: "no vault") }
            return SignIns(services: services, store: try signInStore())
        } catch {
            reporter.warning(
                "signing in inside the sandbox (\(services.map(\.name).joined(separator: ", "))) is unavailable: \(error); the sign-in hosts are refused"
            )
            return SignIns(services: services, store: nil, unavailable: "\(error)")
        }
    }

    /// The guest asked to open `url` (its CLI's sign-in): only a provider's sign-in page, whose
    /// loopback answer airlock then carries into the sandbox, opens; in `$BROWSER`, else with
    /// `xdg-open` on a desktop, else its address is shown. nil when it opened, else the refusal.
    static func openSignInPage(
        _ url: String, signIns: SignIns, callbacks: CallbackRelay, environment: [String: String], reporter: SandboxReporter
    ) async -> String? {
        do {
            let page = try signIns.checkPage(url)
            let service = signIns.service(named: page.service)!
            try await callbacks.listen(port: page.callbackPort, path: service.signIn!.callbackPath)
            if await openInBrowser(url, environment: environment) {
                reporter.notice?("the sandbox's \(service.name) sign-in page is open in your browser")
                return nil
            }
            reporter.warning("to sign in to \(service.name) in the sandbox, open this address in a browser on this computer:\n  \(url)")
            return nil
        } catch {
            reporter.warning("the sandbox asked to open a page, which airlock refused: \(error)")
            return "\(error)"
        }
    }

    /// Opens `url` in `$BROWSER` (its first entry), else with `xdg-open` on a desktop. The
    /// browser starts in a session of its own, its output to /dev/null, and is left running: one
    /// that stays in the foreground is the user's, never waited for or killed. True when it is
    /// still running after 5 s or ended with status 0; false without one, or when it failed.
    static func openInBrowser(_ url: String, environment: [String: String]) async -> Bool {
        let directories = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        let desktop = environment["DISPLAY"] != nil || environment["WAYLAND_DISPLAY"] != nil
        let browser = environment["BROWSER"].flatMap { $0.split(separator: ":").first.map(String.init) } ?? (desktop ? "xdg-open" : nil)
        guard let program = browser.flatMap({ HostFacts.findExecutable($0, in: directories) }) else { return false }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        let variables = environment.map { "\($0.key)=\($0.value)" }.sorted()
        guard
            let browserProcess = try? ProcessWaiter(spawning: {
                withCStrings([program, url]) { argv in
                    withCStrings(variables) { envp in airlock_spawn(program, argv, envp, devNull, devNull, devNull, Int32(AIRLOCK_SPAWN_SETSID)) }
                }
            })
        else { return false }
        // nil: still running at the deadline.
        guard let status = try? await withDeadline(.seconds(5), what: "the browser", { await browserProcess.wait() }) else { return true }
        return ExitStatus(waitStatus: status).code == 0
    }

    // MARK: Phases 2 to 4

    private func boot(_ spec: ExecSpec, prepared: Prepared, started: ContinuousClock.Instant) async throws -> HostSession.Ended {
        let elapsed = { "\((ContinuousClock.now - started).milliseconds) ms" }
        let workspace = prepared.projectView == nil ? paths.workspace : paths.projectView
        var layout =
            try image.map { try $0.layout(projectRoot: paths.project.root, workspace: workspace, hostname: hostname) }
            ?? HostRoot(hostname: hostname).layout(projectRoot: paths.project.root, workspace: workspace)
        if let view = prepared.projectView {
            let readOnly = config.workspace.readOnly
            for index in layout.shares.indices where layout.shares[index].tag == LinkNames.workspaceTag {
                layout.shares[index].view = view
                layout.shares[index].readOnly = readOnly
            }
            for index in layout.setup.shares.indices where layout.setup.shares[index].tag == LinkNames.workspaceTag {
                layout.setup.shares[index].readOnly = readOnly
            }
        }
        let home = layout.setup.home
        let mounts = try await Blocking.run { [self] in
            // `[commands.*]`: the host's programs, with the host's root only.
            var entries = config.mounts
            if image == nil, !config.commands.isEmpty {
                let commands = HostCommands.resolve(config.commands, path: environment["PATH"] ?? "")
                for warning in commands.warnings { reporter.warning(warning) }
                let links = prepared.runtime + "/commands"
                try commands.writeLinks(in: links)
                entries.merge(commands.mounts(linkDirectory: links)) { written, _ in written }
            }
            let mounts = try Mounts.resolve(
                entries, project: paths.project.root, guestHome: home, masks: MaskedPaths(config.masks),
                protected: Mounts.protectedPaths(environment: environment),
                secret: vaultDirectory.map { [FileSystem.realPath($0) ?? $0] } ?? [], reporter: reporter)
            try mounts.stage(in: paths.mountStaging, reporter: reporter)
            return mounts
        }
        mounts.add(to: &layout, staging: paths.mountStaging)
        layout.setup.caches = try Mounts.caches(config.disk, project: paths.project.root, guestHome: home)
        layout.setup.keptCaches = config.disk.keptCaches
        layout.setup.daemons = daemons(home: home)
        // TLS interception: the project's CA (made on the first start), trusted in the guest.
        let authority = try await Blocking.run { [paths] in
            try CertificateAuthority.loadOrCreate(path: paths.stateRoot + "/ca.pem", project: paths.project.root)
        }
        layout.setup.caCertificate = Array(authority.certificatePEM.utf8)
        let transports = layout.shares.count + (image?.blockDisks.count ?? 0) + 3
        if transports > Self.maxTransports {
            throw SandboxError(
                "this sandbox needs \(transports) virtio devices (\(layout.shares.count) shares, the state disk, the console, the RNG); a VM has at most \(Self.maxTransports)",
                hint: "mount fewer directories (a common parent instead of several), or use an image with fewer layers")
        }
        layout.setup.forwardPorts = config.network.guestForwards.map(\.guestPort)
        layout.setup.forwardSockets = config.network.socketForwards.map { SetupSpec.SocketForward(name: $0.entry, path: $0.guestPath) }
        let machineSpec = MachineSpec(
            kernel: assets.kernel, initramfs: assets.initramfs, cpus: config.vm.cpus, memoryMiB: max(256, config.vm.memory.bytes >> 20),
            shares: layout.shares, disk: paths.disk, readOnlyDisks: image?.blockDisks ?? [], runtimeDirectory: prepared.runtime,
            consoleLog: paths.consoleLog, accelerator: launcher.accelerator)
        reporter.progress?("booting sandbox \(paths.name) (\(launcher.backend.rawValue), \(launcher.accelerator.rawValue))")

        let events = EventHub()
        let audit = paths.auditLog
        let sandbox = paths.name
        // Identical denials are counted, not written one by one; subscribers see each.
        let coalescer = AuditCoalescer()
        // No real value reaches the log or its subscribers, whatever an event's text holds.
        let watched = Self.watchedSecrets(config, vaultValues: vaultValues)
        let record: @Sendable (AuditEvent) -> Void = { event in
            let event = watched.isEmpty ? event : event.redacting { MaskedSecret.redact($0, watched) }
            for admitted in coalescer.admit(event) { try? audit.append(admitted) }
            events.publish(event)
        }
        // Masked values stay here: each rule's `inject` goes into the requests it allows, and
        // every real value is watched for in requests and answers.
        let injections = config.network.rules.filter { !$0.value.inject.isEmpty }.mapValues { $0.inject.compactMap { config.maskedEnv[$0] } }
        for middleware in config.network.middleware {
            for variable in middleware.unresolved {
                reporter.warning(
                    "middleware \(middleware.name): env.\(variable) names a variable set neither in the environment nor in the vault; the script sees nil"
                )
            }
        }
        let middleware = config.network.middleware.map { entry in
            InterceptionMiddleware(
                script: MiddlewareScript(name: entry.name, source: entry.script, environment: entry.environment), targets: entry.targets)
        }
        let signIns = openSignIns()
        for credentials in config.network.services where credentials.tokens.isEmpty {
            let signedIn = signIns?.store.map { (try? $0.grants())?.contains { $0.service == credentials.service.name } ?? false } ?? false
            guard !signedIn else { continue }
            reporter.warning(
                "[network.services.\(credentials.service.name)]: the host has no \(credentials.service.tokenVariables.joined(separator: " or ")) (environment or vault) and no sign-in, so \(credentials.service.apiHosts.joined(separator: ", ")) will refuse the sandbox's requests until one is made; \(credentials.service.hint)"
            )
        }
        let interception = try Interception(
            authority: authority, secrets: watched, injections: injections,
            middleware: middleware, services: config.network.services, signIns: signIns, extraUpstreamRootsPEM: testOnlyUpstreamRoots,
            requests: { request in
                for event in AuditEvent.records(sandbox: sandbox, request: request) { record(event) }
            })
        let callbacks = signIns.map { CallbackRelay(signIns: $0, logger: logger) }
        var egress = EgressConfiguration(
            rules: config.network.networkRules, resolver: resolver, guestForwards: config.network.guestForwards,
            socketForwards: config.network.socketForwards, interception: interception)
        if let signIns, let callbacks {
            egress.browse = { [environment, reporter] url in
                await Self.openSignInPage(url, signIns: signIns, callbacks: callbacks, environment: environment, reporter: reporter)
            }
        }
        let proxy = EgressServer(
            configuration: egress,
            logger: logger, records: { record(AuditEvent(sandbox: sandbox, connection: $0)) })
        // The guest's egress connections, as the backend hands them over (during its start or
        // later); served by a child of the task group below.
        let (egressConnections, arrivals) = AsyncStream<EgressServer.Connection>.makeStream()

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await withDiscardingTaskGroup { connections in
                    for await connection in egressConnections {
                        connections.addTask { try? await proxy.serve(connection) }
                    }
                }
            }
            var running = RunningParts(events: events, coalescer: coalescer)
            var consoleStart: Int64 = 0
            // The guest stops each daemon within its timeout (0: waits for it) before it powers off.
            running.powerOffGrace = config.daemonStopTime.map { .seconds(5 + $0) }
            let link: LinkClient
            do {
                // Phase 2: the backend.
                logger.debug("starting the VMM", metadata: ["after": "\(elapsed())"])
                consoleStart = FileSystem.size(paths.consoleLog) ?? 0
                let vm = try await launcher.start(machineSpec) { channel in
                    proxy.configure(channel).map { arrivals.yield($0) }
                }
                running.vm = vm
                let state = SandboxState(
                    pid: getpid(), vmmPID: vm.processID, backend: vm.backend.rawValue, accelerator: machineSpec.accelerator.rawValue,
                    startedAt: Int64(time(nil)), project: paths.project.root)
                try FileSystem.writeAtomically(paths.stateFile, state.text, durable: false)

                // Phase 3: the guest.
                logger.debug("VMM started; connecting to the guest", metadata: ["after": "\(elapsed())"])
                link = try await withBootDeadline(vm, consoleStart: consoleStart) { try await vm.connectControl() }
                running.link = link
                logger.debug("connected; sending the setup", metadata: ["after": "\(elapsed())"])
                let setup = layout.setup.encoded()
                _ = try await withBootDeadline(vm, consoleStart: consoleStart) { try await link.call(LinkNames.Path.setup, body: setup) }
                running.guestSetUp = true
                callbacks?.attach(link)
                logger.debug("the guest is set up", metadata: ["after": "\(elapsed())"])

                // Phase 4: the services, then the session.
                // Host port forwards (127.0.0.1 only) are carried into the guest over the control link.
                let forwarder = try await PortForwarder.bind(
                    config.network.hostForwards, link: link, logger: logger, records: { record(AuditEvent(sandbox: sandbox, connection: $0)) })
                running.forwarder = forwarder
                let guarding = DiskGuard(
                    budget: budget,
                    sandbox: sandbox, vm: vm, interactive: spec.terminal != nil, reporter: reporter, record: record,
                    reloadMaxSize: currentMaxSize, sizeFile: prepared.projectView == nil ? paths.workspaceSize : nil,
                    giveUp: { [paths] message, hint in
                        // The owner's command fails with this (`SandboxManager.explained`).
                        try? FileSystem.writeAtomically(paths.stopMarker, "limit\n\(message)\n\(hint)\n", durable: false)
                    },
                    powerOff: { _ = try? await link.call(LinkNames.Path.powerOff, body: .init()) })
                running.diskGuard = guarding
                let control = try await ControlServer.bind(
                    path: paths.controlSocket(environment: environment), link: link,
                    handlers: .init(
                        state: { [config] in
                            var status = SandboxStatus(paths: paths, state: state, config: config)
                            if !config.daemons.isEmpty, let answer = try? await link.call(LinkNames.Path.daemons, body: .init()),
                                let daemons = try? DaemonStatus.decode(answer)
                            {
                                status.daemons = daemons
                            }
                            return status
                        },
                        stop: {
                            // The guest syncs its disk and powers off; every session then ends.
                            await guarding.release(during: guarding.powerOff)
                        },
                        events: events))
                running.control = control
                group.addTask { await forwarder.run() }
                group.addTask { await control.run() }
                group.addTask { await guarding.run() }
                logger.info("sandbox ready", metadata: ["milliseconds": "\((ContinuousClock.now - started).milliseconds)"])
            } catch {
                await running.shutDown(paths: paths, arrivals: arrivals)
                group.cancelAll()
                if error is MachineError || error is StalledBoot { throw error }
                throw MachineError("the sandbox did not start", cause: error, consoleTail: FileSystem.tailLines(of: paths.consoleLog))
            }

            let outcome: Result<HostSession.Ended, any Error>
            do {
                outcome = .success(try await HostSession(spec: spec).run(on: link))
            } catch {
                outcome = .failure(SandboxManager.explained(error, paths: paths))
            }
            // The sandbox lives until its last session ends: others may have joined this one.
            if let control = running.control {
                let others = control.runningSessions
                if others > 0 {
                    reporter.notice?(
                        "\(others) other session\(others == 1 ? "" : "s") still run in sandbox \(paths.name); it stops when \(others == 1 ? "it ends" : "they end") (`airlock stop --name \(paths.name)` stops it now)"
                    )
                }
                await control.drain()
            }
            await callbacks?.close()
            await running.shutDown(paths: paths, arrivals: arrivals)
            group.cancelAll()
            if case .success(let ended) = outcome {
                record(AuditEvent(sandbox: sandbox, event: "session.end", details: ["exit": .number(Int64(ended.code))]))
            }
            return try outcome.get()
        }
    }

    /// Runs `body`, but fails as soon as the VMM exits or the boot deadline passes. A body
    /// that fails because the VMM went (the link closed under it) fails with the VMM's reason.
    /// A guest agent that has not written to the console (from `consoleStart` on) within
    /// `signOfLife` is a stalled boot (`StalledBoot`).
    private func withBootDeadline<T: Sendable>(
        _ vm: any VirtualMachine, consoleStart: Int64, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let console = paths.consoleLog
        let timeout = bootTimeout
        let signOfLife = Self.signOfLife
        @Sendable func stopped(_ status: Int32) -> MachineError {
            let tail = FileSystem.tailLines(of: console, count: 60)
            let panicked = tail.contains { $0.contains(ConsoleRecorder.kernelPanicLine) }
            let exit = ExitStatus(waitStatus: status)
            let how = exit.signal != 0 ? "ended by signal \(exit.signal)" : "exit status \(exit.code)"
            return MachineError(
                panicked ? "the guest kernel panicked during boot" : "the VM stopped during boot (\(vm.backend.rawValue) \(how))",
                consoleTail: Array(tail.suffix(20)))
        }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                do {
                    return try await body()
                } catch {
                    if let status = await Self.exitStatus(of: vm, within: .seconds(2)) { throw stopped(status) }
                    throw error
                }
            }
            group.addTask {
                // nil: cancelled because the body finished first.
                guard let status = await vm.waitForExit() else { return nil }
                throw stopped(status)
            }
            group.addTask {
                do { try await Task.sleep(for: timeout) } catch { return nil }
                throw MachineError("the guest did not answer within \(timeout.text)", consoleTail: FileSystem.tailLines(of: console))
            }
            group.addTask {
                let deadline = ContinuousClock.now + signOfLife
                while !Self.guestAgentSpoke(console, since: consoleStart) {
                    if ContinuousClock.now > deadline { throw StalledBoot(after: signOfLife) }
                    do { try await Task.sleep(for: .milliseconds(500)) } catch { return nil }
                }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            throw CancellationError()
        }
    }
}

/// A boot in which the guest agent never spoke: the kernel stalled before it (seen under TCG
/// on a loaded host: a cold boot stuck before the initramfs ran, for minutes). The VM is shut
/// down and booted once more.
struct StalledBoot: Error, CustomStringConvertible {
    var after: Duration
    var description: String { "the guest's kernel stalled before the guest agent started (nothing from it in \(after.text))" }
}

extension SandboxBoot {
    /// How long a guest may take from the VMM's start to its agent's first console line (a
    /// cold boot under TCG on a loaded host: well under 30 s; a resumed snapshot: about 1 s,
    /// its first line the setup's).
    static let signOfLife: Duration = .seconds(60)

    /// Whether the guest agent has written to the console log since `offset` (from the start
    /// when the log was rotated since).
    static func guestAgentSpoke(_ console: String, since offset: Int64) -> Bool {
        let size = FileSystem.size(console) ?? 0
        let from = size < offset ? 0 : offset
        return FileSystem.text(of: console, from: from, limit: 256 << 10).contains("airlock-guest:")
    }

    /// `vm`'s wait status if it exits within `duration`.
    fileprivate static func exitStatus(of vm: any VirtualMachine, within duration: Duration) async -> Int32? {
        await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await vm.waitForExit() }
            group.addTask {
                try? await Task.sleep(for: duration)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

/// What a boot has started so far, and the one way to end it all.
private struct RunningParts {
    var events: EventHub
    var coalescer: AuditCoalescer
    var vm: (any VirtualMachine)?
    var link: LinkClient?
    var forwarder: PortForwarder?
    var control: ControlServer?
    var diskGuard: DiskGuard?
    /// How long the guest may take to power off; nil: as long as it takes.
    var powerOffGrace: Duration? = .seconds(5)
    /// The guest answered its setup: only then can it power off (before, it has no disk to sync).
    var guestSetUp = false

    /// Stops accepting on the control socket, powers the guest off (it syncs its disk; the VMM
    /// then ends by itself), stops the VMM and its helpers, ends the forwards and the event
    /// subscriptions, writes the denials counted but not written yet, and removes the state
    /// file.
    func shutDown(paths: SandboxPaths, arrivals: AsyncStream<EgressServer.Connection>.Continuation) async {
        defer { try? FileSystem.writeAtomically(paths.sessionMarker, "\(time(nil))\n", durable: false) }
        await control?.close()
        if let link, guestSetUp {
            let grace = powerOffGrace
            let powerOff: @Sendable () async -> Void = {
                _ = try? await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { _ = try await link.call(LinkNames.Path.powerOff, body: .init()) }
                    if let grace { group.addTask { try await Task.sleep(for: grace) } }
                    try await group.next()
                    group.cancelAll()
                }
            }
            // A VM paused at its disk limit runs again, to power off with its disk synced.
            if let diskGuard { await diskGuard.release(during: powerOff) } else { await powerOff() }
            await link.close()
        } else {
            await link?.close()
            await diskGuard?.release()
        }
        await vm?.stop(grace: guestSetUp ? .seconds(10) : .seconds(1))
        await forwarder?.close()
        arrivals.finish()
        events.finish()
        for counted in coalescer.flush() { try? paths.auditLog.append(counted) }
        unlink(paths.stateFile)
    }
}
