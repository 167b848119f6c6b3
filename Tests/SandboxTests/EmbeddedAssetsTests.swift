import AirlockSystem
import Config
import Machine
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("Embedded assets")
struct EmbeddedAssetsTests {
    static let bytes: [UInt8] = Array("a kernel, say".utf8)

    private func extract(digest: String, into cache: String) throws -> String? {
        try Self.bytes.withUnsafeBufferPointer { buffer in
            try digest.withCString { text in
                try EmbeddedAssets.extract(
                    { size in
                        size.pointee = buffer.count
                        return buffer.baseAddress
                    }, { text }, name: "vmlinux", into: cache)
            }
        }
    }

    @Test("written once, 0600, named by its digest; a wrong digest is refused")
    func extraction() throws {
        let cache = "/tmp/airlock-embedded-\(getpid())"
        defer { _ = try? ChildProcess.capture("/bin/rm", ["-rf", cache]) }
        let actual = EmbeddedAssets.hexDigest(Self.bytes.withUnsafeBytes { $0 })
        // `printf "a kernel, say" | sha256sum`
        #expect(actual == "3e51f8985abac2c0cc9b05e3c3252304fa54da11576c4273f4832900b3eb6fb4")
        #expect(throws: SandboxError.self) { try extract(digest: String(repeating: "0", count: 64), into: cache) }
        let path = try #require(try extract(digest: actual, into: cache))
        #expect(path == "\(cache)/\(actual)-vmlinux")
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(Int(info.st_size) == Self.bytes.count)
        #expect(try LocalFiles().readText(path) == "a kernel, say")
        // Reused as it is the second time.
        let inode = info.st_ino
        #expect(try extract(digest: actual, into: cache) == path)
        #expect(stat(path, &info) == 0 && info.st_ino == inode)
        // A file of another size under that name is replaced.
        let fd = open(path, O_WRONLY | O_TRUNC)
        close(fd)
        #expect(try extract(digest: actual, into: cache) == path)
        #expect(try LocalFiles().readText(path) == "a kernel, say")
    }
}
