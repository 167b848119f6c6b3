import AirlockSystem
import GuestLink
import Machine

#if canImport(Glibc)
import Glibc
#endif

/// The guest's root for `image = "host"`: the host's system directories read-only (each with a
/// persistent writable layer in the guest), `/etc` synthesized from a short allowlist, never
/// `$HOME`, and the workspace clone at the project's own path.
public struct HostRoot: Sendable {
    public struct User: Sendable, Equatable {
        public var name: String
        public var uid: UInt32
        public var gid: UInt32
        public var shell: String

        public var home: String { uid == 0 ? "/root" : "/home/" + name }

        public static var current: User {
            let uid = getuid(), gid = getgid()
            var name = uid == 0 ? "root" : "user"
            var shell = "/bin/sh"
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 16384)
            if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil {
                if let pwName = entry.pw_name { name = String(cString: pwName) }
                if let pwShell = entry.pw_shell { shell = String(cString: pwShell) }
            }
            if access(shell, X_OK) != 0 { shell = "/bin/sh" }
            return User(name: name, uid: uid, gid: gid, shell: shell)
        }
    }

    /// Top-level host directories that hold the system, shared read-only.
    static let systemDirectories = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt"]
    /// `/etc` directories shared read-only as they are.
    static let etcDirectories = [("etc-ssl", "/etc/ssl"), ("etc-alt", "/etc/alternatives"), ("etc-ca", "/etc/ca-certificates")]
    /// `/etc` files copied in (nothing personal, nothing secret).
    static let etcFiles = [
        "ld.so.cache", "ld.so.conf", "nsswitch.conf", "protocols", "services", "os-release", "debian_version", "lsb-release",
        "bash.bashrc", "profile", "inputrc", "timezone", "localtime", "login.defs", "shells", "mime.types", "ca-certificates.conf",
        "gai.conf", "host.conf",
    ]
    static let etcFileDirectories = ["ld.so.conf.d", "profile.d"]

    public var user: User
    public var hostname: String

    public init(user: User = .current, hostname: String) {
        self.user = user
        self.hostname = hostname
    }

    /// The shares the VMM must offer and the setup the guest performs.
    /// The guest's name and its network files, whatever its root: /etc/hostname, /etc/hosts,
    /// and /etc/resolv.conf naming the guest's own resolver (fake addresses; no query leaves
    /// the VM, names are resolved by the host when a connection is allowed).
    public static func identityFiles(hostname: String) -> [SetupSpec.File] {
        [
            .init(path: "/etc/hostname", contents: Array("\(hostname)\n".utf8)),
            .init(path: "/etc/hosts", contents: Array("127.0.0.1 localhost\n127.0.1.1 \(hostname)\n::1 localhost ip6-localhost\n".utf8)),
            .init(
                path: "/etc/resolv.conf",
                contents: Array("# airlock: names are resolved by the host when a connection is allowed\nnameserver 127.0.0.53\n".utf8)),
        ]
    }

    public func layout(projectRoot: String, workspace: String, stateDisk: String = "/dev/vda") -> (shares: [MachineSpec.Share], setup: SetupSpec) {
        var shares: [MachineSpec.Share] = []
        var guestShares: [SetupSpec.Share] = []
        var links: [(path: String, target: String)] = []

        for directory in Self.systemDirectories {
            let path = "/" + directory
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFLNK, let target = FileSystem.linkTarget(path) {
                links.append((path, target))
            } else if (info.st_mode & S_IFMT) == S_IFDIR {
                shares.append(.init(tag: directory, hostPath: path, readOnly: true))
                guestShares.append(.init(tag: directory, path: path, readOnly: true, kind: .overlay))
            }
        }
        for (tag, path) in Self.etcDirectories where FileSystem.isDirectoryFollowingLinks(path) {
            shares.append(.init(tag: tag, hostPath: path, readOnly: true))
            guestShares.append(.init(tag: tag, path: path, readOnly: true, kind: .direct))
        }
        shares.append(.init(tag: LinkNames.workspaceTag, hostPath: workspace, readOnly: false))
        guestShares.append(.init(tag: LinkNames.workspaceTag, path: projectRoot, readOnly: false, kind: .direct))

        var files: [SetupSpec.File] = []
        func copy(_ path: String) {
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            if (info.st_mode & S_IFMT) == S_IFLNK, let target = FileSystem.linkTarget(path) {
                links.append((path, target))
            } else if (info.st_mode & S_IFMT) == S_IFREG, let bytes = (try? FileSystem.read(path, limit: 4 << 20)) ?? nil {
                files.append(.init(path: path, contents: bytes, mode: UInt32(info.st_mode & 0o777)))
            }
        }
        for name in Self.etcFiles { copy("/etc/" + name) }
        for directory in Self.etcFileDirectories {
            for name in FileSystem.entries("/etc/" + directory) { copy("/etc/\(directory)/\(name)") }
        }
        var passwd = "root:x:0:0:root:/root:\(user.uid == 0 ? user.shell : "/bin/sh")\n"
        var group = "root:x:0:\n"
        if user.uid != 0 {
            passwd += "\(user.name):x:\(user.uid):\(user.gid)::\(user.home):\(user.shell)\n"
            group += "\(user.name):x:\(user.gid):\n"
        }
        passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        group += "nogroup:x:65534:\n"
        files +=
            [
                .init(path: "/etc/passwd", contents: Array(passwd.utf8)),
                .init(path: "/etc/group", contents: Array(group.utf8)),
            ] + Self.identityFiles(hostname: hostname)
        if !files.contains(where: { $0.path == "/etc/nsswitch.conf" }) {
            files.append(.init(path: "/etc/nsswitch.conf", contents: Array("passwd: files\ngroup: files\nhosts: files dns\n".utf8)))
        }

        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let setup = SetupSpec(
            clockSeconds: Int64(now.tv_sec), clockNanoseconds: Int32(now.tv_nsec), hostname: hostname, stateDisk: stateDisk,
            shares: guestShares, links: links, files: files, directories: [], home: user.home, user: user.uid, group: user.gid)
        return (shares, setup)
    }

    /// The environment a session starts with (before `[env]` and `-e`).
    public func baseEnvironment(terminal: String?) -> [String: String] {
        var environment = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": user.home, "USER": user.name, "LOGNAME": user.name, "SHELL": user.shell,
            "LANG": "C.UTF-8", "HOSTNAME": hostname,
        ].merging(LinkNames.trustEnvironment) { $1 }
        if let terminal { environment["TERM"] = terminal }
        return environment
    }
}
