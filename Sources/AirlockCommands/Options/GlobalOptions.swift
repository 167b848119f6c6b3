import ArgumentParser
import Logging

/// Flags every command takes. The executable reads them before parsing to set up logging
/// (see `LogSettings`); they are declared here so `--help` shows them and parsing accepts them.
public struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Log detail on stderr.", valueName: "trace|debug|info|notice|warning|error|critical"))
    public var logLevel: Logger.Level?

    @Flag(name: [.short, .long], help: "Print only errors on stderr.")
    public var quiet = false

    public init() {}
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// The logging level from the command line and `AIRLOCK_LOG`, read before the command runs so
/// that the executable can bootstrap logging once.
public enum LogSettings {
    public static func level(arguments: [String], environment: [String: String]) -> Logger.Level {
        var level = environment["AIRLOCK_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" { break }
            if argument == "-q" || argument == "--quiet" { level = .error }
            if argument == "--log-level", index + 1 < arguments.count, let parsed = Logger.Level(rawValue: arguments[index + 1]) {
                level = parsed
                index += 1
            } else if argument.hasPrefix("--log-level="), let parsed = Logger.Level(rawValue: String(argument.dropFirst("--log-level=".count))) {
                level = parsed
            }
            index += 1
        }
        return level
    }
}
