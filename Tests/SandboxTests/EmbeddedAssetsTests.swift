import AirlockSystem
import Clibzstd
import Crypto
import Synchronization
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("Embedded assets: zstd frames inside the binary, unpacked once into the cache")
struct EmbeddedAssetsTests {
    /// 3 MiB that compress well but not to nothing (the unpacking shows progress past 1 MiB).
    static let content: [UInt8] = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: ($0 / 7) &* 31 &+ ($0 >> 12)) }
    static let sha256 = SHA256.hash(data: content).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()

    static func compress(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let size = bytes.withUnsafeBytes { source in
            out.withUnsafeMutableBytes { ZSTD_compress($0.baseAddress, $0.count, source.baseAddress, source.count, 3) }
        }
        precondition(ZSTD_isError(size) == 0)
        return Array(out[..<size])
    }

    static func unpack(_ frame: [UInt8], sha256: String = sha256, into cache: String, progress: (@Sendable (String) -> Void)? = nil) throws -> String
    {
        try frame.withUnsafeBytes { try EmbeddedAssets.unpack(.init(name: "vmlinux", frame: $0, sha256: sha256), into: cache, progress: progress) }
    }

    static func temporaryCache() -> String { "/tmp/airlock-embedded-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }

    @Test("unpacked once, 0600, named by its digest, with progress; reused after; a file of another size under that name is replaced")
    func unpacking() throws {
        let cache = Self.temporaryCache()
        defer { try? FileSystem.removeTree(cache) }
        let frame = Self.compress(Self.content)
        #expect(frame.count < Self.content.count / 4)
        let said = Mutex<[String]>([])
        let path = try Self.unpack(frame, into: cache) { text in said.withLock { $0.append(text) } }
        #expect(path == "\(cache)/\(Self.sha256)-vmlinux")
        #expect(try FileSystem.read(path, limit: 8 << 20) == Self.content)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let messages = said.withLock { $0 }
        #expect(messages.first == "unpacking the guest vmlinux (once per airlock version)", "\(messages)")
        #expect(messages.contains("unpacking the guest vmlinux: 30%"), "\(messages)")

        // Reused as it is the second time: not written again, nothing said.
        let inode = info.st_ino
        said.withLock { $0 = [] }
        #expect(try Self.unpack(frame, into: cache) { text in said.withLock { $0.append(text) } } == path)
        #expect(stat(path, &info) == 0 && info.st_ino == inode)
        #expect(said.withLock { $0 }.isEmpty)
        // A file of another size under that name is replaced.
        close(open(path, O_WRONLY | O_TRUNC))
        #expect(try Self.unpack(frame, into: cache) == path)
        #expect(try FileSystem.read(path, limit: 8 << 20) == Self.content)
        #expect(FileSystem.entries(cache) == ["\(Self.sha256)-vmlinux"], "no temporary file left")
    }

    @Test("a wrong digest, a cut frame, a frame with trailing bytes or no frame at all: refused, nothing left in the cache")
    func damaged() throws {
        let cache = Self.temporaryCache()
        defer { try? FileSystem.removeTree(cache) }
        let frame = Self.compress(Self.content)
        let cases: [(String, [UInt8], String, String)] = [
            ("wrong digest", frame, String(repeating: "0", count: 64), "SHA-256 is \(Self.sha256)"),
            ("cut", Array(frame.prefix(frame.count / 2)), Self.sha256, "damaged"),
            ("trailing", frame + [1, 2, 3], Self.sha256, "damaged"),
            ("not zstd", Array("just text, no frame".utf8), Self.sha256, "not a zstd frame"),
        ]
        for (what, bytes, digest, expected) in cases {
            do {
                _ = try Self.unpack(bytes, sha256: digest, into: cache)
                Issue.record("\(what): unpacked")
            } catch let error as SandboxError {
                #expect("\(error)".contains(expected), "\(what): \(error)")
                #expect("\(error)".contains("make release"), "\(what): \(error)")
            }
            #expect(FileSystem.entries(cache).isEmpty, "\(what): \(FileSystem.entries(cache))")
        }
    }

    @Test("another version's copy is removed when a new one is unpacked, unless it was written within the hour")
    func otherVersions() throws {
        let cache = Self.temporaryCache()
        defer { try? FileSystem.removeTree(cache) }
        try FileSystem.makeDirectories(cache)
        let old = cache + "/" + String(repeating: "a", count: 64) + "-vmlinux"
        let recent = cache + "/" + String(repeating: "b", count: 64) + "-vmlinux"
        let cutShort = cache + "/" + String(repeating: "c", count: 64) + "-vmlinux.tmp.12345"
        let initramfs = cache + "/" + String(repeating: "d", count: 64) + "-initramfs"
        for path in [old, recent, cutShort, initramfs] { try FileSystem.write(path, [1], mode: 0o600) }
        var twoHoursAgo = [timespec(tv_sec: time(nil) - 7200, tv_nsec: 0), timespec(tv_sec: time(nil) - 7200, tv_nsec: 0)]
        for path in [old, cutShort, initramfs] { #expect(utimensat(AT_FDCWD, path, &twoHoursAgo, 0) == 0) }
        _ = try Self.unpack(Self.compress(Self.content), into: cache)
        #expect(!FileSystem.exists(old) && !FileSystem.exists(cutShort))
        #expect(FileSystem.exists(recent), "a version started within the hour may still be booting from it")
        #expect(FileSystem.exists(initramfs), "another asset's files are its own unpacking's to remove")
    }
}
