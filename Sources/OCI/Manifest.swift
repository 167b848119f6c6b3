import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Media types this client reads (OCI image spec v1.1 and Docker's v2 schema 2).
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"

    /// Layers libarchive extracts: plain, gzip or zstd tar (it detects the compression itself).
    public static let layers: Set<String> = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    ]

    public static let manifestAccept = [ociIndex, dockerList, ociManifest, dockerManifest].joined(separator: ", ")
}

/// A reference to content: what it is, its digest and its exact size.
public struct Descriptor: Sendable, Codable, Equatable {
    public struct Platform: Sendable, Codable, Equatable {
        public var architecture: String
        public var os: String
        public var variant: String?

        public init(architecture: String, os: String, variant: String? = nil) {
            self.architecture = architecture
            self.os = os
            self.variant = variant
        }
    }

    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var platform: Platform?

    public init(mediaType: String, digest: Digest, size: Int64, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.platform = platform
    }
}

/// An OCI image index or a Docker manifest list.
public struct ImageIndex: Sendable, Codable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// An OCI image manifest or a Docker v2 schema 2 manifest.
public struct ImageManifest: Sendable, Codable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]

    public init(schemaVersion: Int = 2, mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor]) {
        self.schemaVersion = schemaVersion
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
    }
}

/// The parts of the image configuration a sandbox uses (the rest is kept verbatim in the store).
public struct ImageConfiguration: Sendable, Codable, Equatable {
    public struct Settings: Sendable, Codable, Equatable {
        public var user: String?
        public var env: [String]?
        public var entrypoint: [String]?
        public var cmd: [String]?
        public var workingDir: String?

        enum CodingKeys: String, CodingKey {
            case user = "User", env = "Env", entrypoint = "Entrypoint", cmd = "Cmd", workingDir = "WorkingDir"
        }

        public init(user: String? = nil, env: [String]? = nil, entrypoint: [String]? = nil, cmd: [String]? = nil, workingDir: String? = nil) {
            self.user = user
            self.env = env
            self.entrypoint = entrypoint
            self.cmd = cmd
            self.workingDir = workingDir
        }
    }

    public struct RootFS: Sendable, Codable, Equatable {
        public var type: String
        public var diffIDs: [String]

        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    public var architecture: String?
    public var os: String?
    public var config: Settings?
    public var rootfs: RootFS?

    public init(architecture: String?, os: String?, config: Settings?, rootfs: RootFS?) {
        self.architecture = architecture
        self.os = os
        self.config = config
        self.rootfs = rootfs
    }
}

/// What a manifest endpoint returned, by the shape of its JSON and its media type.
enum ManifestDocument {
    case index(ImageIndex)
    case manifest(ImageManifest)

    static func parse(_ bytes: [UInt8], contentType: String?, what: String) throws(OCIError) -> ManifestDocument {
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var config: Descriptor?
            var schemaVersion: Int?
        }
        let data = Data(bytes)
        let probe: Probe
        do { probe = try JSONDecoder().decode(Probe.self, from: data) } catch {
            throw OCIError(.manifest, "\(what): the manifest is not valid JSON", cause: error)
        }
        let type = probe.mediaType ?? contentType.map { String($0.split(separator: ";")[0]).trimmingSpaces() }
        guard probe.schemaVersion == 2 else {
            throw OCIError(
                .manifest,
                "\(what): schemaVersion \(probe.schemaVersion.map(String.init) ?? "missing") is not supported (Docker schema 1 is obsolete)",
                hint: "push the image again with a current docker, podman or skopeo")
        }
        do {
            if probe.manifests != nil || type == MediaType.ociIndex || type == MediaType.dockerList {
                return .index(try JSONDecoder().decode(ImageIndex.self, from: data))
            }
            if probe.config != nil {
                return .manifest(try JSONDecoder().decode(ImageManifest.self, from: data))
            }
        } catch let error as OCIError {
            throw OCIError(.manifest, "\(what): \(error.message)")
        } catch {
            throw OCIError(.manifest, "\(what): malformed manifest", cause: error)
        }
        throw OCIError(.manifest, "\(what): neither an image index nor an image manifest (media type \(type ?? "missing"))")
    }
}

extension String {
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return String(text)
    }
}

/// The platform this host runs, as OCI names it.
public enum HostPlatform {
    public static var current: Descriptor.Platform {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return .init(architecture: "amd64", os: "linux")
        case "aarch64", "arm64": return .init(architecture: "arm64", os: "linux", variant: "v8")
        default: return .init(architecture: machine, os: "linux")
        }
    }
}
