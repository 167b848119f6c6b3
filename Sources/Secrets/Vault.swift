import AirlockSystem
import Crypto
import CryptoExtras
import FoundationEssentials

/// Named secret values kept outside the shell's environment, for `${NAME}` templates: the host
/// environment first, then the vault. Where and how they are stored is `Storage`:
///
/// - `file` (the default): `vault.json`, mode 0600, in `$XDG_DATA_HOME/airlock` (else
///   `~/.local/share/airlock`). As safe as the user's account, like `~/.docker/config.json`.
/// - `encrypted-file`: `vault.enc.json` there, ChaCha20-Poly1305 under a key derived with scrypt
///   (N 2^15, r 8, p 1) from a passphrase asked on the terminal or read from
///   `AIRLOCK_VAULT_PASSPHRASE`; nothing on disk is plaintext.
/// - `keyring`: one item of the desktop's Secret Service (`Keyring`), as the Rust airlock's
///   default; unlocked with the user's session.
/// - `disabled`: no vault; templates read the environment only.
///
/// Every write is whole (a temporary file renamed over), 0600. No value is ever printed: `list`
/// shows a masked preview.
public struct Vault: Sendable {
    public enum Storage: String, Sendable, CaseIterable {
        case file
        case encryptedFile = "encrypted-file"
        case keyring
        case disabled
    }

    public struct Entry: Sendable, Equatable, Codable {
        public var value: String
        public var savedAt: Date

        enum CodingKeys: String, CodingKey {
            case value
            case savedAt = "saved_at"
        }
    }

    public var storage: Storage
    /// The directory of the vault's file.
    public var directory: String
    /// The passphrase of an encrypted vault, when it is needed (asked, or from the environment).
    public var passphrase: @Sendable () throws(VaultError) -> String
    /// The user's environment: where `keyring` finds the session's Secret Service.
    public var environment: [String: String]

    public init(
        storage: Storage, directory: String, environment: [String: String] = [:], passphrase: @escaping @Sendable () throws(VaultError) -> String
    ) {
        self.storage = storage
        self.directory = directory
        self.environment = environment
        self.passphrase = passphrase
    }

    /// `$XDG_DATA_HOME/airlock`, else `~/.local/share/airlock`.
    public static func directory(environment: [String: String]) -> String? {
        if let xdg = environment["XDG_DATA_HOME"], xdg.hasPrefix("/") { return xdg + "/airlock" }
        if let home = environment["HOME"], home.hasPrefix("/") { return home + "/.local/share/airlock" }
        return nil
    }

    public var path: String {
        directory + (storage == .encryptedFile ? "/vault.enc.json" : "/vault.json")
    }

    /// Where the vault is, for messages.
    public var location: String { storage == .keyring ? Keyring.description : path }

    /// Names as `${NAME}` reads them: `[A-Z_][A-Z0-9_]*`, at most 128.
    public static func validate(name: String) throws(VaultError) {
        let bytes = Array(name.utf8)
        let valid =
            !bytes.isEmpty && bytes.count <= 128 && !(bytes[0] >= UInt8(ascii: "0") && bytes[0] <= UInt8(ascii: "9"))
            && bytes.allSatisfy {
                ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                    || $0 == UInt8(ascii: "_")
            }
        guard valid else {
            throw VaultError(
                "\"\(name)\" is not a secret's name", hint: "use capital letters, digits and `_`, not starting with a digit (as in ${NAME})")
        }
    }

    /// What a list shows of a value: `****` and, for longer ones, its last characters.
    public static func preview(_ value: String) -> String {
        let count = value.count
        let shown = count >= 16 ? 4 : count >= 8 ? 2 : 0
        return "****" + value.suffix(shown)
    }

    /// Every secret; an empty vault when its file does not exist yet.
    public func load() throws(VaultError) -> [String: Entry] {
        try loadDocument().secrets
    }

    public func save(_ secrets: [String: Entry]) throws(VaultError) {
        var document = try loadDocument()
        document.secrets = secrets
        try save(document)
    }

    /// The key that seals the sign-ins' store (32 bytes): made on first use and kept in the
    /// vault beside the secrets, never one of them (no `${NAME}` reaches it, no list shows it).
    public func signInKey() throws(VaultError) -> [UInt8] {
        var document = try loadDocument()
        if let stored = document.signInKey, let key = Data(base64Encoded: stored), key.count == 32 { return Array(key) }
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        document.signInKey = Data(key).base64EncodedString()
        try save(document)
        return key
    }

    private func loadDocument() throws(VaultError) -> Document {
        guard storage != .disabled else {
            throw VaultError("the vault is disabled ([vault] storage = \"disabled\")", hint: "set [vault] storage in your user config to use it")
        }
        let bytes: [UInt8]
        if storage == .keyring {
            guard let stored = try Keyring(environment: environment).read() else { return Document(secrets: [:]) }
            bytes = stored
        } else {
            do {
                guard let read = try FileSystem.read(path, limit: 16 << 20) else { return Document(secrets: [:]) }
                bytes = read
            } catch {
                throw VaultError("cannot read the vault \(path): \(error)", hint: "check the file's permissions")
            }
        }
        let plain = try storage == .encryptedFile ? open(bytes) : bytes
        do {
            return try JSONDecoder.vault.decode(Document.self, from: Data(plain))
        } catch {
            throw VaultError(
                "the vault in \(location) is damaged: \(error)", hint: "restore it from a backup, or remove it and add the secrets again")
        }
    }

