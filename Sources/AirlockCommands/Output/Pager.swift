import AirlockSystem
import CShim
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// Long output through the user's pager, as git does: `$AIRLOCK_PAGER`, `$PAGER`, else
/// `less` (with `LESS=FRX` when unset: quit if one screen, keep colors, no screen clearing).
/// Only when stdout is a terminal; otherwise the text goes straight to stdout.
enum Pager {
    static func show(_ text: String, environment: [String: String]) {
        let command = environment["AIRLOCK_PAGER"] ?? environment["PAGER"] ?? "less"
        guard isatty(1) == 1, !command.isEmpty, command != "cat",
            let shell = ["/bin/sh", "/usr/bin/sh"].first(where: { (path: String) in access(path, X_OK) == 0 })
        else {
            Terminal.standardOutput.write(text)
            return
        }
        var env = environment
        if env["LESS"] == nil { env["LESS"] = "FRX" }
        if env["LV"] == nil { env["LV"] = "-c" }
        var pipe: [Int32] = [0, 0]
        guard airlock_pipe(&pipe) == 0 else {
            Terminal.standardOutput.write(text)
            return
        }
        let pid = withCStrings([shell, "-c", command]) { argv in
            withCStrings(env.map { "\($0.key)=\($0.value)" }) { envp in
                airlock_spawn(shell, UnsafeMutablePointer(mutating: argv), UnsafeMutablePointer(mutating: envp), pipe[0], -1, -1, 0)
            }
        }
        close(pipe[0])
        guard pid > 0 else {
            close(pipe[1])
            Terminal.standardOutput.write(text)
            return
        }
        // A pager that quits early closes the pipe: stop writing, don't die of SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        Terminal(fd: pipe[1]).write(text)
        close(pipe[1])
        _ = Syscall.waitStatus(pid)
    }
}

/// Colors a unified diff like git: headers bold, hunk headers cyan, additions green,
/// deletions red. Plain text when `terminal` is not colored.
func colorizeDiff(_ patch: String, for terminal: Terminal) -> String {
    guard terminal.colored else { return patch }
    var inHeader = false
    return patch.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
        if line.hasPrefix("diff --git ") { inHeader = true }
        if line.hasPrefix("@@") {
            inHeader = false
            return terminal.style(String(line), .cyan)
        }
        if inHeader { return terminal.style(String(line), .bold) }
        if line.hasPrefix("+") { return terminal.style(String(line), .green) }
        if line.hasPrefix("-") { return terminal.style(String(line), .red) }
        return String(line)
    }.joined(separator: "\n")
}
