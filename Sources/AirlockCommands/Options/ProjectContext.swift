import ArgumentParser
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// The project in the working directory and its loaded configuration. Config errors are
/// printed with their locations and end the command with exit status 2.
struct ProjectContext {
    var project: Project
    var loaded: ConfigLoader.Result
    var environment: [String: String]

    static func load(environment: [String: String] = ProcessEnvironment.current) throws -> ProjectContext {
        let project = Project.discover(from: currentDirectory())
        do {
            try project.ensureExcluded()
        } catch {
            Terminal.standardError.write("warning: could not add airlock's files to .git/info/exclude: \(error)\n")
        }
        let loader = ConfigLoader(
            projectRoot: project.root,
            userConfigPath: ConfigLoader.userConfigPath(environment: environment),
            environment: environment)
        do {
            let loaded = try loader.load()
            return ProjectContext(project: project, loaded: loaded, environment: environment)
        } catch {
            Terminal.standardError.write(Terminal.standardError.styleDiagnostics(error.description) + "\n")
            throw ExitCode(2)
        }
    }
}

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
