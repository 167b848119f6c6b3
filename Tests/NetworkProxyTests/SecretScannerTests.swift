import NIOCore
import NetworkPolicy
import Testing

@testable import NetworkProxy

@Suite("Scanning for masked values")
struct SecretScannerTests {
    let secret = MaskedSecret(name: "TOKEN", value: "tok-live-0123456789abcdef")

    /// Feeds `text` in pieces of `size` bytes; what passed, or the name found.
    func scan(_ text: String, pieces size: Int) -> (passed: String, found: String?) {
        var scanner = SecretScanner([secret])
        var passed = ""
        let bytes = Array(text.utf8)
        for start in stride(from: 0, to: bytes.count, by: size) {
            do {
                let out = try scanner.pass(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]))
                passed += String(buffer: out)
            } catch {
                return (passed, error.name)
            }
        }
        passed += String(buffer: scanner.finish())
        return (passed, nil)
    }

    @Test("found whole or split across any chunk border, and no byte of it passes first")
    func splitAcrossChunks() {
        let text = "{\"echo\":\"Bearer \(secret.value)\",\"more\":\"" + String(repeating: "x", count: 100) + "\"}"
        for size in 1...40 {
            let (passed, found) = scan(text, pieces: size)
            #expect(found == "TOKEN", "pieces of \(size)")
            #expect(!passed.contains(secret.value.prefix(secret.value.count - 1)), "pieces of \(size): \(passed)")
        }
    }

    @Test("a clean stream passes whole, in order; the surrogate is not the value")
    func cleanStream() {
        let text = "Bearer \(secret.surrogate) and " + String(repeating: "tok-live-", count: 20)
        for size in [1, 7, 64, 4096] {
            let (passed, found) = scan(text, pieces: size)
            #expect(found == nil && passed == text, "pieces of \(size)")
        }
        #expect(SecretScanner([secret]).find(in: "x-api-key: \(secret.value)") == "TOKEN")
        #expect(SecretScanner([]).isActive == false)
    }
}
