// FoundationEssentials, not Foundation: the JSON coders without ICU (tens of MB in a static binary).
import FoundationEssentials

/// Writes a value as pretty JSON (sorted keys, so output is stable) on stdout.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    Terminal.standardOutput.write(String(decoding: data, as: UTF8.self) + "\n")
}
