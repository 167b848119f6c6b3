/// The default answer for a destination no rule names, and whether rules are consulted at all.
public enum PolicyMode: String, Sendable, CaseIterable, Codable {
    /// Everything is allowed; rules are ignored.
    case allowAlways = "allow-always"
    /// Everything is denied; rules are ignored.
    case denyAlways = "deny-always"
    /// Allowed unless a deny rule matches.
    case allowByDefault = "allow-by-default"
    /// Denied unless an allow rule matches (the default).
    case denyByDefault = "deny-by-default"
}
