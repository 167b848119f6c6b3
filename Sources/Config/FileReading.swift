import AirlockSystem

/// Reads small files. A protocol so tests can give the loader files without touching disk.
public protocol FileReading: Sendable {
    /// The file's bytes, or `nil` when it does not exist.
    func read(_ path: String) throws -> [UInt8]?
}

extension FileReading {
    /// The file's text (invalid UTF-8 replaced), or `nil` when it does not exist.
    public func readText(_ path: String) throws -> String? {
        try read(path).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// The real file system. Config files are small; anything larger than `limit` is refused
/// rather than read into memory.
public struct LocalFiles: FileReading {
    public static let limit = 4 << 20

    public init() {}

    public func read(_ path: String) throws -> [UInt8]? {
        try FileSystem.read(path, limit: Self.limit)
    }
}

/// Where `bytes` stop being UTF-8: the 1-based line and column (in characters) of the first
/// byte that is not part of a valid sequence; nil when they all are.
func firstInvalidUTF8(in bytes: [UInt8]) -> (line: Int, column: Int)? {
    var parser = Unicode.UTF8.ForwardParser()
    var iterator = bytes.makeIterator()
    var line = 1
    var column = 1
    while true {
        switch parser.parseScalar(from: &iterator) {
        case .valid(let encoded):
            if encoded.count == 1 && encoded.first == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else {
                column += 1
            }
        case .emptyInput:
            return nil
        case .error:
            return (line, column)
        }
    }
}
