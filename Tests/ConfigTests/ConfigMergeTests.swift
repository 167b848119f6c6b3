import NetworkPolicy
import Testing

@testable import Config

@Suite("Config merging")
struct ConfigMergeTests {
    @Test("no files: the defaults")
    func defaults() throws {
        let result = try load()
        #expect(result.config == AirlockConfig())
        #expect(result.layers.isEmpty)
        #expect(result.config.vm.image == "host")
        #expect(result.config.network.policy == .denyByDefault)
        #expect(result.config.workspace.mode == .clone)
    }

    @Test("scalars override: local over project over user")
    func scalarsOverride() throws {
        let result = try load(
            project: "[vm]\ncpus = 4\nmemory = \"4G\"\n",
            local: "[vm]\ncpus = 8\n",
            user: "[vm]\ncpus = 1\nmemory = \"1G\"\nimage = \"debian:bookworm\"\n")
        #expect(result.config.vm.cpus == 8)
        #expect(result.config.vm.memory == .gibibytes(4))
        #expect(result.config.vm.image == "debian:bookworm")
        #expect(result.layers.map(\.kind) == [.user, .project, .local])
    }

    @Test("arrays concatenate in layer order")
    func arraysConcatenate() throws {
        let result = try load(
            project: "[network.rules.web]\nallow = [\"a.example\"]\n",
            local: "[network.rules.web]\nallow = [\"b.example:8080\"]\n",
            user: "[network.rules.web]\nallow = [\"u.example\"]\n")
        #expect(result.config.network.rules["web"]?.allow.map(\.description) == ["u.example", "a.example", "b.example:8080"])
    }

    @Test("tables merge key by key")
    func tablesMerge() throws {
        let result = try load(
            project: "[mounts.data]\nsource = \"/srv/data\"\ntarget = \"/data\"\n",
            local: "[mounts.data]\nread_only = false\n")
        #expect(result.config.mounts["data"] == AirlockConfig.Mount(source: "/srv/data", target: "/data", readOnly: false, missing: .fail))
    }

    @Test("enabled = false in a higher layer switches an entry off")
    func enabledFalse() throws {
        let result = try load(
            project: "[network.rules.web]\nallow = [\"a.example\"]\n[network.rules.ssh]\nallow = [\"*:22\"]\n",
            local: "[network.rules.ssh]\nenabled = false\n")
        #expect(result.config.network.rules.keys.sorted() == ["web"])
        // And the effective view leaves it out too.
        #expect(result.effective["network"]?["rules"]?["ssh"] == nil)
        #expect(result.effective["network"]?["rules"]?["web"] != nil)
    }

    @Test("an entry re-enabled above a disabling layer is back")
    func reEnabled() throws {
        let result = try load(
            project: "[network.rules.ssh]\nallow = [\"*:22\"]\nenabled = false\n",
            local: "[network.rules.ssh]\nenabled = true\n")
        #expect(result.config.network.rules["ssh"]?.allow.map(\.description) == ["*:22"])
    }

    @Test("presets are base layers: between the user's file and the project's")
    func presetsAreBaseLayers() throws {
        let result = try load(
            project: "presets = [\"python\"]\n[env]\nPIP_DISABLE_PIP_VERSION_CHECK = \"0\"\n",
            user: "[env]\nPIP_DISABLE_PIP_VERSION_CHECK = \"user\"\nEDITOR = \"vi\"\n")
        #expect(result.layers.map(\.kind) == [.user, .preset, .project])
        #expect(result.layers[1].displayPath == "preset:python")
        // The project overrides the preset, and the preset overrides the user.
        #expect(result.config.env["PIP_DISABLE_PIP_VERSION_CHECK"] == "0")
        #expect(result.config.env["EDITOR"] == "vi")
        #expect(result.config.network.rules["python-packages"]?.allow.map(\.description) == ["pypi.org:443", "files.pythonhosted.org:443"])
    }

    @Test("a preset's rule can be switched off by the local file")
    func presetRuleDisabled() throws {
        let result = try load(project: "presets = [\"claude-code\"]\n", local: "[network.rules.claude-code]\nenabled = false\n")
        #expect(result.config.network.rules["claude-code"] == nil)
        #expect(result.config.presets == ["claude-code"])
    }

    @Test("every shipped preset parses, validates and carries a rule that allows something", arguments: Presets.names)
    func shippedPreset(name: String) throws {
        let result = try load(project: "presets = [\"\(name)\"]\n")
        #expect(result.config.network.rules.count == 1)
        #expect(result.config.network.rules.values.allSatisfy { !$0.allow.isEmpty })
        #expect(try load(project: "presets = [\"\(name)\"]\n").startRefusals.isEmpty)
    }

    @Test("a preset named twice is applied once")
    func presetOnce() throws {
        let result = try load(project: "presets = [\"rust\"]\n", user: "presets = [\"rust\"]\n")
        #expect(result.layers.filter { $0.kind == .preset }.count == 1)
        #expect(result.config.presets == ["rust"])
        #expect(result.config.network.rules["rust-packages"]?.allow.count == 4)
    }

    @Test("origins: each value knows its file, line and column")
    func origins() throws {
        let result = try load(
            project: "# comment\n[vm]\ncpus = 4\n\n[network.rules.web]\nallow = [\n  \"a.example\",\n  \"b.example\",\n]\n",
            local: "[vm]\n  memory = \"8G\"\n",
            user: "[vm]\nimage = \"alpine\"\n")
        let effective = result.effective
        #expect(effective["vm"]?["cpus"]?.origin.description == "airlock.toml:3:1")
        #expect(effective["vm"]?["memory"]?.origin.description == "airlock.local.toml:2:3")
        #expect(effective["vm"]?["image"]?.origin.description == "~/.config/airlock/config.toml:2:1")
        #expect(effective["vm"]?["backend"]?.origin == .builtIn)
        let allow = effective["network"]?["rules"]?["web"]?["allow"]?.elements ?? []
        #expect(allow.map(\.origin.description) == ["airlock.toml:7:3", "airlock.toml:8:3"])
    }

