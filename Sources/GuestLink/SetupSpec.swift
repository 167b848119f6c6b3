import NIOCore

/// How the guest assembles its root file system; sent once per boot before any session.
public struct SetupSpec: Sendable, Equatable {
    public struct Share: Sendable, Equatable {
        public enum Kind: UInt8, Sendable {
            /// A read-only host directory with a persistent writable layer on the state disk
            /// (overlayfs): `/usr` on the host root, so `/usr/local` changes persist per sandbox.
            case overlay = 0
            /// Mounted as it is (the workspace, read-only extras).
            case direct = 1
            /// A layer of the OCI image root (`SetupSpec.image`): mounted read-only under
            /// /mnt/shares, stacked by the root's overlayfs, never placed in the root itself.
            case layer = 2
            /// A directory of single files (`SetupSpec.fileMounts`): mounted under /mnt/shares
            /// only; each file is bind-mounted at its target.
            case staging = 3
        }

        /// The 9p/virtiofs mount tag.
        public var tag: String
        /// Where it appears in the guest's root.
        public var path: String
        public var readOnly: Bool
        public var kind: Kind

        public init(tag: String, path: String, readOnly: Bool, kind: Kind) {
            self.tag = tag
            self.path = path
            self.readOnly = readOnly
            self.kind = kind
        }
    }

    /// The root is an OCI image instead of the host's system directories.
    public struct Image: Sendable, Equatable {
        public struct Layer: Sendable, Equatable {
            /// The share (kind `.layer`) holding the extracted layer.
            public var tag: String
            /// Paths (relative) this layer deletes from the ones below: the guest makes real
            /// overlayfs whiteouts for them on a tmpfs stacked just above the layer.
            public var whiteouts: [String]

            public init(tag: String, whiteouts: [String]) {
                self.tag = tag
                self.whiteouts = whiteouts
            }
        }

        /// The manifest digest: the persistent upper layer is reset when it changes.
        public var digest: String
        /// Bottom layer first.
        public var layers: [Layer]

        public init(digest: String, layers: [Layer]) {
            self.digest = digest
            self.layers = layers
        }
    }

    public struct File: Sendable, Equatable {
        public var path: String
        /// Bytes, not text: `/etc/ld.so.cache` is binary.
        public var contents: [UInt8]
        public var mode: UInt32

        public init(path: String, contents: [UInt8], mode: UInt32 = 0o644) {
            self.path = path
            self.contents = contents
            self.mode = mode
        }
    }

    /// Host wall-clock time (the guest has no RTC it can trust).
    public var clockSeconds: Int64
    public var clockNanoseconds: Int32
    public var hostname: String
    /// Block device of the sandbox's state disk (ext4, formatted on first boot).
    public var stateDisk: String
    public var shares: [Share]
    /// Symbolic links in the root, as `(path, target)`: `/bin → usr/bin` on merged-/usr hosts.
    public var links: [(path: String, target: String)]
    /// Files written fresh each boot (the synthesized `/etc` entries).
    public var files: [File]
    /// Directories created in the root.
    public var directories: [String]
    /// The user's home directory, created and owned by `user`:`group`.
    public var home: String
    public var user: UInt32
    public var group: UInt32
    /// nil: the host root (`image = "host"`).
    public var image: Image?
    /// Guest ports that reach host services (`[network.ports.<name>] host = ["4000:5000"]`):
    /// the guest listens on its 127.0.0.1 at each and carries connections to the host.
    public var forwardPorts: [UInt16] = []
    /// Unix-socket forwards (`[network.sockets.<name>]`): the guest listens at each `path` in
    /// its root and carries connections to the host as `SocketRequest`s naming `name`.
    public var forwardSockets: [SocketForward] = []

    /// `[mounts.*]` entries of single files: `name` in the `.staging` share `tag`, bind-mounted
    /// at `path`. Mounted after every share, so a target may lie in a mounted directory.
    public var fileMounts: [FileMount] = []

