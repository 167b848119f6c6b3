import ArgumentParser
import CShim
import CloudHypervisor
import GuestLink
import Logging
import OCI
import QEMU
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Boot the project's sandbox (or join it if running) and run a command in it.",
        discussion: """
            Runs COMMAND (default: your login shell) in a microVM that sees a clone of this \
            repository at the project's own path. With a terminal, the session is interactive \
            (raw mode, window size, ^C reaches the command); without one, stdin and stdout are \
            pipes. airlock exits with the command's exit status.

            Examples:
              airlock start -- claude
              airlock start --name tests -- make test
              printf 'a\\nb\\n' | airlock start -- wc -l
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Option(name: .shortAndLong, parsing: .unconditionalSingleValue, help: ArgumentHelp("Set a variable in the session.", valueName: "NAME=VALUE"))
    var env: [String] = []

    @Flag(name: .shortAndLong, help: "Show the VM's console and what airlock decides.")
    var verbose = false

    @Flag(help: "Make a new clone of the project (the old clone's work is fetched home first).")
    var fresh = false

    @Flag(name: .customLong("with-changes"), help: "Carry your uncommitted changes into a new clone, as a commit on top.")
    var withChanges = false

    @Argument(parsing: .captureForPassthrough, help: "The command to run (after --).")
    var command: [String] = []

    func validate() throws {
        for entry in env where !entry.contains("=") || entry.hasPrefix("=") {
            throw ValidationError("-e \(entry): write NAME=VALUE")
        }
    }

    func run() async throws {
        let context = try ProjectContext.load()
        let arguments = command.first == "--" ? Array(command.dropFirst()) : command
        var launcher = SessionLauncher(context: context, sandbox: sandbox, verbose: verbose, quiet: global.quiet)
        launcher.workspace = .init(fresh: fresh, withChanges: withChanges)
        let code = await launcher.start(
            command: arguments, environment: Dictionary(env.map(splitAssignment), uniquingKeysWith: { $1 }))
        throw ExitCode(code)
    }
}

func splitAssignment(_ entry: String) -> (String, String) {
    let equals = entry.firstIndex(of: "=") ?? entry.endIndex
    return (String(entry[..<equals]), equals == entry.endIndex ? "" : String(entry[entry.index(after: equals)...]))
}

/// What `start` and `exec` share: building the runner and the session spec, choosing the
/// backend, reporting errors.
struct SessionLauncher {
    var context: ProjectContext
    var sandbox: SandboxNameOption
    var verbose: Bool
    var quiet: Bool
    var workspace = SandboxRunner.WorkspaceOptions()

    func runner() throws -> SandboxRunner {
        let stderr = Terminal.standardError
        let showProgress = !quiet && (verbose || isatty(2) == 1)
        var logger = Logger(label: "airlock")
        logger.logLevel = verbose ? .info : logger.logLevel
        var progress: (@Sendable (String) -> Void)?
        if showProgress {
            progress = { message in stderr.write(stderr.style("airlock: \(message)", .dim) + "\n") }
        }
        var runner = SandboxRunner(
            paths: try sandbox.paths(in: context.project), config: context.loaded.config, environment: context.environment,
            logger: logger, progress: progress)
        runner.workspace = workspace
        runner.warn = { message in stderr.write(stderr.style("airlock: warning: ", .yellow) + message + "\n") }
        return runner
    }

    func spec(_ runner: SandboxRunner, command: [String], environment: [String: String]) -> ExecSpec {
        var size: WindowSize?
        if isatty(0) == 1 && isatty(1) == 1 {
            var rows: UInt16 = 0, columns: UInt16 = 0
            _ = airlock_get_window_size(0, &rows, &columns)
            size = WindowSize(rows: rows == 0 ? 24 : rows, columns: columns == 0 ? 80 : columns)
        }
        return runner.execSpec(command: command, extraEnvironment: environment, terminal: size, workingDirectory: currentDirectory())
    }

    /// Boots or joins the sandbox and runs the command; returns the exit status to exit with.
    func start(command: [String], environment: [String: String]) async -> Int32 {
        do {
            var runner = try runner()
            let config = context.loaded.config
            let facts = HostFacts.probe(
                environment: context.environment,
                configuredAssets: .init(kernel: config.vm.kernel, initramfs: config.vm.initramfs),
                libraries: [])
            let selection = BackendSelection.choose(config.vm.backend, on: facts)
            guard let backend = selection.backend else {
                throw SandboxError("no backend can run the sandbox: \(selection.reason)", hint: selection.missing.joined(separator: "\n  hint: "))
            }
            if verbose {
                Terminal.standardError.write("airlock: backend \(backend.rawValue): \(selection.reason)\n")
                let layers = config.vm.image == "host" ? nil : try? LayerTransport.choose(config.vm.imageLayers, backend: backend, on: facts)
                let transport = ShareTransport.explain(backend: backend, on: facts, layers: layers)
                Terminal.standardError.write("airlock: shares: \(transport)\n")
            }
            if selection.accelerator == .tcg && !quiet {
                Terminal.standardError.write(
                    Terminal.standardError.style("airlock: warning: no usable KVM; the VM runs under TCG software emulation (slow)", .yellow) + "\n")
            }
            let machine: SandboxRunner.MachineFactory
            switch backend {
            case .cloudHypervisor:
                // BackendSelection chose it, so both were found; checked again, not assumed.
                guard let cloudHypervisor = facts.cloudHypervisor?.path, let virtiofsd = facts.virtiofsd?.path else {
                    throw SandboxError("cloud-hypervisor or virtiofsd disappeared", hint: "run `airlock doctor`")
                }
                machine = { spec, egress in
                    try await CloudHypervisorMachine.start(
                        spec, cloudHypervisor: cloudHypervisor, virtiofsd: virtiofsd,
                        guestListeners: egress.map { [LinkNames.egressVsockPort: $0] } ?? [:])
                }
            case .qemu:
                guard let qemu = facts.qemu?.path else { throw SandboxError("qemu-system-x86_64 disappeared", hint: "run `airlock doctor`") }
                let vhostVsock = facts.vhostVsock == .ok
                // The Rust virtiofsd when installed (QEMU's retired C one is never used): virtio-fs
                // for every share but image layers; otherwise 9p.
                let virtiofsd = facts.virtiofsd?.path
                // Boots once per VM configuration; later starts resume that boot (BootSnapshot).
                let snapshots = config.vm.bootSnapshot ? BootSnapshot(directory: facts.cacheDirectory + "/snapshots") : nil
                let progress = runner.progress
                machine = { spec, egress in
                    try await QEMUMachine.start(
                        spec, qemu: qemu, vhostVsock: vhostVsock, virtiofsd: virtiofsd, egress: egress, snapshots: snapshots, progress: progress)
                }
            }
            try await applyImage(&runner, booting: (backend, facts), pullIfMissing: true)
            let assets = try EmbeddedAssets.locate(facts.assets, environment: context.environment)
            let ended = try await runner.run(
                spec(runner, command: command, environment: environment), selection: selection, assets: assets, machine: machine)
            if verbose { showConsole(runner.paths) }
            return ended.code
        } catch {
            return reportAndExit(error).rawValue
        }
    }

    /// For `[vm] image = "REF"`: the image's root from the store (pulled first when missing
    /// and `pullIfMissing`), noted as used by this sandbox so `image prune` keeps it.
    /// `booting`: the backend that boots the sandbox, on this host (nil when only a session's
    /// settings are wanted).
    func applyImage(_ runner: inout SandboxRunner, booting: (backend: BackendSelection.Backend, host: HostFacts)?, pullIfMissing: Bool) async throws {
        let image = context.loaded.config.vm.image
        guard image != "host" else { return }
        // Checked before a pull: a missing tar2sqfs is said at once.
        let transport = try booting.map { try LayerTransport.choose(context.loaded.config.vm.imageLayers, backend: $0.backend, on: $0.host) }
        let reference = try ImageReference(parsing: image)
        let images = try ImageContext.load(environment: context.environment, config: context.loaded.config)
        var record = images.store.record(for: reference)
        if record == nil {
            guard pullIfMissing else {
                throw SandboxError("the image \(reference) is not pulled", hint: "`airlock image pull \(image)`")
            }
            record = try await images.pull(reference, quiet: quiet)
        }
        guard let record else { return }
        runner.image = try await images.root(record, blockImagesWith: transport == .block ? booting?.host.tar2sqfs?.path : nil, quiet: quiet)
        if pullIfMissing { try images.store.recordSandbox(stateDirectory: runner.paths.stateDirectory, record: record) }
    }

    func showConsole(_ paths: SandboxPaths) {
        Terminal.standardError.write("airlock: console (\(paths.consoleLog)):\n")
        for line in tailLines(of: paths.consoleLog, count: 200) { Terminal.standardError.write("  | \(line)\n") }
    }
}
