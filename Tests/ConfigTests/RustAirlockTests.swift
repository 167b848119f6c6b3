import Foundation
import NetworkPolicy
import TestSupport
import Testing

@testable import Config

/// Configuration written for the Rust airlock (milankinen/airlock), unchanged: its manual's
/// examples and its shipped presets (Tests/TestSupport/Fixtures/rust-airlock).
@Suite("Configuration written for the Rust airlock")
struct RustAirlockTests {
    static let fixtures = TestFixtures.path("rust-airlock")

    static func fixture(_ name: String) throws -> String {
        try String(contentsOf: fixtures.appendingPathComponent(name), encoding: .utf8)
    }

    static let presetFiles: [String] =
        ((try? FileManager.default.contentsOfDirectory(atPath: fixtures.appendingPathComponent("presets").path)) ?? []).sorted()

    @Test("its manual's examples load and mean what they say there")
    func documented() throws {
        let loaded = try load(project: try Self.fixture("documented.toml"), environment: ["HOME": "/home/u", "MY_API_TOKEN": "t0k"])
        let config = loaded.config
        #expect(loaded.startRefusals.isEmpty, "\(loaded.startRefusals)")

        #expect(config.vm.image == "localhost:5005/dev-image:latest")
        #expect(config.vm.resolution == .registry)
        #expect(config.vm.imageInsecure)
        #expect(config.vm.cpus == 2)
        #expect(config.vm.memory == ByteSize.gibibytes(4))
        #expect(config.disk.size == ByteSize.gibibytes(20))
        #expect(config.network.policy == .denyByDefault)

        let services = try #require(config.network.rules["company-services"])
        #expect(services.allow.map(\.description) == ["*.prod.example.com", "registry.example.com:443", "*:80"])
        #expect(services.deny.map(\.description) == ["internal.prod.example.com"])
        #expect(config.network.rules["debug-access"] == nil)
        // `passthrough = true`: the rule's allowed destinations are relayed as they are.
        let database = try #require(config.network.rules["database"])
        #expect(database.passthrough.map(\.description) == ["db.example.com:5432"])
        #expect(database.allow.isEmpty)
        #expect(config.network.rules["rust-packages"]?.allow.isEmpty == false)

        // "source:target", or one path for both sides.
        #expect(config.network.sockets["docker"] == .init(host: "/home/u/.docker/run/docker.sock", guest: "/var/run/docker.sock"))
        #expect(config.network.sockets["agent"] == .init(host: "/run/agent.sock", guest: "/run/agent.sock"))
        // `host`: the guest's localhost:8081 reaches the host's 9000; `guest`: the host's 3000
        // reaches the guest's 3000.
        #expect(config.network.guestForwards.map { [$0.guestPort, $0.hostPort] } == [[5432, 5432], [8081, 9000]])
        #expect(config.network.hostForwards.map { [$0.listenPort, $0.guestPort] } == [[3000, 3000]])

        #expect(
            config.env == [
                "EDITOR": "vim", "TERM": "xterm-256color", "API_TOKEN": "t0k", "LOG_LEVEL": "info",
                "CARGO_REGISTRIES_CRATES_IO_PROTOCOL": "sparse",  // the rust preset's
            ])
        #expect(config.masks == ["private": ["apps/admin", "internal/notes", "vendor/closed-source"]])
        #expect(config.daemons["redis"] == .init(command: ["redis-server", "/etc/redis.conf"]))
        #expect(config.disk.caches == ["cargo": ["~/.cargo/registry"], "node-modules": ["node_modules"]])
        #expect(config.mounts["ssh-config"] == .init(source: "/home/u/.ssh/config", target: "~/.ssh/config"))
        #expect(
            config.mounts["git-config"]
                == .init(
                    source: "/home/u/.airlock/gitconfig", target: "~/.gitconfig", missing: .createFile,
                    fileContent: "[user]\n\tname = Dev\n\temail = dev@example.com\n"))
    }

    @Test("the examples of what this airlock cannot do yet load, and start refuses each by name unless switched off")
    func documentedNotYet() throws {
        let text = try Self.fixture("documented-not-yet.toml")
        let refused = try load(project: text).startRefusals
        let named = Set(refused.map { "\($0.location?.description ?? "?") \($0.message)" })
        #expect(
            named == [
                "airlock.toml:4:1 `vm.harden` is not supported by this airlock yet",
                "airlock.toml:5:1 `vm.kvm` is not supported by this airlock yet",
                "airlock.toml:15:1 `daemons.my-daemon.harden` is not supported by this airlock yet",
            ], "\(named)")
        #expect(refused.allSatisfy { $0.hint?.isEmpty == false })

        // A key inside an entry is refused when the entry itself would be accepted.
        let keys = try load(
            project: """
                [vm.image]
                name = "alpine"
                pull-policy = "always"
                """
        ).startRefusals
        #expect(
            keys.map { "\($0.location?.description ?? "?") \($0.message)" } == [
                "airlock.toml:3:1 `vm.image.pull-policy` is not supported by this airlock yet"
            ])

        // Switched off in a higher layer, nothing is refused.
        let off = try load(
            project: text,
            local: """
                [vm]
                harden = false
                [daemons.my-daemon]
                harden = false
                """)
        // harden = false is what this airlock does; kvm = true is still asked for.
        #expect(off.startRefusals.map(\.message) == ["`vm.kvm` is not supported by this airlock yet"])
        // A misspelt key is still an unknown key, with a suggestion.
        #expect(diagnostics(project: "[vm]\nhardn = true\n").first?.message.contains("unknown") == true)
    }

    @Test("its eleven shipped presets are all here")
    func presetFixtures() {
        #expect(Self.presetFiles.count == 11, "\(Self.fixtures.path)")
    }

    @Test("each of its shipped presets, as a project file: loads; start refuses only what is not here yet, by name", arguments: presetFiles)
    func shippedPreset(file: String) throws {
        let text = try Self.fixture("presets/" + file)
        let loaded = try load(project: text)
        #expect(!loaded.config.network.rules.isEmpty)
        #expect(loaded.startRefusals.allSatisfy { $0.message.hasSuffix("is not supported by this airlock yet") }, "\(loaded.startRefusals)")
        // Named as a preset, it is this airlock's preset of the same name, with the same rule.
        let name = String(file.dropLast(".toml".count))
        #expect(Presets.names.contains(name))
        let ruleName = try #require(text.split(separator: "\n").first { $0.hasPrefix("[network.rules.") })
        let preset = try load(project: "presets = [\"\(name)\"]\n")
        #expect(preset.config.network.rules[String(ruleName.dropFirst("[network.rules.".count).dropLast())] != nil)
    }

    @Test("the image's table form: fields checked in each file, `name` after the merge")
    func imageTable() throws {
        #expect(try load(project: "[vm]\nimage = { name = \"debian:bookworm\" }\n").config.vm.image == "debian:bookworm")
        #expect(diagnostics(project: "[vm]\nimage = { insecure = true }\n").map(\.message) == ["[vm.image] needs `name`"])
        // A higher layer may add to a lower layer's table; its resolution wins over [vm] resolution.
        let layered = try load(
            project: "[vm]\nresolution = \"docker\"\n[vm.image]\nname = \"127.0.0.1:5000/team/img:1\"\n",
            local: "[vm.image]\ninsecure = true\nresolution = \"registry\"\n")
        #expect(
            layered.config.vm.image == "127.0.0.1:5000/team/img:1" && layered.config.vm.imageInsecure && layered.config.vm.resolution == .registry)
        #expect(
            diagnostics(project: "[vm.image]\nname = \"a\"\nresolution = \"dockr\"\n").map(\.message) == [
                "`vm.image.resolution` is \"dockr\"; expected one of \"auto\", \"registry\", \"docker\""
            ])
        #expect(diagnostics(project: "[vm]\nimage = 5\n").first?.message.contains("an image reference") == true)
    }

    @Test("[env] tables: value; optional leaves an unset value out; required-and-unset is refused at start; mask refused")
    func environmentTables() throws {
        let text = """
            [env]
            PLAIN = { value = "x" }
            SOME = { value = "${HOST_SOME}", optional = true }
            MISSING = { value = "${HOST_MISSING}", optional = true }
            NEEDED = { value = "${HOST_NEEDED}" }
            WITH_DEFAULT = "${HOST_NEEDED:fallback}"
            """
        let loaded = try load(project: text, environment: ["HOME": "/home/u", "HOST_SOME": "s"])
        #expect(loaded.config.env == ["PLAIN": "x", "SOME": "s", "WITH_DEFAULT": "fallback"])
        let refused = loaded.startRefusals
        #expect(refused.map(\.message) == ["`env.NEEDED` needs $HOST_NEEDED, unset on this host"])
        #expect(refused.first?.location?.description == "airlock.toml:5:1")
        // The plain form is refused the same way (the Rust airlock's rule); set, it starts.
        let plain = try load(project: "[env]\nTOKEN = \"${HOST_TOKEN}\"\n")
        #expect(plain.startRefusals.map(\.message) == ["`env.TOKEN` needs $HOST_TOKEN, unset on this host"])
        #expect(try load(project: "[env]\nTOKEN = \"${HOST_TOKEN}\"\n", environment: ["HOST_TOKEN": ""]).startRefusals.isEmpty)

        #expect(diagnostics(project: "[env]\nKEY = { value = \"k\", mask = true }\n").first?.message.contains("too short to mask") == true)
        #expect(diagnostics(project: "[env]\nKEY = { optional = true }\n").map(\.message) == ["`env.KEY` needs `value`"])
        // `value` may come from a lower layer.
        #expect(try load(project: "[env]\nKEY = { value = \"k\" }\n", local: "[env]\nKEY = { optional = true }\n").config.env == ["KEY": "k"])
        #expect(diagnostics(project: "[env]\nKEY = { value = \"k\", secret = true }\n").first?.message.contains("`secret`") == true)
    }

    @Test("[env] mask = true: the VM's value is a surrogate of the same shape; inject binds it to a rule, which must not pass through")
    func maskedEnvironment() throws {
        let token = "sk-ant-api03-Zq9xLm2PvR7tYb4NcW8dKf1HsJ6gUe3A"
        let text = """
            [env]
            TOKEN = { value = "${HOST_TOKEN}", mask = true }
            [network.rules.api]
            allow = ["api.example.com"]
            inject = ["TOKEN"]
            """
        let loaded = try load(project: text, environment: ["HOME": "/home/u", "HOST_TOKEN": token])
        let surrogate = try #require(loaded.config.env["TOKEN"])
        #expect(surrogate != token && surrogate.utf8.count == token.utf8.count && surrogate.hasPrefix("sk-ant-api03-"), "\(surrogate)")
        #expect(zip(surrogate, token).allSatisfy { $0.isNumber == $1.isNumber && $0.isUppercase == $1.isUppercase }, "same shape")
        #expect(loaded.config.maskedEnv["TOKEN"] == MaskedSecret(name: "TOKEN", value: token))
        #expect(loaded.config.network.rules["api"]?.inject == ["TOKEN"])
        // Derived from the name and the shape, never the value: another token of the same shape, the same surrogate.
        let other = "sk-ant-api03-" + String(token.dropFirst(13).map { $0.isNumber ? "7" : $0.isUppercase ? "Q" : "q" })
        #expect(try load(project: text, environment: ["HOME": "/home/u", "HOST_TOKEN": other]).config.env["TOKEN"] == surrogate)

        let unmasked = diagnostics(project: "[env]\nTOKEN = \"x\"\n[network.rules.api]\nallow = [\"a.test\"]\ninject = [\"TOKEN\"]\n")
        #expect(unmasked.map(\.message) == ["[network.rules.api] inject names TOKEN, which is not a masked [env] entry"])
        #expect(unmasked.first?.location?.description == "airlock.toml:5:11")
        let passing = diagnostics(
            project:
                "[env]\nTOKEN = { value = \"\(token)\", mask = true }\n[network.rules.api]\nallow = [\"a.test\"]\npassthrough = true\ninject = [\"TOKEN\"]\n"
        )
        #expect(passing.first?.message.contains("passes its traffic through") == true, "\(passing)")
    }

    @Test(
        "[network.middleware.*] and the older [[network.rules.*.middleware]]: their order, env from the host (nil and named when unset), a syntax error at its line, a target a rule passes through refused"
    )
    func middleware() throws {
        let text = """
            [network.rules.api]
            allow = ["api.example.com:443"]
            [[network.rules.api.middleware]]
            script = "req:setHeader('x-rule', '1')"
            [network.middleware.b-second]
            target = ["api.example.com:443"]
            script = "log('b')"
            [network.middleware.a-first]
            target = ["*.example.com"]
            env.TOKEN = "${HOST_TOKEN}"
            env.MISSING = "${HOST_MISSING}"
            script = '''
            req:setHeader("Authorization", "Bearer " .. env.TOKEN)
            '''
            """
        let loaded = try load(project: text, environment: ["HOME": "/home/u", "HOST_TOKEN": "t0k"])
        let middleware = loaded.config.network.middleware
        #expect(middleware.map(\.name) == ["a-first", "b-second", "rules.api.middleware[0]"])
        #expect(middleware.first?.environment == ["TOKEN": "t0k"] && middleware.first?.unresolved == ["MISSING"])
        #expect(middleware.last?.targets.map(\.description) == ["api.example.com:443"])
        #expect(loaded.startRefusals.isEmpty, "\(loaded.startRefusals)")
        // The vault may fill what the environment lacks.
        #expect(loaded.config.missingVariables.contains("HOST_MISSING"))

        let broken = diagnostics(
            project: "[network.middleware.m]\ntarget = [\"a.test\"]\nscript = '''\nlocal a = 1\nif a then\n  req:setHeader('x' 'y')\nend\n'''\n")
        #expect(broken.map(\.message) == ["[network.middleware.m] script, line 3: ')' expected near ''y''"], "\(broken)")
        #expect(broken.first?.location?.description.hasPrefix("airlock.toml:3:") == true, "\(broken)")

        let passing = diagnostics(
            project:
                "[network.rules.p]\nallow = [\"*.example.com\"]\npassthrough = true\n[network.middleware.m]\ntarget = [\"api.example.com:443\"]\nscript = \"\"\n"
        )
        #expect(
            passing.map(\.message) == [
                "[network.middleware.m] applies to \"api.example.com:443\", which [network.rules.p] passes through (\"*.example.com\"): the script would never see its requests"
            ], "\(passing)")
        #expect(diagnostics(project: "[network.middleware.m]\nscript = \"\"\n").map(\.message) == ["[network.middleware.m] needs `target`"])
        #expect(
            diagnostics(project: "[network.middleware.m]\ntarget = [\"a.test\"]\nenv.X = 5\nscript = \"\"\n").first?.message.contains(
                "must be a string") == true)
    }

    @Test("~/.airlock/config.toml is a user layer below ~/.config/airlock/config.toml, and config show names it")
    func sharedUserFile() throws {
        let loaded = try load(
            project: "[vm]\ncpus = 1\n", user: "[vm]\nmemory = \"2G\"\n", rustUser: "[vm]\nmemory = \"1G\"\ncpus = 2\nimage = \"alpine:3\"\n")
        #expect(loaded.layers.map(\.displayPath) == ["~/.airlock/config.toml", "~/.config/airlock/config.toml", "airlock.toml"])
        #expect(loaded.config.vm.memory == ByteSize.gibibytes(2))
        #expect(loaded.config.vm.cpus == 1)
        #expect(loaded.config.vm.image == "alpine:3")
        #expect(loaded.merged["vm"]?["image"]?.origin.location?.description == "~/.airlock/config.toml:4:1")
        // Its errors name it too.
        let error = #expect(throws: ConfigError.self) { try load(rustUser: "[vm]\ncpus = \"two\"\n") }
        #expect(error?.diagnostics.first?.location?.description == "~/.airlock/config.toml:2:1")
    }

    @Test("~/.airlock.toml is read when ~/.airlock/config.toml is absent")
    func sharedUserFileAlternative() throws {
        let files = MemoryFiles(files: ["/home/u/.airlock.toml": "[vm]\ncpus = 3\n"])
        let environment = ["HOME": "/home/u"]
        let loader = ConfigLoader(
            projectRoot: "/p", userConfigPath: nil, sharedUserConfigPaths: ConfigLoader.sharedUserConfigPaths(environment: environment),
            environment: environment, fileSystem: files)
        #expect(try loader.load().config.vm.cpus == 3)
    }

    @Test("a socket's guest path starting with ~ is refused with the fix")
    func socketHomeGuest() throws {
        let error = #expect(throws: ConfigError.self) { try load(project: "[network.sockets.s]\nhost = \"/run/a.sock:~/a.sock\"\n") }
        #expect(error?.diagnostics.first?.message.contains("a guest path starting with ~ is not supported") == true)
        #expect(error?.diagnostics.first?.location?.description == "airlock.toml:2:1")
    }
}
