import Foundation
import OCI
import Synchronization

public final class EventLog: Sendable {
    public init() {}

    private let events = Mutex<[PullEvent]>([])
    public func append(_ event: PullEvent) { events.withLock { $0.append(event) } }
    public var all: [PullEvent] { events.withLock { $0 } }
}

public enum ImageFixtures {
    public static func file(_ path: String, _ data: String, mode: Int = 0o644, uid: Int = 0, gid: Int = 0) -> [String: Any] {
        ["path": path, "data": data, "mode": mode, "uid": uid, "gid": gid]
    }
    public static func dir(_ path: String, mode: Int = 0o755, uid: Int = 0, gid: Int = 0) -> [String: Any] {
        ["path": path, "type": "dir", "mode": mode, "uid": uid, "gid": gid]
    }
    public static func link(_ path: String, _ target: String) -> [String: Any] { ["path": path, "type": "symlink", "target": target] }
    public static func hardlink(_ path: String, _ target: String) -> [String: Any] { ["path": path, "type": "hardlink", "target": target] }

    public static let checks = """
        #!/bin/sh
        echo "uid=$(id -u) gid=$(id -g) pwd=$(pwd) greeting=$GREETING home=$HOME"
        echo "notes=$(stat -c '%u:%g:%a' /home/dev/notes) tool=$(stat -c '%u:%a:%h' /usr/bin/tool)"
        echo "link=$(readlink /lnk) null=$(stat -c '%F:%t:%T' /devices/null)"
        echo "old=$(ls -A /old 2>&1 | tr '\\n' ' ')"
        echo "keep=[$(ls -A /keep/dir | tr '\\n' ' ')] opaque=[$(ls -A /opaque-dir | tr '\\n' ' ')] recreated=[$(ls -A /recreated | tr '\\n' ' ')]"
        echo "motd=$(cat /etc/motd) long=$(cat /long/*/*/* | head -c 20)"
        echo "workspace=$(cat "$PROJECT/README")"
        echo written > /home/dev/new && echo "write=$(cat /home/dev/new)"
        """

    /// Three layers (gzip, zstd, plain) with everything the format must carry, plus an arm64
    /// image in the same index that must not be chosen. Runnable: busybox from the host.
    public static func rich(busybox: Bool) -> [String: Any] {
        var base: [[String: Any]] = [
            dir("etc"), dir("home"), dir("home/dev", mode: 0o750, uid: 1000, gid: 1000), dir("usr"), dir("usr/bin"), dir("bin"),
            file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:Dev:/home/dev:/bin/sh\n"),
            file("etc/group", "root:x:0:\ndev:x:1000:\n"),
            file("home/dev/notes", "private notes\n", mode: 0o640, uid: 1000, gid: 1000),
            file("usr/bin/tool", "#!/bin/sh\necho tool\n", mode: 0o4755),
            hardlink("usr/bin/tool-link", "usr/bin/tool"),
            link("lnk", "usr/bin/tool"),
            ["path": "devices/null", "type": "char", "major": 1, "minor": 3, "mode": 0o666],
            ["path": "devices/fifo", "type": "fifo", "mode": 0o600],
            file("old/file-a", "a"), file("old/sub/file-b", "b"),
            file("keep/dir/x", "x"), file("keep/dir/y", "y"),
            file("opaque-dir/lower-file", "lower"), file("recreated/old-file", "old"),
            ["path": "xattr-file", "data": "x", "xattrs": ["user.test": "hello", "user.virtfs.uid": "forged"]],
            file("checks.sh", checks, mode: 0o755),
        ]
        if busybox {
            base.append(["path": "bin/busybox", "src": "/usr/bin/busybox", "mode": 0o755])
            for tool in ["sh", "id", "pwd", "stat", "readlink", "ls", "tr", "cat", "head", "echo"] { base.append(link("bin/" + tool, "busybox")) }
        }
        base.removeAll { ($0["path"] as? String) == "bin/ls" }  // re-added below through a hardlink
        if busybox { base.append(hardlink("bin/ls", "bin/busybox")) }
        let upper: [[String: Any]] = [
            ["path": ".wh.old", "data": ""],
            ["path": ".wh.recreated", "data": ""], dir("recreated"), file("recreated/new", "new"),
            ["path": "keep/dir/.wh.x", "data": ""],
            dir("opaque-dir"), ["path": "opaque-dir/.wh..wh..opq", "data": ""], file("opaque-dir/upper-file", "upper"),
            file("etc/motd", "welcome"),
        ]
        let longName = "long/" + String(repeating: "d", count: 120) + "/" + String(repeating: "e", count: 120) + "/file"
        return [
            "multiplatform": true,
            "layers": [
                ["compression": "gzip", "entries": base],
                ["compression": "zstd", "entries": upper],
                ["compression": "none", "entries": [file(longName, "a long path survives")]],
            ],
            "config": [
                "Env": ["PATH=/bin:/usr/bin", "GREETING=hello from the image"], "User": "dev", "WorkingDir": "/home/dev",
                "Cmd": ["/bin/sh", "/checks.sh"],
            ] as [String: Any],
        ]
    }
}
