import AirlockSystem
import ArgumentParser
import Config
import FoundationEssentials
import Sandbox
import Secrets
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct SecretsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets",
        abstract: "Keep values for ${NAME} templates outside your shell's environment.",
        discussion: """
            A `${NAME}` in airlock.toml (in [env], for example) reads the host's environment \
            first, then this vault; only `start`, `exec` and `config validate` open it, and only for names the \
            environment lacks. No command prints a value. The vault is a 0600 file in \
            $XDG_DATA_HOME/airlock (default ~/.local/share/airlock); with `[vault] storage = \
            "encrypted-file"` in your user config (~/.config/airlock/config.toml) it is \
            encrypted with a passphrase, asked on the terminal or read from \
            AIRLOCK_VAULT_PASSPHRASE; "keyring" keeps it in the desktop's Secret Service \
            (GNOME Keyring, KWallet; needs secret-tool); "disabled" turns it off.
            """,
        subcommands: [SecretsAdd.self, SecretsList.self, SecretsRemove.self],
        defaultSubcommand: SecretsList.self
    )
}

struct SecretsAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add or replace a secret (asked without echo, or read from stdin).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Its name, as ${NAME} reads it: capital letters, digits and `_`.")
    var name: String

    @Flag(help: "Read the value from stdin (one trailing newline is dropped) instead of asking.")
    var stdin = false

    func run() throws {
        let vault = try SecretsAccess.vault()
        do {
            try Vault.validate(name: name)
            let value: String
            if stdin {
                let bytes = try Syscall.readAll(0, limit: (64 << 10) + 2, subject: "stdin")
                var text = String(decoding: bytes, as: UTF8.self)
                if text.hasSuffix("\r\n") { text.removeLast(1) } else if text.hasSuffix("\n") { text.removeLast() }
                value = text
            } else {
                guard isatty(0) == 1, isatty(2) == 1 else {
                    throw VaultError(
                        "no terminal to ask for the value on", hint: "pipe it in: `printf %s \"$VALUE\" | airlock secrets add \(name) --stdin`")
                }
                value = CredentialPrompt.hidden("Value of \(name): ") ?? ""
            }
            try vault.add(name, value: value)
        } catch {
            throw reportAndExit(error)
        }
        if !global.quiet { Terminal.standardError.write("airlock: \(name) saved in \(vault.path)\n") }
    }
}

struct SecretsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the secrets: names and masked previews, never values.")

    @OptionGroup var global: GlobalOptions

    @OptionGroup var output: FormatOption

    struct Row: Encodable {
        var name: String
        var preview: String
        var savedAt: Int64
    }

    func run() throws {
        let vault = try SecretsAccess.vault()
        let secrets: [String: Vault.Entry]
        do {
            secrets = try vault.load()
        } catch {
            throw reportAndExit(error)
        }
        let rows = secrets.sorted { $0.key < $1.key }.map {
            Row(name: $0.key, preview: Vault.preview($0.value.value), savedAt: Int64($0.value.savedAt.timeIntervalSince1970))
        }
        try Render.list(
            rows, format: output, empty: "no secrets in \(vault.path); `airlock secrets add NAME` adds one",
            columns: [("NAME", \.name), ("VALUE", \.preview), ("SAVED", { formatDuration(Int64(time(nil)) - $0.savedAt) + " ago" })])
    }
}

struct SecretsRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a secret.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The secret's name.")
    var name: String

    func run() throws {
        let vault = try SecretsAccess.vault()
        do {
            guard try vault.remove(name) else {
                throw VaultError("no secret named \(name) in \(vault.path)", hint: "`airlock secrets ls` lists them")
            }
        } catch {
            throw reportAndExit(error)
        }
        if !global.quiet { Terminal.standardError.write("airlock: \(name) removed\n") }
    }
}

/// The vault as this user configured it (`[vault] storage`, user config only), its passphrase
/// from AIRLOCK_VAULT_PASSPHRASE or asked once per command on the terminal (twice when the
/// encrypted vault is new).
enum SecretsAccess {
    /// `storage`: as the caller's configuration says; nil to read it.
    static func vault(environment: [String: String] = processEnvironment(), storage: String? = nil) throws -> Vault {
        var storageName = storage ?? ""
        if storage == nil {
            do {
                storageName = try ConfigLoader.forProject(Project.discover(from: currentDirectory()).root, environment: environment).load().config
                    .vaultStorage
            } catch {
                throw reportAndExit(error)
            }
        }
        guard let storage = Vault.Storage(rawValue: storageName), let directory = Vault.directory(environment: environment) else {
            throw reportAndExit(VaultError("no place for the vault: HOME is not set", hint: "set HOME or XDG_DATA_HOME"))
        }
        let asked = Asked()
        var vault = Vault(storage: storage, directory: directory, environment: environment, passphrase: { "" })
        let path = vault.path
        vault.passphrase = { () throws(VaultError) -> String in
            if let given = environment["AIRLOCK_VAULT_PASSPHRASE"] { return given }
            if let known = asked.value.withLock({ $0 }) { return known }
            guard isatty(0) == 1, isatty(2) == 1 else {
                throw VaultError(
                    "the vault \(path) is encrypted and there is no terminal to ask for its passphrase", hint: "set AIRLOCK_VAULT_PASSPHRASE")
            }
            let answer = CredentialPrompt.hidden("Passphrase for the airlock vault: ") ?? ""
            if !FileSystem.exists(path) {
                guard CredentialPrompt.hidden("The same again (a new vault): ") == answer else {
                    throw VaultError("the two passphrases differ", hint: "run the command again")
                }
            }
            asked.value.withLock { $0 = answer }
            return answer
        }
        return vault
    }

    /// The passphrase once asked, for the rest of the command.
    final class Asked: Sendable {
        let value = Mutex<String?>(nil)
    }
}
