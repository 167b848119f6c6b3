import AirlockSystem

/// Reads small text files. A protocol so tests can give the loader files without touching disk.
public protocol FileReading: Sendable {
    /// The file's text, or `nil` when it does not exist.
    func readText(_ path: String) throws -> String?
}

/// The real file system. Config files are small; anything larger than `limit` is refused
/// rather than read into memory.
public struct LocalFiles: FileReading {
    public static let limit = 4 << 20

    public init() {}

    public func readText(_ path: String) throws -> String? {
        try FileSystem.readText(path, limit: Self.limit)
    }
}
