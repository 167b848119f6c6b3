import ArgumentParser
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

    @Flag(help: "Print the checks as a JSON array, one object per check.")
    var json = false

    func run() throws {
        let environment = ProcessEnvironment.current
        var configCheck: Doctor.Check
        var requested = AirlockConfig.Backend.auto
        var configured = GuestAssets.Configured()
        let project = Project.discover(from: currentDirectory())
        let loader = ConfigLoader(
            projectRoot: project.root, userConfigPath: ConfigLoader.userConfigPath(environment: environment), environment: environment)
        do {
            let loaded = try loader.load()
            requested = loaded.config.vm.backend
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
        report.checks.insert(configCheck, at: 0)

        if json {
            try printJSON(report.checks)
        } else {
            let out = Terminal.standardOutput
            let width = report.checks.map(\.id.count).max() ?? 0
            for check in report.checks {
                let mark =
                    switch check.status {
                    case .pass: out.style("pass", .green)
                    case .warn: out.style("warn", .yellow)
                    case .fail: out.style("fail", .red)
                    }
                out.write("\(mark)  \(check.id.padding(to: width))  \(check.summary)\n")
                if let fix = check.fix, check.status != .pass {
                    out.write("      \(String(repeating: " ", count: width))  \(out.style("fix:", .bold)) \(fix)\n")
                }
            }
        }
        if !report.canRunSandbox { throw ExitCode(1) }
    }
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
