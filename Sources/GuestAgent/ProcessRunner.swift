import AirlockSystem
import CShim

#if canImport(Glibc)
import Glibc
#endif

/// Starts processes in the guest through the reaper.
enum ProcessRunner {
    struct SpawnError: Error, CustomStringConvertible {
        var command: String
        var step: String
        var subject: String?
        var code: Int32
        var description: String {
            let what = step == "exec" ? "cannot run \(command)" : "cannot start \(command): \(step)" + (subject.map { " \($0)" } ?? "")
            return "\(what): \(errorText(code))"
        }
    }

    static let initramfsEnvironment = ["PATH=/sbin:/bin:/usr/sbin:/usr/bin"]

    /// Spawns `arguments` with the given stdio and options; returns its pid.
    static func spawn(
        _ arguments: [String], environment: [String], stdin: Int32, stdout: Int32, stderr: Int32,
        options: airlock_spawn_options? = nil, root: String? = nil, workingDirectory: String? = nil, flags: Int32 = 0
    ) throws -> pid_t {
        var failedStep: UnsafePointer<CChar>?
        let pid = Reaper.shared.spawn {
            withCStrings(arguments) { argv in
                withCStrings(environment) { envp in
                    withOptionalCString(root) { rootPointer in
                        withOptionalCString(workingDirectory) { cwdPointer in
                            var settings = options ?? airlock_spawn_options()
                            settings.root = rootPointer
                            settings.cwd = cwdPointer
                            settings.huge_pages = 1
                            return airlock_spawn_ex(arguments[0], argv, envp, stdin, stdout, stderr, flags, &settings, &failedStep)
                        }
                    }
                }
            }
        }
        guard pid > 0 else {
            let step = failedStep.map { String(cString: $0) } ?? "exec"
            throw SpawnError(
                command: arguments[0], step: step, subject: step == "chdir" ? workingDirectory : step == "chroot" ? root : nil, code: -pid)
        }
        return pid
    }

    /// Runs an initramfs tool with the console as its output and waits for it.
    static func runToCompletion(_ arguments: [String]) async throws -> Int32 {
        let pid = try spawn(arguments, environment: initramfsEnvironment, stdin: -1, stdout: 2, stderr: 2)
        return await Reaper.shared.wait(for: pid).code
    }
}
