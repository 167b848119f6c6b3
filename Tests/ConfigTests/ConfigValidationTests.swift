import NetworkPolicy
import Testing

@testable import Config

@Suite("Config validation: every error says where and what")
struct ConfigValidationTests {
    /// The first (and only expected) diagnostic of a project file.
    private func only(_ project: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> ConfigDiagnostic? {
        let found = diagnostics(project: project)
        #expect(found.count == 1, "expected one diagnostic, got \(found)", sourceLocation: sourceLocation)
        return found.first
    }

    @Test("a misspelt key at line 7: location, the key, the suggestion")
    func misspeltKey() {
        let text = "# airlock\n\npresets = []\n\n[vm]\ncpus = 2\nimgae = \"x\"\n"
        let diagnostic = only(text)
        #expect(diagnostic?.location?.description == "airlock.toml:7:1")
        #expect(diagnostic?.message.contains("`imgae`") == true)
        #expect(diagnostic?.hint == "did you mean `image`?")
    }

    @Test("an unknown key far from any known one lists the known keys")
    func unknownKeyWithoutSuggestion() {
        let diagnostic = only("[vm]\nzzzzzz = 1\n")
        #expect(diagnostic?.location?.description == "airlock.toml:2:1")
        #expect(diagnostic?.hint?.contains("image, cpus, memory, kernel, initramfs, backend") == true)
    }

    @Test("unknown top-level table and unknown key inside a named entry")
    func unknownElsewhere() {
        let top = only("\n[netwrok]\npolicy = \"deny-always\"\n")
        #expect(top?.location?.description == "airlock.toml:2:1")
        #expect(top?.hint == "did you mean `network`?")
        let named = only("[network.rules.web]\nalow = [\"a.example\"]\n")
        #expect(named?.location?.description == "airlock.toml:2:1")
        #expect(named?.message.contains("[network.rules.web]") == true)
        #expect(named?.hint == "did you mean `allow`?")
    }

    @Test(
        "wrong types",
        arguments: [
            ("[vm]\ncpus = \"four\"\n", "airlock.toml:2:1", "must be an integer"),
            ("[vm]\nimage = 3\n", "airlock.toml:2:1", "must be an image reference (\"debian:bookworm\") or a table with `name`, not an integer"),
            ("[mounts.x]\nsource = \"/a\"\ntarget = \"/b\"\nread_only = \"yes\"\n", "airlock.toml:4:1", "must be true or false"),
            ("[vm]\ncpus = 2\nboot_snapshot = \"no\"\n", "airlock.toml:3:1", "must be true or false"),
            ("presets = \"claude-code\"\n", "airlock.toml:1:1", "must be an array"),
            ("[network]\nrules = 5\n", "airlock.toml:2:1", "must be a table"),
            ("[network.rules]\nweb = 5\n", "airlock.toml:2:1", "must be a table ([network.rules.web])"),
            ("[env]\nA = 1\n", "airlock.toml:2:1", "`env.A` must be a string"),
        ])
    func wrongType(text: String, location: String, message: String) {
        let diagnostic = only(text)
        #expect(diagnostic?.location?.description == location)
        #expect(diagnostic?.message.contains(message) == true, "\(diagnostic?.message ?? "none")")
    }

    @Test("sizes: \"10XB\" is an error with the accepted units")
    func badSize() {
        let diagnostic = only("[disk]\nsize = \"10XB\"\n")
        #expect(diagnostic?.location?.description == "airlock.toml:2:1")
        #expect(diagnostic?.message.contains("\"10XB\" is not a size") == true)
        #expect(diagnostic?.message.contains("K, M, G or T") == true)
    }

    @Test("policy names and backends are checked, with a suggestion")
    func badChoice() {
        let policy = only("[network]\npolicy = \"deny-by-defualt\"\n")
        #expect(policy?.location?.description == "airlock.toml:2:1")
        #expect(policy?.hint == "did you mean \"deny-by-default\"?")
        let backend = only("[vm]\nbackend = \"qemu-kvm\"\n")
        #expect(backend?.message.contains("\"auto\", \"cloud-hypervisor\", \"qemu\"") == true)
        let resolution = only("[vm]\nresolution = \"dokcer\"\n")
        #expect(resolution?.location?.description == "airlock.toml:2:1")
        #expect(resolution?.message.contains("\"auto\", \"registry\", \"docker\"") == true)
        #expect(resolution?.hint == "did you mean \"docker\"?")
        let layers = only("[vm]\nimage_layers = \"blocks\"\n")
        #expect(layers?.location?.description == "airlock.toml:2:1")
        #expect(layers?.message.contains("\"auto\", \"share\", \"block\"") == true)
        #expect(layers?.hint == "did you mean \"block\"?")
        let preset = only("presets = [\"claude-cod\"]\n")
        #expect(preset?.location?.description == "airlock.toml:1:12")
        #expect(preset?.hint == "did you mean \"claude-code\"?")
    }

    @Test(
        "malformed patterns point at the element",
        arguments: [
            "http://example.com", "exa mple.com", "example.com:99999", "example.com:0", "ex*ample.com", "*.", "a..b", "::1", "[::1", "-bad.example",
        ])
    func badPattern(pattern: String) {
        let text = "[network.rules.web]\nallow = [\n  \"ok.example\",\n  \"\(pattern)\",\n]\n"
        let diagnostic = only(text)
        #expect(diagnostic?.location?.description == "airlock.toml:4:3")
        #expect(diagnostic?.message.contains("network.rules.web.allow[1]") == true)
    }

    @Test(
        "integers out of range, bad ports, relative paths, escaping masks",
        arguments: [
            ("[vm]\ncpus = 0\n", "outside 1...256"),
            ("[network.ports.db]\nhost = [70000]\n", "not a port number"),
            ("[network.ports.db]\nguest = [\"80:x\"]\n", "not a port forward"),
            ("[mounts.m]\nsource = \"/a\"\ntarget = \"~root/x\"\n", "must be an absolute path, start with ~/, or be relative to the project"),
            ("[mounts.m]\nsource = \"\"\ntarget = \"/data\"\n", "must be an absolute path, start with ~/, or be relative to the project"),
            ("[mounts.m]\nsource = \"/a\"\ntarget = \"/b\"\ncreate_mode = \"999\"\nmissing = \"create-dir\"\n", "must be octal permission bits"),
            ("[mounts.m]\nsource = \"/a\"\ntarget = \"/b\"\ncreate_mode = 644\nmissing = \"create-dir\"\n", "must be an octal mode string"),
            ("[mask.m]\npaths = [\"../outside\"]\n", "inside the project"),
            ("[mask.m]\npaths = [\"/etc\"]\n", "inside the project"),
            ("[env]\nA = \"${UNCLOSED\"\n", "never closed"),
        ])
    func badValues(text: String, message: String) {
        let diagnostic = only(text)
        #expect(diagnostic?.location != nil)
        #expect(diagnostic?.message.contains(message) == true, "\(diagnostic?.message ?? "none")")
    }

    @Test("invalid TOML reports toml++'s position")
    func syntaxError() {
        let diagnostic = only("[vm]\ncpus = = 2\n")
        #expect(diagnostic?.location?.file == "airlock.toml")
        #expect(diagnostic?.location?.line == 2)
        #expect(diagnostic?.message.hasPrefix("invalid TOML") == true)
    }

    @Test("errors from several files are all reported, in file order")
    func severalFiles() {
        let found = diagnostics(project: "[vm]\ncpu = 2\n", local: "[vm]\nmemroy = \"1G\"\n", user: "[vm]\nimage = 1\n")
        #expect(found.count == 3)
        let files = Set(found.compactMap(\.location?.file))
        #expect(files == ["airlock.toml", "airlock.local.toml", "~/.config/airlock/config.toml"])
    }

    @Test("required keys are checked after merging, so a layer may complete another's entry")
    func requiredAfterMerge() throws {
        let missing = diagnostics(project: "[mounts.data]\nsource = \"/srv\"\n")
        #expect(missing.count == 1)
        #expect(missing.first?.message == "[mounts.data] needs `target`")
        #expect(missing.first?.location?.description == "airlock.toml:1:1")
        let completed = try load(project: "[mounts.data]\nsource = \"/srv\"\n", local: "[mounts.data]\ntarget = \"/srv\"\n")
        #expect(completed.config.mounts["data"]?.target == "/srv")
        // A disabled incomplete entry is no error.
        #expect(diagnostics(project: "[mounts.data]\nsource = \"/srv\"\nenabled = false\n").isEmpty)
    }

    @Test(
        "[mounts.*]: relative and ~ paths kept for the start to place, octal create_mode, and the keys that act only when a source is created refused elsewhere"
    )
    func mountKeys() throws {
        let config = try load(
            project: """
                [mounts.cfg]
                source = "~/.airlock/gitconfig"
                target = "~/.gitconfig"
                missing = "create-file"
                file_content = "[user]\\n"
                create_mode = "0600"
                [mounts.data]
                source = "data"
                target = "fixtures/data"
                read_only = false
                missing = "create"
                """, environment: ["HOME": "/home/u"]
        ).config
        #expect(
            config.mounts["cfg"]
                == .init(
                    source: "/home/u/.airlock/gitconfig", target: "~/.gitconfig", missing: .createFile, fileContent: "[user]\n", createMode: 0o600))
        #expect(config.mounts["data"] == .init(source: "data", target: "fixtures/data", readOnly: false, missing: .create))
        let misplaced = diagnostics(project: "[mounts.m]\nsource = \"/a\"\ntarget = \"/b\"\nfile_content = \"x\"\ncreate_mode = \"644\"\n")
        #expect(
            misplaced.map { "\($0.location?.description ?? "?") \($0.message)" } == [
                "airlock.toml:4:1 [mounts.m] file_content is used only with missing = \"create-file\"",
                "airlock.toml:5:1 [mounts.m] create_mode is used only with missing = \"create-dir\" or \"create-file\"",
            ], "\(misplaced)")
    }

    @Test("[workspace]: mode = \"mount\" with or without read_only; read_only with the clone is refused where it is written")
    func workspaceKeys() throws {
        #expect(try load(project: "[workspace]\nmode = \"mount\"\nread_only = true\n").config.workspace == .init(mode: .mount, readOnly: true))
        #expect(try load(project: "[workspace]\nmode = \"mount\"\n").config.workspace == .init(mode: .mount, readOnly: false))
        let refused = diagnostics(project: "[workspace]\nread_only = true\n")
        #expect(
            refused.map { "\($0.location?.description ?? "?") \($0.message)" } == [
                "airlock.toml:2:1 [workspace] read_only applies only with mode = \"mount\""
            ], "\(refused)")
    }

    @Test("[disk.cache.*]: the enabled entries' paths; every declared name kept; a name that cannot be a directory is refused")
    func cacheKeys() throws {
        let config = try load(project: "[disk.cache.cargo]\npaths = [\"~/.cargo/registry\"]\n[disk.cache.old]\nenabled = false\npaths = [\"/x\"]\n")
            .config
        #expect(config.disk.caches == ["cargo": ["~/.cargo/registry"]])
        #expect(config.disk.keptCaches == ["cargo", "old"])
        for name in ["\".hidden\"", "\"a/b\"", "\"a b\""] {
            let found = diagnostics(project: "[disk.cache.\(name)]\npaths = [\"/x\"]\n")
            #expect(found.first?.message.contains("names its directory on the state disk") == true, "\(name): \(found)")
        }
        #expect(diagnostics(project: "[disk.cache.c]\npaths = [\"~x\"]\n").first?.message.contains("must be an absolute path") == true)
    }

    @Test("[daemons.*]: every key of the Rust airlock's but harden; env templates from the host, an unset one refused at start")
    func daemonKeys() throws {
        let loaded = try load(
            project: """
                [daemons.db]
                command = ["postgres", "-D", "/var/lib/pg"]
                cwd = "~/data"
                signal = "SIGINT"
                timeout = 0
                restart = "on-failure"
                max_restarts = 0
                env = { PGUSER = "${USER:dev}", TOKEN = "${HOST_TOKEN}", MISSING = { value = "${NOPE}", optional = true } }
                [daemons.later]
                command = ["x"]
                env.NEED = "${UNSET_HERE}"
                """, environment: ["HOME": "/home/u", "HOST_TOKEN": "t"])
        #expect(
            loaded.config.daemons["db"]
                == .init(
                    command: ["postgres", "-D", "/var/lib/pg"], cwd: "~/data", env: ["PGUSER": "dev", "TOKEN": "t"], signal: 2, timeout: 0,
                    restart: .onFailure, maxRestarts: 0))
        #expect(loaded.startRefusals.map(\.message) == ["`daemons.later.env.NEED` needs $UNSET_HERE, unset on this host"])
        #expect(
            diagnostics(project: "[daemons.d]\ncommand = [\"x\"]\nsignal = \"SIGSEGV\"\n").first?.message.contains("expected one of \"SIGTERM\"")
                == true)
        #expect(
            diagnostics(project: "[daemons.d]\ncommand = [\"x\"]\nrestart = \"never\"\n").first?.message.contains(
                "expected one of \"always\", \"on-failure\"") == true)
        #expect(diagnostics(project: "[daemons.d]\ncommand = [\"x\"]\ncwd = \"data\"\n").first?.message.contains("must be an absolute path") == true)
        #expect(diagnostics(project: "[daemons.d]\ncommand = []\n").first?.message == "[daemons.d] needs a non-empty `command`")
        #expect(
            try load(project: "[daemons.d]\ncommand = [\"x\"]\nenv.K = { value = \"v\", mask = true }\n").startRefusals.map(\.message) == [
                "`daemons.d.env.K` with mask = true is not supported by this airlock yet"
            ])
    }

    @Test("the error text reads like a compiler's")
    func rendering() {
        let error = ConfigError([
            ConfigDiagnostic(at: .init(file: "airlock.toml", line: 7, column: 1), "unknown key `imgae` in [vm]", hint: "did you mean `image`?")
        ])
        #expect(error.description == "airlock.toml:7:1: error: unknown key `imgae` in [vm]\n  hint: did you mean `image`?")
    }

    @Test("suggestions: transpositions and small typos, nothing for unrelated words")
    func suggestions() {
        #expect(suggestion(for: "imgae", among: ["image", "cpus"]) == "image")
        #expect(suggestion(for: "cpu", among: ["image", "cpus"]) == "cpus")
        #expect(suggestion(for: "MEMORY", among: ["memory"]) == "memory")
        #expect(suggestion(for: "colour", among: ["image", "cpus"]) == nil)
    }
}

