#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call, on what, errno, and what it was doing when it failed
/// (`cause`, for a failure inside a larger step). The one error type below every module.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call or step: `open`, `mkdir`, `rename`, `nft -f`.
    public var call: String
    /// What it was called on: a path, a socket, a device.
    public var subject: String
    public var errno: Int32

    public init(_ call: String, _ subject: String, errno: Int32) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// The error of the call that just failed (reads `errno` now).
    public static func last(_ call: String, _ subject: String) -> SystemError {
        SystemError(call, subject, errno: Glibc.errno)
    }

    /// errno's text.
    public var reason: String { errorText(errno) }

    public var description: String {
        subject.isEmpty ? "\(call): \(reason)" : "\(call) \(subject): \(reason)"
    }
}

/// `strerror` as a String.
public func errorText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// An error for people: what happened, what to do about it (`hint`), and the underlying error
/// it came from (`cause`, kept as a value rather than flattened into the message, so callers
/// can still ask what it was). Modules define their own types (to be caught by type) and get
/// one way of printing them.
public protocol ExplainedError: Error, CustomStringConvertible {
    var message: String { get }
    var hint: String? { get }
    var cause: (any Error)? { get }
}

extension ExplainedError {
    /// `message: cause` and, on a line of its own, `hint: …`.
    public var description: String {
        var text = message
        if let cause { text += ": \(cause)" }
        if let hint { text += "\n  hint: \(hint)" }
        return text
    }

    /// The innermost cause of a given type, looking through `cause` chains.
    public func underlying<T: Error>(_ type: T.Type) -> T? {
        var next = cause
        while let current = next {
            if let found = current as? T { return found }
            next = (current as? any ExplainedError)?.cause
        }
        return nil
    }
}
