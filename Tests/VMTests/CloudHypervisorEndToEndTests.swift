import Foundation
import Sandbox
import TestSupport
import Testing

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
