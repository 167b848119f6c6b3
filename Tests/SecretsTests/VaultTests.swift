import AirlockSystem
import FoundationEssentials
import Testing

@testable import Secrets

#if canImport(Glibc)
import Glibc
#endif

@Suite("The secrets vault")
struct VaultTests {
    static func directory() -> String { "/tmp/airlock-vault-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }

    static func contains(_ path: String, _ text: String) throws -> Bool {
        let bytes = try FileSystem.read(path, limit: 1 << 20) ?? []
        let needle = Array(text.utf8)
        return bytes.count >= needle.count && (0...(bytes.count - needle.count)).contains { Array(bytes[$0..<$0 + needle.count]) == needle }
    }

    @Test("a plain vault: 0600 in a 0700 directory, add, replace, load, remove; names and values checked")
    func plain() throws {
        let directory = Self.directory()
        defer { try? FileSystem.removeTree(directory) }
        let vault = Vault(
            storage: .file, directory: directory,
            passphrase: { () throws(VaultError) -> String in throw VaultError("no passphrase for a plain vault") })
        #expect(try vault.load().isEmpty, "no file yet: an empty vault")
        try vault.add("API_TOKEN", value: "first-value-0123456789")
        try vault.add("API_TOKEN", value: "second-value-0123456789")
        try vault.add("SHORT", value: "abc")
        let secrets = try vault.load()
        #expect(secrets["API_TOKEN"]?.value == "second-value-0123456789")
        #expect(secrets.keys.sorted() == ["API_TOKEN", "SHORT"])
        var info = stat()
        #expect(stat(vault.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(directory, &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect(try vault.remove("SHORT"))
        #expect(try !vault.remove("SHORT"))
        #expect(try vault.load().keys.sorted() == ["API_TOKEN"])
        for bad in ["lower", "1ST", "WITH-DASH", "", "A B", String(repeating: "A", count: 129)] {
            #expect(throws: VaultError.self, "\(bad)") { try vault.add(bad, value: "x") }
        }
        #expect(throws: VaultError.self) { try vault.add("EMPTY", value: "") }
        #expect(throws: VaultError.self) { try vault.add("HUGE", value: String(repeating: "x", count: (64 << 10) + 1)) }
        #expect(FileSystem.entries(directory) == ["vault.json"], "no temporary file left")
    }

    @Test("the sign-in key: made once, 32 bytes, kept through secrets added and removed, never listed as a secret; none in a disabled vault")
    func signInKey() throws {
        let directory = Self.directory()
        defer { try? FileSystem.removeTree(directory) }
        let vault = Vault(
            storage: .file, directory: directory,
            passphrase: { () throws(VaultError) -> String in throw VaultError("no passphrase for a plain vault") })
        try vault.add("API_TOKEN", value: "first-value-0123456789")
        let key = try vault.signInKey()
        #expect(key.count == 32 && Set(key).count > 8)
        try vault.add("OTHER", value: "second-value-0123456789")
        #expect(try vault.remove("OTHER"))
        #expect(try vault.signInKey() == key, "kept through writes of the secrets")
        #expect(try vault.load().keys.sorted() == ["API_TOKEN"], "not a secret")
        let encrypted = Vault(storage: .encryptedFile, directory: directory + "/e", passphrase: { "correct horse" })
        let sealedKey = try encrypted.signInKey()
        #expect(try encrypted.signInKey() == sealedKey)
        let file = try FileSystem.readText(encrypted.path) ?? ""
        #expect(!file.contains(Data(sealedKey).base64EncodedString()), "sealed with the vault")
        let disabled = Vault(storage: .disabled, directory: directory, passphrase: { "" })
        #expect(throws: VaultError.self) { try disabled.signInKey() }
    }

    @Test("previews show at most the last four characters, none of a short value")
    func previews() {
        #expect(Vault.preview("sk-ant-0123456789abcdef") == "****cdef")
        #expect(Vault.preview("12345678") == "****78")
        #expect(Vault.preview("1234567") == "****")
    }

    @Test("an encrypted vault: a round trip, no plaintext on disk, a wrong passphrase refused and the file kept")
    func encrypted() throws {
        let directory = Self.directory()
        defer { try? FileSystem.removeTree(directory) }
        let value = "the-real-secret-value-4242"
        let vault = Vault(storage: .encryptedFile, directory: directory, passphrase: { "correct horse" })
        try vault.add("TOKEN", value: value)
        #expect(vault.path.hasSuffix("/vault.enc.json"))
        #expect(try vault.load()["TOKEN"]?.value == value)
        #expect(try !Self.contains(vault.path, value), "the value is not on disk in the clear")
        #expect(try !Self.contains(vault.path, "TOKEN"), "nor its name")
        let before = try FileSystem.read(vault.path)
        let wrong = Vault(storage: .encryptedFile, directory: directory, passphrase: { "wrong horse" })
        do {
            _ = try wrong.load()
            Issue.record("a wrong passphrase opened the vault")
        } catch {
            #expect(error.message.contains("wrong passphrase"), "\(error)")
        }
        #expect(throws: VaultError.self) { try wrong.add("OTHER", value: "x") }
        #expect(try FileSystem.read(vault.path) == before, "a failed add leaves the file as it was")
        // A changed byte is refused like a wrong passphrase (the AEAD tag).
        var text = String(decoding: try #require(before), as: UTF8.self)
        let marker = try #require(text.firstRange(of: "\"sealed\" : \""))
        let at = text.index(marker.upperBound, offsetBy: 10)
        text.replaceSubrange(at...at, with: text[at] == "A" ? "B" : "A")
        try FileSystem.writeAtomically(vault.path, text)
        #expect(throws: VaultError.self) { _ = try vault.load() }
    }

    @Test("a planted encrypted file asking for huge key settings is refused before any work")
    func hostileSettings() throws {
        let directory = Self.directory()
        defer { try? FileSystem.removeTree(directory) }
        try FileSystem.makeDirectories(directory)
        let vault = Vault(storage: .encryptedFile, directory: directory, passphrase: { "p" })
        let planted = #"{"version":1,"kdf":{"algorithm":"scrypt","salt":"AAAA","n":1073741824,"r":8,"p":1},"sealed":"AAAA"}"#
        try FileSystem.writeAtomically(vault.path, planted)
        do {
            _ = try vault.load()
            Issue.record("loaded")
        } catch {
            #expect(error.message.contains("key settings airlock does not use"), "\(error)")
        }
        try FileSystem.writeAtomically(vault.path, "not json")
        #expect(throws: VaultError.self) { _ = try vault.load() }
    }

    @Test("a disabled vault refuses every use")
    func disabled() {
        let vault = Vault(storage: .disabled, directory: Self.directory(), passphrase: { "" })
        #expect(throws: VaultError.self) { _ = try vault.load() }
        #expect(throws: VaultError.self) { try vault.add("A", value: "b") }
    }
}
