import AirlockSystem
import Foundation
import Machine
import QEMU
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `QEMUMachine.start` with virtiofsd, against stand-ins (no VM boots here): a fake virtiofsd
/// that records its arguments and pid and creates its socket, and fake QEMUs that fail. What
/// it shows: virtiofsd starts first with the fixed flags, its failure is reported with its
/// share and output, and a QEMU that fails leaves no virtiofsd behind. The real path (QEMU and
/// a virtiofsd booting a guest) is `VirtiofsVMTests`.
@Suite(
    "QEMU with virtiofsd (stand-ins)",
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "the fake virtiofsd needs /usr/bin/python3"))
struct QEMUVirtiofsStartTests {
    static let fakeVirtiofsd = #"""
        #!/usr/bin/python3
        import os, socket, sys, time
        path = [a for a in sys.argv if a.startswith("--socket-path=")][0].split("=", 1)[1]
        open(path + ".args", "w").write(str(os.getpid()) + "\n" + "\n".join(sys.argv[1:]) + "\n")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(1)
        time.sleep(60)
        """#

    struct Directory {
        let path: String

        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-qemu-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }

        func executable(_ name: String, _ text: String) throws -> String {
            let file = path + "/" + name
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            chmod(file, 0o755)
            return file
        }

        func spec(shares: [MachineSpec.Share]) -> MachineSpec {
            MachineSpec(
                kernel: "/nonexistent/vmlinux", initramfs: "/nonexistent/initramfs", cpus: 1, memoryMiB: 256, shares: shares,
                disk: path + "/disk.img", runtimeDirectory: path, consoleLog: path + "/console.log", accelerator: .tcg)
        }

        func remove() { try? FileManager.default.removeItem(atPath: path) }
    }

    func failure(_ body: () async throws -> QEMUMachine) async -> MachineError? {
        do {
            let machine = try await body()
            await machine.stop(grace: .milliseconds(100))
            return nil
        } catch {
            return error as? MachineError
        }
    }

    @Test("a virtiofsd that exits before creating its socket: named with its share and its output; QEMU is not started")
    func virtiofsdExits() async throws {
        let directory = try Directory()
        defer { directory.remove() }
        let virtiofsd = try directory.executable("virtiofsd", "#!/bin/sh\necho 'virtiofsd: cannot open the shared directory' >&2\nexit 1\n")
        let qemu = try directory.executable("qemu", "#!/bin/sh\ntouch \"$(dirname \"$0\")/qemu-ran\"\nexec sleep 30\n")
        let spec = directory.spec(shares: [.init(tag: "usr", hostPath: "/usr", readOnly: true)])
        let error = try #require(await failure { try await QEMUMachine.start(spec, qemu: qemu, virtiofsd: virtiofsd, timeout: .seconds(2)) })
        #expect(error.message.contains("virtiofsd for /usr exited before creating its socket"), "\(error)")
        #expect(error.consoleTail.contains { $0.contains("cannot open the shared directory") })
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/qemu-ran"))
        #expect(FileManager.default.fileExists(atPath: directory.path + "/vmm.log"), "virtiofsd's output goes to vmm.log beside the console log")
    }

    @Test("virtiofsd per share but image layers, fixed flags, started before QEMU; a QEMU that exits ends them all, reaped")
    func qemuExits() async throws {
        let directory = try Directory()
        defer { directory.remove() }
        let virtiofsd = try directory.executable("virtiofsd", Self.fakeVirtiofsd)
        // The fake QEMU notes which virtiofsd sockets existed when it started, then fails.
        let qemu = try directory.executable(
            "qemu",
            """
            #!/bin/sh
            ls "$(dirname "$0")" | grep '\\.sock$' > "$(dirname "$0")/sockets-at-qemu-start"
            echo 'qemu-system-x86_64: -device vhost-user-fs-device: Failed to connect' >&2
            exit 1
            """)
        let spec = directory.spec(shares: [
            .init(tag: "usr", hostPath: "/usr", readOnly: true),
            .init(tag: "layer0", hostPath: "/nonexistent/layer", readOnly: true, mappedOwnership: true),
            .init(tag: "workspace", hostPath: directory.path, readOnly: false),
        ])
        let error = try #require(await failure { try await QEMUMachine.start(spec, qemu: qemu, virtiofsd: virtiofsd, timeout: .seconds(5)) })
        #expect(error.message.contains("QEMU exited during start-up"), "\(error)")
        #expect(error.consoleTail.contains { $0.contains("Failed to connect") })

        let sockets = try String(contentsOfFile: directory.path + "/sockets-at-qemu-start", encoding: .utf8)
        #expect(
            sockets == "console.sock\nfs0.sock\nfs2.sock\n",
            "both virtiofsd sockets (and the console recorder's) exist before QEMU starts; the layer (fs1) has none")
        for (index, share) in [(0, spec.shares[0]), (2, spec.shares[2])] {
            let lines = try String(contentsOfFile: directory.path + "/fs\(index).sock.args", encoding: .utf8).split(separator: "\n").map(String.init)
            let socket = directory.path + "/fs\(index).sock"
            #expect(Array(lines.dropFirst()) == Virtiofsd.arguments(socket: socket, share: share))
            let pid = try #require(pid_t(lines[0]))
            // Ended and reaped by the time start threw: no process, not even a zombie.
            #expect(kill(pid, 0) != 0 && errno == ESRCH, "virtiofsd \(pid) for \(share.tag) survived a failed start")
        }
    }
}
