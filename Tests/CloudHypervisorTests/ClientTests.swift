import CloudHypervisor
import CloudHypervisorAPI
import Foundation
import Testing

/// The client against a stub API server on a Unix socket: what goes over the wire, and what
/// each kind of answer (or non-answer) becomes.
@Suite("Cloud Hypervisor API client")
struct ClientTests {
    /// Runs `body` with a client whose stub server answers with `reply`.
    func withStub(
        timeout: Duration = .seconds(5), responseLimit: Int = 1 << 20,
        reply: @escaping @Sendable (RecordedRequest) -> StubReply,
        _ body: (CloudHypervisorClient, StubAPIServer) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try StubAPIServer(path: directory.path + "/api.sock", reply: reply)
        defer { server.stop() }
        try await body(CloudHypervisorClient(socketPath: directory.path + "/api.sock", timeout: timeout, responseLimit: responseLimit), server)
    }

    /// The error `body` throws, nil when it succeeds.
    func failure(_ body: () async throws(CloudHypervisorError) -> Void) async -> CloudHypervisorError? {
        do {
            try await body()
            return nil
        } catch {
            return error
        }
    }

    @Test("verbs and paths of every endpoint")
    func verbsAndPaths() async throws {
        try await withStub(reply: {
            $0.method == "GET" ? .respond(status: 200, body: #"{"version":"v48.0","state":"Running"}"#) : .respond(status: 204)
        }) { client, server in
            _ = try await client.ping()
            try await client.createVM(VmConfig(payload: PayloadConfig(kernel: "/k", initramfs: nil, cmdline: nil)))
            try await client.bootVM()
            _ = try await client.vmInfo()
            try await client.shutdownVM()
            try await client.deleteVM()
            try await client.shutdownVMM()
            try await client.addFs(FsConfig(tag: "t", socket: "/s"))
            try await client.addDisk(DiskConfig(path: "/d"))
            try await client.resize(VmResize(desiredVcpus: 2))
            let seen = server.requests.map { "\($0.method) \($0.path)" }
            #expect(
                seen == [
                    "GET /api/v1/vmm.ping", "PUT /api/v1/vm.create", "PUT /api/v1/vm.boot", "GET /api/v1/vm.info",
                    "PUT /api/v1/vm.shutdown", "PUT /api/v1/vm.delete", "PUT /api/v1/vmm.shutdown", "PUT /api/v1/vm.add-fs",
                    "PUT /api/v1/vm.add-disk", "PUT /api/v1/vm.resize",
                ])
        }
    }

    @Test("a bodyless PUT says Content-Length: 0 and is never chunked; a body has its exact length")
    func contentLength() async throws {
        try await withStub(reply: { _ in .respond(status: 204) }) { client, server in
            try await client.bootVM()
            try await client.shutdownVMM()
            try await client.resize(VmResize(desiredRam: 1 << 30))
            let requests = server.requests
            try #require(requests.count == 3)
            for request in requests {
                #expect(request.headers["transfer-encoding"] == nil, "\(request.path) was sent chunked")
                #expect(request.headers["host"] != nil, "HTTP/1.1 needs Host")
            }
            #expect(requests[0].headers["content-length"] == "0")
            #expect(requests[1].headers["content-length"] == "0")
            #expect(requests[2].headers["content-length"] == String(requests[2].body.count))
            #expect(requests[2].headers["content-type"] == "application/json")
            #expect(String(decoding: requests[2].body, as: UTF8.self) == #"{"desired_ram":1073741824}"#)
        }
    }

