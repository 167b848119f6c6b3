import AirlockSystem
import Config
import Foundation
import GitReview
import GuestLink
import Machine
import Synchronization
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("[mounts.*] on the host: what is shared, what is refused")
struct MountsTests {
    final class Warnings: Sendable {
        let list = Mutex<[String]>([])
        var reporter: SandboxReporter { SandboxReporter(warning: { text in self.list.withLock { $0.append(text) } }) }
        var all: [String] { list.withLock { $0 } }
    }

    /// A scratch directory holding `project/` (with `.git` and `.airlock`) and `home/`.
    struct Scratch {
        let root = NSTemporaryDirectory() + "airlock-mounts-\(UUID().uuidString.prefix(8))"
        var project: String { root + "/project" }
        var home: String { root + "/home" }

        init() throws {
            for directory in [
                "/project/.git/hooks", "/project/.airlock/default", "/project/data", "/home/.config/airlock", "/home/notes", "/home/.airlock/claude",
                "/home/.local/share/airlock",
            ] {
                try FileSystem.makeDirectories(root + directory)
            }
            try FileSystem.write(project + "/data/a.csv", Array("1,2\n".utf8))
            try FileSystem.write(home + "/.gitconfig", Array("[user]\n".utf8))
            try FileSystem.write(home + "/sibling", Array("secret\n".utf8))
        }

        func resolve(
            _ mounts: [String: AirlockConfig.Mount], masks: [String: [String]] = [:], reporter: SandboxReporter = .init()
        ) throws -> Mounts {
            try Mounts.resolve(
                mounts, project: project, guestHome: "/home/agent", masks: MaskedPaths(masks),
                protected: Mounts.protectedPaths(environment: ["HOME": home]), secret: [home + "/.local/share/airlock"], reporter: reporter)
        }

        func cleanUp() { try? FileSystem.removeTree(root) }
    }

