import Foundation
import TestSupport
import Testing

/// Runs the built `airlock` binary as a user would, in temporary projects.
@Suite("airlock CLI")
struct CLITests {
    @Test("config validate: `imgae` at line 7 → airlock.toml:7:1, suggestion, exit 2")
    func validateMisspelt() throws {
        let directory = try CLI.project(files: ["airlock.toml": "# line 1\n\n\n\n[vm]\ncpus = 2\nimgae = \"x\"\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["config", "validate"], in: directory)
        #expect(result.status == 2)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("airlock.toml:7:1: error: unknown key `imgae` in [vm]"))
        #expect(result.stderr.contains("hint: did you mean `image`?"))
    }

    @Test("config validate and start refuse more memory or CPUs than this host has, at the value's file:line:column, exit 2")
    func validateAgainstHost() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\nmemory = \"99999T\"\ncpus = 256\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        for command in [["config", "validate"], ["start", "--", "true"]] {
            let result = try CLI.run(command, in: directory)
            #expect(result.status == 2, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("airlock.toml:2:1: error: [vm] memory is 99999T, but this host has"), "\(result.stderr)")
            #expect(result.stderr.contains("airlock.toml:3:1: error: [vm] cpus is 256, but this host has"))
        }
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent(".airlock/default/disk.img").path))
    }

    @Test("config validate and start refuse an entry this airlock cannot act on yet, at its file:line:column, exit 2")
    func validateNotYetSupported() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = 1\n\n[daemons.d]\ncommand = [\"true\"]\nharden = true\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        for command in [["config", "validate"], ["start", "--", "true"]] {
            let result = try CLI.run(command, in: directory)
            #expect(result.status == 2, "\(command): \(result.stderr)")
            #expect(
                result.stderr.contains("airlock.toml:6:1: error: `daemons.d.harden` is not supported by this airlock yet"), "\(result.stderr)")
        }
    }

    @Test(
        "a mask of a path git has is refused by validate and start (file:line:column, exit 2): at a tip, or in any older commit before the first clone"
    )
    func trackedMask() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n", ".env": "TOKEN=1\n"])
        defer { fixture.cleanUp() }
        try fixture.write("[mask.secrets]\npaths = [\"notes\", \".env\"]\n", to: "airlock.toml")
        for command in [["config", "validate"], ["start", "--name", "fresh", "--", "true"]] {
            let result = try fixture.airlock(command)
            #expect(result.status == 2, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("error: [mask.secrets] hides .env, which git tracks (in "), "\(result.stderr)")
            #expect(result.stderr.contains("airlock.toml:2:"), "\(result.stderr)")
            #expect(result.stderr.contains("git rm --cached -r .env"), "\(result.stderr)")
        }
        // No longer tracked at any tip, but still in an older commit: a first clone would hold
        // it, so validate and start of a sandbox not cloned yet refuse it too; the fixture's
        // sandbox, cloned before, is checked at the tips only.
        try fixture.sh("git rm -q --cached .env && git commit -q -m untrack", in: fixture.project)
        #expect(try fixture.airlock(["config", "validate"]).status == 0)
        for command in [["config", "validate", "--name", "fresh"], ["start", "--name", "fresh", "--", "true"]] {
            let result = try fixture.airlock(command)
            #expect(
                result.status == 2 && result.stderr.contains("[mask.secrets] hides .env, which git has in commit "), "\(command): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.project.appendingPathComponent(".airlock/fresh/workspace/.git").path))
    }

    @Test("config validate on a good file exits 0 and adds airlock.local.toml to .git/info/exclude")
    func validateGood() throws {
        let directory = try CLI.project(files: ["airlock.toml": "presets = [\"claude-code\"]\n[vm]\ncpus = 2\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["config", "validate"], in: directory)
        #expect(result.status == 0)
        #expect(result.stdout.contains("airlock.toml"))
        let exclude = try String(contentsOf: directory.appendingPathComponent(".git/info/exclude"), encoding: .utf8)
        #expect(exclude.contains("/airlock.local.toml"))
    }

    @Test("config show --json: effective values and their origins")
    func showJSON() throws {
        let directory = try CLI.project(files: [
            "airlock.toml": "[vm]\ncpus = 4\n",
            "airlock.local.toml": "[vm]\nmemory = \"8G\"\n",
        ])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["config", "show", "--json"], in: directory)
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let vm = (object?["config"] as? [String: Any])?["vm"] as? [String: Any]
        #expect(vm?["cpus"] as? Int == 4)
        #expect(vm?["memory"] as? String == "8G")
        #expect(vm?["image"] as? String == "host")
        let origins = object?["origins"] as? [String: String]
        #expect(origins?["vm.cpus"] == "airlock.toml:2:1")
        #expect(origins?["vm.memory"] == "airlock.local.toml:2:1")
        #expect(origins?["vm.image"] == "default")
    }

    @Test("config show prints TOML with origins as comments")
    func showText() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = 4\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["config", "show"], in: directory)
        #expect(result.status == 0)
        #expect(result.stdout.contains("[vm]\n"))
        #expect(result.stdout.contains("cpus = 4"))
        #expect(result.stdout.contains("# airlock.toml:2:1"))
    }

    @Test("doctor --json: valid JSON, one object per check with id and status")
    func doctorJSON() throws {
        let directory = try CLI.project(files: [:])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(
            ["doctor", "--json"], in: directory, environment: ["AIRLOCK_KERNEL": "", "AIRLOCK_INITRAMFS": "", "XDG_CACHE_HOME": directory.path])
        let checks = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]
        let ids = checks?.compactMap { $0["id"] as? String } ?? []
        #expect(ids.contains("kvm-usable") && ids.contains("qemu") && ids.contains("backend"))
        #expect(checks?.allSatisfy { ["pass", "warn", "fail"].contains($0["status"] as? String ?? "") } == true)
        // Without guest assets no sandbox can run: exit status 1.
        #expect(result.status == 1)
        let assets = checks?.first { $0["id"] as? String == "guest-assets" }
        #expect(assets?["status"] as? String == "fail")
    }

    @Test("doctor with a broken config still runs and reports it")
    func doctorBrokenConfig() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpu = 1\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["doctor"], in: directory)
        #expect(result.stdout.contains("fail  config"))
        #expect(result.stdout.contains("airlock.toml:2:1"))
    }

    @Test("--version, --help and bad arguments")
    func basics() throws {
        let directory = try CLI.project(files: [:])
        defer { try? FileManager.default.removeItem(at: directory) }
        let version = try CLI.run(["--version"], in: directory)
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
        let help = try CLI.run(["doctor", "--help"], in: directory)
        #expect(help.stdout.contains("--log-level") && help.stdout.contains("--json"))
        let bad = try CLI.run(["doctor", "--nope"], in: directory)
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("--nope"))
    }

    @Test(
        "a broken configuration ends every command that loads it with exit 2 and the error's file:line:column",
        arguments: [
            ["image", "pull", "alpine"], ["ps"], ["start", "--", "true"], ["fetch"], ["stop"],
        ])
    func configErrorsExitTwo(_ arguments: [String]) throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = \"many\"\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(arguments, in: directory)
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains("airlock.toml:2:"), "\(result.stderr)")
        #expect(!result.stderr.contains("ExitCode"))
    }

    @Test("ps shows each sign-in service's state from the store's summary (account, scopes), never a token")
    func signInState() throws {
        let directory = try CLI.project(files: ["airlock.toml": "presets = [\"claude-code\"]\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".airlock/web"), withIntermediateDirectories: true)
        let data = directory.appendingPathComponent(".data")
        let environment = ["XDG_DATA_HOME": data.path]
        let none = try CLI.run(["ps", "--json"], in: directory, environment: environment)
        let before = try JSONSerialization.jsonObject(with: Data(none.stdout.utf8)) as? [[String: Any]]
        let states = before?.first?["signIns"] as? [[String: Any]]
        #expect(
            states?.count == 1 && states?.first?["service"] as? String == "anthropic" && states?.first?["signedIn"] as? Bool == false,
            "\(none.stdout)")
        try FileManager.default.createDirectory(at: data.appendingPathComponent("airlock"), withIntermediateDirectories: true)
        try #"[{"service":"anthropic","account":"dev@example.com","scopes":["user:inference"],"savedAt":1800000000,"expiresAt":1800003600}]"#
            .write(to: data.appendingPathComponent("airlock/sign-ins.json"), atomically: true, encoding: .utf8)
        let signed = try CLI.run(["ps", "--json"], in: directory, environment: environment)
        let after = (try JSONSerialization.jsonObject(with: Data(signed.stdout.utf8)) as? [[String: Any]])?.first?["signIns"] as? [[String: Any]]
        #expect(after?.first?["signedIn"] as? Bool == true && after?.first?["account"] as? String == "dev@example.com", "\(signed.stdout)")
        #expect(after?.first?["scopes"] as? [String] == ["user:inference"])
        let table = try CLI.run(["ps"], in: directory, environment: environment)
        #expect(table.stdout.contains("SIGN-IN") && table.stdout.contains("anthropic dev@example.com"), "\(table.stdout)")
    }

    @Test("--format json and its alias --json print the same JSON; --format table prints a table")
    func formats() throws {
        let directory = try CLI.project(files: [:])
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".airlock/web"), withIntermediateDirectories: true)
        let long = try CLI.run(["ps", "--format", "json"], in: directory)
        let alias = try CLI.run(["ps", "--json"], in: directory)
        #expect(long.status == 0 && alias.status == 0)
        #expect(long.stdout == alias.stdout)
        let rows = try JSONSerialization.jsonObject(with: Data(long.stdout.utf8)) as? [[String: Any]]
        #expect(rows?.count == 1 && rows?.first?["name"] as? String == "web" && rows?.first?["state"] as? String == "stopped")
        let table = try CLI.run(["ps", "--format", "table"], in: directory)
        #expect(table.stdout.hasPrefix("NAME") && table.stdout.contains("web") && table.stdout.contains("stopped"))
        let doctor = try CLI.run(["doctor", "--format", "json"], in: directory)
        #expect((try? JSONSerialization.jsonObject(with: Data(doctor.stdout.utf8))) is [[String: Any]])
        let bad = try CLI.run(["ps", "--format", "yaml"], in: directory)
        #expect(bad.status == 64)
    }
}