    @Test("200 with a body is decoded; 204 on a hot-plug endpoint is no device info")
    func successes() async throws {
        try await withStub(reply: { request in
            switch request.path {
            case "/api/v1/vmm.ping": .respond(status: 200, body: #"{"build_version":"v48.0-1","version":"48.0","pid":4242,"features":["kvm"]}"#)
            case "/api/v1/vm.add-fs": .respond(status: 200, body: #"{"id":"_fs3","bdf":"0000:00:07.0"}"#)
            default: .respond(status: 204)
            }
        }) { client, _ in
            let ping = try await client.ping()
            #expect(ping == VmmPingResponse(version: "48.0", buildVersion: "v48.0-1", pid: 4242, features: ["kvm"]))
            #expect(try await client.addFs(FsConfig(tag: "t", socket: "/s")) == PciDeviceInfo(id: "_fs3", bdf: "0000:00:07.0"))
            #expect(try await client.addDisk(DiskConfig(path: "/d")) == nil)
        }
    }

    /// Status and CH's error array for each refusal; the message must carry both.
    @Test("400, 404, 405, 409 and 500 with CH's JSON error arrays", arguments: [400, 404, 405, 409, 500])
    func refusals(status: Int) async throws {
        let body = #"["Error booting VM","Cannot create virtio-fs device","Connection refused (os error 111)"]"#
        try await withStub(reply: { _ in .respond(status: status, body: body) }) { client, _ in
            let error = try #require(
                await failure { () async throws(CloudHypervisorError) in try await client.bootVM() }, "a \(status) was taken for success")
            #expect(
                error
                    == .http(
                        endpoint: "PUT /api/v1/vm.boot", status: status,
                        messages: [
                            "Error booting VM", "Cannot create virtio-fs device", "Connection refused (os error 111)",
                        ]))
            #expect(error.description.contains("HTTP \(status)"))
            #expect(error.description.contains("Cannot create virtio-fs device: Connection refused"))
        }
    }

    @Test("an error body that is not a JSON array is kept as one message")
    func plainErrorBody() async throws {
        try await withStub(reply: { _ in .respond(status: 500, body: "VmCreate(InvalidPayload)\n") }) { client, _ in
            await #expect(throws: CloudHypervisorError.http(endpoint: "PUT /api/v1/vm.create", status: 500, messages: ["VmCreate(InvalidPayload)"])) {
                try await client.createVM(VmConfig(payload: PayloadConfig(kernel: nil, initramfs: nil, cmdline: nil)))
            }
        }
    }

    @Test("a connection dropped without an answer is a transport failure")
    func dropped() async throws {
        try await withStub(reply: { _ in .drop }) { client, _ in
            let error = try #require(await failure { () async throws(CloudHypervisorError) in try await client.bootVM() })
            guard case .transport(let endpoint, .dropped) = error else {
                Issue.record("expected dropped, got \(error)")
                return
            }
            #expect(endpoint == "PUT /api/v1/vm.boot")
        }
    }

    @Test("a server that never answers: the deadline fires")
    func slowServer() async throws {
        // The error being `.timeout` (not a hang, not a dropped connection) is the check.
        try await withStub(timeout: .milliseconds(300), reply: { _ in .silence }) { client, _ in
            await #expect(throws: CloudHypervisorError.transport(endpoint: "GET /api/v1/vm.info", .timeout(.milliseconds(300)))) {
                _ = try await client.vmInfo()
            }
        }
    }

    @Test("an answer larger than the cap is refused")
    func tooLarge() async throws {
        let huge = "[\"" + String(repeating: "x", count: 200_000) + "\"]"
        try await withStub(responseLimit: 64 << 10, reply: { _ in .respond(status: 200, body: huge) }) { client, _ in
            await #expect(throws: CloudHypervisorError.transport(endpoint: "GET /api/v1/vmm.ping", .responseTooLarge(limit: 64 << 10))) {
                _ = try await client.ping()
            }
        }
    }

    @Test("an answer that is not the expected JSON is a decoding failure")
    func undecodable() async throws {
        try await withStub(reply: { _ in .respond(status: 200, body: #"{"state":42}"#) }) { client, _ in
            let error = try #require(await failure { () async throws(CloudHypervisorError) in _ = try await client.vmInfo() })
            guard case .decoding(let endpoint, _) = error else {
                Issue.record("expected decoding, got \(error)")
                return
            }
            #expect(endpoint == "GET /api/v1/vm.info")
        }
    }

    @Test("nothing listening: a connect failure naming the socket")
    func noServer() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let client = CloudHypervisorClient(socketPath: directory.path + "/absent.sock", timeout: .seconds(2))
        let error = try #require(await failure { () async throws(CloudHypervisorError) in _ = try await client.ping() })
        guard case .transport(_, .connect(let socket, _)) = error else {
            Issue.record("expected connect, got \(error)")
            return
        }
        #expect(socket == directory.path + "/absent.sock")
        #expect(error.description.contains("absent.sock"))
    }
}
