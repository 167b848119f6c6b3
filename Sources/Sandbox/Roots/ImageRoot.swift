import AirlockSystem
import GuestLink
import Machine

#if canImport(Glibc)
import Glibc
#endif

/// The guest's root for an OCI image (`[vm] image = "debian:bookworm"`): the image's extracted
/// layers (from the OCI store) shared read-only and stacked by overlayfs in the guest, the
/// workspace clone at the project's own path, and the image's `Env`, `User`, `WorkingDir`,
/// `Entrypoint` and `Cmd` for sessions. Built by the command layer from an `ImageRecord`; this
/// module knows nothing of registries.
public struct ImageRoot: Sendable, Equatable {
    public struct Layer: Sendable, Equatable {
        /// The extracted layer directory (mapped-xattr format, see OCI's LayerExtractor).
        public var hostPath: String
        public var whiteouts: [String]
        /// The layer as a squashfs image, when it reaches the guest as a disk rather than a
        /// share (`LayerTransport.block`).
        public var blockImage: String?

        public init(hostPath: String, whiteouts: [String], blockImage: String? = nil) {
            self.hostPath = hostPath
            self.whiteouts = whiteouts
            self.blockImage = blockImage
        }
    }

    /// Who sessions run as: the image's `User`, resolved against its /etc/passwd and /etc/group.
    public struct User: Sendable, Equatable {
        public var name: String?
        public var uid: UInt32
        public var gid: UInt32
        public var home: String
        public var shell: String

        public init(name: String?, uid: UInt32, gid: UInt32, home: String, shell: String) {
            self.name = name
            self.uid = uid
            self.gid = gid
            self.home = home
            self.shell = shell
        }
    }

    public var reference: String
    public var manifestDigest: String
    /// Bottom layer first.
    public var layers: [Layer]
    /// `KEY=VALUE`, as in the image config.
    public var environment: [String]
    public var entrypoint: [String]
    public var command: [String]
    public var workingDirectory: String?
    public var user: User

    public init(
        reference: String, manifestDigest: String, layers: [Layer], environment: [String], entrypoint: [String], command: [String],
        workingDirectory: String?, user: User
    ) {
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.layers = layers
        self.environment = environment
        self.entrypoint = entrypoint
        self.command = command
        self.workingDirectory = workingDirectory
        self.user = user
    }

    /// virtio-mmio transports QEMU's microvm offers (24) minus the disk, the serial device, the
    /// RNG and the workspace.
    public static let maxLayers = 20

    public func layout(projectRoot: String, workspace: String, hostname: String, stateDisk: String = "/dev/vda") throws -> (
        shares: [MachineSpec.Share], setup: SetupSpec
    ) {
        guard layers.count <= Self.maxLayers else {
            throw SandboxError(
                "\(reference) has \(layers.count) layers; a sandbox can stack at most \(Self.maxLayers)",
                hint: "squash the image (e.g. `docker build --squash`, or a multi-stage build copying into one layer)")
        }
        var shares: [MachineSpec.Share] = []
        var guestShares: [SetupSpec.Share] = []
        var imageLayers: [SetupSpec.Image.Layer] = []
        for (index, layer) in layers.enumerated() {
            let tag = Self.layerTag(index)
            guestShares.append(.init(tag: tag, path: "/mnt/layers/\(index)", readOnly: true, kind: .layer))
            if layer.blockImage == nil {
                shares.append(.init(tag: tag, hostPath: layer.hostPath, readOnly: true, mappedOwnership: true))
                imageLayers.append(.init(tag: tag, whiteouts: layer.whiteouts))
            } else {
                // The disk (`blockDisks`, serial = tag) holds its whiteouts as real 0/0 devices.
                imageLayers.append(.init(tag: tag, whiteouts: []))
            }
        }
        shares.append(.init(tag: LinkNames.workspaceTag, hostPath: workspace, readOnly: false))
        guestShares.append(.init(tag: LinkNames.workspaceTag, path: projectRoot, readOnly: false, kind: .direct))
        let files = HostRoot.identityFiles(hostname: hostname)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let setup = SetupSpec(
            clockSeconds: Int64(now.tv_sec), clockNanoseconds: Int32(now.tv_nsec), hostname: hostname, stateDisk: stateDisk,
            shares: guestShares, links: [], files: files, directories: [], home: user.home, user: user.uid, group: user.gid,
            image: .init(digest: manifestDigest, layers: imageLayers))
        return (shares, setup)
    }

