import AirlockSystem
import CloudHypervisor
import CloudHypervisorAPI
import Foundation
import Machine
import Testing

/// Every body the client sends validates against the request schema of its endpoint in the
/// OpenAPI spec. The bodies are the bytes the client actually wrote, recorded by the stub API
/// server, not a re-encoding.
@Suite("Request bodies against the Cloud Hypervisor OpenAPI spec")
struct ContractTests {
    let spec: OpenAPISchema

    init() throws {
        spec = try OpenAPISchema(contentsOf: Fixtures.spec)
    }

    /// Machines as the orchestrator builds them: no shares, the host-root layout, many shares;
    /// 256 MiB up to 64 GiB; one to many vCPUs.
    static let machines: [MachineSpec] = [
        machine(cpus: 1, memoryMiB: 256, shares: []),
        machine(
            cpus: 2, memoryMiB: 2048,
            shares: [
                .init(tag: "usr", hostPath: "/usr", readOnly: true),
                .init(tag: "workspace", hostPath: "/home/me/project/.airlock/default/workspace", readOnly: false),
            ]),
        machine(cpus: 16, memoryMiB: 65536, shares: (0..<6).map { .init(tag: "share\($0)", hostPath: "/srv/s\($0)", readOnly: $0 % 2 == 0) }),
        // An OCI image root: the workspace shared, the layers as read-only squashfs disks.
        machine(
            cpus: 2, memoryMiB: 2048, shares: [.init(tag: "workspace", hostPath: "/home/me/project/.airlock/default/workspace", readOnly: false)],
            disks: (0..<3).map { .init(serial: "oci\($0)", path: "/home/me/.cache/airlock/oci/layers/sha256/\($0)abc.sqfs") }),
    ]

    static func machine(cpus: Int, memoryMiB: UInt64, shares: [MachineSpec.Share], disks: [MachineSpec.Disk] = []) -> MachineSpec {
        MachineSpec(
            kernel: "/cache/airlock/assets/abc-vmlinux", initramfs: "/cache/airlock/assets/def-initramfs", cpus: cpus, memoryMiB: memoryMiB,
            shares: shares, disk: "/home/me/project/.airlock/default/disk.img", readOnlyDisks: disks,
            runtimeDirectory: "/run/user/1000/airlock/0123abcd",
            consoleLog: "/home/me/project/.airlock/default/console.log", accelerator: .kvm)
    }

