import CShim

#if canImport(Glibc)
import Glibc
#endif

/// A share's directory as its server sees it: the server (virtiofsd, or QEMU for its 9p
/// shares) runs in a mount namespace of its own where parts of the directory are read-only or
/// hidden. That is how `[workspace] mode = "mount"` shares the project read-write while
/// `.git`, the configuration and `.airlock/` stay out of the guest's reach: the guest's root can
/// undo any mount inside the VM, but not one on the host in the namespace of the process that
/// serves the share. (That process must live in the namespace: a rename or unlink from outside
/// it does not see its mounts, and would reach what they cover. So the view is shown at a
/// directory of its own, and the server keeps seeing the rest of the host as it is.)
///
/// A user who is not root gets a user namespace that maps only their own ids, so no privilege
/// is needed; the mounts made there are locked together, so nothing in that namespace (nor in
/// one it creates) can take one away. The price under QEMU's 9p: files of other owners (the
/// host root's system files) show as owned by `nobody` in the VM.
public struct ShareView: Sendable, Equatable {
    public enum Step: Sendable, Equatable {
        /// The path (relative to the share; "" for all of it) read-only.
        case readOnly(String)
        /// The directory (relative to the share) shown empty and read-only.
        case hideDirectory(String)
        /// The file (relative to the share) shown empty: `emptyFile` (an absolute path) bound
        /// over it, read-only.
        case hideFile(String, emptyFile: String)
    }

    /// The directory shown. The share's `hostPath` is where it is shown: an empty directory on
    /// the host, which holds the view only in the server's namespace (so the server still sees
    /// everything else as it is, `source` included).
    public var source: String
    /// Applied in order, after `source` has been bound onto the share's `hostPath`.
    public var steps: [Step]

    public init(source: String, steps: [Step]) {
        self.source = source
        self.steps = steps
    }

    /// Whether this host lets a helper have a view: nil when it does, else what failed (a
    /// user namespace refused: disabled, or restricted as Ubuntu's AppArmor does by default).
    public static func probe() -> String? {
        do {
            _ = try VMMProcess.spawn("/bin/true", [], log: "/dev/null", views: [(ShareView(source: "/", steps: []), at: "/")])
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The mount steps that show the view at `mountPoint`.
    func mounts(at mountPoint: String) -> [(source: String, target: String, kind: Int32)] {
        func inside(_ path: String) -> String { path.isEmpty ? mountPoint : mountPoint + "/" + path }
        var mounts = [(source: source, target: mountPoint, kind: Int32(AIRLOCK_MOUNT_BIND))]
        for step in steps {
            switch step {
            case .readOnly(let path): mounts.append((inside(path), inside(path), Int32(AIRLOCK_MOUNT_BIND_READ_ONLY)))
            case .hideDirectory(let path): mounts.append(("", inside(path), Int32(AIRLOCK_MOUNT_EMPTY_DIRECTORY)))
            case .hideFile(let path, let empty): mounts.append((empty, inside(path), Int32(AIRLOCK_MOUNT_BIND_READ_ONLY)))
            }
        }
        return mounts
    }

    /// Runs `body` with the C form of the mount steps of `views` (each shown at its mount
    /// point), valid only during the call.
    static func withSpawnMounts<R>(_ views: [(ShareView, at: String)], _ body: (UnsafePointer<airlock_spawn_mount>, Int32) -> R) -> R {
        let list = views.flatMap { $0.0.mounts(at: $0.at) }
        let strings = list.flatMap { [strdup($0.source), strdup($0.target)] }
        defer { for pointer in strings { free(pointer) } }
        let entries = list.indices.map { index in
            airlock_spawn_mount(source: strings[2 * index], target: strings[2 * index + 1], kind: list[index].kind)
        }
        return entries.withUnsafeBufferPointer { body($0.baseAddress!, Int32($0.count)) }
    }
}
