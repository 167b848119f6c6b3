import AirlockSystem
import CGuestInit
import CShim
import GuestLink

#if canImport(Glibc)
import Glibc
#endif

/// Assembles the root the agent's processes run in (chrooted), from a `SetupSpec`:
///
///     /newroot             overlay: lower = a fresh skeleton (tmpfs), upper = state disk
///     /newroot/usr, …      overlay: lower = host directory over virtio-fs or 9p (read-only), upper = state disk
///     /newroot/<project>   the workspace share, read-write
///
/// The state disk keeps every upper layer, so what the agent installs persists across runs of
/// the same sandbox and never reaches the host.
enum RootBuilder {
    static let root = "/newroot"
    static let state = "/mnt/state"
    static let skeleton = "/mnt/skeleton"
    static let shares = "/mnt/shares"

    /// How a share arrives: Cloud Hypervisor has only virtio-fs; QEMU uses virtio-fs when the
    /// host has virtiofsd, but keeps image layers (and everything, without virtiofsd) on 9p.
    enum Transport: Equatable {
        case virtiofs
        case ninep
    }

    /// The mount tags of the virtio-9p devices, from each device's `mount_tag` (which the
    /// kernel ends with a NUL byte).
    static func ninePTags() -> Set<String> {
        let driver = "/sys/bus/virtio/drivers/9pnet_virtio"
        return Set(
            FileSystem.entries(driver).filter { $0.hasPrefix("virtio") }.compactMap { device in
                FileSystem.readPrefix(driver + "/" + device + "/mount_tag", limit: 256).map { tag in
                    String(tag.unicodeScalars.prefix { $0 != "\0" && $0 != "\n" })
                }
            })
    }

    /// Whether any device is bound to the virtiofs driver.
    static func hasVirtiofsDevices() -> Bool {
        FileSystem.entries("/sys/bus/virtio/drivers/virtiofs").contains { $0.hasPrefix("virtio") }
    }

    /// The transport of each share, by tag: 9p where a 9p device carries the tag, else
    /// virtio-fs when there are virtio-fs devices (their tags are not in sysfs on Linux 6.1),
    /// else 9p (whose mount then fails naming the tag).
    static func transports() -> (String) -> Transport {
        let ninep = ninePTags()
        let virtiofs = hasVirtiofsDevices()
        return { tag in ninep.contains(tag) || !virtiofs ? .ninep : .virtiofs }
    }

    /// Fresh randomness from the host (virtio-rng) into the kernel's pool, and a CRNG reseed:
    /// every VM restored from one boot snapshot (see QEMU's BootSnapshot) resumes with the
    /// snapshot's CRNG state, so it must not be used before this.
    static func reseedRandom() {
        let fd = open("/dev/hwrng", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            System.log("setup: no /dev/hwrng (\(errorText(errno))); the CRNG is not reseeded")
            return
        }
        defer { close(fd) }
        let bytes = (try? Syscall.read(fd, exactly: 64, subject: "/dev/hwrng")) ?? []
        let result = bytes.count == 64 ? bytes.withUnsafeBytes { airlock_guest_reseed($0.baseAddress, Int32($0.count)) } : -EIO
        if result != 0 { System.log("setup: reseeding the CRNG failed: \(errorText(-result))") }
    }

