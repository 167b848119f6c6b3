/// A value the VM must not see (`[env] NAME = { value = "${X}", mask = true }`): the guest
/// gets `surrogate`, of the same length and shape; the host puts `value` back only into
/// requests to the hosts a rule binds it to (`inject = ["NAME"]`), and watches every
/// intercepted request and answer for `value` itself.
public struct MaskedSecret: Sendable, Equatable {
    public var name: String
    public var value: String
    public var surrogate: String

    /// `text` with each of `secrets`' real values replaced by `‹masked NAME›`.
    public static func redact(_ text: String, _ secrets: [MaskedSecret]) -> String {
        secrets.reduce(text) { $0.replacing($1.value, with: "‹masked \($1.name)›") }
    }

    /// Characters a surrogate must replace at least: fewer could be guessed, or met by chance.
    public static let minimumReplaced = 8

    public init(name: String, value: String) {
        self.name = name
        self.value = value
        self.surrogate = Self.surrogate(for: value, name: name)
    }

    /// What the surrogate leaves as it is: a short public prefix that tells tools the kind of
    /// token (`sk-ant-api03-`, `ghp_`, `github_pat_`, `xoxb-`: up to the last `-` or `_` among
    /// the first 16 characters, at most a third of the value), and every character that is not
    /// an ASCII letter or digit.
    static func keptPrefix(_ value: [UInt8]) -> Int {
        let window = value.prefix(16)
        guard let last = window.lastIndex(where: { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }) else { return 0 }
        return last + 1 <= value.count / 3 ? last + 1 : 0
    }

    /// Whether `value` can be masked: enough letters and digits to replace, on one line.
    public static func canMask(_ value: String) -> Bool {
        replacedCount(value) >= minimumReplaced && !value.contains(where: \.isNewline)
    }

    /// How many characters the surrogate replaces (letters and digits after the kept prefix).
    public static func replacedCount(_ value: String) -> Int {
        let bytes = Array(value.utf8)
        return bytes[keptPrefix(bytes)...].filter(isAlphanumeric).count
    }

    /// Same length, same shape (letters stay letters of the same case, digits digits), derived
    /// from the name and the length only, never from the value: stable across starts, and
    /// nothing about the value but its shape.
    static func surrogate(for value: String, name: String) -> String {
        let original = Array(value.utf8)
        var bytes = original
        let kept = keptPrefix(original)
        var seed: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array("airlock-surrogate|\(name)|\(original.count)".utf8) {
            seed = (seed ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        repeat {
            var state = seed
            for index in kept..<original.count where isAlphanumeric(original[index]) {
                let random = splitMix(&state)
                switch original[index] {
                case UInt8(ascii: "a")...UInt8(ascii: "z"): bytes[index] = UInt8(ascii: "a") + UInt8(random % 26)
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): bytes[index] = UInt8(ascii: "A") + UInt8(random % 26)
                default: bytes[index] = UInt8(ascii: "0") + UInt8(random % 10)
                }
            }
            _ = splitMix(&seed)
        } while bytes == original && replacedCount(value) > 0
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    private static func splitMix(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
