import AirlockSystem

/// Everything the OCI module reports. Each case carries what happened, on which object, and a
/// hint the command prints under it; nothing here is a programming error.
public struct OCIError: ExplainedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The reference does not parse.
        case reference
        /// The registry could not be reached or the connection broke (retried first).
        case transport
        /// 401/403 or a failed token exchange.
        case authentication
        /// 404: no such repository, tag or blob.
        case notFound
        /// Another unexpected HTTP status.
        case status
        /// A manifest, index or config that is malformed or not for this platform.
        case manifest
        /// Content that does not match its digest or its announced size.
        case integrity
        /// A layer that tries to escape its directory or is otherwise refused.
        case hostileLayer
        /// A layer that libarchive cannot read (truncated, bad compression).
        case archive
        /// The local store (disk full, permissions, lock held too long).
        case store
    }

    public var kind: Kind
    public var message: String
    /// The error it came from (a file-system call, a transport failure).
    public var cause: (any Error)?
    public var hint: String?

    public init(_ kind: Kind, _ message: String, cause: (any Error)? = nil, hint: String? = nil) {
        self.kind = kind
        self.message = message
        self.cause = cause
        self.hint = hint
    }

    /// Equal in kind, message and hint (causes are not compared).
    public static func == (lhs: OCIError, rhs: OCIError) -> Bool {
        lhs.kind == rhs.kind && lhs.message == rhs.message && lhs.hint == rhs.hint
    }
}
