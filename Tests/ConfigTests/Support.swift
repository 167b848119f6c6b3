@testable import Config

/// Files held in memory, for loader tests that must not depend on the disk.
struct MemoryFiles: FileReading {
    var files: [String: String]
    func read(_ path: String) throws -> [UInt8]? { files[path].map { Array($0.utf8) } }
}

/// Loads a project at /p with the given files: the project's, the local one, the user's and the
/// Rust airlock's user file (`~/.airlock/config.toml`).
func load(
    project: String? = nil, local: String? = nil, user: String? = nil, rustUser: String? = nil,
    environment: [String: String] = ["HOME": "/home/u"]
) throws(ConfigError) -> ConfigLoader.Result {
    var files: [String: String] = [:]
    if let project { files["/p/airlock.toml"] = project }
    if let local { files["/p/airlock.local.toml"] = local }
    if let user { files["/home/u/.config/airlock/config.toml"] = user }
    if let rustUser { files["/home/u/.airlock/config.toml"] = rustUser }
    return try ConfigLoader(
        projectRoot: "/p", userConfigPath: "/home/u/.config/airlock/config.toml",
        sharedUserConfigPaths: ConfigLoader.sharedUserConfigPaths(environment: environment), environment: environment,
        fileSystem: MemoryFiles(files: files)
    ).load()
}

/// The diagnostics a failing load produces, or an empty array when it loads.
func diagnostics(project: String? = nil, local: String? = nil, user: String? = nil) -> [ConfigDiagnostic] {
    do {
        _ = try load(project: project, local: local, user: user)
        return []
    } catch {
        return error.diagnostics
    }
}
