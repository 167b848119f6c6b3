import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// `sudo` inside the VM: the agent runs as the host user's uid (so what it writes in the
/// workspace stays the user's), and may become root without a password, because the VM is the
/// boundary and agents install packages. The guest supplies its own: the host may have no sudo,
/// a setuid binary read from a share is fragile, and a real sudo wants PAM and a sudoers file
/// the synthesized /etc lacks.
///
/// It is this binary again (`/init`, setuid root), bind-mounted at `/usr/local/bin/sudo`, which
/// comes first on every PATH; run under that name it runs its command as root.
public enum Sudo {
    /// Where the agent finds it.
    static let path = "/usr/local/bin/sudo"
    /// sudo's `secure_path` on Debian and Ubuntu.
    static let securePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Whether this process was started as `sudo`.
    public static func invoked(as arguments: [String]) -> Bool {
        arguments.first.map { $0 == "sudo" || $0.hasSuffix("/sudo") } ?? false
    }

    /// Makes `/init` setuid root and binds it at `root` + `path`. Run by PID 1 once the root
    /// is assembled.
    static func install(root: String) throws {
        try Syscall.retrying("chmod", "/init") { chmod("/init", 0o4755) }
        let target = root + path
        try FileSystem.makeDirectories(FileSystem.parent(of: target))
        if !FileSystem.exists(target) { try FileSystem.write(target, [], mode: 0o755) }
        try System.mount("/init", target, "none", flags: UInt(MS_BIND))
    }

    /// What to run, parsed from sudo's command line (the options agents and scripts use).
    struct Invocation: Equatable {
        var command: [String] = []
        var preserveEnvironment = false
        /// `-i`: root's login shell (with the command, if any, through it).
        var login = false
        /// `-s`: a shell (with the command, if any, through it).
        var shell = false
        /// `-v`, `-k`, `-K`: nothing to run (there is no password to remember).
        var nothing = false
    }

    enum UsageError: Error, Equatable, CustomStringConvertible {
        case unknownOption(String)
        case otherUser(String)
        case missingValue(String)
        case noCommand

        var description: String {
            switch self {
            case .unknownOption(let option): "unknown option \(option)"
            case .otherUser(let user): "airlock's sudo runs commands as root only, not as \(user)"
            case .missingValue(let option): "option \(option) needs a value"
            case .noCommand: "usage: sudo [-E] [-H] [-n] [-i | -s] [-u root] [--] command [argument ...]"
            }
        }
    }

