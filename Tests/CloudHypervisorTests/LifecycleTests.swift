import AirlockSystem
import CloudHypervisor
import CloudHypervisorAPI
import Foundation
import GuestLink
import Machine
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A whole start and stop against stand-ins: a fake `cloud-hypervisor` (a small Python API
/// server that logs what it is asked) and a fake `virtiofsd` (creates its socket, then sleeps).
/// What it shows: the order of the calls, that listeners exist before `vm.boot`, and that stop
/// ends and reaps everything. Not that a real Cloud Hypervisor accepts any of it.
@Suite(
    "Cloud Hypervisor machine lifecycle (fake VMM)",
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "the fake cloud-hypervisor needs /usr/bin/python3"))
struct LifecycleTests {
    static let fakeVMM = #"""
        #!/usr/bin/python3
        import json, os, socket, sys
        api = sys.argv[sys.argv.index("--api-socket") + 1]
        log = open(api + ".log", "a", buffering=1)
        server = socket.socket(socket.AF_UNIX)
        server.bind(api)
        server.listen(4)
        while True:
            connection, _ = server.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += connection.recv(length - len(body))
            note = ""
            if path.endswith("/vm.boot"):
                note = " listener=" + str(os.path.exists(os.path.dirname(api) + "/vsock.sock_1025"))
            if path.endswith("/vm.create"):
                open(api + ".create.json", "wb").write(body)
            log.write(method + " " + path + note + "\n")
            if path.endswith("/vmm.ping"):
                answer = json.dumps({"version": "fake"}).encode()
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
            else:
                connection.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            connection.close()
            if path.endswith("/vmm.shutdown"):
                sys.exit(0)
        """#

    static let fakeVirtiofsd = #"""
        #!/usr/bin/python3
        import os, socket, sys, time
        path = [a for a in sys.argv if a.startswith("--socket-path=")][0].split("=", 1)[1]
        open(path + ".pid", "w").write(str(os.getpid()))
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(1)
        time.sleep(60)
        """#

    @Test("start: virtiofsd, ping, listeners, create, boot; stop: vm.shutdown, vm.delete, vmm.shutdown; all reaped")
    func lifecycle() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let vmm = directory.path + "/fake-ch"
        let virtiofsd = directory.path + "/fake-virtiofsd"
        try Self.fakeVMM.write(toFile: vmm, atomically: true, encoding: .utf8)
        try Self.fakeVirtiofsd.write(toFile: virtiofsd, atomically: true, encoding: .utf8)
        chmod(vmm, 0o755)
        chmod(virtiofsd, 0o755)
        let spec = MachineSpec(
            kernel: "/k/vmlinux", initramfs: "/k/initramfs", cpus: 2, memoryMiB: 512,
            shares: [.init(tag: "usr", hostPath: "/usr", readOnly: true), .init(tag: "workspace", hostPath: directory.path, readOnly: false)],
            disk: directory.path + "/disk.img", runtimeDirectory: directory.path, consoleLog: directory.path + "/console.log", accelerator: .kvm)

        let machine = try await CloudHypervisorMachine.start(
            spec, cloudHypervisor: vmm, virtiofsd: virtiofsd,
            guestListeners: [LinkNames.egressVsockPort: { $0.eventLoop.makeSucceededVoidFuture() }], timeout: .seconds(10))
        let api = directory.path + "/ch.sock"
        let sent = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: api + ".create.json"))))
        let expected = try JSONValue.parse(
            Array(
                try JSONEncoder().encode(
                    CloudHypervisorMachine.vmConfig(for: spec, sockets: .init(runtimeDirectory: directory.path, shareCount: 2)))))
        #expect(sent == expected)
        let helperPIDs = try (0..<2).map { index in
            try #require(Int32(try String(contentsOfFile: directory.path + "/fs\(index).sock.pid", encoding: .utf8)))
        }
        #expect(helperPIDs.allSatisfy { kill($0, 0) == 0 })

        await machine.stop(grace: .milliseconds(200))
        let calls = try String(contentsOfFile: api + ".log", encoding: .utf8).split(separator: "\n").map(String.init)
        let boot = calls.firstIndex { $0.hasPrefix("PUT /api/v1/vm.boot") }
        #expect(calls.first == "GET /api/v1/vmm.ping")
        #expect(
            Array(calls.drop { $0.hasPrefix("GET /api/v1/vmm.ping") }) == [
                "PUT /api/v1/vm.create", "PUT /api/v1/vm.boot listener=True", "PUT /api/v1/vm.shutdown", "PUT /api/v1/vm.delete",
                "PUT /api/v1/vmm.shutdown",
            ])
        #expect(boot != nil)
        // Gone and reaped: signal 0 finds no such process (a zombie would still answer).
        #expect(kill(machine.processID, 0) != 0)
        #expect(helperPIDs.allSatisfy { kill($0, 0) != 0 })
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/vsock.sock_1025"))
    }
}
