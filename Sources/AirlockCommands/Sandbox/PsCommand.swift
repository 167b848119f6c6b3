import ArgumentParser
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List this project's sandboxes: name, state, backend, accelerator, uptime."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print a JSON array, one object per sandbox.")
    var json = false

    struct Row: Encodable {
        var name: String
        var state: String
        var backend: String?
        var accelerator: String?
        var uptimeSeconds: Int64?
        var pid: Int32?
        var project: String
    }

    func run() throws {
        let project = Project.discover(from: currentDirectory())
        let root = project.root + "/.airlock"
        var rows: [Row] = []
        for name in directoryEntries(root) where !name.hasPrefix(".") && isDirectory(root + "/" + name) {
            guard let paths = try? SandboxPaths(project: project, name: name) else { continue }
            let running = SandboxLock.isHeld(paths.lockFile)
            let state = running ? (try? LocalFiles().readText(paths.stateFile)).flatMap { $0.flatMap(SandboxState.init(text:)) } : nil
            rows.append(
                Row(
                    name: name, state: running ? "running" : "stopped", backend: state?.backend, accelerator: state?.accelerator,
                    uptimeSeconds: state.map { Int64(time(nil)) - $0.startedAt }, pid: state?.pid, project: project.root))
        }
        if json {
            try printJSON(rows)
            return
        }
        let out = Terminal.standardOutput
        guard !rows.isEmpty else {
            out.write("no sandboxes in \(project.root); `airlock start` creates one\n")
            return
        }
        let table =
            [["NAME", "STATE", "BACKEND", "ACCEL", "UPTIME", "PROJECT"]]
            + rows.map {
                [$0.name, $0.state, $0.backend ?? "-", $0.accelerator ?? "-", $0.uptimeSeconds.map(formatDuration) ?? "-", $0.project]
            }
        let widths = (0..<6).map { column in table.map { $0[column].count }.max() ?? 0 }
        for row in table {
            out.write(zip(row, widths).map { $0.padding(to: $1) }.joined(separator: "  ").trimmingTrailingSpaces() + "\n")
        }
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var text = self
        while text.hasSuffix(" ") { text.removeLast() }
        return text
    }
}
