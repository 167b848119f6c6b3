import OCI

#if canImport(Glibc)
import Glibc
#endif

/// Asks for a registry's user name and password on the terminal: the question on stderr, the
/// answer from stdin, the password without echo. Only when both are a terminal; the answer
/// lives in memory for this command and is never written anywhere.
enum CredentialPrompt {
    /// The prompt for `RegistryClient.Options.prompt`, or nil when nobody can be asked.
    static func forTerminal() -> (@Sendable (String) -> Credentials?)? {
        guard isatty(0) == 1, isatty(2) == 1 else { return nil }
        return { registry in ask(registry) }
    }

    static func ask(_ registry: String) -> Credentials? {
        let err = Terminal.standardError
        err.write("\(registry) wants a user name and password (nothing is saved).\n")
        err.write("Username for \(registry): ")
        guard let user = readLine(fd: 0), !user.isEmpty else {
            err.write("\n")
            return nil
        }
        let password = hidden("Password for \(user)@\(registry): ")
        guard let password else { return nil }
        return Credentials(username: user, password: password)
    }

    /// Asks `question` on stderr and reads one line from stdin (a terminal) without echo, which
    /// comes back on even when a signal ends the program meanwhile; nil at end of input.
    static func hidden(_ question: String) -> String? {
        Terminal.standardError.write(question)
        var saved = termios()
        let canHide = tcgetattr(0, &saved) == 0
        var previousHandlers: [(Int32, __sighandler_t?)] = []
        if canHide {
            // ^C (or a hang-up) while the answer is typed must not leave the terminal mute.
            terminalWithEcho = saved
            for number in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
                let previous = signal(number, restoreEchoAndRaise)
                if isIgnored(previous) { signal(number, previous) }
                previousHandlers.append((number, previous))
            }
            var hidden = saved
            hidden.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(0, TCSAFLUSH, &hidden)
        }
        let answer = readLine(fd: 0)
        if canHide {
            tcsetattr(0, TCSAFLUSH, &saved)
            for (number, previous) in previousHandlers { signal(number, previous) }
        }
        Terminal.standardError.write("\n")
        return answer
    }

    private static func isIgnored(_ handler: __sighandler_t?) -> Bool {
        handler.map { unsafeBitCast($0, to: Int.self) == 1 } ?? false  // SIG_IGN is (handler)1
    }

    /// One line from `fd` (a terminal in canonical mode), without its newline; nil at end of
    /// input. At most 4 KiB.
    static func readLine(fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while bytes.count < 4096 {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { break }
            bytes.append(byte)
        }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The terminal's settings from before a hidden prompt turned echo off, for the handler.
nonisolated(unsafe) private var terminalWithEcho = termios()

/// A signal during a hidden prompt: echo back on, then the signal's default action.
private func restoreEchoAndRaise(_ number: Int32) {
    tcsetattr(0, TCSANOW, &terminalWithEcho)
    signal(number, SIG_DFL)
    raise(number)
}
