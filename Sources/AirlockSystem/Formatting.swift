// Numbers and times for people, without Foundation's formatters (they pull in ICU).

/// `812 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`, `3.0 TB` (decimal units, one decimal).
public func formatBytes(_ bytes: Int64) -> String {
    let value = Double(bytes)
    if value < 1000 { return "\(bytes) B" }
    if value < 1e6 { return formatDecimal(value / 1e3) + " kB" }
    if value < 1e9 { return formatDecimal(value / 1e6) + " MB" }
    if value < 1e12 { return formatDecimal(value / 1e9) + " GB" }
    return formatDecimal(value / 1e12) + " TB"
}

public func formatBytes(_ bytes: UInt64) -> String {
    formatBytes(Int64(clamping: bytes))
}

public func formatBytes(_ bytes: Int) -> String {
    formatBytes(Int64(bytes))
}

/// One decimal: `4.5`.
public func formatDecimal(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

/// `42s`, `3m5s`, `2h10m`.
public func formatDuration(_ seconds: Int64) -> String {
    if seconds < 60 { return "\(seconds)s" }
    if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60)s" }
    return "\(seconds / 3600)h\((seconds % 3600) / 60)m"
}

extension Duration {
    /// Whole milliseconds (truncated).
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// For messages: `2 s`, `0.3 s`.
    public var text: String {
        let value = seconds
        return (value == value.rounded() ? String(Int64(value)) : String(value)) + " s"
    }

    /// Seconds as a Double (for messages and C APIs that take seconds).
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension String {
    /// Without leading and trailing white space (spaces, tabs, line ends).
    public func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return String(slice)
    }
}
