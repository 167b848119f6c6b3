/// Expands `${HOST_VAR}` and `${HOST_VAR:default}` in `[env]` values from the host environment.
///
/// `${VAR}` is the host's value (empty when set empty; an unset one is refused at start, see
/// `requiredVariables`). `${VAR:default}` is the host's value when set and non-empty, otherwise
/// `default` (as the shell's `${VAR:-default}`). `$$` is a literal `$`; any other `$` is kept as
/// written.
public enum EnvTemplate {
    public struct SyntaxError: Error, Sendable, Equatable {
        public var message: String
    }

    /// Names of the host variables `template` reads, in order.
    public static func variables(in template: String) throws(SyntaxError) -> [String] {
        var names: [String] = []
        _ = try expand(template) { name in
            names.append(name)
            return nil
        }
        return names
    }

    /// Names of the host variables `template` reads without a default: the value is
    /// incomplete when one of them is unset.
    public static func requiredVariables(in template: String) throws(SyntaxError) -> [String] {
        var names: [String] = []
        _ = try expand(template, lookup: { _ in nil }, required: { names.append($0) })
        return names
    }

    public static func expand(_ template: String, lookup: (String) -> String?) throws(SyntaxError) -> String {
        try expand(template, lookup: lookup, required: { _ in })
    }

    private static func expand(
        _ template: String, lookup: (String) -> String?, required: (String) -> Void
    ) throws(SyntaxError) -> String {
        var output = ""
        var rest = Substring(template)
        while let dollar = rest.firstIndex(of: "$") {
            output += rest[..<dollar]
            let after = rest[rest.index(after: dollar)...]
            if after.hasPrefix("$") {
                output += "$"
                rest = after.dropFirst()
            } else if after.hasPrefix("{") {
                guard let close = after.firstIndex(of: "}") else {
                    throw SyntaxError(message: "`${` is never closed with `}` in \"\(template)\"; write `$$` for a literal `$`")
                }
                let body = after[after.index(after: after.startIndex)..<close]
                let name: Substring
                let fallback: Substring?
                if let colon = body.firstIndex(of: ":") {
                    name = body[..<colon]
                    fallback = body[body.index(after: colon)...]
                } else {
                    name = body
                    fallback = nil
                }
                guard let first = name.first, first == "_" || (first.isASCII && first.isLetter),
                    name.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) })
                else {
                    throw SyntaxError(message: "`${\(body)}` does not name an environment variable (letters, digits, `_`) in \"\(template)\"")
                }
                let value = lookup(String(name))
                if let fallback {
                    output += (value?.isEmpty ?? true) ? String(fallback) : (value ?? "")
                } else {
                    required(String(name))
                    output += value ?? ""
                }
                rest = after[after.index(after: close)...]
            } else {
                output += "$"
                rest = after
            }
        }
        output += rest
        return output
    }
}
