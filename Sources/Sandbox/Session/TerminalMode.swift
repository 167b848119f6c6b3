#if canImport(Glibc)
import Glibc
#endif

/// Puts a terminal in raw mode and gives it back as it was.
public final class RawTerminal: @unchecked Sendable {
    // @unchecked: `saved` is written once in init and read in restore; restore is idempotent
    // and only called from the owning session's task or the process's exit path.
    private let fd: Int32
    private var saved = termios()
    private var active = false

    public init?(fd: Int32) {
        guard isatty(fd) == 1, tcgetattr(fd, &saved) == 0 else { return nil }
        self.fd = fd
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSAFLUSH, &raw) == 0 else { return nil }
        active = true
    }

    public func restore() {
        guard active else { return }
        active = false
        tcsetattr(fd, TCSAFLUSH, &saved)
    }

    deinit { restore() }
}