    static func parse(_ arguments: [String]) throws(UsageError) -> Invocation {
        var invocation = Invocation()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                index += 1
                break
            }
            guard argument.hasPrefix("-"), argument.count > 1 else { break }
            if argument.hasPrefix("--") {
                switch argument {
                case "--preserve-env": invocation.preserveEnvironment = true
                case "--login": invocation.login = true
                case "--shell": invocation.shell = true
                case "--non-interactive", "--set-home": break
                case "--user":
                    index += 1
                    guard index < arguments.count else { throw .missingValue(argument) }
                    try checkUser(arguments[index])
                case let option where option.hasPrefix("--user="): try checkUser(String(option.dropFirst("--user=".count)))
                case let option where option.hasPrefix("--preserve-env="): invocation.preserveEnvironment = true
                default: throw .unknownOption(argument)
                }
                index += 1
                continue
            }
            var letters = Array(argument.dropFirst())
            while !letters.isEmpty {
                let letter = letters.removeFirst()
                switch letter {
                case "E": invocation.preserveEnvironment = true
                case "i": invocation.login = true
                case "s": invocation.shell = true
                case "H", "n", "S", "A", "P", "b": break
                case "v", "k", "K": invocation.nothing = true
                case "u", "g":
                    let value: String
                    if !letters.isEmpty {
                        value = String(letters)
                        letters = []
                    } else {
                        index += 1
                        guard index < arguments.count else { throw .missingValue("-\(letter)") }
                        value = arguments[index]
                    }
                    if letter == "u" { try checkUser(value) }
                default: throw .unknownOption("-\(letter)")
                }
            }
            index += 1
        }
        invocation.command = Array(arguments[index...])
        if invocation.command.isEmpty && !invocation.login && !invocation.shell && !invocation.nothing { throw .noCommand }
        return invocation
    }

    private static func checkUser(_ user: String) throws(UsageError) {
        guard user == "root" || user == "0" || user == "#0" else { throw .otherUser(user) }
    }

    /// The environment the command gets: sudo's reset one (terminal and locale kept, root's
    /// home and a secure PATH), or the caller's with `-E`; and `SUDO_*` either way.
    static func environment(_ caller: [String: String], invocation: Invocation, uid: uid_t, gid: gid_t, shell: String) -> [String: String] {
        var environment: [String: String]
        if invocation.preserveEnvironment {
            environment = caller
        } else {
            environment = caller.filter { key, _ in
                ["TERM", "COLORTERM", "LANG", "LANGUAGE", "DISPLAY", "TZ", "HOSTNAME"].contains(key) || key.hasPrefix("LC_")
            }
            environment["PATH"] = securePath
            environment["HOME"] = "/root"
            environment["USER"] = "root"
            environment["LOGNAME"] = "root"
            environment["SHELL"] = shell
        }
        if let user = caller["USER"] ?? caller["LOGNAME"] { environment["SUDO_USER"] = user }
        environment["SUDO_UID"] = "\(uid)"
        environment["SUDO_GID"] = "\(gid)"
        environment["SUDO_COMMAND"] = invocation.command.joined(separator: " ")
        return environment
    }

    /// What an agent reads when it tries to install system packages into the host's root,
    /// which has no package database (the OCI image roots have theirs).
    static func packageManagerHint(_ command: [String], root: String = "") -> String? {
        guard let tool = command.first.map({ $0.split(separator: "/").last.map(String.init) ?? $0 }),
            ["apt-get", "apt", "dpkg", "aptitude"].contains(tool), !FileSystem.exists(root + "/var/lib/dpkg/status")
        else { return nil }
        return """
            sudo: this sandbox's root is the host's system directories (read-only below a writable layer) and has no package database, so \(tool) cannot install anything here.
            To install system packages, give the sandbox an OS image in airlock.toml: [vm] image = "debian:bookworm" (or "ubuntu:24.04"), and let it reach the package archive: [network.rules.debian] allow = ["deb.debian.org:80", "deb.debian.org:443"].
            Tools that install into your home or the project (pip --user, npm --prefix, cargo) work as they are.

            """
    }

    /// Runs `arguments` (argv[1...]) as root; never returns.
    public static func main(_ arguments: [String]) -> Never {
        let invocation: Invocation
        do {
            invocation = try parse(Array(arguments.dropFirst()))
        } catch {
            fail("sudo: \(error)", status: 1)
        }
        if invocation.nothing && invocation.command.isEmpty { exit(0) }
        if let hint = packageManagerHint(invocation.command) { fail(hint, status: 1) }
        let uid = getuid()
        let gid = getgid()
        var rootGroup: gid_t = 0
        guard setgroups(1, &rootGroup) == 0, setgid(0) == 0, setuid(0) == 0 else {
            fail("sudo: cannot become root (\(errorText(errno))): is /usr/local/bin/sudo airlock's, and setuid?", status: 1)
        }
        let shell = rootShell()
        let environment = environment(processEnvironment(), invocation: invocation, uid: uid, gid: gid, shell: shell)
        var command = invocation.command
        if invocation.login || invocation.shell {
            let flags = invocation.login ? ["-l"] : []
            command = command.isEmpty ? [shell] + flags : [shell] + flags + ["-c", command.joined(separator: " ")]
            if invocation.login { _ = chdir("/root") }
        }
        guard let program = resolve(command[0], path: environment["PATH"] ?? securePath) else {
            fail("sudo: \(command[0]): command not found", status: 1)
        }
        let entries = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        withCStrings(command) { argv in
            withCStrings(entries) { envp in
                _ = execve(program, argv, envp)
            }
        }
        fail("sudo: \(program): \(errorText(errno))", status: 126)
    }

    /// root's shell from /etc/passwd, `/bin/sh` when it has none that runs.
    static func rootShell() -> String {
        let passwd = ((try? FileSystem.readText("/etc/passwd", limit: 1 << 20)) ?? nil) ?? ""
        for line in passwd.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count >= 7, fields[0] == "root" else { continue }
            let shell = String(fields[6])
            return access(shell, X_OK) == 0 ? shell : "/bin/sh"
        }
        return "/bin/sh"
    }

    /// `name` found on `path` (as execvp would), or itself when it has a slash.
    static func resolve(_ name: String, path: String) -> String? {
        if name.contains("/") { return name }
        for directory in path.split(separator: ":") {
            let candidate = directory + "/" + name
            if access(candidate, X_OK) == 0, !FileSystem.isDirectoryFollowingLinks(candidate) { return candidate }
        }
        return nil
    }

    private static func fail(_ message: String, status: Int32) -> Never {
        try? Syscall.writeAll(2, Array((message.hasSuffix("\n") ? message : message + "\n").utf8), subject: "stderr")
        exit(status)
    }
}
