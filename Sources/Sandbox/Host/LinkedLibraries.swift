import Clibseccomp
import OCI

extension HostFacts.Library {
    /// libseccomp as linked into this binary, and libarchive as loaded for OCI images.
    public static var systemLibraries: [HostFacts.Library] {
        var libraries: [HostFacts.Library] = []
        if let version = LibArchive.version {
            libraries.append(.init(name: "libarchive", version: version))
        } else {
            libraries.append(
                .init(name: "libarchive", missing: LibArchive.problem ?? "unknown", neededFor: "OCI images ([vm] image)", fix: LibArchive.installHint)
            )
        }
        if let version = seccomp_version() {
            libraries.append(.init(name: "libseccomp", version: "\(version.pointee.major).\(version.pointee.minor).\(version.pointee.micro)"))
        }
        return libraries
    }
}
