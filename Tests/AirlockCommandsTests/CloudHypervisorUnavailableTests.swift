import Foundation
import TestSupport
import Testing

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
        // A fix for each: a package where the distribution has one, else where to get it.
        #expect(
            ["apt-get install", "modprobe", "usermod", "cloud-hypervisor/releases", "gitlab.com/virtio-fs"].contains { result.stderr.contains($0) })
        // Nothing was prepared: no clone, no disk, no state, no console.
        for leftover in ["workspace", "disk.img", "state", "console.log"] {
            #expect(
                !FileManager.default.fileExists(atPath: project.appendingPathComponent(".airlock/default/\(leftover)").path),
                "\(leftover) was created")
        }
    }
}
