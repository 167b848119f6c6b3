import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// QEMU's virtio-fs path for real: QEMU, virtiofsd, the guest's virtiofs mounts.
///
/// airlock drives the Rust virtiofsd, which Debian 12 does not package. Here a test-only
/// `virtiofsd` put first on PATH stands in for it: it answers `--version` as the Rust one does
/// (so `HostFacts` takes it for one and airlock picks virtio-fs) and runs QEMU 7.2's C virtiofsd
/// (`/usr/lib/qemu/virtiofsd`) with the equivalent options. That needs root (the C virtiofsd's
/// chroot sandbox). The C virtiofsd has no `--readonly`: under this stand-in a read-only share is
/// read-only only through the guest's read-only mount, not on the host side as with the Rust one.
enum VirtiofsStandIn {
    static let legacy = "/usr/lib/qemu/virtiofsd"

    static var available: Bool { missing.isEmpty }

    static var missing: [String] {
        var missing: [String] = []
        if !VMEnvironment.available { missing.append("qemu-system-x86_64 and AIRLOCK_KERNEL/AIRLOCK_INITRAMFS (`make test` builds them)") }
        if getuid() != 0 { missing.append("root (QEMU's C virtiofsd, the stand-in for the Rust one, runs its chroot sandbox only as root)") }
        if !FileManager.default.isExecutableFile(atPath: legacy) { missing.append("\(legacy) (Debian's qemu-system-common of QEMU 7.2)") }
        return missing
    }

    static var skipReason: Comment {
        Comment(rawValue: "the QEMU virtio-fs VM tests need " + missing.joined(separator: "; "))
    }

    /// The stand-in: the Rust virtiofsd's command line (`--socket-path --shared-dir [--readonly]`
    /// and the fixed flags airlock adds) translated for the C virtiofsd. Each call appends
    /// "<pid> readonly=<yes|no> <directory>" to `calls.log` beside it; after `exec` the pid is
    /// the C virtiofsd's.
    static let script = #"""
        #!/bin/sh
        # Test-only stand-in for the Rust virtiofsd (not packaged for Debian 12): QEMU 7.2's C
        # virtiofsd behind the Rust one's command line. Lives only on a test's temporary PATH.
        if [ "$1" = "--version" ]; then echo "virtiofsd 1.10.0"; exit 0; fi
        socket= directory= readonly=no
        while [ $# -gt 0 ]; do
          case "$1" in
            --socket-path=*) socket=${1#--socket-path=} ;;
            --socket-path) shift; socket=$1 ;;
            --shared-dir=*) directory=${1#--shared-dir=} ;;
            --shared-dir) shift; directory=$1 ;;
            --readonly) readonly=yes ;;
            --cache=auto|--announce-submounts|--log-level=*) ;;
            *) echo "virtiofsd stand-in: unexpected argument: $1" >&2; exit 2 ;;
          esac
          shift
        done
        if [ -z "$socket" ] || [ -z "$directory" ]; then
          echo "virtiofsd stand-in: --socket-path and --shared-dir are required" >&2; exit 2
        fi
        echo "$$ readonly=$readonly $directory" >> "$(dirname "$0")/calls.log"
        # No --readonly in the C virtiofsd: read-only is the guest's read-only mount alone here.
        exec /usr/lib/qemu/virtiofsd --socket-path="$socket" -o source="$directory" \
          -o cache=auto -o sandbox=chroot -o announce_submounts -o log_level=warn
        """#

    /// Installs the stand-in in a new temporary directory (not in the project: its call log
    /// would change the project during the session); returns it and the environment that puts
    /// it first on PATH.
    static func install() throws -> (bin: URL, environment: [String: String]) {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-virtiofsd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let file = bin.appendingPathComponent("virtiofsd")
        try script.write(to: file, atomically: true, encoding: .utf8)
        chmod(file.path, 0o755)
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return (bin, ["PATH": bin.path + ":" + path])
    }

    struct Call: Equatable {
        var pid: pid_t
        var readOnly: Bool
        var directory: String
    }

    static func calls(_ bin: URL) -> [Call] {
        let text = (try? String(contentsOf: bin.appendingPathComponent("calls.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard parts.count == 3, let pid = pid_t(parts[0]) else { return nil }
            return Call(pid: pid, readOnly: parts[1] == "readonly=yes", directory: parts[2])
        }
    }

    /// Whether every one of `pids` is gone (or a zombie about to be reaped by init) within `seconds`.
    static func allGone(_ pids: [pid_t], within seconds: Double = 5) async throws -> [pid_t] {
        let deadline = Date().addingTimeInterval(seconds)
        var alive = pids
        while true {
            alive = alive.filter { kill($0, 0) == 0 && !CLI.isZombie($0) }
            if alive.isEmpty || Date() > deadline { return alive }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

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
        let main = try CLI.launch(
            ["start", "--", "sleep", "600"], in: project, environment: environment, stderr: bin.appendingPathComponent("stderr"))
        defer { if main.isRunning { kill(main.processIdentifier, SIGKILL) } }
        let vmm = try await CLI.waitUntilRunning(project, name: "default", process: main)
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
