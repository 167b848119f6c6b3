import GuestLink
import NIOCore
import NIOHPACK
import Testing

@Suite("Link wire format")
struct WireTests {
    static let spec = ExecSpec(
        arguments: ["sh", "-c", "echo ünïcødé"], environment: ["A=1", "EMPTY="], workingDirectory: "/work/p",
        terminal: WindowSize(rows: 40, columns: 120), user: 1000, group: 1000)

    @Test("every session frame survives encoding, split at every byte boundary")
    func roundTrip() throws {
        let frames: [SessionFrame] = [
            .spec(Self.spec), .stdin(ByteBuffer(string: "input")), .stdinClosed, .resize(WindowSize(rows: 1, columns: 2)), .signal(2),
            .stdout(ByteBuffer(bytes: [0, 1, 255])), .stderr(ByteBuffer()), .exited(code: 7, signal: 0), .failed("no such file"),
        ]
        var stream = ByteBuffer()
        for frame in frames { frame.write(to: &stream) }
        let bytes = Array(stream.readableBytesView)
        for split in [1, 2, 3, 5, 7, 64, bytes.count] {
            var parser = SessionFrameParser()
            var decoded: [SessionFrame] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + split)
                parser.append(ByteBuffer(bytes: bytes[offset..<end]))
                while let frame = try parser.next() { decoded.append(frame) }
                offset = end
            }
            #expect(decoded == frames, "split every \(split) bytes")
        }
    }

    @Test("setup spec round trip")
    func setupRoundTrip() throws {
        let setup = SetupSpec(
            clockSeconds: 1_700_000_000, clockNanoseconds: 5, hostname: "airlock-x", stateDisk: "/dev/vda",
            shares: [
                .init(tag: "usr", path: "/usr", readOnly: true, kind: .overlay),
                .init(tag: "workspace", path: "/home/u/p", readOnly: false, kind: .direct),
            ],
            links: [(path: "/bin", target: "usr/bin")], files: [.init(path: "/etc/ld.so.cache", contents: [0, 1, 2, 255], mode: 0o644)],
            directories: ["/var/cache"], home: "/home/u", user: 1000, group: 1000)
        #expect(try SetupSpec(decoding: setup.encoded()) == setup)
        var forwarding = setup
        forwarding.forwardPorts = [5000]
        forwarding.forwardSockets = [.init(name: "ssh-agent", path: "/run/airlock/ssh-agent.sock")]
        let decoded = try SetupSpec(decoding: forwarding.encoded())
        #expect(decoded.forwardSockets == forwarding.forwardSockets && decoded.forwardPorts == [5000])
        var mounting = setup
        mounting.shares.append(.init(tag: "mounts-ro", path: "/", readOnly: true, kind: .staging))
        mounting.fileMounts = [.init(tag: "mounts-ro", name: "file0", path: "/home/u/.gitconfig")]
        #expect(try SetupSpec(decoding: mounting.encoded()).fileMounts == mounting.fileMounts)
        var caching = setup
        caching.caches = [.init(name: "cargo", path: "/home/u/.cargo/registry"), .init(name: "node", path: "/home/u/p/node_modules")]
        caching.keptCaches = ["cargo", "node", "off"]
        let cached = try SetupSpec(decoding: caching.encoded())
        #expect(cached.caches == caching.caches && cached.keptCaches == caching.keptCaches)
        for name in ["", ".", "..", ".hidden", "a/b"] {
            var bad = setup
            bad.caches = [.init(name: name, path: "/x")]
            #expect(throws: WireError.self, "\(name)") { try SetupSpec(decoding: bad.encoded()) }
            bad.caches = []
            bad.keptCaches = [name]
            #expect(throws: WireError.self, "\(name)") { try SetupSpec(decoding: bad.encoded()) }
        }
    }

    @Test(
        "setup specs: a file mount outside a staging share, with a path in its name, or at / is refused",
        arguments: [
            ("workspace", "file0", "/x"), ("mounts-ro", "a/b", "/x"), ("mounts-ro", "..", "/x"), ("mounts-ro", "file0", "/"),
            ("mounts-ro", "file0", "x"),
        ])
    func badFileMount(tag: String, name: String, path: String) {
        var setup = SetupSpec(
            clockSeconds: 0, clockNanoseconds: 0, hostname: "h", stateDisk: "/dev/vda",
            shares: [
                .init(tag: "workspace", path: "/p", readOnly: false, kind: .direct),
                .init(tag: "mounts-ro", path: "/", readOnly: true, kind: .staging),
            ],
            links: [], files: [], directories: [], home: "/root", user: 0, group: 0)
        setup.fileMounts = [.init(tag: tag, name: name, path: path)]
        #expect(throws: WireError.self) { try SetupSpec(decoding: setup.encoded()) }
    }

    @Test(
        "setup specs: socket forwards with a bad name or path are refused",
        arguments: [
            ("a b", "/run/a.sock"), ("", "/run/a.sock"), ("a", "run/a.sock"), ("a", "/run/../a.sock"), ("a", "/"),
            ("a", "/run/" + String(repeating: "x", count: 100)),
        ])
    func badSocketForward(name: String, path: String) {
        var setup = SetupSpec(
            clockSeconds: 0, clockNanoseconds: 0, hostname: "h", stateDisk: "/dev/vda", shares: [], links: [], files: [], directories: [],
            home: "/root", user: 0, group: 0)
        setup.forwardSockets = [.init(name: name, path: path)]
        #expect(throws: WireError.self) { try SetupSpec(decoding: setup.encoded()) }
    }

    @Test("socket requests: only a valid entry name parses")
    func socketRequest() throws {
        #expect(try SocketRequest(headers: SocketRequest(name: "ssh-agent").headers) == SocketRequest(name: "ssh-agent"))
        for name in ["", "../x", "a/b", String(repeating: "a", count: 65), "a\u{0}"] {
            #expect(throws: WireError.self, "\(name)") { try SocketRequest(headers: SocketRequest(name: name).headers) }
        }
        var wrongPath = SocketRequest(name: "a").headers
        wrongPath.replaceOrAdd(name: ":path", value: "/v1/tcp")
        #expect(throws: WireError.self) { try SocketRequest(headers: wrongPath) }
    }

    @Test(
        "hostile frames are errors, not crashes",
        arguments: [
            [UInt8(0x99), 0, 0, 0, 0],  // unknown type
            [UInt8(4), 0, 0, 0, 1, 0],  // resize too short
            [UInt8(0x13), 0, 0, 0, 4, 0, 0, 0, 0],  // exit status too short
            [UInt8(2), 0x7f, 0xff, 0xff, 0xff],  // 2 GB stdin frame announced
            [UInt8(1), 0, 0, 0, 4, 0, 0, 0, 9],  // spec claiming 9 arguments, none there
        ])
    func hostileFrames(bytes: [UInt8]) {
        var parser = SessionFrameParser()
        parser.append(ByteBuffer(bytes: bytes))
        #expect(throws: WireError.self) { _ = try parser.next() }
    }

    @Test("an incomplete frame waits for more bytes")
    func incomplete() throws {
        var parser = SessionFrameParser()
        parser.append(ByteBuffer(bytes: [2, 0, 0, 0, 10, 1, 2]))
        #expect(try parser.next() == nil)
    }

    @Test("exec specs: no command, relative directory, NUL bytes, bad environment, absurd counts are refused")
    func badSpecs() throws {
        func encode(_ arguments: [String], environment: [String] = [], directory: String = "/") -> ByteBuffer {
            var writer = WireWriter()
            writer.write(arguments)
            writer.write(environment)
            writer.write(directory)
            writer.write(false)
            writer.write(UInt16(0))
            writer.write(UInt16(0))
            writer.write(UInt32(0))
            writer.write(UInt32(0))
            return writer.buffer
        }
        #expect(throws: WireError.self) { try ExecSpec(decoding: encode([])) }
        #expect(throws: WireError.self) { try ExecSpec(decoding: encode(["sh"], directory: "relative")) }
        #expect(throws: WireError.self) { try ExecSpec(decoding: encode(["s\u{0}h"])) }
        #expect(throws: WireError.self) { try ExecSpec(decoding: encode(["sh"], environment: ["NOEQUALS"])) }
        #expect(try ExecSpec(decoding: encode(["sh"])).arguments == ["sh"])
        var huge = WireWriter()
        huge.write(UInt32.max)
        #expect(throws: WireError.self) { try ExecSpec(decoding: huge.buffer) }
        var trailing = encode(["sh"])
        trailing.writeInteger(UInt8(0))
        #expect(throws: WireError.self) { try ExecSpec(decoding: trailing) }
    }

    @Test("setup specs: paths with .., relative paths and invalid UTF-8 are refused")
    func badSetup() {
        for path in ["relative", "/a/../etc", "/a/./b", "/a//b"] {
            let setup = SetupSpec(
                clockSeconds: 0, clockNanoseconds: 0, hostname: "h", stateDisk: "/dev/vda",
                shares: [.init(tag: "t", path: path, readOnly: true, kind: .direct)], links: [], files: [], directories: [],
                home: "/root", user: 0, group: 0)
            #expect(throws: WireError.self, "\(path)") { try SetupSpec(decoding: setup.encoded()) }
        }
        var writer = WireWriter()
        writer.write(Int64(0))
        writer.write(Int32(0))
        var bad = writer.buffer
        bad.writeInteger(UInt32(2))
        bad.writeBytes([0xff, 0xfe])
        #expect(throws: WireError.self) { try SetupSpec(decoding: bad) }
    }
}