    /// `[disk.cache.<name>]` paths: each a directory on the state disk (`cache/<name>/<path>`),
    /// bound at `path` after every share and file mount.
    public var caches: [Cache] = []
    /// Every declared cache, enabled or not; the state disk's other cache directories are deleted.
    public var keptCaches: [String] = []

    /// `[daemons.*]`: started after setup, before the first session; stopped before power-off.
    public var daemons: [Daemon] = []
    /// The host's TLS interception CA (PEM, at most 16 KiB), trusted in the guest; empty
    /// without interception.
    public var caCertificate: [UInt8] = []

    public struct Daemon: Sendable, Equatable {
        public enum Restart: UInt8, Sendable {
            case always = 0
            case onFailure = 1
        }

        /// One path component, not starting with `.` (its log directory's name).
        public var name: String
        public var arguments: [String]
        /// `NAME=value` entries, complete (the root's base environment and the daemon's own).
        public var environment: [String]
        /// Absolute, in the guest's root.
        public var workingDirectory: String
        public var signal: Int32
        /// Seconds between `signal` and SIGKILL; 0 waits without end.
        public var timeout: UInt32
        public var restart: Restart
        /// 0: no limit.
        public var maxRestarts: UInt32

        public init(
            name: String, arguments: [String], environment: [String], workingDirectory: String, signal: Int32, timeout: UInt32, restart: Restart,
            maxRestarts: UInt32
        ) {
            self.name = name
            self.arguments = arguments
            self.environment = environment
            self.workingDirectory = workingDirectory
            self.signal = signal
            self.timeout = timeout
            self.restart = restart
            self.maxRestarts = maxRestarts
        }
    }