    /// The read-only disks of the layers that reach the guest as squashfs images; each disk's
    /// serial is its layer's tag, by which the guest finds it.
    public var blockDisks: [MachineSpec.Disk] {
        layers.enumerated().compactMap { index, layer in layer.blockImage.map { .init(serial: Self.layerTag(index), path: $0) } }
    }

    static func layerTag(_ index: Int) -> String { "oci\(index)" }

    /// The environment a session starts with (before `[env]` and `-e`): the image's, plus HOME,
    /// HOSTNAME, USER and TERM as a login would set them.
    public func baseEnvironment(terminal: String?, hostname: String) -> [String: String] {
        var environment: [String: String] = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        for entry in self.environment {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else { continue }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        environment["HOME"] = user.home
        environment["HOSTNAME"] = hostname
        environment.merge(LinkNames.trustEnvironment) { $1 }
        if let name = user.name {
            environment["USER"] = name
            environment["LOGNAME"] = name
        }
        if let terminal { environment["TERM"] = terminal }
        return environment
    }

    /// What a session runs: `Entrypoint` followed by the user's command, which replaces `Cmd`
    /// (as `docker run IMAGE COMMAND` does); without one, `Entrypoint` + `Cmd`, and when the
    /// image has neither, the user's login shell.
    public func arguments(for command: [String]) -> [String] {
        if !command.isEmpty { return entrypoint + command }
        let own = entrypoint + self.command
        return own.isEmpty ? [user.shell, "-l"] : own
    }

    /// Resolves a config `User` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the
    /// image's /etc/passwd and /etc/group contents.
    public static func resolveUser(_ spec: String?, passwd: String?, group: String?) throws -> User {
        struct Entry {
            var name: String
            var uid: UInt32
            var gid: UInt32
            var home: String
            var shell: String
        }
        let users: [Entry] = (passwd ?? "").split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 7, let uid = UInt32(fields[2]), let gid = UInt32(fields[3]) else { return nil }
            return Entry(name: fields[0], uid: uid, gid: gid, home: fields[5], shell: fields[6])
        }
        let groups: [(name: String, gid: UInt32)] = (group ?? "").split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 3, let gid = UInt32(fields[2]) else { return nil }
            return (fields[0], gid)
        }
        let text = (spec ?? "").trimmingWhitespace()
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let userPart = parts.first ?? ""
        var entry: Entry?
        var uid: UInt32 = 0
        if userPart.isEmpty {
            entry = users.first { $0.uid == 0 }
        } else if let number = UInt32(userPart) {
            uid = number
            entry = users.first { $0.uid == number }
        } else {
            guard let found = users.first(where: { $0.name == userPart }) else {
                throw SandboxError("the image's user \"\(userPart)\" is not in its /etc/passwd", hint: "use a numeric uid in the image's USER")
            }
            entry = found
        }
        if let entry { uid = entry.uid }
        var gid = entry?.gid ?? uid
        if parts.count == 2 {
            if let number = UInt32(parts[1]) {
                gid = number
            } else if let found = groups.first(where: { $0.name == parts[1] }) {
                gid = found.gid
            } else {
                throw SandboxError("the image's group \"\(parts[1])\" is not in its /etc/group", hint: "use a numeric gid in the image's USER")
            }
        }
        let home = entry.map { $0.home.isEmpty ? "/" : $0.home } ?? (uid == 0 ? "/root" : "/")
        let shell = entry.map { $0.shell.isEmpty || $0.shell.hasSuffix("nologin") || $0.shell.hasSuffix("false") ? "/bin/sh" : $0.shell } ?? "/bin/sh"
        return User(name: entry?.name ?? (uid == 0 ? "root" : nil), uid: uid, gid: gid, home: home, shell: shell)
    }
}
