import AirlockSystem
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

/// A review flow (fetch, diff, review, merge) cannot go on: what happened, the error it came
/// from, and how to fix it.
public struct GitReviewError: ExplainedError, Sendable {
    public var message: String
    public var cause: (any Error)?
    public var hint: String?

    public init(_ message: String, cause: (any Error)? = nil, hint: String? = nil) {
        self.message = message
        self.cause = cause
        self.hint = hint
    }

    init(_ error: GitError, hint: String? = nil) {
        self.init(error.description, hint: hint)
    }
}

/// libgit2 must be initialised once per process before use.
enum LibGit2Runtime {
    static let initialised: Bool = {
        git_libgit2_init()
        return true
    }()
}
