import Clibgit2

/// A libgit2 call failed: which operation, and libgit2's own message (read in the same call).
public struct GitError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var message: String

    public var description: String { "\(operation): \(message)" }

    /// Throws with libgit2's last error when `code` is negative.
    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(GitError) {
        guard code < 0 else { return }
        let message = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "error \(code)"
        throw GitError(operation: operation(), code: code, message: message)
    }
}

/// A review flow (fetch, diff, review, merge) cannot go on: what happened and how to fix it.
public struct GitReviewError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var hint: String?

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }

    init(_ error: GitError, hint: String? = nil) {
        self.init(error.description, hint: hint)
    }

    public var description: String { hint.map { "\(message)\n  hint: \($0)" } ?? message }
}

/// libgit2 must be initialised once per process before use.
enum LibGit2Runtime {
    static let initialised: Bool = {
        git_libgit2_init()
        return true
    }()
}

extension String {
    /// Without leading and trailing spaces, tabs and line ends.
    var trimmed: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
