import AirlockSystem
import Crypto
import FoundationEssentials
import NetworkPolicy
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The sign-ins made inside sandboxes: the real tokens each provider answered, with the
/// surrogates the sandboxes got instead. One store for all of the user's sandboxes (a sign-in
/// or sign-out in one is seen by all), in the vault's directory, which no mount may show.
///
/// `sign-ins.sealed` holds the grants, ChaCha20-Poly1305 under the vault's sign-in key
/// (`Vault.signInKey`); `sign-ins.json` beside it what `airlock ps` shows (account, scopes,
/// times), no token. Every change is made under `flock` on `sign-ins.lock` and written whole
/// (a temporary file renamed over); every read takes the file as it is now: it is opened again
/// only when it changed (another inode, size or time), since the API hosts read it per request.
public final class SignInStore: Sendable {
    public struct Grant: Codable, Sendable, Equatable {
        public var service: String
        public var clientID: String
        public var scopes: [String]
        public var account: String?
        public var access: String
        public var refresh: String?
        public var accessSurrogate: String
        public var refreshSurrogate: String?
        /// Seconds since 1970.
        public var expiresAt: Int64?
        public var savedAt: Int64
    }

    /// What `airlock ps` shows of a sign-in.
    public struct Summary: Codable, Sendable, Equatable {
        public var service: String
        public var account: String?
        public var scopes: [String]
        public var savedAt: Int64
        public var expiresAt: Int64?
    }

    struct Document: Codable, Sendable {
        var version = 1
        var grants: [Grant] = []
    }

    public let directory: String
    private let key: SymmetricKey
    /// The file last opened, by what `stat` says of it, and what it held.
    private let opened = Mutex<(identity: [Int], document: Document)?>(nil)
    static let label = Array("airlock sign-ins v1".utf8)

    public init(directory: String, key: [UInt8]) {
        self.directory = directory
        self.key = SymmetricKey(data: key)
    }

    var sealedPath: String { directory + "/sign-ins.sealed" }
    public static func summaryPath(directory: String) -> String { directory + "/sign-ins.json" }

    /// Every grant; none when the store does not exist yet.
    public func grants() throws -> [Grant] { try read().grants }

    /// The grant whose access (or refresh) surrogate this is.
    public func grant(access surrogate: String) throws -> Grant? {
        try grants().first { $0.accessSurrogate == surrogate }
    }

    public func grant(refresh surrogate: String) throws -> Grant? {
        try grants().first { $0.refreshSurrogate == surrogate }
    }

    /// Changes the store under its lock; what `change` returns.
    @discardableResult
    public func update<T>(_ change: (inout [Grant]) throws -> T) throws -> T {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let lock = open(directory + "/sign-ins.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw InterceptionError("cannot open \(directory)/sign-ins.lock: \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 && errno == EINTR {}
        var document = try read()
        let result = try change(&document.grants)
        let plain = try JSONEncoder().encode(document)
        let sealed = try ChaChaPoly.seal(plain, using: key, authenticating: Self.label).combined
        try FileSystem.writeAtomically(sealedPath, Array(sealed), mode: 0o600)
        let summaries = document.grants.map {
            Summary(service: $0.service, account: $0.account, scopes: $0.scopes, savedAt: $0.savedAt, expiresAt: $0.expiresAt)
        }
        try FileSystem.writeAtomically(Self.summaryPath(directory: directory), Array(try JSONEncoder().encode(summaries)), mode: 0o600)
        return result
    }

    /// The summaries `airlock ps` shows (no key needed, no token in them).
    public static func summaries(directory: String) -> [Summary] {
        guard let bytes = try? FileSystem.read(summaryPath(directory: directory), limit: 1 << 20) else { return [] }
        return (try? JSONDecoder().decode([Summary].self, from: Data(bytes))) ?? []
    }

    /// The file's identity: a write (a new file renamed over) changes its inode and times.
    private func identity() -> [Int]? {
        var info = stat()
        guard stat(sealedPath, &info) == 0 else { return nil }
        return [
            Int(info.st_dev), Int(info.st_ino), Int(info.st_size), info.st_mtim.tv_sec, info.st_mtim.tv_nsec, info.st_ctim.tv_sec,
            info.st_ctim.tv_nsec,
        ]
    }

    private func read() throws -> Document {
        let before = identity()
        if let before, let known = opened.withLock({ $0 }), known.identity == before { return known.document }
        guard let bytes = try FileSystem.read(sealedPath, limit: 4 << 20) else { return Document() }
        do {
            let plain = try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: bytes), using: key, authenticating: Self.label)
            let document = try JSONDecoder().decode(Document.self, from: plain)
            // Kept only when the same file was there before and after the read.
            if let before, identity() == before { opened.withLock { $0 = (before, document) } }
            return document
        } catch {
            throw InterceptionError(
                "the sign-ins' store \(sealedPath) cannot be opened with the vault's key (\(error))",
                hint: "remove it (every sandbox signs in again); it is sealed with a key kept in the vault")
        }
    }
}
