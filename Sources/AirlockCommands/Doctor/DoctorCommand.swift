import AirlockSystem
import ArgumentParser
import Config
import GitReview
import Sandbox

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check whether this host can run sandboxes, and say how to fix what it lacks.",
        discussion: """
            One line per check: pass, warn or fail; every warning and failure comes with the \
            exact fix. Exits 1 when no backend can run a sandbox here.
            """
    )

    @OptionGroup var global: GlobalOptions

    @OptionGroup var output: FormatOption

    func run() throws {
        let environment = processEnvironment()
        var configCheck: Doctor.Check
        var requested = AirlockConfig.Backend.auto
        var commandChecks: [Doctor.Check] = []
        var configured = GuestAssets.Configured()
        let project = Project.discover(from: currentDirectory())
        let loader = ConfigLoader.forProject(project.root, environment: environment)
        do {
            let loaded = try loader.load()
            requested = loaded.config.vm.backend
            commandChecks = Doctor.commands(loaded.config.commands, path: environment["PATH"] ?? "", image: loaded.config.vm.image)
            configured = GuestAssets.Configured(kernel: loaded.config.vm.kernel, initramfs: loaded.config.vm.initramfs)
            let files = loaded.layers.map(\.displayPath)
            configCheck = Doctor.Check(
                id: "config", status: .pass, summary: files.isEmpty ? "no config files; using defaults" : "loaded " + files.joined(separator: ", "),
                fix: nil)
        } catch {
            configCheck = Doctor.Check(
                id: "config", status: .fail,
                summary: "the configuration has \(error.diagnostics.count) error(s): \(error.diagnostics[0].description.split(separator: "\n")[0])",
                fix: "run `airlock config validate` for every error with its location")
        }

        let facts = HostFacts.probe(
            environment: environment, configuredAssets: configured,
            libraries: [HostFacts.Library(name: "libgit2", version: LibGit2.version)] + HostFacts.Library.systemLibraries)
        var report = Doctor.examine(facts, requested: requested)
        report.checks.insert(contentsOf: [configCheck] + commandChecks, at: 0)

        try Render.emit(report.checks, format: output) {
            let out = Terminal.standardOutput
            let width = report.checks.map(\.id.count).max() ?? 0
            return report.checks.map { check in
                let mark =
                    switch check.status {
                    case .pass: out.style("pass", .green)
                    case .warn: out.style("warn", .yellow)
                    case .fail: out.style("fail", .red)
                    }
                var text = "\(mark)  \(check.id.padding(to: width))  \(check.summary)\n"
                if let fix = check.fix, check.status != .pass {
                    text += "      \(String(repeating: " ", count: width))  \(out.style("fix:", .bold)) \(fix)\n"
                }
                return text
            }.joined()
        }
        if !report.canRunSandbox { throw ExitCode(1) }
    }
}
