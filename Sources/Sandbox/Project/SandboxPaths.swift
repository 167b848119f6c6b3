import AirlockSystem
import Config

#if canImport(Glibc)
import Glibc
#endif

/// Where a named sandbox keeps its things. Persistent state lives in the project's `.airlock/`
/// (git-excluded); sockets live in a short runtime directory because Unix socket paths are
/// limited to 107 bytes.
public struct SandboxPaths: Sendable, Equatable {
    public var project: Project
    public var name: String

    public static let defaultName = "default"

    public init(project: Project, name: String) throws(SandboxError) {
        try Self.validate(name: name)
        self.project = project
        self.name = name
    }

    /// Names become directory and host names: letters, digits, `.`, `_`, `-`; 1 to 63 characters.
    public static func validate(name: String) throws(SandboxError) {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
        // The name is also a git reference component (refs/remotes/airlock/<name>/…).
        let referenceSafe = !name.contains("..") && !name.hasSuffix(".") && !name.hasSuffix(".lock")
        guard !name.isEmpty, name.count <= 63, allowed, referenceSafe, !name.hasPrefix("."), !name.hasPrefix("-") else {
            throw SandboxError(
                "invalid sandbox name \"\(name)\"",
                hint: "use 1 to 63 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`, without `..` and not ending in `.` or `.lock`")
        }
    }

    public var stateRoot: String { project.root + "/.airlock" }
    /// What a merge or review last took from an agent's change to the project's airlock
    /// configuration, for the next start of any sandbox to show (then removed).
    public var policyChange: String { stateRoot + "/policy-changed" }
    public var stateDirectory: String { stateRoot + "/" + name }
    /// The sandbox's clone of the project, shared read-write at the project's path in the VM.
    public var workspace: String { stateDirectory + "/workspace" }
    /// `[workspace] mode = "mount"`: where the project's view (`ShareView`) is shown to the
    /// process that shares it; an empty directory for everyone else.
    public var projectView: String { stateDirectory + "/view" }
    public var disk: String { stateDirectory + "/disk.img" }
    public var consoleLog: String { stateDirectory + "/console.log" }
    /// `[mounts.*]` single files, staged for their shares (`Mounts`).
    public var mountStaging: String { stateDirectory + "/mounts" }
    public var stateFile: String { stateDirectory + "/state" }
    /// The workspace's size as the disk guard last measured it (bytes, one line): a start
    /// under the limit by it need not walk the tree again.
    public var workspaceSize: String { stateDirectory + "/workspace-size" }
    /// Held (flock) by the process that runs the VM, for as long as it runs.
    public var lockFile: String { stateDirectory + "/lock" }
    /// The host's private copy of the clone's git data, which `fetch` reads (never the clone).
    public var mirror: String { stateDirectory + "/mirror.git" }
    /// The commit the clone was made from (hex), where the agent's work starts.
    public var baseFile: String { stateDirectory + "/base" }
    /// Written by `airlock stop` before it powers the VM off, so sessions that end because of it
    /// say so instead of "connection lost".
    public var stopMarker: String { stateDirectory + "/stopping" }
    /// Touched when a session of this sandbox starts and ends (fetched work older than it is stale).
    public var sessionMarker: String { stateDirectory + "/last-session" }
    /// What the last session changed in the clone (`ChangeJournal`), sealed when it ended.
    public var changeJournal: String { stateDirectory + "/changes.json" }
    /// JSON Lines: sessions, fetches, merges, reviews, security events.
    public var auditLog: AuditLog { AuditLog(path: stateDirectory + "/audit.jsonl") }

    /// Where every sandbox of this user keeps its sockets (0700).
    public func runtimeBase(environment: [String: String]) -> String {
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/"), runtime.utf8.count < 40 {
            return runtime + "/airlock"
        }
        return "/tmp/airlock-\(getuid())"
    }

    public func runtimeDirectory(environment: [String: String]) -> String {
        runtimeBase(environment: environment) + "/" + fnv1a(stateDirectory)
    }

    /// The control socket the process that runs the sandbox serves (0600): other airlock
    /// processes join sessions, stop it, read its state and follow its events through it.
    /// (The runtime directory also holds the VMM's own sockets, `control.sock` among them: the
    /// host end of the guest link, which only the owner connects to.)
    public func controlSocket(environment: [String: String]) -> String {
        runtimeDirectory(environment: environment) + "/sandbox.sock"
    }

    /// The last fetch's report, reused while nothing can have changed the clone since.
    public var lastFetchFile: String { stateDirectory + "/last-fetch.json" }
}

/// 64-bit FNV-1a as 16 hex digits: a short stable name for a long path.
func fnv1a(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash &*= 0x0000_0100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

/// Something about a sandbox went wrong in a way the user can act on: what, the error it came
/// from, and what to do.
public struct SandboxError: ExplainedError, Sendable {
    public var message: String
    public var cause: (any Error)?
    public var hint: String?

    public init(_ message: String, cause: (any Error)? = nil, hint: String? = nil) {
        self.message = message
        self.cause = cause
        self.hint = hint
    }
}
