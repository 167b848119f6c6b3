import AirlockSystem
import Foundation
import Machine
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("The machine layer's helper processes")
struct MachineLayerTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "airlock-machine-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(path)
        return path
    }

    @Test("a helper runs in a session of its own with nothing of the user's environment; its output lands in the log")
    func spawnedHelper() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let log = root + "/vmm.log"
        setenv("AIRLOCK_SECRET_FOR_TEST", "leaked", 1)
        defer { unsetenv("AIRLOCK_SECRET_FOR_TEST") }
        let helper = try VMMProcess.spawn("/bin/sh", ["-c", "env; echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$"], log: log)
        let status = await helper.wait()
        #expect(status.map { ExitStatus(waitStatus: $0).code } == 0)
        let text = try FileSystem.readText(log) ?? ""
        #expect(!text.contains("AIRLOCK_SECRET_FOR_TEST"))
        #expect(text.contains("PATH=/usr/local/bin:/usr/bin:/bin"))
        #expect(text.contains("sid=\(helper.pid) pid=\(helper.pid)"), "the helper leads its own session: \(text)")
    }

    @Test("terminate: SIGTERM first, SIGKILL after the grace for a helper that ignores it; always reaped")
    func termination() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let stubborn = try VMMProcess.spawn("/bin/sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], log: root + "/log")
        while !(((try? FileSystem.readText(root + "/log")) ?? nil)?.contains("ready") ?? false) { try await Task.sleep(for: .milliseconds(10)) }
        let started = ContinuousClock.now
        await VMMProcess.terminate(stubborn, grace: .milliseconds(300))
        #expect(stubborn.hasExited)
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        #expect(kill(stubborn.pid, 0) != 0)
        #expect(await VMMProcess.exited(stubborn, within: .zero))
    }

    @Test("a virtiofsd that exits before making its socket is named, with its log's last lines; none is left running")
    func virtiofsdFailure() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let fake = root + "/virtiofsd"
        try FileSystem.write(fake, Array("#!/bin/sh\necho \"refusing $2\" >&2\nexit 1\n".utf8), mode: 0o755)
        let share = MachineSpec.Share(tag: "usr", hostPath: "/usr", readOnly: true)
        let error = await #expect(throws: MachineError.self) {
            _ = try await Virtiofsd.start(fake, serving: [.init(share: share, socket: root + "/fs0.sock")], log: root + "/vmm.log")
        }
        #expect(error?.message.contains("virtiofsd for /usr exited before creating its socket") == true)
        #expect(error?.consoleTail.contains { $0.contains("refusing --shared-dir=/usr") } == true)
    }

    @Test("virtiofsd's arguments are fixed flags; the shared directory can never read as an option")
    func virtiofsdArguments() {
        let share = MachineSpec.Share(tag: "x", hostPath: "--help", readOnly: true)
        let arguments = Virtiofsd.arguments(socket: "/run/fs0.sock", share: share)
        #expect(arguments.contains("--shared-dir=--help") && arguments.contains("--readonly"))
        #expect(arguments.allSatisfy { $0.hasPrefix("--") })
        #expect(!Virtiofsd.arguments(socket: "/s", share: .init(tag: "w", hostPath: "/w", readOnly: false)).contains("--readonly"))
    }

    @Test("an image layer stays on 9p even with virtiofsd; the machine error prints the console's last lines")
    func transportsAndErrors() {
        #expect(ShareTransport.qemu(for: .init(tag: "l", hostPath: "/l", readOnly: true, mappedOwnership: true), virtiofsd: true) == .ninep)
        #expect(ShareTransport.qemu(for: .init(tag: "w", hostPath: "/w", readOnly: false), virtiofsd: true) == .virtiofs)
        let error = MachineError("the VM stopped", cause: SystemError("open", "/dev/kvm", errno: EACCES), consoleTail: ["panic"])
        #expect(error.description == "the VM stopped: open /dev/kvm: Permission denied\nlast lines of the console:\n  | panic")
    }
}