    public struct Cache: Sendable, Equatable {
        /// One path component, not starting with `.`.
        public var name: String
        /// Absolute, in the guest's root.
        public var path: String

        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }
    }

    public struct FileMount: Sendable, Equatable {
        public var tag: String
        /// One path component.
        public var name: String
        /// Absolute, in the guest's root.
        public var path: String

        public init(tag: String, name: String, path: String) {
            self.tag = tag
            self.name = name
            self.path = path
        }
    }

    public struct SocketForward: Sendable, Equatable {
        /// The `[network.sockets.<name>]` entry (`SocketRequest.isValidName`).
        public var name: String
        /// Absolute, in the guest's root.
        public var path: String

        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }
    }

    public init(
        clockSeconds: Int64, clockNanoseconds: Int32, hostname: String, stateDisk: String, shares: [Share],
        links: [(path: String, target: String)], files: [File], directories: [String], home: String, user: UInt32, group: UInt32,
        image: Image? = nil
    ) {
        self.clockSeconds = clockSeconds
        self.clockNanoseconds = clockNanoseconds
        self.hostname = hostname
        self.stateDisk = stateDisk
        self.shares = shares
        self.links = links
        self.files = files
        self.directories = directories
        self.home = home
        self.user = user
        self.group = group
        self.image = image
    }

    public static func == (a: SetupSpec, b: SetupSpec) -> Bool {
        a.encoded() == b.encoded()
    }

    public func encoded() -> ByteBuffer {
        var writer = WireWriter()
        writer.write(clockSeconds)
        writer.write(clockNanoseconds)
        writer.write(hostname)
        writer.write(stateDisk)
        writer.write(UInt32(shares.count))
        for share in shares {
            writer.write(share.tag)
            writer.write(share.path)
            writer.write(share.readOnly)
            writer.write(share.kind.rawValue)
        }
        writer.write(UInt32(links.count))
        for link in links {
            writer.write(link.path)
            writer.write(link.target)
        }
        writer.write(UInt32(files.count))
        for file in files {
            writer.write(file.path)
            writer.write(file.contents)
            writer.write(file.mode)
        }
        writer.write(directories)
        writer.write(home)
        writer.write(user)
        writer.write(group)
        writer.write(image != nil)
        if let image {
            writer.write(image.digest)
            writer.write(UInt32(image.layers.count))
            for layer in image.layers {
                writer.write(layer.tag)
                writer.write(layer.whiteouts)
            }
        }
        writer.write(UInt32(forwardPorts.count))
        for port in forwardPorts { writer.write(port) }
        writer.write(UInt32(forwardSockets.count))
        for socket in forwardSockets {
            writer.write(socket.name)
            writer.write(socket.path)
        }
        writer.write(UInt32(fileMounts.count))
        for mount in fileMounts {
            writer.write(mount.tag)
            writer.write(mount.name)
            writer.write(mount.path)
        }
        writer.write(UInt32(caches.count))
        for cache in caches {
            writer.write(cache.name)
            writer.write(cache.path)
        }
        writer.write(keptCaches)
        writer.write(UInt32(daemons.count))
        for daemon in daemons {
            writer.write(daemon.name)
            writer.write(daemon.arguments)
            writer.write(daemon.environment)
            writer.write(daemon.workingDirectory)
            writer.write(daemon.signal)
            writer.write(daemon.timeout)
            writer.write(daemon.restart.rawValue)
            writer.write(daemon.maxRestarts)
        }
        writer.write(caCertificate)
        return writer.buffer
    }

    public init(decoding buffer: ByteBuffer) throws(WireError) {
        var reader = WireReader(buffer)
        clockSeconds = try reader.read()
        clockNanoseconds = try reader.read()
        hostname = try reader.readString()
        stateDisk = try reader.readString()
        let shareCount = Int(try reader.read(UInt32.self))
        guard shareCount <= 192 else { throw WireError("too many shares") }
        shares = []
        for _ in 0..<shareCount {
            let tag = try reader.readString()
            let path = try reader.readString()
            let readOnly = try reader.readBool()
            guard let kind = Share.Kind(rawValue: try reader.read()) else { throw WireError("unknown share kind") }
            shares.append(Share(tag: tag, path: try Self.absolute(path), readOnly: readOnly, kind: kind))
        }
        let linkCount = Int(try reader.read(UInt32.self))
        guard linkCount <= 64 else { throw WireError("too many links") }
        links = []
        for _ in 0..<linkCount {
            links.append((try Self.absolute(try reader.readString()), try reader.readString()))
        }
        let fileCount = Int(try reader.read(UInt32.self))
        guard fileCount <= 256 else { throw WireError("too many files") }
        files = []
        for _ in 0..<fileCount {
            files.append(File(path: try Self.absolute(try reader.readString()), contents: try reader.readBytes(), mode: try reader.read()))
        }
        directories = try reader.readStrings().map { (path) throws(WireError) in try Self.absolute(path) }
        home = try Self.absolute(try reader.readString())
        user = try reader.read()
        group = try reader.read()
        if try reader.readBool() {
            let digest = try reader.readString()
            let layerCount = Int(try reader.read(UInt32.self))
            guard layerCount <= 128 else { throw WireError("too many image layers") }
            var layers: [Image.Layer] = []
            for _ in 0..<layerCount {
                let tag = try reader.readString()
                let whiteouts = try reader.readStrings().map { (path) throws(WireError) in try Self.relative(path) }
                layers.append(Image.Layer(tag: tag, whiteouts: whiteouts))
            }
            image = Image(digest: digest, layers: layers)
        } else {
            image = nil
        }
        let forwardCount = Int(try reader.read(UInt32.self))
        guard forwardCount <= 256 else { throw WireError("too many forwarded ports") }
        forwardPorts = []
        for _ in 0..<forwardCount {
            let port: UInt16 = try reader.read()
            guard port > 0 else { throw WireError("forwarded port 0") }
            forwardPorts.append(port)
        }
        let socketCount = Int(try reader.read(UInt32.self))
        guard socketCount <= 64 else { throw WireError("too many forwarded sockets") }
        forwardSockets = []
        for _ in 0..<socketCount {
            let name = try reader.readString()
            guard SocketRequest.isValidName(name) else { throw WireError("invalid socket forward name") }
            let path = try Self.absolute(try reader.readString())
            guard path != "/", path.utf8.count <= 96 else { throw WireError("invalid socket forward path \"\(path)\"") }
            forwardSockets.append(SocketForward(name: name, path: path))
        }
        let fileMountCount = Int(try reader.read(UInt32.self))
        guard fileMountCount <= 256 else { throw WireError("too many file mounts") }
        fileMounts = []
        for _ in 0..<fileMountCount {
            let tag = try reader.readString()
            let name = try Self.relative(try reader.readString())
            guard !name.contains("/"), shares.contains(where: { $0.tag == tag && $0.kind == .staging }) else {
                throw WireError("invalid file mount \"\(tag)/\(name)\"")
            }
            let path = try Self.absolute(try reader.readString())
            guard path != "/" else { throw WireError("a file mount at /") }
            fileMounts.append(FileMount(tag: tag, name: name, path: path))
        }
        let cacheCount = Int(try reader.read(UInt32.self))
        guard cacheCount <= 256 else { throw WireError("too many cache paths") }
        caches = []
        for _ in 0..<cacheCount {
            let name = try Self.cacheName(try reader.readString())
            let path = try Self.absolute(try reader.readString())
            guard path != "/" else { throw WireError("a cache at /") }
            caches.append(Cache(name: name, path: path))
        }
        keptCaches = try reader.readStrings().map { (name) throws(WireError) in try Self.cacheName(name) }
        guard keptCaches.count <= 256 else { throw WireError("too many caches") }
        let daemonCount = Int(try reader.read(UInt32.self))
        guard daemonCount <= 64 else { throw WireError("too many daemons") }
        daemons = []
        for _ in 0..<daemonCount {
            let name = try Self.cacheName(try reader.readString())
            let arguments = try reader.readStrings()
            guard !arguments.isEmpty, arguments.count <= 4096 else { throw WireError("daemon \(name) without a command") }
            let environment = try reader.readStrings()
            let directory = try Self.absolute(try reader.readString())
            let signal: Int32 = try reader.read()
            guard (1...64).contains(signal) else { throw WireError("daemon \(name): signal \(signal)") }
            let timeout: UInt32 = try reader.read()
            guard let restart = Daemon.Restart(rawValue: try reader.read()) else { throw WireError("daemon \(name): unknown restart policy") }
            daemons.append(
                Daemon(
                    name: name, arguments: arguments, environment: environment, workingDirectory: directory, signal: signal, timeout: timeout,
                    restart: restart, maxRestarts: try reader.read()))
        }
        caCertificate = try reader.readBytes()
        guard caCertificate.count <= 16 << 10 else { throw WireError("a CA certificate of \(caCertificate.count) bytes") }
        try reader.expectEnd()
    }

    /// A cache's or a daemon's directory name: one component, not hidden.
    private static func cacheName(_ name: String) throws(WireError) -> String {
        guard !name.hasPrefix("."), !name.contains("/") else { throw WireError("invalid cache name \"\(name)\"") }
        return try relative(name)
    }

    /// Relative paths (image whiteouts): no leading slash, no `.`/`..`/empty components, no NUL.
    private static func relative(_ path: String) throws(WireError) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.utf8.contains(0), !parts.contains(".."), !parts.contains("."), !parts.contains("") else {
            throw WireError("invalid relative path \"\(path)\"")
        }
        return path
    }

    /// Paths must be absolute, without `..`, NUL or empty components.
    private static func absolute(_ path: String) throws(WireError) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard path.hasPrefix("/"), !path.utf8.contains(0), !parts.contains(".."), !parts.contains("."), path == "/" || !parts.contains("") else {
            throw WireError("invalid path \"\(path)\"")
        }
        return path
    }
}
