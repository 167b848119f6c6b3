import Clibarchive

/// libarchive, opened the first time an image needs it: airlock starts without it, and says
/// which package to install when an image is used on a host that lacks it.
public enum LibArchive {
    /// nil when libarchive is loaded, else why it cannot be.
    public static var problem: String? {
        airlock_libarchive_load().map { String(cString: $0) }
    }

    /// `archive_version_string()`'s version, when it loads.
    public static var version: String? {
        guard problem == nil, let text = archive_version_string() else { return nil }
        return String(cString: text).split(separator: " ").last.map(String.init)
    }

    public static let installHint = "install libarchive: `sudo apt install libarchive13` (Debian, Ubuntu) or `sudo dnf install libarchive` (Fedora)"

    static func require() throws(OCIError) {
        if let problem {
            throw OCIError(.archive, "OCI images need libarchive, which cannot be loaded: \(problem)", hint: installHint)
        }
    }

    static func reader() throws(OCIError) -> OpaquePointer {
        try require()
        guard let archive = archive_read_new() else { throw OCIError(.archive, "libarchive: out of memory") }
        return archive
    }

    static func writer() throws(OCIError) -> OpaquePointer {
        try require()
        guard let archive = archive_write_new() else { throw OCIError(.archive, "libarchive: out of memory") }
        return archive
    }
}
