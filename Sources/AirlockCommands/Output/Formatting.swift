#if canImport(Glibc)
import Glibc
#endif

// Times for people, without Foundation's formatters (they pull in ICU). Bytes and durations
// are AirlockSystem's.

/// `2026-11-23 14:05` in local time.
func formatTime(_ seconds: Int64) -> String {
    String(formatClock(Double(seconds)).dropLast(3))
}

/// `2026-11-23 14:05:09` in local time.
func formatClock(_ seconds: Double) -> String {
    var time = time_t(seconds)
    var parts = tm()
    localtime_r(&time, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
}

extension String {
    /// Padded with spaces to `width` characters (never truncated).
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }

    /// Without trailing spaces.
    func trimmingTrailingSpaces() -> String {
        var text = self
        while text.hasSuffix(" ") { text.removeLast() }
        return text
    }
}
