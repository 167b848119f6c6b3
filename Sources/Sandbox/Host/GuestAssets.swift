#if canImport(Glibc)
import Glibc
#endif

/// The guest kernel and initramfs: where this run will take them from.
///
/// Order: `AIRLOCK_KERNEL`/`AIRLOCK_INITRAMFS`, then `[vm] kernel`/`initramfs`, then the copies
/// embedded in the binary (`make release`), unpacked to the cache by `EmbeddedAssets`.
public enum GuestAssets {
    public enum Source: String, Sendable, Equatable {
        case environment
        case config
        case embedded
    }

    public struct Located: Sendable, Equatable {
        public var path: String
        public var source: Source

        public init(path: String, source: Source) {
            self.path = path
            self.source = source
        }
    }

    /// Paths set in `[vm]`, already `~`-expanded.
    public struct Configured: Sendable, Equatable {
        public var kernel: String?
        public var initramfs: String?

        public init(kernel: String? = nil, initramfs: String? = nil) {
            self.kernel = kernel
            self.initramfs = initramfs
        }
    }

    public struct Lookup: Sendable, Equatable {
        public var kernel: Located?
        public var initramfs: Located?
        /// Paths that were named (by the environment or config) but are not readable files.
        public var broken: [String]

        public init(kernel: Located?, initramfs: Located?, broken: [String] = []) {
            self.kernel = kernel
            self.initramfs = initramfs
            self.broken = broken
        }
    }

    public static func locate(configured: Configured, environment: [String: String], embedded: Bool = EmbeddedAssets.isEmbedded) -> Lookup {
        var broken: [String] = []
        func find(variable: String, configured: String?) -> Located? {
            let candidates: [(String?, Source)] = [(environment[variable], .environment), (configured, .config)]
            for case (let path?, let source) in candidates where !path.isEmpty {
                if isReadableFile(path) { return Located(path: path, source: source) }
                broken.append("\(path) (from \(source == .environment ? variable : "[vm] config"))")
            }
            return embedded ? Located(path: "inside the airlock binary", source: .embedded) : nil
        }
        let kernel = find(variable: "AIRLOCK_KERNEL", configured: configured.kernel)
        let initramfs = find(variable: "AIRLOCK_INITRAMFS", configured: configured.initramfs)
        return Lookup(kernel: kernel, initramfs: initramfs, broken: broken)
    }

    static func isReadableFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && access(path, R_OK) == 0
    }
}
