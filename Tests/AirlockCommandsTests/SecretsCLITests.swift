import Foundation
import TestSupport
import Testing

@Suite("airlock secrets")
struct SecretsCLITests {
    static let value = "vault-held-value-31337-xyz"

    @Test("add from stdin, ls masked (table and JSON, never the value), rm; a bad name and an unknown rm are errors")
    func addListRemove() throws {
        let project = try CLI.project(files: [:])
        defer { try? FileManager.default.removeItem(at: project) }
        let data = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path]
        let add = try CLI.run(["secrets", "add", "API_TOKEN", "--stdin"], in: project, environment: data, stdin: Data((Self.value + "\n").utf8))
        #expect(add.status == 0, "\(add.stderr)")
        #expect(!add.stderr.contains(Self.value))
        let file = project.appendingPathComponent(".data/airlock/vault.json").path
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains("\"\(Self.value)\""), "stored without its newline")
        let table = try CLI.run(["secrets", "ls"], in: project, environment: data)
        #expect(table.status == 0 && table.stdout.contains("API_TOKEN") && table.stdout.contains("****-xyz"), "\(table.stdout)")
        let json = try CLI.run(["secrets", "ls", "--format", "json"], in: project, environment: data)
        #expect(json.stdout.contains("\"name\":\"API_TOKEN\"") || json.stdout.contains("\"name\" : \"API_TOKEN\""), "\(json.stdout)")
        for run in [add, table, json] { #expect(!run.stdout.contains(Self.value) && !run.stderr.contains(Self.value)) }
        let bad = try CLI.run(["secrets", "add", "lower-case", "--stdin"], in: project, environment: data, stdin: Data("x".utf8))
        #expect(bad.status == 1 && bad.stderr.contains("is not a secret's name"), "\(bad.stderr)")
        let noTerminal = try CLI.run(["secrets", "add", "OTHER"], in: project, environment: data)
        #expect(noTerminal.status == 1 && noTerminal.stderr.contains("--stdin"), "\(noTerminal.stderr)")
        #expect(try CLI.run(["secrets", "rm", "API_TOKEN"], in: project, environment: data).status == 0)
        let again = try CLI.run(["secrets", "rm", "API_TOKEN"], in: project, environment: data)
        #expect(again.status == 1 && again.stderr.contains("no secret named API_TOKEN"), "\(again.stderr)")
    }

    @Test("${NAME} in [env]: the environment first, then the vault; config validate sees it, config show never prints it")
    func templates() throws {
        let project = try CLI.project(files: ["airlock.toml": "[env]\nTOKEN = \"${MY_TOKEN}\"\n"])
        defer { try? FileManager.default.removeItem(at: project) }
        let data = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path]
        let unset = try CLI.run(["config", "validate"], in: project, environment: data)
        #expect(unset.status != 0 && unset.stderr.contains("needs $MY_TOKEN"), "\(unset.stderr)")
        #expect(try CLI.run(["secrets", "add", "MY_TOKEN", "--stdin"], in: project, environment: data, stdin: Data(Self.value.utf8)).status == 0)
        let filled = try CLI.run(["config", "validate"], in: project, environment: data)
        #expect(filled.status == 0, "\(filled.stderr)")
        let show = try CLI.run(["config", "show"], in: project, environment: data)
        #expect(!show.stdout.contains(Self.value) && !show.stderr.contains(Self.value), "config show never opens the vault")
        var withHost = data
        withHost["MY_TOKEN"] = "from-the-host"
        #expect(try CLI.run(["config", "validate"], in: project, environment: withHost).status == 0)
    }

    @Test(
        "[vault] storage = \"encrypted-file\" in the user config: the passphrase from AIRLOCK_VAULT_PASSPHRASE, none on disk in the clear; wrong one refused; no terminal and no passphrase is an error"
    )
    func encrypted() throws {
        let project = try CLI.project(files: ["airlock.toml": "[env]\nTOKEN = \"${MY_TOKEN}\"\n"])
        defer { try? FileManager.default.removeItem(at: project) }
        let xdg = project.appendingPathComponent(".xdg/airlock")
        try FileManager.default.createDirectory(at: xdg, withIntermediateDirectories: true)
        try "[vault]\nstorage = \"encrypted-file\"\n".write(to: xdg.appendingPathComponent("config.toml"), atomically: true, encoding: .utf8)
        var environment = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path, "AIRLOCK_VAULT_PASSPHRASE": "correct horse"]
        let add = try CLI.run(["secrets", "add", "MY_TOKEN", "--stdin"], in: project, environment: environment, stdin: Data(Self.value.utf8))
        #expect(add.status == 0, "\(add.stderr)")
        let file = project.appendingPathComponent(".data/airlock/vault.enc.json")
        let stored = try Data(contentsOf: file)
        #expect(stored.range(of: Data(Self.value.utf8)) == nil && stored.range(of: Data("MY_TOKEN".utf8)) == nil)
        #expect(try CLI.run(["config", "validate"], in: project, environment: environment).status == 0)
        environment["AIRLOCK_VAULT_PASSPHRASE"] = "wrong horse"
        let wrong = try CLI.run(["secrets", "ls"], in: project, environment: environment)
        #expect(wrong.status == 1 && wrong.stderr.contains("wrong passphrase"), "\(wrong.stderr)")
        environment["AIRLOCK_VAULT_PASSPHRASE"] = nil
        let none = try CLI.run(["config", "validate"], in: project, environment: environment)
        #expect(none.status == 1 && none.stderr.contains("AIRLOCK_VAULT_PASSPHRASE"), "\(none.stderr)")
    }

    static let keyringTools = ["/usr/bin/secret-tool", "/usr/bin/gnome-keyring-daemon", "/usr/bin/dbus-run-session"]

    @Test(
        "[vault] storage = \"keyring\": one Secret Service item (GNOME Keyring in a D-Bus session of the test's own); add, ls, a template, rm; no file, nothing in the clear on disk; without a Secret Service an error naming encrypted-file",
        .enabled(
            if: keyringTools.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) },
            "needs secret-tool, gnome-keyring-daemon and dbus-run-session (libsecret-tools, gnome-keyring, dbus)"))
    func keyring() throws {
        let project = try CLI.project(files: ["airlock.toml": "[env]\nTOKEN = \"${MY_TOKEN}\"\n"])
        defer { try? FileManager.default.removeItem(at: project) }
        let xdg = project.appendingPathComponent(".xdg/airlock")
        try FileManager.default.createDirectory(at: xdg, withIntermediateDirectories: true)
        try "[vault]\nstorage = \"keyring\"\n".write(to: xdg.appendingPathComponent("config.toml"), atomically: true, encoding: .utf8)
        let runtime = project.appendingPathComponent(".run")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var environment = CLI.environment(for: project)
        environment["XDG_DATA_HOME"] = project.appendingPathComponent(".data").path
        environment["XDG_RUNTIME_DIR"] = runtime.path
        environment["NO_COLOR"] = "1"
        // A desktop login, in short: a session bus, and the keyring unlocked with the login's password.
        let login = project.appendingPathComponent(".login.sh")
        try "printf 'login-password' | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1\nexec \"$@\"\n".write(
            to: login, atomically: true, encoding: .utf8)
        func inSession(_ arguments: [String], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
            let result = try Spawned.run(
                ["/usr/bin/dbus-run-session", "--", "/bin/sh", login.path] + arguments, directory: project.path, environment: environment,
                stdin: stdin.map { Array($0.utf8) }, timeout: 120)
            return (result.status, String(decoding: result.stdout, as: UTF8.self), String(decoding: result.stderr, as: UTF8.self))
        }
        let add = try inSession([CLI.binary, "secrets", "add", "MY_TOKEN", "--stdin"], stdin: Self.value)
        #expect(add.status == 0, "\(add.stderr)")
        let listed = try inSession([CLI.binary, "secrets", "ls", "--json"])
        #expect(listed.status == 0 && listed.stdout.contains("MY_TOKEN") && !listed.stdout.contains(Self.value), "\(listed)")
        #expect(try inSession([CLI.binary, "config", "validate"]).status == 0)
        // The Rust airlock's item: service airlock-vault, user default.
        let item = try inSession(["/usr/bin/secret-tool", "lookup", "service", "airlock-vault", "username", "default"])
        #expect(item.status == 0 && item.stdout.contains("MY_TOKEN") && item.stdout.contains(Self.value), "\(item.stderr)")
        #expect(!FileManager.default.fileExists(atPath: project.path + "/.data/airlock/vault.json"))
        for file in FileManager.default.enumerator(atPath: project.path + "/.data")?.compactMap({ $0 as? String }) ?? [] {
            let bytes = (try? Data(contentsOf: project.appendingPathComponent(".data/" + file))) ?? Data()
            #expect(bytes.range(of: Data(Self.value.utf8)) == nil, "\(file) holds the value in the clear")
        }
        let removed = try inSession([CLI.binary, "secrets", "rm", "MY_TOKEN"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(try inSession([CLI.binary, "secrets", "ls", "--json"]).stdout.contains("MY_TOKEN") == false)

        // No Secret Service in this session: an error that says what to use instead.
        var alone = environment
        alone["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=\(runtime.path)/no-bus"
        alone["DISPLAY"] = nil
        let refused = try Spawned.run([CLI.binary, "secrets", "ls"], directory: project.path, environment: alone, stdin: nil, timeout: 120)
        let message = String(decoding: refused.stderr, as: UTF8.self)
        #expect(refused.status == 1 && message.contains("desktop keyring") && message.contains("encrypted-file"), "\(message)")
    }

    @Test("[vault] in a project's airlock.toml is refused with its location")
    func notAProjectSetting() throws {
        let project = try CLI.project(files: ["airlock.toml": "[vault]\nstorage = \"disabled\"\n"])
        defer { try? FileManager.default.removeItem(at: project) }
        let run = try CLI.run(["config", "validate"], in: project)
        #expect(run.status == 2 && run.stderr.contains("airlock.toml:1:") && run.stderr.contains("[vault] is a setting of your own"), "\(run.stderr)")
    }
}
