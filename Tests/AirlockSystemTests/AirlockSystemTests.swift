import AirlockSystem
import CShim
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under /tmp, removed by the caller.
func scratchDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "airlock-system-\(UUID().uuidString.prefix(8))"
    try FileSystem.makeDirectories(path)
    return path
}

@Suite("File helpers")
struct FileSystemTests {
    @Test("makeDirectories makes every missing level, is idempotent, and names the path that failed")
    func directories() throws {
        let root = try scratchDirectory()
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.makeDirectories(root + "/a/b/c", mode: 0o700)
        try FileSystem.makeDirectories(root + "/a/b/c")
        #expect(FileSystem.isDirectory(root + "/a/b/c"))
        #expect(FileSystem.status(root + "/a/b/c").map { $0.st_mode & 0o777 } == 0o700)
        try "x".write(toFile: root + "/file", atomically: false, encoding: .utf8)
        let error = #expect(throws: SystemError.self) { try FileSystem.makeDirectories(root + "/file/sub") }
        #expect(error?.call == "mkdir" && error?.subject == root + "/file/sub" && error?.errno == ENOTDIR)
    }

    @Test("removeTree removes a symlink, never what it points to")
    func removeTreeKeepsLinkTargets() throws {
        let root = try scratchDirectory()
        let outside = try scratchDirectory()
        defer {
            try? FileSystem.removeTree(root)
            try? FileSystem.removeTree(outside)
        }
        try "keep".write(toFile: outside + "/precious", atomically: false, encoding: .utf8)
        try FileSystem.makeDirectories(root + "/tree/deep")
        try "x".write(toFile: root + "/tree/deep/file", atomically: false, encoding: .utf8)
        #expect(symlink(outside, root + "/tree/link") == 0)
        #expect(symlink(outside + "/precious", root + "/tree/deep/file-link") == 0)
        // A directory its owner cannot write (an extracted image layer) is removed too.
        chmod(root + "/tree/deep", 0o500)
        try FileSystem.removeTree(root + "/tree")
        #expect(!FileSystem.exists(root + "/tree"))
        #expect(try String(contentsOfFile: outside + "/precious", encoding: .utf8) == "keep")
        try FileSystem.removeTree(root + "/absent")
    }

    @Test("writeAtomically: the whole content with its mode, no temporary file left, the old file intact when it fails")
    func atomicWrites() throws {
        let root = try scratchDirectory()
        defer { try? FileSystem.removeTree(root) }
        let path = root + "/state"
        try FileSystem.writeAtomically(path, "first\n")
        try FileSystem.writeAtomically(path, "second\n", mode: 0o640)
        #expect(try FileSystem.readText(path) == "second\n")
        #expect(FileSystem.status(path).map { $0.st_mode & 0o777 } == 0o640)
        #expect(FileSystem.entries(root) == ["state"])
        try FileSystem.makeDirectory(root + "/locked")
        try FileSystem.writeAtomically(root + "/locked/file", "kept")
        chmod(root + "/locked", 0o500)
        defer { chmod(root + "/locked", 0o700) }
        if getuid() != 0 {
            #expect(throws: SystemError.self) { try FileSystem.writeAtomically(root + "/locked/file", "lost") }
            #expect(try FileSystem.readText(root + "/locked/file") == "kept")
        }
    }

    @Test("read: nil when absent, bounded, and never blocks on something that is not a regular file")
    func boundedReads() throws {
        let root = try scratchDirectory()
        defer { try? FileSystem.removeTree(root) }
        #expect(try FileSystem.read(root + "/absent") == nil)
        try String(repeating: "a", count: 5000).write(toFile: root + "/big", atomically: false, encoding: .utf8)
        #expect(try FileSystem.read(root + "/big", limit: 5000)?.count == 5000)
        let tooBig = #expect(throws: SystemError.self) { try FileSystem.read(root + "/big", limit: 4999) }
        #expect(tooBig?.errno == EFBIG)
        #expect(mkfifo(root + "/fifo", 0o600) == 0)
        let fifo = #expect(throws: SystemError.self) { try FileSystem.read(root + "/fifo") }
        #expect(fifo?.errno == EINVAL)
        #expect(FileSystem.readPrefix(root + "/big", limit: 10) == "aaaaaaaaaa")
    }

    @Test("list is sorted without . and ..; entries of a missing directory is empty")
    func listing() throws {
        let root = try scratchDirectory()
        defer { try? FileSystem.removeTree(root) }
        for name in ["c", "a", "b"] { try FileSystem.write(root + "/" + name, []) }
        #expect(try FileSystem.list(root) == ["a", "b", "c"])
        #expect(FileSystem.entries(root + "/missing").isEmpty)
        #expect(throws: SystemError.self) { try FileSystem.list(root + "/missing") }
    }

    @Test("tailLines: the last lines of a log, CR LF and control characters dropped, bounded by bytes")
    func tail() throws {
        let root = try scratchDirectory()
        defer { try? FileSystem.removeTree(root) }
        let text = (1...50).map { "line \($0)\u{1B}[0m\r\n" }.joined()
        try FileSystem.write(root + "/console.log", Array(text.utf8))
        #expect(FileSystem.tailLines(of: root + "/console.log", count: 3) == ["line 48[0m", "line 49[0m", "line 50[0m"])
        #expect(FileSystem.tailLines(of: root + "/console.log", count: 100, maxBytes: 30).count <= 3)
        #expect(FileSystem.tailLines(of: root + "/missing").isEmpty)
        #expect(FileSystem.parent(of: "/a/b") == "/a" && FileSystem.parent(of: "/a") == "/" && FileSystem.parent(of: "a") == ".")
    }
}

