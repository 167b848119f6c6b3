import Foundation
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("Opening a sign-in page in the host's browser")
struct BrowserTests {
    static func browser(_ body: String) throws -> (directory: String, program: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-browser-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let program = directory + "/browser"
        try "#!/bin/sh\n\(body)\n".write(toFile: program, atomically: true, encoding: .utf8)
        chmod(program, 0o755)
        return (directory, program)
    }

    @Test("a browser that stays in the foreground is left running, in a session of its own, and counts as opened within seconds")
    func staysRunning() async throws {
        let (directory, program) = try Self.browser(
            "echo $$ \"$1\" > \"$(dirname \"$0\")/opened\"; awk '{ print $6 }' /proc/$$/stat > \"$(dirname \"$0\")/session\"; sleep 30")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let started = ContinuousClock.now
        let opened = await SandboxBoot.openInBrowser("https://example.test/page", environment: ["BROWSER": program, "PATH": "/usr/bin:/bin"])
        #expect(opened)
        #expect(ContinuousClock.now - started < .seconds(10), "not waited for")
        let line = try String(contentsOfFile: directory + "/opened", encoding: .utf8).split(separator: " ")
        #expect(line.last == "https://example.test/page\n")
        let pid = try #require(line.first.flatMap { Int32($0) })
        #expect(kill(pid, 0) == 0, "still running: never killed")
        let session = try String(contentsOfFile: directory + "/session", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(session == "\(pid)", "its own session")
        kill(pid, SIGKILL)
    }

    @Test("a browser that fails is not opened; no browser (no $BROWSER, no desktop) neither; one that ends well is")
    func outcomes() async throws {
        let (directory, failing) = try Self.browser("exit 3")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(await !SandboxBoot.openInBrowser("https://example.test/", environment: ["BROWSER": failing, "PATH": "/usr/bin:/bin"]))
        #expect(await !SandboxBoot.openInBrowser("https://example.test/", environment: ["PATH": "/usr/bin:/bin"]))
        #expect(await SandboxBoot.openInBrowser("https://example.test/", environment: ["BROWSER": "true", "PATH": "/usr/bin:/bin"]))
    }
}
