import AirlockCommands
import Logging

#if canImport(Glibc)
import Glibc
#endif

// Logging is set up once, here, before any command runs: the level comes from --log-level,
// -q or AIRLOCK_LOG. Logs and progress go to stderr; stdout is for data.
let level = LogSettings.level(
    arguments: Array(CommandLine.arguments.dropFirst()),
    environment: [
        "AIRLOCK_LOG": getenv("AIRLOCK_LOG").map { String(cString: $0) } ?? ""
    ])
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = level
    return handler
}

await Airlock.runFromCommandLine()