@Suite("TOML locator")
struct TOMLLocatorTests {
    @Test("headers, dotted and quoted keys, inline tables, arrays, tricky strings")
    func positions() {
        let text = """
            title = "a [fake] = header"
            multi = \"\"\"
            [not.a.table]
            x = 1
            \"\"\"
            [a . "b c"]
            d.e = 1
            'lit' = 'it''s'
            arr = [ 1, [2, 3], { k = "v" } ] # trailing
            [[list]]
            x = 1
            [[list]]
            x = 2
            """
        let locator = TOMLLocator(text: text)
        #expect(locator.position(of: ["title"])! == (1, 1))
        #expect(locator.position(of: ["multi"])! == (2, 1))
        #expect(locator.positions[["not", "a", "table"]] == nil)
        #expect(locator.position(of: ["a", "b c"])! == (6, 1))
        #expect(locator.position(of: ["a", "b c", "d", "e"])! == (7, 1))
        #expect(locator.position(of: ["a", "b c", "lit"])! == (8, 1))
        #expect(locator.position(of: ["a", "b c", "arr", "[1]"])! == (9, 12))
        #expect(locator.position(of: ["a", "b c", "arr", "[2]", "k"])! == (9, 22))
        #expect(locator.position(of: ["list", "[1]", "x"])! == (13, 1))
        // Unknown paths fall back to the nearest known ancestor.
        #expect(locator.position(of: ["a", "b c", "nothing"])! == (6, 1))
    }
}

