import Foundation
import Sandbox
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Tag {
    /// Boots real VMs (QEMU; TCG where KVM is unusable). `swift test --skip VM` leaves them out.
    @Tag public static var vm: Self
}

/// What the VM tests need: QEMU and the guest kernel and initramfs (`make kernel`; `make test`
/// points AIRLOCK_KERNEL and AIRLOCK_INITRAMFS at them).
public enum VMEnvironment {
    public static var kernel: String? { ProcessInfo.processInfo.environment["AIRLOCK_KERNEL"].flatMap { $0.isEmpty ? nil : $0 } }
    public static var initramfs: String? { ProcessInfo.processInfo.environment["AIRLOCK_INITRAMFS"].flatMap { $0.isEmpty ? nil : $0 } }

    public static var available: Bool {
        guard let kernel, let initramfs else { return false }
        let files = FileManager.default
        return files.fileExists(atPath: kernel) && files.fileExists(atPath: initramfs)
            && files.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
    }

    public static let skipReason: Comment =
        "VM tests need qemu-system-x86_64 and AIRLOCK_KERNEL/AIRLOCK_INITRAMFS (run `make test`, which builds them)"

    /// A git repository with one commit, in a fresh temporary directory (in `parent`, when
    /// given).
    public static func repository(in parent: URL? = nil) throws -> URL {
        let directory = (parent ?? FileManager.default.temporaryDirectory).appendingPathComponent("airlock-vm-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try git(["init", "-q", "-b", "main"], in: directory)
        try "hello\n".write(to: directory.appendingPathComponent("README"), atomically: true, encoding: .utf8)
        try git(["add", "README"], in: directory)
        try git(["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "initial"], in: directory)
        return directory
    }

    /// The test's own use of git on its own repository (airlock itself never runs git).
    public static func git(_ arguments: [String], in directory: URL) throws {
        let result = try Spawned.run(
            ["/usr/bin/git"] + arguments, directory: directory.path, environment: ProcessInfo.processInfo.environment, stdin: nil)
        guard result.status == 0 else { throw CocoaError(.executableLoad) }
    }

    public static func cleanUp(_ directory: URL) {
        _ = try? CLI.run(["rm", "--force", "--name", "default"], in: directory)
        try? FileManager.default.removeItem(at: directory)
    }
}

public enum Tmux {
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") }

    /// Runs tmux on a server of the session's own (`-L <session>`): a test never meets another
    /// test's server, say one still shutting down after its last session ended.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> String {
        let session = zip(arguments, arguments.dropFirst()).first { $0.0 == "-s" || $0.0 == "-t" }?.1 ?? "airlock-tests"
        let result = try Spawned.run(
            ["/usr/bin/tmux", "-L", session] + arguments, directory: "/", environment: ProcessInfo.processInfo.environment, stdin: nil, timeout: 30)
        return String(decoding: result.stdout, as: UTF8.self)
    }

    /// Polls the pane until `text` appears on it.
    public static func waitFor(_ session: String, toShow text: String, timeout: Double = 120) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var screen = ""
        while Date() < deadline {
            screen = try run(["capture-pane", "-p", "-t", session])
            if screen.contains(text) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("\"\(text)\" never appeared; the pane shows:\n\(screen)")
        throw CocoaError(.executableLoad)
    }
}

/// QEMU's virtio-fs path for real: QEMU, virtiofsd, the guest's virtiofs mounts.
///
/// airlock drives the Rust virtiofsd, which Debian 12 does not package. Here a test-only
/// `virtiofsd` put first on PATH stands in for it: it answers `--version` as the Rust one does
/// (so `HostFacts` takes it for one and airlock picks virtio-fs) and runs QEMU 7.2's C virtiofsd
/// (`/usr/lib/qemu/virtiofsd`) with the equivalent options. That needs root (the C virtiofsd's
/// chroot sandbox). The C virtiofsd has no `--readonly`: under this stand-in a read-only share is
/// read-only only through the guest's read-only mount, not on the host side as with the Rust one.
public enum VirtiofsStandIn {
    public static let legacy = "/usr/lib/qemu/virtiofsd"

    public static var available: Bool { missing.isEmpty }

    public static var missing: [String] {
        var missing: [String] = []
        if !VMEnvironment.available { missing.append("qemu-system-x86_64 and AIRLOCK_KERNEL/AIRLOCK_INITRAMFS (`make test` builds them)") }
        if getuid() != 0 { missing.append("root (QEMU's C virtiofsd, the stand-in for the Rust one, runs its chroot sandbox only as root)") }
        if !FileManager.default.isExecutableFile(atPath: legacy) { missing.append("\(legacy) (Debian's qemu-system-common of QEMU 7.2)") }
        return missing
    }

    public static var skipReason: Comment {
        Comment(rawValue: "the QEMU virtio-fs VM tests need " + missing.joined(separator: "; "))
    }

    /// The stand-in: the Rust virtiofsd's command line (`--socket-path --shared-dir [--readonly]`
    /// and the fixed flags airlock adds) translated for the C virtiofsd. Each call appends
    /// "<pid> readonly=<yes|no> <directory>" to `calls.log` beside it; after `exec` the pid is
    /// the C virtiofsd's.
    public static let script = #"""
        #!/bin/sh
        # Test-only stand-in for the Rust virtiofsd (not packaged for Debian 12): QEMU 7.2's C
        # virtiofsd behind the Rust one's command line. Lives only on a test's temporary PATH.
        if [ "$1" = "--version" ]; then echo "virtiofsd 1.10.0"; exit 0; fi
        if [ "$1" = "--help" ]; then echo "Usage: virtiofsd [OPTIONS] --socket-path <SOCKET_PATH> --shared-dir <SHARED_DIR>"; exit 0; fi
        socket= directory= readonly=no
        while [ $# -gt 0 ]; do
          case "$1" in
            --socket-path=*) socket=${1#--socket-path=} ;;
            --socket-path) shift; socket=$1 ;;
            --shared-dir=*) directory=${1#--shared-dir=} ;;
            --shared-dir) shift; directory=$1 ;;
            --readonly) readonly=yes ;;
            --cache=auto|--announce-submounts|--log-level=*) ;;
            *) echo "virtiofsd stand-in: unexpected argument: $1" >&2; exit 2 ;;
          esac
          shift
        done
        if [ -z "$socket" ] || [ -z "$directory" ]; then
          echo "virtiofsd stand-in: --socket-path and --shared-dir are required" >&2; exit 2
        fi
        echo "$$ readonly=$readonly $directory" >> "$(dirname "$0")/calls.log"
        # No --readonly in the C virtiofsd: read-only is the guest's read-only mount alone here.
        exec /usr/lib/qemu/virtiofsd --socket-path="$socket" -o source="$directory" \
          -o cache=auto -o sandbox=chroot -o announce_submounts -o log_level=warn
        """#

    /// Installs the stand-in in a new temporary directory (not in the project: its call log
    /// would change the project during the session); returns it and the environment that puts
    /// it first on PATH.
    public static func install() throws -> (bin: URL, environment: [String: String]) {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-virtiofsd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let file = bin.appendingPathComponent("virtiofsd")
        try script.write(to: file, atomically: true, encoding: .utf8)
        chmod(file.path, 0o755)
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return (bin, ["PATH": bin.path + ":" + path])
    }

    public struct Call: Equatable {
        public var pid: pid_t
        public var readOnly: Bool
        public var directory: String
    }

    public static func calls(_ bin: URL) -> [Call] {
        let text = (try? String(contentsOf: bin.appendingPathComponent("calls.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard parts.count == 3, let pid = pid_t(parts[0]) else { return nil }
            return Call(pid: pid, readOnly: parts[1] == "readonly=yes", directory: parts[2])
        }
    }

    /// Whether every one of `pids` is gone (or a zombie about to be reaped by init) within `seconds`.
    public static func allGone(_ pids: [pid_t], within seconds: Double = 5) async throws -> [pid_t] {
        let deadline = Date().addingTimeInterval(seconds)
        var alive = pids
        while true {
            alive = alive.filter { kill($0, 0) == 0 && !CLI.isZombie($0) }
            if alive.isEmpty || Date() > deadline { return alive }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Whether this host can run the Cloud Hypervisor backend, decided as `airlock` decides it.
public enum CloudHypervisorHost {
    public static let missing: [String] = BackendSelection.cloudHypervisorMissing(
        on: HostFacts.probe(environment: ProcessInfo.processInfo.environment, configuredAssets: .init(), libraries: []))

    public static var available: Bool { missing.isEmpty && VMEnvironment.kernel != nil && VMEnvironment.initramfs != nil }

    public static var skipReason: Comment {
        let what =
            missing.isEmpty
            ? ["AIRLOCK_KERNEL/AIRLOCK_INITRAMFS are not set (run `make test`)"]
            : missing.map { String($0.split(separator: ":").first ?? Substring($0)) }
        return Comment(
            rawValue: "Cloud Hypervisor end-to-end tests need cloud-hypervisor, the Rust virtiofsd and hardware KVM; here: "
                + what.joined(separator: "; "))
    }

    /// A repository whose airlock.toml asks for the Cloud Hypervisor backend.
    public static func repository() throws -> URL {
        let directory = try VMEnvironment.repository()
        try "[vm]\nbackend = \"cloud-hypervisor\"\n".write(to: directory.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        return directory
    }
}
