import NIOCore

/// What to run in the guest. Sent as the first frame of an exec session.
public struct ExecSpec: Sendable, Equatable {
    public var arguments: [String]
    /// `NAME=value` entries; the process gets exactly these.
    public var environment: [String]
    public var workingDirectory: String
    /// Run on a pseudo-terminal of this size, or with pipes when nil.
    public var terminal: WindowSize?
    public var user: UInt32
    public var group: UInt32

    public init(arguments: [String], environment: [String], workingDirectory: String, terminal: WindowSize?, user: UInt32 = 0, group: UInt32 = 0) {
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.terminal = terminal
        self.user = user
        self.group = group
    }

    public func encoded() -> ByteBuffer {
        var writer = WireWriter()
        writer.write(arguments)
        writer.write(environment)
        writer.write(workingDirectory)
        writer.write(terminal != nil)
        writer.write(terminal?.rows ?? 0)
        writer.write(terminal?.columns ?? 0)
        writer.write(user)
        writer.write(group)
        return writer.buffer
    }

    public init(decoding buffer: ByteBuffer) throws(WireError) {
        var reader = WireReader(buffer)
        arguments = try reader.readStrings()
        environment = try reader.readStrings()
        workingDirectory = try reader.readString()
        let hasTerminal = try reader.readBool()
        let rows: UInt16 = try reader.read()
        let columns: UInt16 = try reader.read()
        terminal = hasTerminal ? WindowSize(rows: rows, columns: columns) : nil
        user = try reader.read()
        group = try reader.read()
        try reader.expectEnd()
        guard !arguments.isEmpty, !arguments[0].isEmpty else { throw WireError("no command to run") }
        guard workingDirectory.hasPrefix("/") else { throw WireError("the working directory must be absolute") }
        for entry in environment where !entry.contains("=") { throw WireError("environment entry without `=`") }
        for text in arguments + environment + [workingDirectory] where text.utf8.contains(0) {
            throw WireError("NUL byte in an argument, variable or path")
        }
    }
}

public struct WindowSize: Sendable, Equatable {
    public var rows: UInt16
    public var columns: UInt16

    public init(rows: UInt16, columns: UInt16) {
        self.rows = rows
        self.columns = columns
    }
}