    /// Runs `call` against a stub that answers 204 and returns what it received.
    func recorded(_ call: @Sendable (CloudHypervisorClient) async throws -> Void) async throws -> RecordedRequest {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try StubAPIServer(path: directory.path + "/api.sock") { request in
            request.method == "GET" ? .respond(status: 200, body: #"{"version":"v48.0","state":"Created"}"#) : .respond(status: 204)
        }
        defer { server.stop() }
        try await call(CloudHypervisorClient(socketPath: directory.path + "/api.sock", timeout: .seconds(5)))
        let requests = server.requests
        try #require(requests.count == 1)
        return requests[0]
    }

    /// The spec's path for the client's (`/api/v1` is the spec's server URL).
    func specPath(_ request: RecordedRequest) throws -> String {
        try #require(request.path.hasPrefix("/api/v1/"))
        return String(request.path.dropFirst("/api/v1".count))
    }

    /// Checks the operation exists with that verb, and the body (or its absence) against it.
    func check(_ request: RecordedRequest, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let path = try specPath(request)
        let method = request.method.lowercased()
        #expect(spec.operation(method, path) != nil, "\(request.method) \(path) is not in the spec", sourceLocation: sourceLocation)
        if let schema = spec.requestSchema(method, path) {
            try #require(!request.body.isEmpty || !spec.requestBodyRequired(method, path), "\(path) needs a body", sourceLocation: sourceLocation)
            let value = try JSONValue.parse(request.body)
            let problems = spec.problems(value, against: schema)
            #expect(problems.isEmpty, "\(path): \(problems.joined(separator: "; "))\nbody: \(value)", sourceLocation: sourceLocation)
        } else {
            #expect(request.body.isEmpty, "\(path) takes no body but got \(request.body.count) bytes", sourceLocation: sourceLocation)
        }
    }

    @Test("vm.create: the machine's VmConfig validates (shares, vsock, disk; 256 MiB to 64 GiB)", arguments: machines)
    func create(machine: MachineSpec) async throws {
        let sockets = CloudHypervisorMachine.Sockets(runtimeDirectory: machine.runtimeDirectory, shareCount: machine.shares.count)
        let config = CloudHypervisorMachine.vmConfig(for: machine, sockets: sockets)
        let request = try await recorded { try await $0.createVM(config) }
        try check(request)
        // And it says what was meant: the size in bytes, shared memory, one fs per share.
        let value = try JSONValue.parse(request.body)
        guard case .object(let root) = value, case .object(let memory)? = root["memory"] else {
            Issue.record("no memory object in \(value)")
            return
        }
        #expect(memory["size"] == .integer(Int64(machine.memoryMiB) << 20))
        #expect(memory["shared"] == .bool(true))
        if case .array(let fs)? = root["fs"] { #expect(fs.count == machine.shares.count) } else { #expect(machine.shares.isEmpty) }
    }

    @Test("vm.add-fs, vm.add-disk and vm.resize bodies validate")
    func bodies() async throws {
        try check(await recorded { try await $0.addFs(FsConfig(tag: "cache", socket: "/run/user/1000/airlock/x/fs9.sock")) })
        try check(
            await recorded { try await $0.addDisk(DiskConfig(path: "/home/me/.airlock/extra.img", readonly: true, id: "extra", imageType: .raw)) })
        try check(await recorded { try await $0.resize(VmResize(desiredVcpus: 4, desiredRam: 8 << 30)) })
        try check(await recorded { try await $0.resize(VmResize(desiredBalloon: 512 << 20)) })
    }

    @Test("bodyless endpoints exist in the spec with their verb and get no body")
    func bodyless() async throws {
        try check(await recorded { _ = try await $0.ping() })
        try check(await recorded { _ = try await $0.vmInfo() })
        try check(await recorded { try await $0.bootVM() })
        try check(await recorded { try await $0.shutdownVM() })
        try check(await recorded { try await $0.deleteVM() })
        try check(await recorded { try await $0.pauseVM() })
        try check(await recorded { try await $0.resumeVM() })
        try check(await recorded { try await $0.shutdownVMM() })
    }

    // MARK: - The validator can fail

    func createSchema() throws -> [String: Any] {
        try #require(spec.requestSchema("put", "/vm.create"))
    }

    @Test("the validator rejects a VmConfig without payload")
    func missingPayload() throws {
        let problems = spec.problems(try JSONValue.parse(Array(#"{"cpus":{"boot_vcpus":1,"max_vcpus":1}}"#.utf8)), against: try createSchema())
        #expect(problems.contains { $0.contains("payload") && $0.contains("missing") }, "\(problems)")
    }

    @Test("the validator rejects a string where an integer is required, and an int32 out of range")
    func wrongTypes() throws {
        let body = #"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":"2","max_vcpus":2}}"#
        let problems = spec.problems(try JSONValue.parse(Array(body.utf8)), against: try createSchema())
        #expect(problems.contains { $0.contains("boot_vcpus") && $0.contains("expected an integer") }, "\(problems)")
        let numa = #"{"payload":{},"numa":[{"guest_numa_id":4294967296}]}"#
        let outOfRange = spec.problems(try JSONValue.parse(Array(numa.utf8)), against: try createSchema())
        #expect(outOfRange.contains { $0.contains("guest_numa_id") && $0.contains("int32") }, "\(outOfRange)")
    }

    @Test("the validator rejects a misspelt key, an unknown enum value and a vsock CID below 3")
    func strictness() throws {
        let body = #"{"payload":{},"cpus":{"bootVcpus":1,"boot_vcpus":1,"max_vcpus":1},"serial":{"mode":"file"},"vsock":{"cid":2,"socket":"/s"}}"#
        let problems = spec.problems(try JSONValue.parse(Array(body.utf8)), against: try createSchema())
        #expect(problems.contains { $0.contains("bootVcpus") }, "\(problems)")
        #expect(problems.contains { $0.contains("serial.mode") }, "\(problems)")
        #expect(problems.contains { $0.contains("vsock.cid") && $0.contains("minimum") }, "\(problems)")
    }

    @Test(
        "the fixture is byte-identical to ../shared/ref",
        .enabled(if: FileManager.default.fileExists(atPath: Fixtures.sharedSpec), "no ../shared/ref beside this clone; the fixture is the only copy"))
    func fixtureMatchesReference() throws {
        let fixture = try Data(contentsOf: URL(fileURLWithPath: Fixtures.spec))
        let reference = try Data(contentsOf: URL(fileURLWithPath: Fixtures.sharedSpec))
        #expect(fixture == reference, "copy \(Fixtures.sharedSpec) to \(Fixtures.spec)")
    }
}

extension MachineSpec: CustomTestStringConvertible {
    public var testDescription: String { "\(cpus) vCPU, \(memoryMiB) MiB, \(shares.count) shares" }
}
