import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(
    "QEMU with virtio-fs in real VMs (C virtiofsd standing in for the Rust one)", .tags(.vm), .serialized, .timeLimit(.minutes(3)),
    .enabled(if: VirtiofsStandIn.available, VirtiofsStandIn.skipReason))
struct VirtiofsVMTests {
    @Test(
        "start with virtiofsd on PATH: shares are virtio-fs, the host root is read, a write lands in the clone, the exit status comes back, no virtiofsd is left"
    )
    func session() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let (bin, environment) = try VirtiofsStandIn.install()
        defer { try? FileManager.default.removeItem(at: bin) }
        let hostFile = "/usr/lib/os-release"
        let expected = try String(contentsOfFile: hostFile, encoding: .utf8)
        let result = try CLI.run(
            [
                "start", "--verbose", "--", "sh", "-c",
                """
                cat \(hostFile)
                echo written-in-the-vm > made-in-vm.txt
                echo "workspace-fs $(awk -v p="$PWD" '$2 == p { print $3 }' /proc/mounts)"
                exit 5
                """,
            ], in: project, environment: environment)
        #expect(result.status == 5, "stderr: \(result.stderr)")
        #expect(result.stdout.hasPrefix(expected), "\(result.stdout)")
        #expect(result.stdout.hasSuffix("workspace-fs virtiofs\n"), "the workspace must be a virtiofs mount: \(result.stdout)")
        // airlock says which transport and why; the guest says what it mounted.
        #expect(result.stderr.contains("airlock: shares: virtio-fs through virtiofsd (\(bin.path)/virtiofsd)"), "\(result.stderr)")
        #expect(result.stderr.contains("setup: shares mounted (virtio-fs: usr"), "\(result.stderr)")

        let clone = project.appendingPathComponent(".airlock/default/workspace")
        #expect((try? String(contentsOf: clone.appendingPathComponent("made-in-vm.txt"), encoding: .utf8)) == "written-in-the-vm\n")
        #expect(!FileManager.default.fileExists(atPath: project.appendingPathComponent("made-in-vm.txt").path))
        // virtiofsd wrote it on the host, so the session's change journal saw it: the fetch
        // reads only that file.
        let fetch = try CLI.run(["fetch", "--json"], in: project, environment: environment)
        let report = try JSONSerialization.jsonObject(with: Data(fetch.stdout.utf8)) as? [String: Any]
        #expect(report?["workingTreeCheck"] as? String == "journal", "\(fetch.stdout)\(fetch.stderr)")
        #expect(report?["uncommittedPaths"] as? [String] == ["made-in-vm.txt"], "\(fetch.stdout)")

        // One virtiofsd per share: /usr read-only, the clone read-write.
        let calls = VirtiofsStandIn.calls(bin)
        #expect(calls.contains { $0.directory == "/usr" && $0.readOnly }, "\(calls)")
        #expect(calls.contains { $0.directory == clone.path && !$0.readOnly }, "\(calls)")
        #expect(!calls.contains { $0.directory.hasPrefix(project.path) && $0.directory != clone.path }, "the project itself is never shared")
        // Ended with the VM and reaped.
        let alive = try await VirtiofsStandIn.allGone(calls.map(\.pid))
        #expect(alive.isEmpty, "virtiofsd still running after the session: \(alive)")
    }

    @Test("a virtiofsd that dies while the VM runs stops the VM at once, the reason in the console log; nothing is left")
    func virtiofsdDies() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let (bin, environment) = try VirtiofsStandIn.install()
        defer { try? FileManager.default.removeItem(at: bin) }
        let stderr = bin.appendingPathComponent("stderr")
        let main = try CLI.launch(["start", "--", "sleep", "600"], in: project, environment: environment, stderr: stderr)
        defer { if main.isRunning { kill(main.processIdentifier, SIGKILL) } }
        let vmm: Int32
        do {
            vmm = try await CLI.waitUntilRunning(project, name: "default", process: main)
        } catch {
            Issue.record("\(error)\n--- airlock's stderr ---\n\((try? String(contentsOf: stderr, encoding: .utf8)) ?? "")")
            return
        }
        let calls = VirtiofsStandIn.calls(bin)
        let usr = try #require(calls.first { $0.directory == "/usr" })
        kill(usr.pid, SIGKILL)
        let deadline = Date().addingTimeInterval(30)
        while main.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!main.isRunning, "airlock still runs 30 s after the /usr virtiofsd died")
        let console = (try? String(contentsOf: project.appendingPathComponent(".airlock/default/console.log"), encoding: .utf8)) ?? ""
        #expect(console.contains("airlock: virtiofsd for /usr ended"), "\(console.suffix(2000))")
        let alive = try await VirtiofsStandIn.allGone([vmm] + calls.map(\.pid))
        #expect(alive.isEmpty, "still running: \(alive)")
    }

    @Test("kill -9 of airlock: neither QEMU nor any virtiofsd remains; the next start works")
    func killNine() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let (bin, environment) = try VirtiofsStandIn.install()
        defer { try? FileManager.default.removeItem(at: bin) }
        let main = try CLI.launch(["start", "--", "sleep", "600"], in: project, environment: environment)
        let vmm = try await CLI.waitUntilRunning(project, name: "default", process: main)
        let helpers = VirtiofsStandIn.calls(bin).map(\.pid)
        #expect(!helpers.isEmpty)
        #expect(helpers.allSatisfy { kill($0, 0) == 0 }, "the virtiofsd processes run while the sandbox does")
        kill(main.processIdentifier, SIGKILL)
        main.waitUntilExit()
        let alive = try await VirtiofsStandIn.allGone([vmm] + helpers)
        #expect(alive.isEmpty, "still running after airlock was killed: \(alive) (QEMU is \(vmm))")

        let again = try CLI.run(["start", "--", "cat", "README"], in: project, environment: environment)
        #expect(again.status == 0 && again.stdout == "hello\n", "stderr: \(again.stderr)")
    }
}
