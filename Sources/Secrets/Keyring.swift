import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// The vault as one item of the desktop's Secret Service (GNOME Keyring, KWallet, KeePassXC),
/// as the Rust airlock keeps its `keyring` vault: service `airlock-vault`, user `default`, the
/// document as the secret. Through `secret-tool`, libsecret's own command: the binary stays
/// free of GLib and D-Bus, and works on hosts without them until this storage is chosen.
struct Keyring {
    static let attributes = ["service", "airlock-vault", "username", "default"]
    static let description = "the desktop keyring (Secret Service item service=airlock-vault username=default)"
    /// Where the session bus and the desktop are, passed on; nothing else of the environment.
    static let passed = ["PATH", "HOME", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY"]

    var environment: [String: String]

    private var tool: String {
        get throws(VaultError) {
            let path = environment["PATH"] ?? "/usr/bin:/bin"
            for directory in path.split(separator: ":") where access("\(directory)/secret-tool", X_OK) == 0 {
                return "\(directory)/secret-tool"
            }
            throw VaultError(
                "[vault] storage = \"keyring\" needs secret-tool (libsecret), which is not installed",
                hint: "install it (apt-get install libsecret-tools), or choose storage = \"encrypted-file\"")
        }
    }

    private var toolEnvironment: [String: String] {
        var chosen = environment.filter { Self.passed.contains($0.key) }
        chosen["LC_ALL"] = "C"
        return chosen
    }

    private func unavailable(_ what: String, _ output: String) -> VaultError {
        VaultError(
            "cannot \(what) \(Self.description): \(output.trimmingWhitespace().isEmpty ? "secret-tool failed" : output.trimmingWhitespace())",
            hint: "is a Secret Service running and unlocked in this session? On a machine without a desktop, use [vault] storage = \"encrypted-file\""
        )
    }

    /// The stored document; nil when there is none yet. Waits up to two minutes (an unlock
    /// prompt).
    func read() throws(VaultError) -> [UInt8]? {
        let output: ChildProcess.Output
        do {
            output = try ChildProcess.capture(
                try tool, ["lookup"] + Self.attributes, environment: toolEnvironment, timeout: .seconds(120), limit: 32 << 20)
        } catch let error as VaultError {
            throw error
        } catch {
            throw VaultError("cannot read \(Self.description): \(error)")
        }
        if output.status == 0 { return Array(output.text.utf8) }
        // No such item: status 1 and nothing said.
        if output.status == 1, output.text.isEmpty { return nil }
        throw unavailable("read the vault from", output.text)
    }

    func write(_ document: [UInt8], logDirectory: String) throws(VaultError) {
        let log = logDirectory + "/secret-tool.\(getpid()).log"
        defer { unlink(log) }
        let status: Int32
        do {
            try FileSystem.makeDirectories(logDirectory, mode: 0o700)
            status = try ChildProcess.feed(
                try tool, ["store", "--label=airlock vault"] + Self.attributes, log: log, environment: toolEnvironment
            ) { fd in
                try Syscall.writeAll(fd, document, subject: "secret-tool")
            }
        } catch let error as VaultError {
            throw error
        } catch {
            throw VaultError("cannot write \(Self.description): \(error)")
        }
        guard status == 0 else { throw unavailable("write the vault to", ((try? FileSystem.readText(log, limit: 64 << 10)) ?? nil) ?? "") }
    }
}