    @Test("sources: absolute, ~ (expanded by the config), relative to the project; targets: ~ is the agent's home, relative is the project's")
    func placing() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let mounts = try scratch.resolve([
            "git": .init(source: scratch.home + "/.gitconfig", target: "~/.gitconfig"),
            "data": .init(source: "data", target: "/srv/data"),
            "notes": .init(source: scratch.home + "/notes", target: "notes", readOnly: false),
        ])
        let real = { (path: String) in URL(fileURLWithPath: path).resolvingSymlinksInPath().path }
        #expect(
            mounts.entries == [
                .init(name: "data", source: real(scratch.project + "/data"), target: "/srv/data", readOnly: true, isDirectory: true),
                .init(name: "git", source: real(scratch.home + "/.gitconfig"), target: "/home/agent/.gitconfig", readOnly: true, isDirectory: false),
                .init(name: "notes", source: real(scratch.home + "/notes"), target: scratch.project + "/notes", readOnly: false, isDirectory: true),
            ])
        // A fetch leaves out what a mount covers in the project.
        let covered = Mounts.projectTargets(
            ["notes": .init(source: "/x", target: "notes"), "git": .init(source: "/y", target: "~/.gitconfig")], project: scratch.project,
            guestHome: "/home/agent")
        #expect(covered == [.init(entry: "mounts.notes", path: "notes")])
    }

    @Test("missing sources: fail names the entry and the fix; warn and ignore skip; create-dir and create-file make them with their mode and content")
    func missing() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let absent = scratch.home + "/absent"
        let error = #expect(throws: SandboxError.self) { try scratch.resolve(["x": .init(source: absent, target: "/x")]) }
        #expect(error?.message == "[mounts.x] source \(absent) does not exist" && error?.hint?.contains("missing = \"warn\"") == true)

        let warnings = Warnings()
        let skipped = try scratch.resolve(
            ["w": .init(source: absent, target: "/w", missing: .warn), "i": .init(source: absent, target: "/i", missing: .ignore)],
            reporter: warnings.reporter)
        #expect(skipped.entries.isEmpty)
        #expect(warnings.all == ["[mounts.w] skipped: its source \(absent) does not exist"])
        #expect(!FileSystem.exists(absent))

        let made = try scratch.resolve([
            "d": .init(source: scratch.home + "/made/dir", target: "/d", missing: .createDir, createMode: 0o700),
            "f": .init(source: scratch.home + "/made/file.json", target: "/f.json", missing: .createFile, fileContent: "{}", createMode: 0o600),
        ])
        #expect(made.entries.map(\.isDirectory) == [true, false])
        #expect(FileSystem.status(scratch.home + "/made/dir").map { $0.st_mode & 0o777 } == 0o700)
        #expect(FileSystem.status(scratch.home + "/made/file.json").map { $0.st_mode & 0o777 } == 0o600)
        #expect(try FileSystem.readText(scratch.home + "/made/file.json") == "{}")
        // An existing source is left as it is.
        try FileSystem.write(scratch.home + "/made/file.json", Array("kept".utf8))
        _ = try scratch.resolve(["f": .init(source: scratch.home + "/made/file.json", target: "/f", missing: .createFile, fileContent: "{}")])
        #expect(try FileSystem.readText(scratch.home + "/made/file.json") == "kept")
    }

    @Test(
        "refused, naming the entry: what holds the project, its .git and .airlock, read-write inside it, masked paths, airlock's own files read-write, bad targets",
        arguments: [
            ("..", "/m", true, "holds the project"),
            (".", "/m", true, "holds the project"),
            (".git/hooks", "/m", true, "inside the project's .git"),
            (".airlock/default", "/m", true, "inside the project's .airlock"),
            ("data", "/m", false, "inside the project, read-write"),
            ("data", "/m", true, "would show data/secret.txt, which [mask.s] hides"),
            ("HOME/.config", "/m", false, "would let the agent change"),
            ("HOME", "/m", false, "would let the agent change"),
            ("HOME/.airlock", "/m", false, "would let the agent change"),
            ("HOME/.local/share", "/m", true, "airlock's vault: the VM must never hold its secrets"),
            ("HOME/.local/share/airlock", "/m", true, "airlock's vault"),
            ("HOME/notes", "/proc/x", true, "target /proc/x is in /proc"),
            ("HOME/notes", "/", true, "target / would cover"),
            ("HOME/notes", "PROJECT", true, "would cover the project's clone"),
            ("HOME/notes", "/home/../etc", true, "has `..`"),
            ("/dev/null", "/m", true, "neither a directory nor a regular file"),
        ])
    func refused(source: String, target: String, readOnly: Bool, message: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let place = { (path: String) in
            path.replacingOccurrences(of: "HOME", with: scratch.home).replacingOccurrences(of: "PROJECT", with: scratch.project)
        }
        let error = #expect(throws: SandboxError.self) {
            try scratch.resolve(
                ["m": .init(source: place(source), target: place(target), readOnly: readOnly)], masks: ["s": ["data/secret.txt"]])
        }
        #expect(error?.message.hasPrefix("[mounts.m] ") == true && error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(error?.hint?.isEmpty == false)
    }

    @Test("the agents' settings beside the Rust airlock's configuration (~/.airlock/claude) may be shared read-write; its config.toml may not")
    func agentSettings() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let settings = try scratch.resolve([
            "claude": .init(source: scratch.home + "/.airlock/claude", target: "/home/agent/.claude", readOnly: false)
        ])
        #expect(settings.entries.map(\.target) == ["/home/agent/.claude"])
        try FileSystem.write(scratch.home + "/.airlock/config.toml", Array("[vm]\n".utf8))
        let error = #expect(throws: SandboxError.self) {
            try scratch.resolve(["c": .init(source: scratch.home + "/.airlock/config.toml", target: "/home/agent/c.toml", readOnly: false)])
        }
        #expect(error?.message.contains("would let the agent change") == true, "\(error?.message ?? "")")
    }

    @Test("two mounts on one target are refused; read-only mounts of airlock's own configuration are not")
    func targets() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let error = #expect(throws: SandboxError.self) {
            try scratch.resolve(["a": .init(source: scratch.home + "/notes", target: "/n"), "b": .init(source: "data", target: "/n/")])
        }
        #expect(error?.message == "[mounts.b] has the target /n of [mounts.a] too")
        #expect(try scratch.resolve(["c": .init(source: scratch.home + "/.config", target: "/c")]).entries.count == 1)
    }

    @Test("single files: a hard link in the staging directory (the same inode both ways), or a copy across file systems, which warns when read-write")
    func staging() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let shm = "/dev/shm/airlock-mounts-\(UUID().uuidString.prefix(8))"
        try FileSystem.write(shm, Array("elsewhere\n".utf8))
        defer { unlink(shm) }
        let mounts = try scratch.resolve([
            "a-git": .init(source: scratch.home + "/.gitconfig", target: "~/.gitconfig", readOnly: false),
            "b-ro": .init(source: scratch.home + "/sibling", target: "/etc/sibling"),
            "c-dir": .init(source: scratch.home + "/notes", target: "/notes"),
            "d-far": .init(source: shm, target: "/far", readOnly: false),
        ])
        let staging = scratch.project + "/.airlock/default/mounts"
        try FileSystem.makeDirectories(staging + "/rw/stale")
        let warnings = Warnings()
        try mounts.stage(in: staging, reporter: warnings.reporter)
        #expect(try FileSystem.list(staging + "/rw") == ["file0", "file3"], "a fresh directory each start")
        #expect(try FileSystem.list(staging + "/ro") == ["file1"], "only the files: never a sibling")
        #expect(FileSystem.status(staging + "/rw/file0")?.st_ino == FileSystem.status(scratch.home + "/.gitconfig")?.st_ino)
        try FileSystem.write(staging + "/rw/file0", Array("[core]\n".utf8))
        #expect(try FileSystem.readText(scratch.home + "/.gitconfig") == "[core]\n")
        if FileSystem.status("/dev/shm")?.st_dev != FileSystem.status(staging)?.st_dev {
            #expect(try FileSystem.readText(staging + "/rw/file3") == "elsewhere\n")
            #expect(warnings.all.count == 1 && warnings.all.first?.contains("[mounts.d-far] \(shm) is copied, not linked") == true, "\(warnings.all)")
        }

        var layout = HostRoot(hostname: "h").layout(projectRoot: scratch.project, workspace: scratch.project + "/.airlock/default/workspace")
        let before = layout.shares.count
        mounts.add(to: &layout, staging: staging)
        let added = layout.shares.dropFirst(before).map { "\($0.tag) \($0.hostPath) \($0.readOnly)" }
        #expect(added == ["mount2 \(mounts.entries[2].source) true", "mounts-ro \(staging)/ro true", "mounts-rw \(staging)/rw false"])
        #expect(
            layout.setup.fileMounts == [
                .init(tag: "mounts-rw", name: "file0", path: "/home/agent/.gitconfig"),
                .init(tag: "mounts-ro", name: "file1", path: "/etc/sibling"), .init(tag: "mounts-rw", name: "file3", path: "/far"),
            ])
    }
}
