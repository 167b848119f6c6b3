import Clibarchive
import Clibseccomp

extension HostFacts.Library {
    /// libarchive and libseccomp as linked into this binary.
    public static var systemLibraries: [HostFacts.Library] {
        var libraries: [HostFacts.Library] = []
        if let text = archive_version_string() {
            libraries.append(.init(name: "libarchive", version: String(cString: text).split(separator: " ").last.map(String.init) ?? "?"))
        }
        if let version = seccomp_version() {
            libraries.append(.init(name: "libseccomp", version: "\(version.pointee.major).\(version.pointee.minor).\(version.pointee.micro)"))
        }
        return libraries
    }
}
