import AirlockSystem
import Config
import Foundation
import Logging
import Machine
import Testing

@testable import Sandbox

@Suite("The sandbox manager without a VM")
struct SandboxManagerTests {
    /// A project directory (a git repository when `git`), removed by the caller.
    func project(git: Bool = true) throws -> (Project, SandboxManager) {
        let root = NSTemporaryDirectory() + "airlock-manager-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(root + (git ? "/.git/info" : ""))
        let project = Project.discover(from: root)
        let manager = SandboxManager(
            project: project, loaded: .init(config: AirlockConfig()), environment: ["HOME": root], logger: .init(label: "test"))
        return (project, manager)
    }

    @Test("list: every sandbox directory with its state; dot-directories and files are not sandboxes")
    func listing() throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        #expect(manager.list().isEmpty)
        try FileSystem.makeDirectories(project.root + "/.airlock/web")
        try FileSystem.makeDirectories(project.root + "/.airlock/.hidden")
        try FileSystem.write(project.root + "/.airlock/file", [])
        let list = manager.list()
        #expect(list.map(\.name) == ["web"])
        #expect(list.first?.state == "stopped" && list.first?.pid == nil && list.first?.project == project.root)
    }

    @Test("a running sandbox is one whose lock is held; its state file says by whom")
    func running() throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        let paths = try manager.paths("default")
        try FileSystem.makeDirectories(paths.stateDirectory)
        let lock = try #require(try SandboxLock.acquire(paths.lockFile))
        let state = SandboxState(
            pid: getpid(), vmmPID: 12345, backend: "qemu", accelerator: "tcg", startedAt: Int64(time(nil)), project: project.root)
        try FileSystem.writeAtomically(paths.stateFile, state.text)
        let status = try #require(manager.list().first)
        #expect(status.state == "running" && status.vmmPID == 12345 && status.backend == "qemu")
        #expect(try SandboxLock.acquire(paths.lockFile) == nil, "a second owner cannot take it")
        withExtendedLifetime(lock) {}
    }

    @Test("stop of a sandbox that is not running says so; rm refuses a missing one and removes a stopped one")
    func stopAndRemove() async throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        #expect(try await manager.stop("default") == false)
        let missing = await #expect(throws: SandboxError.self) { try await manager.remove("default", force: false) }
        #expect(missing?.hint?.contains("airlock ps") == true)
        let paths = try manager.paths("default")
        try FileSystem.makeDirectories(paths.workspace)
        try await manager.remove("default", force: false)
        #expect(!FileSystem.exists(paths.stateDirectory))
    }

    @Test("rm refuses a running sandbox without --force")
    func removeRunning() async throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        let paths = try manager.paths("busy")
        try FileSystem.makeDirectories(paths.stateDirectory)
        let lock = try #require(try SandboxLock.acquire(paths.lockFile))
        let error = await #expect(throws: SandboxError.self) { try await manager.remove("busy", force: false) }
        #expect(error?.message == "sandbox busy is running")
        #expect(FileSystem.isDirectory(paths.stateDirectory))
        withExtendedLifetime(lock) {}
    }

    @Test("the agent's work needs a git project and an existing sandbox; names are checked")
    func work() throws {
        let (plain, plainManager) = try project(git: false)
        defer { try? FileSystem.removeTree(plain.root) }
        #expect(throws: SandboxError.self) { try plainManager.work("default") }
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        let error = #expect(throws: SandboxError.self) { try manager.work("default") }
        #expect(error?.message == "this project has no sandbox default")
        #expect(throws: SandboxError.self) { try manager.paths("../escape") }
    }

    @Test("a session that ended because of `airlock stop` says so; any other error is kept")
    func explainedStops() throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        let paths = try manager.paths("default")
        try FileSystem.makeDirectories(paths.stateDirectory)
        let lost = HostSession.Failure.lost
        #expect(SandboxManager.explained(lost, paths: paths) is HostSession.Failure)
        try FileSystem.writeAtomically(paths.stopMarker, "1\n")
        let explained = SandboxManager.explained(lost, paths: paths)
        #expect("\(explained)".contains("was stopped (`airlock stop`)"))
    }

    @Test(
        "mount mode's view: .git and both configuration files read-only (missing ones created empty), masks and .airlock hidden; no git or a link leading out is refused"
    )
    func projectView() throws {
        let (project, manager) = try project()
        defer { try? FileSystem.removeTree(project.root) }
        let root = project.root
        var config = AirlockConfig()
        config.workspace.mode = .mount
        config.masks = ["secrets": ["secret.env", "private", "private/inner", "absent"]]
        try FileSystem.makeDirectories(root + "/private")
        try FileSystem.write(root + "/secret.env", Array("T\n".utf8))
        try FileSystem.write(root + "/airlock.toml", [])
        let paths = try manager.paths("default")
        try FileSystem.makeDirectories(paths.stateDirectory)
        let notices = Notices()
        let workspace = Workspace(paths: paths, config: config, options: .init(), reporter: .init(notice: { notices.add($0) }))
        let view = try workspace.projectView()
        #expect(view.source == root)
        #expect(
            view.steps == [
                .readOnly(".git"), .readOnly("airlock.toml"), .readOnly("airlock.local.toml"),
                .hideFile("secret.env", emptyFile: paths.stateDirectory + "/empty"), .hideDirectory("private"), .hideDirectory(".airlock"),
            ])
        #expect(try FileSystem.readText(root + "/airlock.local.toml") == "")
        #expect(notices.all == ["created an empty airlock.local.toml: in mount mode the VM could otherwise write one for the next start to read"])
        #expect(FileSystem.isDirectory(paths.projectView) && FileSystem.size(paths.stateDirectory + "/empty") == 0)

        config.workspace.readOnly = true
        #expect(try Workspace(paths: paths, config: config, options: .init(), reporter: .init()).projectView().steps.first == .readOnly(""))

        // A mask that leads out of the project through a link.
        #expect(symlink("/etc", root + "/outside") == 0)
        config.masks = ["out": ["outside/passwd"]]
        let out = #expect(throws: SandboxError.self) {
            try Workspace(paths: paths, config: config, options: .init(), reporter: .init()).projectView()
        }
        #expect(out?.message.contains("leads out of the project") == true)

        // .git as a link cannot be held read-only; no .git at all is no repository.
        config.masks = [:]
        try FileSystem.removeTree(root + "/.git")
        #expect(symlink("/tmp", root + "/.git") == 0)
        let link = #expect(throws: SandboxError.self) {
            try Workspace(paths: paths, config: config, options: .init(), reporter: .init()).projectView()
        }
        #expect(link?.message.contains(".git is a symbolic link") == true)
        unlink(root + "/.git")
        let none = #expect(throws: SandboxError.self) {
            try Workspace(paths: paths, config: config, options: .init(), reporter: .init()).projectView()
        }
        #expect(none?.message.contains("needs a git repository") == true)
    }
}

/// Notices a reporter gave, in order.
final class Notices: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ text: String) { lock.withLock { list.append(text) } }
    var all: [String] { lock.withLock { list } }
}
