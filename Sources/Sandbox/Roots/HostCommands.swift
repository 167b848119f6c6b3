import AirlockSystem
import Config

#if canImport(Glibc)
import Glibc
#endif

/// `[commands.<name>]` (the agents' presets name `claude` and `codex`): a program installed on
/// the host where the VM does not see it — Claude Code's installer puts it in
/// `~/.local/bin` (a link into `~/.local/share/claude/versions`), npm's global prefix may be
/// in the home, nvm's node is — is found on the host's PATH and shared read-only at its own
/// path, with a link to it in `/run/airlock-bin`, last on the VM's PATH.
///
/// What is shared is the install itself, never its neighbours: a single program's file, or
/// the npm package that holds a script (and, for a script run by `node`, the host's node when
/// the VM does not see it). Read-only, so the program cannot update itself in the VM (the
/// presets also turn its updater off); an update on the host reaches the next sandbox. With an
/// image root the image's own programs are used: host programs may not run there.
struct HostCommands: Sendable, Equatable {
    /// Where the VM finds the links, last on its PATH.
    static let guestDirectory = "/run/airlock-bin"

    /// A program the VM will run: the link's name and the file it leads to.
    struct Link: Sendable, Equatable {
        var name: String
        var target: String
    }

    var links: [Link] = []
    /// Host paths shared read-only at the same path (files or package directories).
    var shared: [String] = []
    /// What cannot be offered, each with its fix.
    var warnings: [String] = []

    /// Finds `commands` (name → how to install it) on `path` (the host's PATH).
    static func resolve(_ commands: [String: String], path: String) -> HostCommands {
        var result = HostCommands()
        let search = path.split(separator: ":").map(String.init).filter { $0.hasPrefix("/") }
        for (name, install) in commands.sorted(by: { $0.key < $1.key }) {
            guard let found = find(name, in: search), let real = FileSystem.realPath(found) else {
                result.warnings.append(
                    "\(name) is not installed on this host (not on PATH), so the sandbox has none"
                        + (install.isEmpty ? "" : "; install it with `\(install)`") + ", or use an image that ships it ([vm] image)")
                continue
            }
            result.add(name, real)
            if usesNode(real) {
                if let node = find("node", in: search).flatMap(FileSystem.realPath) {
                    result.add("node", node)
                } else {
                    result.warnings.append("\(name) (\(real)) is run by node, which this host does not have on PATH; install Node.js")
                }
            }
        }
        return result
    }

    /// `real` linked as `name`, and shared unless the VM sees it already.
    private mutating func add(_ name: String, _ real: String) {
        guard !links.contains(where: { $0.name == name }) else { return }
        links.append(Link(name: name, target: real))
        guard !Self.visibleInGuest(real) else { return }
        let share = Self.packageRoot(of: real) ?? real
        if !shared.contains(share) { shared.append(share) }
    }

    /// The first executable `name` in `directories`.
    static func find(_ name: String, in directories: [String]) -> String? {
        directories.lazy.map { $0 + "/" + name }.first { path in
            var info = stat()
            return access(path, X_OK) == 0 && stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
        }
    }

    /// Whether the host root shows `path` at the same path already (the system directories).
    static func visibleInGuest(_ path: String) -> Bool {
        let first = path.split(separator: "/").first.map(String.init) ?? ""
        return HostRoot.systemDirectories.contains(first)
    }

    /// The npm package directory holding `file` (the nearest parent with a `package.json`
    /// inside a `node_modules`), so a script's own modules come with it.
    static func packageRoot(of file: String) -> String? {
        var directory = FileSystem.parent(of: file)
        while directory.count > 1 {
            if FileSystem.exists(directory + "/package.json"), directory.contains("/node_modules/") { return directory }
            directory = FileSystem.parent(of: directory)
        }
        return nil
    }

    /// Whether `file` is a script whose interpreter is `node` (`#!/usr/bin/env node`, `-S`
    /// forms included).
    static func usesNode(_ file: String) -> Bool {
        guard let head = FileSystem.readPrefix(file, limit: 256), head.hasPrefix("#!") else { return false }
        let line = head.prefix { $0 != "\n" }
        return line.split(separator: " ").contains { $0 == "node" || $0.hasSuffix("/node") }
    }

    /// A host root's base `environment` with the links' directory last on PATH when there are
    /// `commands`.
    static func environment(_ environment: [String: String], _ commands: [String: String]) -> [String: String] {
        guard !commands.isEmpty else { return environment }
        var environment = environment
        environment["PATH"] = (environment["PATH"].map { $0 + ":" } ?? "") + guestDirectory
        return environment
    }

    /// Makes `directory` hold exactly the links (what a start before left is replaced).
    func writeLinks(in directory: String) throws {
        try? FileSystem.removeTree(directory)
        try FileSystem.makeDirectories(directory, mode: 0o755)
        for link in links {
            guard symlink(link.target, directory + "/" + link.name) == 0 else {
                throw SandboxError("cannot link \(link.name) for the sandbox", cause: SystemError.last("symlink", directory + "/" + link.name))
            }
        }
    }

    /// The `[mounts.*]` entries that share the programs: each read-only at its own path, and
    /// the links' directory at `guestDirectory`.
    func mounts(linkDirectory: String) -> [String: AirlockConfig.Mount] {
        guard !links.isEmpty else { return [:] }
        // Names no file can give a [mounts.*] entry without quotes.
        var mounts = ["commands.links": AirlockConfig.Mount(source: linkDirectory, target: Self.guestDirectory)]
        for (index, path) in shared.enumerated() {
            mounts["commands.\(index + 1)"] = AirlockConfig.Mount(source: path, target: path)
        }
        return mounts
    }
}
