import AirlockSystem
import CShim

#if canImport(Glibc)
import Glibc
#endif

/// The guest's own system calls (the shared ones are `AirlockSystem`'s).
enum System {
    static func mount(_ source: String, _ target: String, _ type: String, flags: UInt = 0, options: String? = nil) throws {
        try FileSystem.makeDirectories(target)
        let result = options.map { Glibc.mount(source, target, type, flags, $0) } ?? Glibc.mount(source, target, type, flags, nil)
        if result != 0 {
            throw SystemError.last("mount", "\(type) \(source) on \(target)" + (options.map { " (\($0))" } ?? ""))
        }
    }

    static func symlink(_ target: String, at path: String) throws {
        if Glibc.symlink(target, path) != 0 && errno != EEXIST {
            throw SystemError.last("symlink", "\(path) → \(target)")
        }
    }

    /// Writes a line to the kernel console (the serial log on the host), stamped like the
    /// kernel's lines (seconds since boot), so console.log shows where a boot spends its time.
    static func log(_ message: String) {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        let milliseconds = String(time.tv_nsec / 1_000_000)
        let stamp =
            "[\(String(repeating: " ", count: max(0, 5 - String(time.tv_sec).count)))\(time.tv_sec).\(String(repeating: "0", count: 3 - milliseconds.count))\(milliseconds)]"
        let line = Array("\(stamp) airlock-guest: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}
