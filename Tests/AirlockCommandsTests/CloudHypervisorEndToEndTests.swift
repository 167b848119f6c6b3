import Foundation
import Sandbox
import Testing

/// Whether this host can run the Cloud Hypervisor backend, decided as `airlock` decides it.
enum CloudHypervisorHost {
    static let missing: [String] = BackendSelection.cloudHypervisorMissing(
        on: HostFacts.probe(environment: ProcessInfo.processInfo.environment, configuredAssets: .init(), libraries: []))

    static var available: Bool { missing.isEmpty && VMEnvironment.kernel != nil && VMEnvironment.initramfs != nil }

    static var skipReason: Comment {
        let what =
            missing.isEmpty
            ? ["AIRLOCK_KERNEL/AIRLOCK_INITRAMFS are not set (run `make test`)"]
            : missing.map { String($0.split(separator: ":").first ?? Substring($0)) }
        return Comment(
            rawValue: "Cloud Hypervisor end-to-end tests need cloud-hypervisor, the Rust virtiofsd and hardware KVM; here: "
                + what.joined(separator: "; "))
    }

    /// A repository whose airlock.toml asks for the Cloud Hypervisor backend.
    static func repository() throws -> URL {
        let directory = try VMEnvironment.repository()
        try "[vm]\nbackend = \"cloud-hypervisor\"\n".write(to: directory.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        return directory
    }
}

/// The QEMU scenarios of `VMTests`, on Cloud Hypervisor. They run only where it can (hardware
/// KVM, cloud-hypervisor, virtiofsd); elsewhere they are reported as skipped with the reason.
@Suite(
    "Sandboxes on Cloud Hypervisor", .tags(.vm), .serialized, .timeLimit(.minutes(3)),
    .enabled(if: CloudHypervisorHost.available, CloudHypervisorHost.skipReason))
struct CloudHypervisorEndToEnd {
    @Test("start -- sh -c 'echo hello; exit 7': prints hello, exits 7")
    func exitStatus() throws {
        let project = try CloudHypervisorHost.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(["start", "--verbose", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7"], in: project)
        #expect(result.status == 7, "stderr: \(result.stderr)")
        #expect(result.stdout == "hello\n")
        #expect(result.stderr.contains("backend cloud-hypervisor"))
        #expect(result.stderr.contains("oops"))
    }

    @Test("stdin through a pipe, with its end of file: printf 'a\\nb\\n' | airlock start -- wc -l → 2")
    func stdinPipe() throws {
        let project = try CloudHypervisorHost.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(["start", "--", "wc", "-l"], in: project, stdin: Data("a\nb\n".utf8))
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
    }

    @Test("a file the command writes lands in the sandbox's clone over virtio-fs")
    func writesGoToTheClone() throws {
        let project = try CloudHypervisorHost.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(["start", "--", "sh", "-c", "echo agent > made-in-vm.txt; cat README"], in: project)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout == "hello\n")
        let clone = project.appendingPathComponent(".airlock/default/workspace/made-in-vm.txt")
        #expect((try? String(contentsOf: clone, encoding: .utf8)) == "agent\n")
    }
}

/// Asking for Cloud Hypervisor where it cannot run fails before anything starts.
@Suite("Cloud Hypervisor requested where it cannot run")
struct CloudHypervisorUnavailable {
    @Test(
        "start with backend = \"cloud-hypervisor\": fails fast, names what is missing and how to install it, starts nothing",
        .enabled(if: !CloudHypervisorHost.missing.isEmpty, "this host can run Cloud Hypervisor"))
    func failsFast() throws {
        let project = try CloudHypervisorHost.repository()
        defer { try? FileManager.default.removeItem(at: project) }
        let started = Date()
        let result = try CLI.run(["start", "--", "true"], in: project)
        #expect(result.status == 1, "stderr: \(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(result.stderr.contains("cloud-hypervisor was requested but cannot run here"))
        for problem in CloudHypervisorHost.missing {
            // Each missing piece with its fix, as BackendSelection words it.
            #expect(result.stderr.contains(problem), "missing from the message: \(problem)\nstderr: \(result.stderr)")
        }
        #expect(result.stderr.contains("apt-get install") || result.stderr.contains("modprobe") || result.stderr.contains("usermod"))
        // Nothing was prepared: no clone, no disk, no state, no console.
        for leftover in ["workspace", "disk.img", "state", "console.log"] {
            #expect(
                !FileManager.default.fileExists(atPath: project.appendingPathComponent(".airlock/default/\(leftover)").path),
                "\(leftover) was created")
        }
    }
}