@Suite("Config validation: Unix-socket forwards")
struct SocketForwardValidationTests {
    @Test("a valid forward loads, ~ expanded")
    func valid() throws {
        let result = try load(project: "[network.sockets.ssh-agent]\nhost = \"~/.ssh/agent.sock\"\nguest = \"/run/airlock/ssh-agent.sock\"\n")
        #expect(
            result.config.network.socketForwards == [
                .init(entry: "ssh-agent", hostPath: "/home/u/.ssh/agent.sock", guestPath: "/run/airlock/ssh-agent.sock")
            ])
    }

    @Test(
        "bad forwards: file:line:column and what is wrong",
        arguments: [
            ("[network.sockets.a]\nhost = \"/h.sock\"\nguest = \"run/a.sock\"\n", "airlock.toml:3:1", "it must be an absolute path"),
            ("[network.sockets.a]\nhost = \"/h.sock\"\nguest = \"/p/src/a.sock\"\n", "airlock.toml:3:1", "inside the project (/p)"),
            ("[network.sockets.a]\nhost = \"/h.sock\"\nguest = \"/p\"\n", "airlock.toml:3:1", "inside the project"),
            ("[network.sockets.a]\nhost = \"/h.sock\"\nguest = \"/run/../p/a.sock\"\n", "airlock.toml:3:1", "without `.`, `..`"),
            ("[network.sockets.a]\nhost = \"h.sock\"\nguest = \"/run/a.sock\"\n", "airlock.toml:2:1", "must be an absolute path (or start with ~/)"),
            ("[network.sockets.a]\nhost = \"/h.sock\"\nguest = \"/run/\(String(repeating: "x", count: 100))\"\n", "airlock.toml:3:1", "at most 96"),
            ("[network.sockets.\"a b\"]\nhost = \"/h.sock\"\nguest = \"/run/a.sock\"\n", "airlock.toml:1:1", "the name may only have"),
            ("[network.sockets.a]\nhost = \"/h.sock:~/a.sock\"\n", "airlock.toml:2:1", "a guest path starting with ~ is not supported"),
            ("[network.sockets.a]\nhost = \"~/h.sock\"\n", "airlock.toml:2:1", "a guest path starting with ~ is not supported"),
            ("[network.sockets.a]\nguest = \"/run/a.sock\"\n", "airlock.toml:1:1", "needs `host`"),
        ])
    func invalid(text: String, location: String, message: String) {
        let found = diagnostics(project: text)
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.location?.description == location, "\(found)")
        #expect(found.first?.message.contains(message) == true, "\(found.first?.message ?? "none")")
    }

    @Test("two forwards may not share a guest path; a disabled one does not count")
    func duplicate() {
        let base =
            "[network.sockets.a]\nhost = \"/a.sock\"\nguest = \"/run/x.sock\"\n[network.sockets.b]\nhost = \"/b.sock\"\nguest = \"/run/x.sock\"\n"
        let found = diagnostics(project: base)
        #expect(found.count == 1 && found.first?.message.contains("also [network.sockets.a]'s") == true, "\(found)")
        #expect(diagnostics(project: base + "enabled = false\n").isEmpty)
    }
}
