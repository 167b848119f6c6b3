import Testing

@testable import Config

/// Files given as bytes (for text that is not UTF-8).
struct ByteFiles: FileReading {
    var files: [String: [UInt8]]
    func read(_ path: String) throws -> [UInt8]? { files[path] }
}

@Suite("Configuration checked against the host and the encoding")
struct HostChecksTests {
    static let host = HostCapacity(cpus: 2, memoryBytes: 24 << 30, freeDiskBytes: 50 << 30)

    @Test("memory and CPUs beyond the host's, and a disk beyond the free space, are each refused where they are written")
    func capacity() throws {
        let loaded = try load(project: "[vm]\ncpus = 64\nmemory = \"99999T\"\n\n[disk]\nsize = \"100G\"\n")
        let problems = loaded.problems(on: Self.host)
        #expect(problems.count == 3)
        let cpus = try #require(problems.first { $0.message.contains("cpus") })
        #expect(cpus.location?.description == "airlock.toml:2:1")
        #expect(cpus.message == "[vm] cpus is 64, but this host has 2")
        let memory = try #require(problems.first { $0.message.contains("memory") })
        #expect(memory.location?.description == "airlock.toml:3:1")
        #expect(memory.message.contains("but this host has 24G"))
        let disk = try #require(problems.first { $0.message.contains("[disk] size") })
        #expect(disk.location?.description == "airlock.toml:6:1")
        // An existing disk already holds part of it.
        #expect(loaded.problems(on: Self.host, existingDisk: 60 << 30).allSatisfy { !$0.message.contains("[disk]") })
        #expect(try load(project: "[vm]\ncpus = 2\nmemory = \"2G\"\n").problems(on: Self.host).isEmpty)
    }

    @Test("invalid UTF-8 anywhere in a file (a string included) is refused at its line and column")
    func encoding() throws {
        var bytes = Array("[vm]\nimage = \"caf".utf8)
        bytes += [0xE9, 0x22, 0x0A]  // Latin-1 é, then the closing quote
        let loader = ConfigLoader(
            projectRoot: "/p", userConfigPath: nil, environment: [:], fileSystem: ByteFiles(files: ["/p/airlock.toml": bytes]))
        let error = #expect(throws: ConfigError.self) { try loader.load() }
        let diagnostic = try #require(error?.diagnostics.first)
        #expect(diagnostic.location?.description == "airlock.toml:2:13")
        #expect(diagnostic.message.contains("not valid UTF-8"))
        #expect(firstInvalidUTF8(in: Array("ok\nstill é ok\n".utf8)) == nil)
        #expect(firstInvalidUTF8(in: [0x61, 0x0A, 0x62, 0xFF]).map { [$0.line, $0.column] } == [2, 2])
    }

    @Test("entries this airlock cannot act on yet are refused where they are written, never silently ignored")
    func notYetSupported() throws {
        let loaded = try load(
            project: """
                [mounts.data]
                source = "/srv"
                target = "/data"

                [mask.secrets]
                paths = [".env"]

                [daemons.redis]
                command = ["redis-server"]

                [disk.cache.cargo]
                paths = ["/root/.cargo"]

                [vm]
                kvm = true
                """)
        let refused = loaded.startRefusals.map { "\($0.location?.description ?? "?") \($0.message)" }
        #expect(refused == ["airlock.toml:15:1 `vm.kvm` is not supported by this airlock yet"], "\(refused)")
        #expect(try load(project: "[mounts.data]\nsource = \"/srv\"\ntarget = \"/d\"\nenabled = false\n").startRefusals.isEmpty)
    }
}
