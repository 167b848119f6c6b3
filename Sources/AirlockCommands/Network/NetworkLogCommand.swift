import AirlockSystem
import ArgumentParser
// FoundationEssentials for the JSON coders only (no ICU).
import FoundationEssentials
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

struct NetworkLogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Show the network decisions of a sandbox: time, verdict, destination, rule, bytes.",
        discussion: "Reads .airlock/<name>/audit.jsonl. With --follow, waits for new decisions until Ctrl-C."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sandbox: SandboxNameOption

    @Flag(name: .shortAndLong, help: "Keep printing decisions as they are made, until interrupted.")
    var follow = false

    /// JSON: one object per decision and line (the audit log's own lines), so --follow streams.
    @OptionGroup var output: FormatOption

    func run() async throws {
        let json = output.isJSON
        let project = Project.discover(from: currentDirectory())
        let paths: SandboxPaths
        do {
            paths = try SandboxPaths(project: project, name: sandbox.name)
            guard FileSystem.isDirectory(paths.stateDirectory) else {
                throw SandboxError("this project has no sandbox \(paths.name)", hint: "`airlock ps` lists the sandboxes")
            }
        } catch {
            throw reportAndExit(error)
        }
        let renderer = NetworkLogRenderer(json: json, terminal: .standardOutput)
        var printedHeader = false
        var printedAny = false
        func show(_ batch: [AuditEvent]) {
            let events = batch.filter { $0.event == "network" }
            guard !events.isEmpty else { return }
            if !json && !printedHeader {
                Terminal.standardOutput.write(renderer.header())
                printedHeader = true
            }
            Terminal.standardOutput.write(events.map(renderer.line).joined())
            printedAny = true
        }
        // The rotated file first, then the current one, streamed (never the whole log in memory).
        var previous = AuditTail(path: paths.auditLog.previousPath)
        previous.readNew(show)
        var current = AuditTail(path: paths.auditLog.path)
        while true {
            current.readNew(show)
            guard follow else { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        if !printedAny && !json {
            Terminal.standardError.write("sandbox \(paths.name): no network decisions yet\n")
        }
    }
}

/// Table rows or JSON lines for network events.
struct NetworkLogRenderer {
    let json: Bool
    let terminal: Terminal

    static let columns = ["TIME", "VERDICT", "DESTINATION", "IP", "RULE", "UP", "DOWN"]
    static let widths = [19, 11, 40, 16, 20, 8, 8]

    func header() -> String {
        row(Self.columns)
    }

    func line(_ event: AuditEvent) -> String {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return ((try? encoder.encode(event)).map { String(decoding: $0, as: UTF8.self) } ?? "{}") + "\n"
        }
        func text(_ key: String) -> String? {
            if case .text(let value)? = event.details[key] { return value }
            return nil
        }
        func number(_ key: String) -> Int64? {
            if case .number(let value)? = event.details[key] { return value }
            return nil
        }
        let port = number("port").map(String.init) ?? "?"
        let host = text("name") ?? text("ip") ?? "?"
        // A Unix-socket forward has a host socket, not a name and port.
        let destination = text("socket").map { "unix:" + $0 } ?? (host.contains(":") ? "[\(host)]" : host) + ":" + port
        let verdict = text("verdict") ?? "?"
        let style: Terminal.Style =
            switch verdict {
            case "allow", "passthrough": .green
            case "forward": .cyan
            case "refused", "invalid": .yellow
            default: .red
            }
        var cells = [
            formatClock(event.time), verdict, destination, text("ip") ?? "-", text("rule") ?? "(policy)",
            number("bytes_up").map(formatBytes) ?? "-", number("bytes_down").map(formatBytes) ?? "-",
        ]
        // The verdict is styled after padding, so escape codes don't break the columns.
        cells[1] = cells[1].padding(to: Self.widths[1])
        var result = row(cells, styled: { index, cell in index == 1 ? terminal.style(cell, style) : cell })
        if verdict != "allow" && verdict != "passthrough" && verdict != "forward", let reason = text("reason") {
            let repeated = number("repeated").map { " (\($0) more like it until \(formatClock(event.time)))" } ?? ""
            result += "    " + terminal.style(reason + repeated, .dim) + "\n"
        }
        return result
    }

    private func row(_ cells: [String], styled: (Int, String) -> String = { $1 }) -> String {
        var parts: [String] = []
        for (index, cell) in cells.enumerated() {
            let width = Self.widths[index]
            let fitted = cell.count > width ? String(cell.prefix(width - 1)) + "…" : cell.padding(to: width)
            parts.append(styled(index, fitted))
        }
        return parts.joined(separator: " ").trimmingTrailingSpaces() + "\n"
    }
}