@Suite("The confined directory reader")
struct ConfinedDirectoryTests {
    @Test("a symlink anywhere on a path, or a way out, is refused; files are size-checked")
    func confinement() throws {
        let root = try scratchDirectory()
        let outside = try scratchDirectory()
        defer {
            try? FileSystem.removeTree(root)
            try? FileSystem.removeTree(outside)
        }
        try FileSystem.write(outside + "/secret", Array("secret".utf8))
        try FileSystem.makeDirectories(root + "/dir")
        try FileSystem.write(root + "/dir/file", Array("hello".utf8))
        #expect(symlink(outside, root + "/escape") == 0)
        #expect(symlink(outside + "/secret", root + "/dir/link") == 0)
        let tree = try ConfinedDirectory.open(root)
        #expect(try tree.read("dir/file", limit: 100) == Array("hello".utf8))
        let throughLink = #expect(throws: ConfinedPathError.self) { try tree.read("escape/secret", limit: 100) }
        #expect(throughLink?.errno == ELOOP)
        #expect(throws: ConfinedPathError.self) { try tree.read("dir/link", limit: 100) }
        #expect(throws: ConfinedPathError.self) { try tree.read("../" + (outside as NSString).lastPathComponent + "/secret", limit: 100) }
        let large = #expect(throws: ConfinedPathError.self) { try tree.read("dir/file", limit: 4) }
        #expect(large?.reason.contains("more than the limit") == true)
        #expect(tree.kind("escape") == .symlink && tree.kind("dir") == .directory && tree.kind("absent") == nil)
        #expect(try tree.readLink("escape") == outside)
        #expect(tree.entries().map(\.name) == ["dir", "escape"])
    }
}

@Suite("Errors, formatting and processes")
struct SystemMiscTests {
    struct Failure: ExplainedError {
        var message: String
        var hint: String?
        var cause: (any Error)?
    }

    @Test("an explained error keeps its cause as a value and prints message, cause and hint")
    func explained() {
        let system = SystemError("open", "/x", errno: ENOENT)
        #expect(system.description == "open /x: No such file or directory")
        let inner = Failure(message: "inner", cause: system)
        let outer = Failure(message: "cannot start", hint: "run doctor", cause: inner)
        #expect(outer.description == "cannot start: inner: open /x: No such file or directory\n  hint: run doctor")
        #expect(outer.underlying(SystemError.self) == system)
    }

    @Test("one byte formatter", arguments: [(812, "812 B"), (12_345, "12.3 kB"), (4_500_000, "4.5 MB"), (1_200_000_000, "1.2 GB")])
    func bytes(_ value: Int64, _ text: String) {
        #expect(formatBytes(value) == text)
    }

    @Test("durations: seconds, minutes, hours; Duration in milliseconds")
    func durations() {
        #expect(formatDuration(42) == "42s" && formatDuration(185) == "3m5s" && formatDuration(7800) == "2h10m")
        #expect(Duration.milliseconds(1500).milliseconds == 1500 && Duration.milliseconds(1500).seconds == 1.5)
        #expect("  x y \n".trimmingWhitespace() == "x y")
    }

    @Test("child processes: output, exit status, missing binary, deadline")
    func childProcess() throws {
        let output = try ChildProcess.capture("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(output.status == 3)
        #expect(output.text.contains("out") && output.text.contains("err"))
        #expect(throws: ChildProcess.Failure.self) { try ChildProcess.capture("/nonexistent/binary", []) }
        let start = ContinuousClock.now
        let slow = #expect(throws: ChildProcess.Failure.self) { try ChildProcess.capture("/bin/sleep", ["30"], timeout: .milliseconds(300)) }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(slow?.description.contains("did not finish") == true)
    }

    @Test("ProcessWaiter reaps the child on its own thread and reports its wait status")
    func waiter() async throws {
        let waiter = try ProcessWaiter {
            withCStrings(["/bin/sh", "-c", "exit 5"]) { argv in withCStrings([]) { envp in airlock_spawn("/bin/sh", argv, envp, -1, -1, -1, 0) } }
        }
        let status = await waiter.wait()
        #expect(status.map { ExitStatus(waitStatus: $0).code } == 5)
        #expect(waiter.hasExited)
    }

    @Test("connectUnixSocket says which socket and why")
    func unixSockets() {
        let error = #expect(throws: SystemError.self) { try connectUnixSocket("/nonexistent/socket") }
        #expect(error?.errno == ENOENT && error?.subject == "/nonexistent/socket")
        #expect(withUnixAddress(String(repeating: "x", count: 200)) { _, _ in true } == nil)
    }

    @Test("sendAll and read(exactly:): every byte across short reads; fewer only at the end; a gone peer is EPIPE, not a signal")
    func socketIO() throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let (reader, writer) = (pair[0], pair[1])
        let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let sender = Thread { try? Syscall.sendAll(writer, payload, subject: "test") }
        sender.start()
        #expect(try Syscall.read(reader, exactly: 100_000, subject: "test") == Array(payload[0..<100_000]))
        #expect(try Syscall.read(reader, exactly: 200_000, subject: "test") == Array(payload[100_000...]))
        shutdown(writer, Int32(SHUT_WR))
        #expect(try Syscall.read(reader, exactly: 10, subject: "test").isEmpty)
        close(reader)
        let error = #expect(throws: SystemError.self) { try Syscall.sendAll(writer, [1, 2, 3], subject: "peer") }
        #expect(error?.errno == EPIPE && error?.call == "send")
        close(writer)
    }
}
