import ArgumentParser
import GuestLink
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Power a running sandbox off (its disk and clone stay for the next start)."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    func run() async throws {
        let context = try ProjectContext.load()
        do {
            let paths = try sandbox.paths(in: context.project)
            guard try await stop(paths, environment: context.environment) else {
                if !global.quiet { Terminal.standardError.write("sandbox \(paths.name) is not running\n") }
                return
            }
            if !global.quiet { Terminal.standardError.write("stopped sandbox \(paths.name)\n") }
        } catch {
            throw reportAndExit(error)
        }
    }
}

/// Asks the guest to power off through the attach socket; if the owner is still there after a
/// while, SIGTERM to it (the VMM dies with it). Returns false when it was not running.
func stop(_ paths: SandboxPaths, environment: [String: String]) async throws -> Bool {
    guard SandboxLock.isHeld(paths.lockFile) else { return false }
    try? writeFileAtomically(paths.stopMarker, "\(getpid())\n")
    if let client = try? await LinkClient.connect(unixSocket: paths.attachSocket(environment: environment)) {
        _ = try? await client.call(LinkNames.Path.powerOff, body: .init())
        await client.close()
    }
    for attempt in 0..<300 {
        if !SandboxLock.isHeld(paths.lockFile) { return true }
        if attempt == 100, let text = (try? LocalFiles().readText(paths.stateFile)) ?? nil, let state = SandboxState(text: text) {
            kill(state.pid, SIGTERM)
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw SandboxError("sandbox \(paths.name) did not stop within 15 s", hint: "its process may be stuck; see `airlock ps` for its pid")
}
