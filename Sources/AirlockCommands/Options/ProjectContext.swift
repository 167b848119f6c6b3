import AirlockSystem
import ArgumentParser
import Config
import GitReview
import Logging
import NetworkPolicy
import NetworkProxy
import OCI
import Sandbox
import Secrets

/// The project in the working directory and its loaded configuration. Config errors are
/// printed with their locations and end the command with exit status 2.
struct ProjectContext {
    var project: Project
    var loaded: ConfigLoader.Result
    var environment: [String: String]
    /// The vault's values the configuration's templates read (names the environment lacks).
    var vaultValues: [String: String] = [:]

    /// `secrets`: `${NAME}`s the environment lacks are looked up in the vault (`start`, `exec`,
    /// `config validate`; never a command that prints the configuration).
    static func load(environment: [String: String] = processEnvironment(), secrets: Bool = false) throws -> ProjectContext {
        let project = Project.discover(from: currentDirectory())
        do {
            try project.ensureExcluded()
        } catch {
            Terminal.standardError.write("warning: could not add airlock's files to .git/info/exclude: \(error)\n")
        }
        // A merge or review that a crash interrupted is finished before anything else.
        if project.gitCommonDir != nil, let done = PendingCheckout.resume(repositoryAt: project.root) {
            Terminal.standardError.write("airlock: \(done)\n")
        }
        let loader = ConfigLoader.forProject(project.root, environment: environment)
        do {
            var loaded = try loader.load()
            if secrets, !loaded.config.missingVariables.isEmpty, loaded.config.vaultStorage != Vault.Storage.disabled.rawValue {
                // Only the templates see the vault's values: the environment the commands use stays the host's.
                let stored = try SecretsAccess.vault(environment: environment, storage: loaded.config.vaultStorage).load()
                let found = stored.filter { loaded.config.missingVariables.contains($0.key) }.mapValues(\.value)
                if !found.isEmpty {
                    loaded = try ConfigLoader.forProject(project.root, environment: environment.merging(found) { host, _ in host }).load()
                }
                return ProjectContext(project: project, loaded: loaded, environment: environment, vaultValues: found)
            }
            return ProjectContext(project: project, loaded: loaded, environment: environment)
        } catch {
            throw reportAndExit(error)
        }
    }

    /// The sandbox manager for this project, its messages going to stderr: progress on a
    /// terminal (or with `verbose`), notices unless `quiet`, warnings always.
    func manager(verbose: Bool = false, quiet: Bool) -> SandboxManager {
        var logger = Logger(label: "airlock")
        if verbose { logger.logLevel = min(logger.logLevel, .info) }
        var loaded = loaded
        if let port = TestOnlyOverrides.servicePort(environment) {
            for index in loaded.config.network.services.indices { loaded.config.network.services[index].service.port = port }
        }
        var manager = SandboxManager(
            project: project, loaded: loaded, environment: environment, logger: logger, reporter: .terminal(verbose: verbose, quiet: quiet),
            resolver: TestOnlyOverrides.resolver(environment) ?? SystemResolver(), images: images(quiet: quiet))
        manager.testOnlyUpstreamRoots = TestOnlyOverrides.upstreamRoots(environment)
        manager.vaultValues = vaultValues
        manager.vaultDirectory = Vault.directory(environment: environment)
        if let storage = Vault.Storage(rawValue: loaded.config.vaultStorage), storage != .disabled, manager.vaultDirectory != nil {
            manager.signInStore = { [environment] in
                let vault = try SecretsAccess.vault(environment: environment, storage: storage.rawValue)
                return SignInStore(directory: vault.directory, key: try vault.signInKey())
            }
        }
        return manager
    }

    /// The image store and registries for this configuration, asking for credentials and
    /// drawing pulls on the terminal.
    func images(quiet: Bool) -> Images {
        let stderr = Terminal.standardError
        var note: (@Sendable (String) -> Void)?
        if !quiet { note = { stderr.write("airlock: \($0)\n") } }
        return Images(
            config: loaded.config, environment: environment, credentials: CredentialPrompt.forTerminal(),
            reporter: { PullProgress(quiet: quiet) }, note: note)
    }
}

extension SandboxReporter {
    /// Messages on stderr: progress (dim) on a terminal or with `verbose`, verbose details,
    /// notices (yellow) unless `quiet`, warnings (yellow) always.
    static func terminal(verbose: Bool, quiet: Bool) -> SandboxReporter {
        let stderr = Terminal.standardError
        var reporter = SandboxReporter(warning: { stderr.write(stderr.style("airlock: warning: ", .yellow) + $0 + "\n") })
        if !quiet && (verbose || stderr.isTerminal) { reporter.progress = { stderr.write(stderr.style("airlock: \($0)", .dim) + "\n") } }
        if verbose { reporter.verbose = { stderr.write("airlock: \($0)\n") } }
        if !quiet { reporter.notice = { stderr.write(stderr.style("airlock: warning: \($0)", .yellow) + "\n") } }
        return reporter
    }
}

/// The ways tests that run the `airlock` binary bend it, read from this process's environment
/// only, never from a configuration file: `AIRLOCK_TEST_ONLY_RESOLVE = name=ip,…` answers those
/// names from the map (others from the host's resolver), so an unprivileged test can point
/// names at its servers on 127.0.0.1; `AIRLOCK_TEST_ONLY_UPSTREAM_CA = <PEM file>` is trusted
/// for intercepted upstreams besides the host's store (those servers' made-up CA).
enum TestOnlyOverrides {
    static let resolveVariable = "AIRLOCK_TEST_ONLY_RESOLVE"
    static let upstreamCAVariable = "AIRLOCK_TEST_ONLY_UPSTREAM_CA"
    /// The port of every service's API hosts (a test's stand-in cannot listen on 443).
    static let servicePortVariable = "AIRLOCK_TEST_ONLY_SERVICE_PORT"

    static func servicePort(_ environment: [String: String]) -> Int? {
        environment[servicePortVariable].flatMap { Int($0) }.flatMap { (1...65535).contains($0) ? $0 : nil }
    }

    static func upstreamRoots(_ environment: [String: String]) -> String? {
        guard let path = environment[upstreamCAVariable], !path.isEmpty else { return nil }
        return try? FileSystem.readText(path, limit: 1 << 20)
    }

    static func resolver(_ environment: [String: String]) -> StaticResolver? {
        guard let text = environment[resolveVariable], !text.isEmpty else { return nil }
        var entries: [String: [String]] = [:]
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            entries[String(pair[0]).lowercased(), default: []].append(String(pair[1]))
        }
        return StaticResolver(entries, fallback: SystemResolver())
    }
}
