#if canImport(Glibc)
import Glibc
#endif

// Numbers and times for people, without Foundation's formatters (they pull in ICU).

/// `812 B`, `12.3 kB`, `4.5 MB`, `1.2 GB` (decimal units).
func formatBytes(_ bytes: Int64) -> String {
    let value = Double(bytes)
    if value < 1000 { return "\(bytes) B" }
    if value < 1e6 { return formatDecimal(value / 1e3) + " kB" }
    if value < 1e9 { return formatDecimal(value / 1e6) + " MB" }
    return formatDecimal(value / 1e9) + " GB"
}

/// One decimal, without Foundation's formatters.
func formatDecimal(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

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

/// `42s`, `3m5s`, `2h10m`.
func formatDuration(_ seconds: Int64) -> String {
    if seconds < 60 { return "\(seconds)s" }
    if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60)s" }
    return "\(seconds / 3600)h\((seconds % 3600) / 60)m"
}
