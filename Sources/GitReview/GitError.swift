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

/// libgit2 must be initialised once per process before use.
enum LibGit2Runtime {
    static let initialised: Bool = {
        git_libgit2_init()
        return true
    }()
}