    /// Drops what the kernel cached of `device` (a restored boot snapshot's cache holds its
    /// scratch disk's blocks), so every read comes from this VM's disk.
    static func flushCache(_ device: String) {
        let fd = open(device, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let result = airlock_guest_flush_block_device(fd)
        if result != 0 { System.log("setup: flushing \(device)'s cache failed: \(errorText(-result))") }
    }

    /// The virtio-blk disk whose serial is `serial` (`/sys/block/vd*/serial`), as `/dev/vdX`.
    static func blockDevice(serial: String) -> String? {
        FileSystem.entries("/sys/block").filter { $0.hasPrefix("vd") }.first { name in
            FileSystem.readPrefix("/sys/block/\(name)/serial", limit: 64).map { String($0.prefix { $0 != "\n" && $0 != "\0" }) } == serial
        }.map { "/dev/" + $0 }
    }

    /// Mounts share `tag` read-only or not; `cache` is 9p's cache mode (virtiofsd decides
    /// virtio-fs caching).
    static func mountShare(_ tag: String, at mountPoint: String, readOnly: Bool, cache: String, transport: Transport) throws {
        let flags = readOnly ? UInt(MS_RDONLY) : 0
        switch transport {
        case .virtiofs:
            try System.mount(tag, mountPoint, "virtiofs", flags: flags)
        case .ninep:
            try System.mount(tag, mountPoint, "9p", flags: flags, options: "trans=virtio,version=9p2000.L,msize=512000,cache=\(cache)")
        }
    }

    static func build(_ spec: SetupSpec) async throws {
        var time = timespec(tv_sec: Int(spec.clockSeconds), tv_nsec: Int(spec.clockNanoseconds))
        if clock_settime(CLOCK_REALTIME, &time) != 0 { System.log("cannot set the clock: \(errorText(errno))") }
        reseedRandom()
        _ = spec.hostname.withCString { sethostname($0, strlen($0)) }

        try await prepareStateDisk(blockDevice(serial: LinkNames.stateDiskSerial) ?? spec.stateDisk)
        System.log("setup: state disk mounted")

        if let image = spec.image {
            try await buildImageRoot(spec, image: image)
        } else {
            // The skeleton: directories, links and the synthesized /etc, fresh each boot.
            try System.mount("tmpfs", skeleton, "tmpfs", options: "mode=0755")
            for directory in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root", "/home", "/var/tmp", "/mnt"] {
                try FileSystem.makeDirectories(skeleton + directory)
            }
            chmod(skeleton + "/tmp", 0o1777)
            chmod(skeleton + "/var/tmp", 0o1777)
            for link in spec.links { try System.symlink(link.target, at: skeleton + link.path) }
            // The system's mount points; those in the home are made in the root below, the user's.
            for share in spec.shares where share.kind != .staging && !isInHome(share.path, spec) {
                try FileSystem.makeDirectories(skeleton + share.path)
            }
            for directory in spec.directories { try FileSystem.makeDirectories(skeleton + directory) }
            for file in spec.files { try FileSystem.write(skeleton + file.path, file.contents, mode: mode_t(file.mode)) }
            try FileSystem.makeDirectories(skeleton + spec.home)

            try FileSystem.makeDirectories(state + "/root/upper")
            try FileSystem.makeDirectories(state + "/root/work")
            try System.mount("overlay", root, "overlay", options: "lowerdir=\(skeleton),upperdir=\(state)/root/upper,workdir=\(state)/root/work")
        }

        // Scratch file systems first: a share may live below them (a project in /tmp).
        try System.mount("tmpfs", root + "/tmp", "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV), options: "mode=1777")
        try System.mount("tmpfs", root + "/run", "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV), options: "mode=0755")
        let transport = transports()
        var virtiofsTags: [String] = []
        // Parents before what they hold: a mount's target may lie in the project or in another.
        let placed = spec.shares.filter { $0.kind != .layer }.enumerated()
            .sorted { ($0.element.path.split(separator: "/").count, $0.offset) < ($1.element.path.split(separator: "/").count, $1.offset) }
            .map(\.element)
        for share in placed {
            if transport(share.tag) == .virtiofs { virtiofsTags.append(share.tag) }
            let mountPoint = shares + "/" + share.tag
            // Under 9p, read-only host directories can be cached freely; the writable workspace
            // keeps mmap working (git maps its packs) without caching what the host may read.
            // A read-only share is mounted read-only too, a guard of the guest's own besides
            // 9p's readonly=on and virtiofsd's --readonly.
            try mountShare(
                share.tag, at: mountPoint, readOnly: share.readOnly, cache: share.readOnly ? "loose" : "mmap", transport: transport(share.tag))
            switch share.kind {
            case .overlay:
                let layer = state + "/layers/" + share.tag
                try FileSystem.makeDirectories(layer + "/upper")
                try FileSystem.makeDirectories(layer + "/work")
                try System.mount(
                    "overlay", root + share.path, "overlay", options: "lowerdir=\(mountPoint),upperdir=\(layer)/upper,workdir=\(layer)/work")
            case .direct:
                try makeMountPoint(share.path, directory: true, spec)
                try System.mount(mountPoint, root + share.path, "none", flags: UInt(MS_BIND) | (share.readOnly ? UInt(MS_RDONLY) : 0))
            case .layer, .staging:
                break
            }
        }
        // Single files, each from its staging share (which holds nothing but mounted files).
        for file in spec.fileMounts {
            try makeMountPoint(file.path, directory: false, spec)
            try System.mount(shares + "/" + file.tag + "/" + file.name, root + file.path, "none", flags: UInt(MS_BIND))
        }
        try bindCaches(spec)
        try trustAuthority(spec)

        System.log("setup: shares mounted" + (virtiofsTags.isEmpty ? " (9p)" : " (virtio-fs: " + virtiofsTags.joined(separator: ", ") + ")"))
        try System.mount("proc", root + "/proc", "proc", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        try System.mount("sysfs", root + "/sys", "sysfs", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY))
        try System.mount("/dev", root + "/dev", "none", flags: UInt(MS_BIND | MS_REC))
        // The home lives in the persistent upper layer; hand it to the user the first time.
        var info = stat()
        if stat(root + spec.home, &info) == 0, info.st_uid != spec.user, spec.home != "/" {
            _ = chown(root + spec.home, spec.user, spec.group)
        }
    }

    /// `[disk.cache.*]`: a directory of the state disk bound over each path, apart from the
    /// root's writable layer (reset with a new image) and from the clone (replaced by `start
    /// --fresh`). A new cache directory is the user's in the home and the project, else it
    /// takes the owner of the one it covers. Directories of caches no entry declares any more
    /// are deleted.
    static func bindCaches(_ spec: SetupSpec) throws {
        let caches = state + "/cache"
        let project = spec.shares.first { $0.tag == LinkNames.workspaceTag }?.path
        try FileSystem.makeDirectories(caches)
        for name in FileSystem.entries(caches) where !spec.keptCaches.contains(name) {
            System.log("setup: deleting cache \(name) (no [disk.cache.\(name)] any more)")
            try? FileSystem.removeTree(caches + "/" + name)
        }
        for cache in spec.caches {
            try makeMountPoint(cache.path, directory: true, spec)
            let directory = caches + "/" + cache.name + cache.path
            if !FileSystem.exists(directory) {
                try FileSystem.makeDirectories(directory)
                var info = stat()
                if isInHome(cache.path, spec) || project.map({ cache.path.hasPrefix($0 + "/") }) == true {
                    _ = chown(directory, spec.user, spec.group)
                } else if stat(root + cache.path, &info) == 0 {
                    _ = chown(directory, info.st_uid, info.st_gid)
                }
            }
            try System.mount(directory, root + cache.path, "none", flags: UInt(MS_BIND))
        }
    }

    /// Where distributions keep the system's trust bundle (Debian and Ubuntu, Fedora and
    /// RHEL, openSUSE, Alpine, Arch).
    static let trustBundles = [
        "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem", "/etc/ca-certificates/extracted/tls-ca-bundle.pem",
    ]

    /// The host's interception CA, trusted in the guest without touching the root's layers:
    /// `/run/airlock/ca.pem` (the CA alone, for `NODE_EXTRA_CA_CERTS`), each system bundle
    /// the root has (a regular file; a link leads to one of the others) bound over by a copy
    /// with the CA appended, and `/run/airlock/ca-bundle.pem` (the first of those, or the CA
    /// alone) for `SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE`.
    static func trustAuthority(_ spec: SetupSpec) throws {
        guard !spec.caCertificate.isEmpty else { return }
        let directory = root + "/run/airlock"
        try FileSystem.makeDirectories(directory + "/ca")
        try FileSystem.write(root + LinkNames.caFile, spec.caCertificate)
        var first: [UInt8]?
        for (index, path) in trustBundles.enumerated() {
            var info = stat()
            guard lstat(root + path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, var bundle = try FileSystem.read(root + path, limit: 16 << 20)
            else {
                continue
            }
            if bundle.last != UInt8(ascii: "\n") { bundle.append(UInt8(ascii: "\n")) }
            bundle += spec.caCertificate
            let copy = "\(directory)/ca/\(index).pem"
            try FileSystem.write(copy, bundle)
            try System.mount(copy, root + path, "none", flags: UInt(MS_BIND))
            if first == nil { first = bundle }
        }
        try FileSystem.write(root + LinkNames.caBundle, first ?? spec.caCertificate)
    }

    static func isInHome(_ path: String, _ spec: SetupSpec) -> Bool {
        spec.home != "/" && (path == spec.home || path.hasPrefix(spec.home + "/"))
    }

    /// Makes the missing parts of `path` in the root (a directory, or an empty file at the end
    /// for a file mount), those in the home owned by the user. A symbolic link on the way is
    /// refused (the root's upper layer persists, and a link there could steer the mount), one
    /// at the end replaced.
    static func makeMountPoint(_ path: String, directory: Bool, _ spec: SetupSpec) throws {
        let parts = path.split(separator: "/")
        var current = ""
        for (index, part) in parts.enumerated() {
            current += "/" + part
            let full = root + current
            let last = index == parts.count - 1
            var info = stat()
            if lstat(full, &info) == 0 {
                guard (info.st_mode & S_IFMT) == S_IFLNK else { continue }
                guard last else { throw SystemError("mount", "\(current) (a symbolic link, on the way to \(path))", errno: ELOOP) }
                unlink(full)
            }
            if last && !directory {
                let fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
                guard fd >= 0 else { throw SystemError.last("create", full) }
                close(fd)
            } else {
                guard mkdir(full, 0o755) == 0 || errno == EEXIST else { throw SystemError.last("mkdir", full) }
            }
            if isInHome(current, spec) { _ = lchown(full, spec.user, spec.group) }
        }
    }

    /// Makes `whiteouts` (paths relative to a layer) real 0/0 character devices below
    /// `directory`, each parent directory given the owner and mode it has in the layer at
    /// `layerRoot` (the directory sits above the layer's own in the overlay).
    static func makeWhiteouts(_ whiteouts: [String], in directory: String, above layerRoot: String) throws {
        try FileSystem.makeDirectories(directory)
        for path in whiteouts {
            var parent = directory
            for component in path.split(separator: "/").dropLast() {
                let relative = String(parent.dropFirst(directory.count)) + "/" + component
                parent += "/" + component
                guard mkdir(parent, 0o755) == 0 || errno == EEXIST else { throw SystemError.last("mkdir", parent) }
                var info = stat()
                if stat(layerRoot + relative, &info) == 0 {
                    chmod(parent, info.st_mode & 0o7777)
                    _ = chown(parent, info.st_uid, info.st_gid)
                }
            }
            let node = directory + "/" + path
            guard mknod(node, S_IFCHR, 0) == 0 || errno == EEXIST else { throw SystemError.last("mknod", node) }
        }
    }

    /// The root for an OCI image:
    ///
    ///     /newroot   overlay (userxattr): lower = W_n:L_n:…:W_1:L_1:skeleton, upper = state disk
    ///
    /// L_i is layer i: a read-only squashfs disk whose serial is the layer's tag (its owners
    /// and whiteouts real), or else its share (9p with mapped-xattr ownership, read-only). For a
    /// share, W_i is a tmpfs directory with layer i's whiteouts as real 0/0 character devices:
    /// in L_i they are files the guest sees as such devices, which hides them from lookups, but
    /// 9p reports them to readdir as DT_UNKNOWN and Linux 6.1's overlayfs only checks DT_CHR
    /// entries, so without W_i a deleted name would still be listed. The skeleton (empty, at the bottom) provides the
    /// mount points an image may lack. The upper layer persists across boots of this sandbox
    /// and is reset when the image (its manifest digest) changes.
    static func buildImageRoot(_ spec: SetupSpec, image: SetupSpec.Image) async throws {
        // QEMU serves shared layers over 9p even when the other shares are virtio-fs.
        let transport = transports()
        var disks: [String] = []
        for share in spec.shares where share.kind == .layer {
            let mountPoint = shares + "/" + share.tag
            if let device = blockDevice(serial: share.tag) {
                flushCache(device)
                try System.mount(device, mountPoint, "squashfs", flags: UInt(MS_RDONLY))
                disks.append(share.tag)
            } else {
                try mountShare(share.tag, at: mountPoint, readOnly: true, cache: "loose", transport: transport(share.tag))
            }
        }
        System.log("setup: image layers mounted (" + (disks.isEmpty ? "9p shares" : "squashfs disks: " + disks.joined(separator: ", ")) + ")")
        try System.mount("tmpfs", skeleton, "tmpfs", options: "mode=0755")
        for directory in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/mnt"] {
            try FileSystem.makeDirectories(skeleton + directory)
        }
        let whiteoutRoot = "/mnt/whiteouts"
        try System.mount("tmpfs", whiteoutRoot, "tmpfs", options: "mode=0755")
        var lower: [String] = [skeleton]
        for (index, layer) in image.layers.enumerated() {
            let layerRoot = shares + "/" + layer.tag
            lower.append(layerRoot)
            guard !layer.whiteouts.isEmpty else { continue }
            let directory = "\(whiteoutRoot)/\(index)"
            try makeWhiteouts(layer.whiteouts, in: directory, above: layerRoot)
            lower.append(directory)
        }
        // The persistent upper layer belongs to one image.
        let base = state + "/image"
        try FileSystem.makeDirectories(base)
        if FileSystem.readPrefix(base + "/digest", limit: 4096) != image.digest + "\n" {
            if FileSystem.exists(base + "/upper") || FileSystem.exists(base + "/work") {
                System.log("setup: the image changed; resetting the root's writable layer")
                try FileSystem.removeTree(base + "/upper")
                try FileSystem.removeTree(base + "/work")
            }
            try FileSystem.write(base + "/digest", Array((image.digest + "\n").utf8))
        }
        try FileSystem.makeDirectories(base + "/upper")
        try FileSystem.makeDirectories(base + "/work")
        let lowerdir = lower.reversed().joined(separator: ":")
        try System.mount("overlay", root, "overlay", options: "lowerdir=\(lowerdir),upperdir=\(base)/upper,workdir=\(base)/work,userxattr")
        for directory in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc"] {
            try FileSystem.makeDirectories(root + directory)
        }
        // Only what must be this sandbox's (hostname, hosts, resolv.conf); the image's own /etc
        // (passwd, group, …) stays as the image has it.
        for file in spec.files {
            unlink(root + file.path)
            try FileSystem.write(root + file.path, file.contents, mode: mode_t(file.mode))
        }
        if spec.home != "/" { try FileSystem.makeDirectories(root + spec.home) }
    }

    /// Mounts the ext4 state disk at /mnt/state, formatting it the first time (no ext4 magic)
    /// and growing the file system when the disk grew.
    static func prepareStateDisk(_ device: String) async throws {
        flushCache(device)
        if !hasExt4Signature(device) {
            System.log("setup: formatting \(device)")
            try await run([
                "mke2fs", "-q", "-t", "ext4", "-F", "-L", "airlock-state", "-O", "^has_journal", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                device,
            ])
        } else if FileSystem.exists("resize2fs") {
            try? await run(["e2fsck", "-p", device])
            try? await run(["resize2fs", device])
        }
        try System.mount(device, state, "ext4", flags: UInt(MS_NOATIME))
    }

    /// Read past the page cache (O_DIRECT): whether to format must never rest on blocks cached
    /// from another disk (a restored boot snapshot's scratch disk), even if `flushCache` failed.
    static func hasExt4Signature(_ device: String) -> Bool {
        let fd = airlock_guest_open_direct(device)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var block: UnsafeMutableRawPointer?
        guard posix_memalign(&block, 4096, 4096) == 0, let block else { return false }
        defer { free(block) }
        guard pread(fd, block, 4096, 0) == 4096 else { return false }
        return UInt16(littleEndian: block.loadUnaligned(fromByteOffset: 1024 + 0x38, as: UInt16.self)) == 0xEF53
    }

    /// Runs a tool from the initramfs and waits for it.
    static func run(_ arguments: [String]) async throws {
        let status = try await ProcessRunner.runToCompletion(arguments)
        guard status == 0 else { throw SystemError(arguments[0], arguments.dropFirst().joined(separator: " "), errno: EIO) }
    }
}
