import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// stdout or stderr, with ANSI styling only when it is a terminal and `NO_COLOR` is unset.
struct Terminal: Sendable {
    let fd: Int32
    let colored: Bool
    /// The file descriptor is a terminal.
    var isTerminal: Bool { isatty(fd) == 1 }

    static let standardOutput = Terminal(fd: 1)
    static let standardError = Terminal(fd: 2)

    init(fd: Int32) {
        self.fd = fd
        self.colored = isatty(fd) == 1 && getenv("NO_COLOR") == nil && getenv("TERM").map { String(cString: $0) } != "dumb"
    }

    enum Style: String {
        case red = "31", green = "32", yellow = "33", cyan = "36", bold = "1", dim = "2"
    }

    func style(_ text: String, _ style: Style) -> String {
        colored ? "\u{1B}[\(style.rawValue)m\(text)\u{1B}[0m" : text
    }

    /// Writes all of `text`; a closed reader (a pager that quit) is not an error worth more.
    /// On a terminal in raw mode (a session is attached to it), a message starts on a line of
    /// its own and each line ends with "\r\n", as the terminal no longer adds the return.
    func write(_ text: String) {
        var settings = termios()
        if tcgetattr(fd, &settings) == 0, settings.c_oflag & tcflag_t(OPOST) == 0 {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
            try? Syscall.writeAll(fd, Array(("\r" + lines).utf8), subject: "output")
            return
        }
        try? Syscall.writeAll(fd, Array(text.utf8), subject: "output")
    }

    /// Colours "error:" and "hint:" in compiler-style diagnostics.
    func styleDiagnostics(_ text: String) -> String {
        guard colored else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            if let range = line.firstRange(of: "error:") {
                return String(line[..<range.lowerBound]) + style("error:", .red) + String(line[range.upperBound...])
            }
            if let range = line.firstRange(of: "hint:") {
                return String(line[..<range.lowerBound]) + style("hint:", .yellow) + String(line[range.upperBound...])
            }
            return String(line)
        }.joined(separator: "\n")
    }
}
