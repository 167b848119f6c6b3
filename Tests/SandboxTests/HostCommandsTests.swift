import AirlockSystem
import Config
import Foundation
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("[commands.*]: the host's programs for a host-root VM")
struct HostCommandsTests {
    /// A home with Claude Code's installer layout (a link in ~/.local/bin into its versions),
    /// an npm global prefix holding a node script, and nvm's node.
    struct Home {
        let root = NSTemporaryDirectory() + "airlock-commands-\(UUID().uuidString.prefix(8))"
        var claude: String { root + "/.local/share/claude/versions/2.0.1" }
        var package: String { root + "/.npm-global/lib/node_modules/@openai/codex" }
        var node: String { root + "/.nvm/versions/node/v22.1.0/bin/node" }
        var path: String {
            [root + "/.local/bin", root + "/.npm-global/bin", FileSystem.parent(of: node), "/usr/bin", "/bin"].joined(separator: ":")
        }

        init() throws {
            for directory in [".local/bin", ".local/share/claude/versions", ".npm-global/bin", ".npm-global/lib/node_modules/@openai/codex/bin"] {
                try FileSystem.makeDirectories(root + "/" + directory)
            }
            try FileSystem.makeDirectories(FileSystem.parent(of: node))
            try write(claude, "\u{7F}ELF a single binary", mode: 0o755)
            try write(package + "/package.json", "{\"name\":\"@openai/codex\"}", mode: 0o644)
            try write(package + "/bin/codex.js", "#!/usr/bin/env node\nconsole.log('codex')\n", mode: 0o755)
            try write(node, "\u{7F}ELF node", mode: 0o755)
            symlink("../share/claude/versions/2.0.1", root + "/.local/bin/claude")
            symlink("../lib/node_modules/@openai/codex/bin/codex.js", root + "/.npm-global/bin/codex")
        }

        func write(_ path: String, _ text: String, mode: mode_t) throws {
            try FileSystem.write(path, Array(text.utf8))
            chmod(path, mode)
        }

        func cleanUp() { try? FileSystem.removeTree(root) }
    }

    @Test("found on the host's PATH: a single binary shared as itself, a node script with its package and the host's node; links for each")
    func resolve() throws {
        let home = try Home()
        defer { home.cleanUp() }
        let found = HostCommands.resolve(["claude": "", "codex": "npm install -g @openai/codex", "sh": ""], path: home.path)
        #expect(
            found.links == [
                .init(name: "claude", target: home.claude), .init(name: "codex", target: home.package + "/bin/codex.js"),
                .init(name: "node", target: home.node), .init(name: "sh", target: FileSystem.realPath("/usr/bin/sh") ?? ""),
            ], "\(found.links)")
        #expect(found.shared == [home.claude, home.package, home.node], "the system's sh is in the VM already: \(found.shared)")
        #expect(found.warnings.isEmpty, "\(found.warnings)")

        let mounts = found.mounts(linkDirectory: home.root + "/links")
        #expect(mounts["commands.links"]?.target == HostCommands.guestDirectory && mounts["commands.links"]?.readOnly == true)
        #expect(Set(mounts.values.filter { $0.target != HostCommands.guestDirectory }.map(\.source)) == Set(found.shared))
        #expect(mounts.values.allSatisfy { $0.readOnly && ($0.source == $0.target || $0.target == HostCommands.guestDirectory) })

        try found.writeLinks(in: home.root + "/links")
        #expect(FileSystem.linkTarget(home.root + "/links/claude") == home.claude)
        #expect(FileSystem.entries(home.root + "/links").sorted() == ["claude", "codex", "node", "sh"])
    }

    @Test("missing: a warning with the way to install it, never an error; a node script without node says so")
    func missing() throws {
        let home = try Home()
        defer { home.cleanUp() }
        let found = HostCommands.resolve(["claude": "curl -fsSL https://claude.ai/install.sh | bash"], path: "/usr/bin:/bin")
        #expect(found.links.isEmpty && found.shared.isEmpty)
        #expect(
            found.warnings == [
                "claude is not installed on this host (not on PATH), so the sandbox has none; install it with `curl -fsSL https://claude.ai/install.sh | bash`, or use an image that ships it ([vm] image)"
            ])
        let withoutNode = HostCommands.resolve(["codex": ""], path: home.root + "/.npm-global/bin")
        #expect(withoutNode.links.map(\.name) == ["codex"])
        #expect(withoutNode.warnings.first?.contains("run by node, which this host does not have") == true, "\(withoutNode.warnings)")

        let npmOnly = home.root + "/.npm-global/bin:" + FileSystem.parent(of: home.node)
        let checks = Doctor.commands(["claude": "curl -fsSL https://claude.ai/install.sh | bash", "codex": ""], path: npmOnly, image: "host")
        #expect(checks.map(\.status) == [.warn, .pass], "\(checks)")
        #expect(checks.first?.fix == "curl -fsSL https://claude.ai/install.sh | bash (or use an image that ships it)")
        #expect(Doctor.commands(["claude": ""], path: home.path, image: "debian:bookworm").isEmpty, "an image brings its own")
    }

    @Test("the links' directory is last on a host root's PATH when there are commands, and only then")
    func path() {
        let base = ["PATH": "/usr/bin:/bin", "HOME": "/home/u"]
        #expect(HostCommands.environment(base, ["claude": ""])["PATH"] == "/usr/bin:/bin:" + HostCommands.guestDirectory)
        #expect(HostCommands.environment(base, [:]) == base)
    }
}
