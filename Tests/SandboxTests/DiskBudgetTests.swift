import AirlockSystem
import Foundation
import Testing

@testable import Sandbox

@Suite("The disk budget: what a sandbox's workspace takes of the host's disk")
struct DiskBudgetTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "airlock-budget-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(path + "/tree/sub")
        return path
    }

    func fill(_ path: String, megabytes: Int) throws {
        try FileSystem.write(path, [UInt8](repeating: 1, count: megabytes << 20))
    }

    @Test("the walk counts allocated bytes, a file with several links once, and leaves out the excluded directories")
    func walk() throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        try fill(root + "/tree/a", megabytes: 4)
        try fill(root + "/tree/sub/b", megabytes: 2)
        #expect(link(root + "/tree/a", root + "/tree/sub/a-again") == 0)
        let budget = DiskBudget(workspace: root + "/tree", maxSize: 5 << 20, watched: [root])
        let used = budget.used()
        #expect(used >= 6 << 20 && used < 7 << 20, "\(used)")
        #expect(budget.breach() == .workspace(used: used, limit: 5 << 20))
        let excluding = DiskBudget(workspace: root + "/tree", excluding: [root + "/tree/sub"], maxSize: 5 << 20, watched: [root])
        #expect(excluding.used() < 5 << 20 && excluding.breach() == nil)
    }

    @Test("a file deleted but still open in the process serving the share still counts (a guest writing to a file it unlinked)")
    func deletedButOpen() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let ready = root + "/ready"
        // Opens a file in the workspace, unlinks it, fills it, and holds it open.
        let script = """
            import os, sys, time
            path = sys.argv[1] + "/tree/hidden"
            with open(path, "wb") as f:
                os.unlink(path)
                f.write(b"x" * (8 << 20)); f.flush(); os.fsync(f.fileno())
                open(sys.argv[1] + "/ready", "w").close()
                time.sleep(60)
            """
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = ["-c", script, root]
        try holder.run()
        defer { holder.terminate() }
        while !FileSystem.exists(ready) { try await Task.sleep(for: .milliseconds(20)) }
        let budget = DiskBudget(workspace: root + "/tree", maxSize: 4 << 20, watched: [root])
        #expect(budget.used() < 1 << 20, "the walk cannot see it")
        let held = budget.used(holders: [holder.processIdentifier])
        #expect(held >= 8 << 20, "\(held)")
        #expect(budget.breach(holders: [holder.processIdentifier]) == .workspace(used: held, limit: 4 << 20))
        // A process holding a deleted file elsewhere is not the workspace's.
        let elsewhere = DiskBudget(workspace: root + "/other", maxSize: 4 << 20, watched: [root])
        #expect(elsewhere.used(holders: [holder.processIdentifier]) == 0)
    }

    @Test("the floor: 1 GiB free, or 5% of a smaller file system; a file system under it is named, with the fix")
    func floor() throws {
        #expect(DiskBudget.floor(total: 1 << 40) == 1 << 30)
        #expect(DiskBudget.floor(total: 10 << 30) == 512 << 20)
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        #expect(DiskBudget(workspace: root, maxSize: 1 << 40, watched: [root]).hostBreach() == nil, "this machine has room")
        let breach = DiskBudget.Breach.hostSpace(path: "/home", free: 300 << 20, floor: 1 << 30)
        let (message, hint) = DiskBudget.explain(breach, sandbox: "default", workspace: "/p/.airlock/default/workspace")
        #expect(
            message == "the file system of /home has 300 MiB free, below the 1 GiB airlock leaves free on the host" && hint.contains("free space"))
        let over = DiskBudget.explain(.workspace(used: 3 << 29, limit: 1 << 30), sandbox: "default", workspace: "/p/w")
        #expect(over.message == "sandbox default's workspace holds 1.5 GiB, over [workspace] max_size = 1G", "\(over.message)")
        #expect(over.hint.contains("airlock fetch --name default") && over.hint.contains("airlock.local.toml"))
    }
}
