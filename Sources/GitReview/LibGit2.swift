import Clibgit2

/// The libgit2 library as a whole: its version, and its global initialisation.
public enum LibGit2 {
    /// `major.minor.revision` of the libgit2 linked in.
    public static var version: String {
        var major: Int32 = 0, minor: Int32 = 0, revision: Int32 = 0
        git_libgit2_version(&major, &minor, &revision)
        return "\(major).\(minor).\(revision)"
    }
}