    @Test("ports, sockets, mounts, disk, masks and daemons take their typed form")
    func typedSections() throws {
        let result = try load(
            project: """
                [network.ports.db]
                host = [5432, "9000:3000"]
                guest = ["5000:4000"]

                [network.sockets.agent]
                host = "~/.ssh/agent.sock"
                guest = "/run/agent.sock"

                [mounts.cache]
                source = "~/cache"
                target = "/cache"
                missing = "create"

                [disk]
                size = "20G"
                [disk.cache.cargo]
                paths = ["/root/.cargo/registry"]

                [mask.secrets]
                paths = [".env", "config/secrets"]

                [daemons.redis]
                command = ["redis-server", "--port", "6379"]

                [workspace]
                mode = "mount"
                read_only = true
                """)
        let config = result.config
        #expect(config.network.ports["db"]?.toHost == [PortForward(host: 5432, guest: 5432), PortForward(host: 9000, guest: 3000)])
        #expect(config.network.ports["db"]?.toGuest == [PortForward(host: 5000, guest: 4000)])
        // The host's port first in both lists (the Rust airlock's form): `host` reaches the host,
        // `guest` reaches the guest.
        #expect(config.network.guestForwards.map { [$0.guestPort, $0.hostPort] } == [[5432, 5432], [3000, 9000]])
        #expect(config.network.hostForwards.map { [$0.listenPort, $0.guestPort] } == [[5000, 4000]])
        #expect(config.network.sockets["agent"] == .init(host: "/home/u/.ssh/agent.sock", guest: "/run/agent.sock"))
        #expect(config.mounts["cache"] == .init(source: "/home/u/cache", target: "/cache", readOnly: true, missing: .create))
        #expect(config.disk.size == .gibibytes(20))
        #expect(config.disk.caches["cargo"] == ["/root/.cargo/registry"])
        #expect(config.masks["secrets"] == [".env", "config/secrets"])
        #expect(config.daemons["redis"]?.command == ["redis-server", "--port", "6379"])
        #expect(config.workspace == .init(mode: .mount, readOnly: true))
    }
}

@Suite("[env] templates")
struct EnvTemplateTests {
    @Test(
        "${VAR:default}: unset, empty and set",
        arguments: [
            ([String: String](), "fallback"),
            (["V": ""], "fallback"),
            (["V": "value"], "value"),
        ])
    func withDefault(environment: [String: String], expected: String) throws {
        #expect(try EnvTemplate.expand("${V:fallback}") { environment[$0] } == expected)
    }

    @Test(
        "${VAR} expands to empty when unset or empty (start refuses an unset one), to the value when set",
        arguments: [
            ([String: String](), ""),
            (["V": ""], ""),
            (["V": "x y"], "x y"),
        ])
    func withoutDefault(environment: [String: String], expected: String) throws {
        #expect(try EnvTemplate.expand("${V}") { environment[$0] } == expected)
    }

    @Test("text around, several variables, $$ and lone $")
    func mixed() throws {
        let environment = ["A": "1", "B": "2"]
        #expect(try EnvTemplate.expand("a=${A}, b=${B:x}, c=${C:3}, $$HOME, cost $5") { environment[$0] } == "a=1, b=2, c=3, $HOME, cost $5")
        #expect(try EnvTemplate.expand("${A:}") { _ in nil } == "")
    }

    @Test("malformed templates are errors", arguments: ["${UNCLOSED", "${}", "${1ABC}", "${A-B}"])
    func malformed(template: String) {
        #expect(throws: EnvTemplate.SyntaxError.self) { try EnvTemplate.expand(template) { _ in nil } }
    }

    @Test("templates expand from the host environment at load")
    func expandedAtLoad() throws {
        let result = try load(
            project: "[env]\nTOKEN = \"${TEST_TOKEN:none}\"\nHOMEDIR = \"${HOME}\"\n", environment: ["HOME": "/home/u", "TEST_TOKEN": "t0k"])
        #expect(result.config.env == ["TOKEN": "t0k", "HOMEDIR": "/home/u"])
        let unset = try load(project: "[env]\nTOKEN = \"${TEST_TOKEN:none}\"\n", environment: ["HOME": "/home/u"])
        #expect(unset.config.env == ["TOKEN": "none"])
    }
}

@Suite("Sizes")
struct ByteSizeTests {
    @Test(
        "accepted forms",
        arguments: [
            ("512M", UInt64(512) << 20), ("10G", UInt64(10) << 30), ("1.5GiB", UInt64(3) << 29), ("2048k", UInt64(2) << 20),
            ("100", 100), ("1T", UInt64(1) << 40), ("4 GB", UInt64(4) << 30),
        ])
    func accepted(text: String, bytes: UInt64) throws {
        #expect(try ByteSize(parsing: text).bytes == bytes)
    }

    @Test("rejected forms", arguments: ["10XB", "", "G", "-1G", "1e3", "1..2G", "ten"])
    func rejected(text: String) {
        #expect(throws: ByteSizeError.self) { try ByteSize(parsing: text) }
    }

    @Test("description round-trips")
    func description() throws {
        #expect(ByteSize.gibibytes(2).description == "2G")
        #expect(try ByteSize(parsing: ByteSize.mebibytes(1536).description) == .mebibytes(1536))
    }
}