    private func save(_ document: Document) throws(VaultError) {
        guard storage != .disabled else { throw VaultError("the vault is disabled ([vault] storage = \"disabled\")") }
        let plain: [UInt8]
        do {
            plain = Array(try JSONEncoder.vault.encode(document))
        } catch {
            throw VaultError("cannot encode the vault: \(error)")
        }
        if storage == .keyring { return try Keyring(environment: environment).write(plain, logDirectory: directory) }
        let bytes = try storage == .encryptedFile ? seal(plain) : plain
        do {
            try FileSystem.makeDirectories(directory, mode: 0o700)
            try FileSystem.writeAtomically(path, bytes, mode: 0o600)
        } catch {
            throw VaultError("cannot write the vault \(path): \(error)", hint: "check the directory's permissions and free space")
        }
    }

    public func add(_ name: String, value: String) throws(VaultError) {
        try Self.validate(name: name)
        guard !value.isEmpty else {
            throw VaultError("an empty value is not a secret", hint: "give the value, or remove the secret with `airlock secrets rm \(name)`")
        }
        guard value.utf8.count <= 64 << 10 else { throw VaultError("the value is over 64 KiB") }
        var secrets = try load()
        secrets[name] = Entry(value: value, savedAt: Date())
        try save(secrets)
    }

    /// False when there was no such secret.
    public func remove(_ name: String) throws(VaultError) -> Bool {
        var secrets = try load()
        guard secrets.removeValue(forKey: name) != nil else { return false }
        try save(secrets)
        return true
    }

    // MARK: The file

    struct Document: Codable {
        var version = 1
        var secrets: [String: Entry]
        /// `signInKey()`, base64.
        var signInKey: String?
    }

    /// The encrypted file: what derives the key, and the sealed document.
    struct Envelope: Codable {
        struct KDF: Codable {
            var algorithm = "scrypt"
            var salt: String
            var n: Int
            var r: Int
            var p: Int
        }
        var version = 1
        var kdf: KDF
        /// ChaCha20-Poly1305's combined box (nonce, ciphertext, tag), base64.
        var sealed: String
    }

    static let rounds = 1 << 15

    static func key(_ passphrase: String, salt: [UInt8], n: Int, r: Int, p: Int) throws(VaultError) -> SymmetricKey {
        do {
            return try KDF.Scrypt.deriveKey(from: Array(passphrase.utf8), salt: salt, outputByteCount: 32, rounds: n, blockSize: r, parallelism: p)
        } catch {
            throw VaultError("cannot derive the vault's key: \(error)")
        }
    }

    func seal(_ plain: [UInt8]) throws(VaultError) -> [UInt8] {
        let secret = try passphrase()
        guard !secret.isEmpty else { throw VaultError("an empty passphrase cannot protect the vault") }
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let key = try Self.key(secret, salt: salt, n: Self.rounds, r: 8, p: 1)
        do {
            let box = try ChaChaPoly.seal(plain, using: key)
            let envelope = Envelope(
                kdf: .init(salt: Data(salt).base64EncodedString(), n: Self.rounds, r: 8, p: 1), sealed: box.combined.base64EncodedString())
            return Array(try JSONEncoder.vault.encode(envelope))
        } catch {
            throw VaultError("cannot encrypt the vault: \(error)")
        }
    }

    func open(_ bytes: [UInt8]) throws(VaultError) -> [UInt8] {
        let envelope: Envelope
        do {
            envelope = try JSONDecoder.vault.decode(Envelope.self, from: Data(bytes))
        } catch {
            throw VaultError("the vault \(path) is damaged: \(error)", hint: "restore it from a backup, or remove it and add the secrets again")
        }
        // Bounds keep a planted file from asking for gigabytes of memory or hours of work.
        guard envelope.kdf.algorithm == "scrypt", (1 << 10...1 << 20).contains(envelope.kdf.n), envelope.kdf.n & (envelope.kdf.n - 1) == 0,
            (1...32).contains(envelope.kdf.r), (1...16).contains(envelope.kdf.p), let salt = Data(base64Encoded: envelope.kdf.salt),
            let sealed = Data(base64Encoded: envelope.sealed)
        else {
            throw VaultError(
                "the vault \(path) has key settings airlock does not use", hint: "restore it from a backup, or remove it and add the secrets again")
        }
        let key = try Self.key(try passphrase(), salt: Array(salt), n: envelope.kdf.n, r: envelope.kdf.r, p: envelope.kdf.p)
        do {
            return Array(try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: sealed), using: key))
        } catch {
            throw VaultError(
                "wrong passphrase for the vault \(path) (or the file was changed)",
                hint: "type it again, or set AIRLOCK_VAULT_PASSPHRASE to the passphrase it was made with")
        }
    }
}

public struct VaultError: ExplainedError, Sendable, Equatable {
    public var message: String
    public var hint: String?
    public var cause: (any Error)? { nil }

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }
}

extension JSONEncoder {
    static var vault: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    static var vault: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
