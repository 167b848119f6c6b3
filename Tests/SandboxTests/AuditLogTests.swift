import AirlockSystem
import Foundation
import NetworkProxy
import Testing

@testable import Sandbox

@Suite("The audit log: bounded, and floods of identical denials coalesced")
struct AuditLogTests {
    func scratch() throws -> String {
        let root = NSTemporaryDirectory() + "airlock-audit-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(root)
        return root
    }

    func lines(_ path: String) -> [String] {
        ((try? FileSystem.readText(path, limit: 64 << 20)) ?? nil)?.split(separator: "\n").map(String.init) ?? []
    }

    @Test("rotation: both files stay within the limit; the new file starts by counting what was dropped; the newest event is last")
    func rotation() throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let log = AuditLog(path: root + "/audit.jsonl", limit: 16 << 10)
        for index in 0..<1000 {
            try log.append(AuditEvent(sandbox: "s", event: "session.start", details: ["n": .number(Int64(index))]))
        }
        let total = (FileSystem.size(log.path) ?? 0) + (FileSystem.size(log.previousPath) ?? 0)
        #expect(total <= 16 << 10, "\(total) bytes")
        let current = lines(log.path)
        #expect(current.first?.contains(#""event":"audit.rotated""#) == true, "\(current.first ?? "")")
        #expect(current.first?.contains(#""dropped_events":"#) == true)
        #expect(current.last?.contains(#""n":999"#) == true)
        #expect(log.previousPath == root + "/audit.1.jsonl")
    }

    func denial(_ name: String, at time: Double, verdict: ConnectionRecord.Verdict = .deny) -> AuditEvent {
        var event = AuditEvent(
            sandbox: "s", connection: ConnectionRecord(name: name, ip: nil, port: 80, rule: nil, verdict: verdict, reason: "\(name):80 denied"))
        event.time = time
        return event
    }

    @Test("20,000 identical denials within the window are two records; allowed connections are never coalesced")
    func coalescing() {
        let coalescer = AuditCoalescer(window: .seconds(60))
        var written: [AuditEvent] = []
        for index in 0..<20000 { written += coalescer.admit(denial("flood.test", at: 1000 + Double(index) / 1000)) }
        #expect(written.count == 1)
        for index in 0..<5 { written += coalescer.admit(denial("ok.test", at: 1001 + Double(index), verdict: .allow)) }
        #expect(written.count == 6, "each allowed connection is written")
        written += coalescer.flush()
        #expect(written.count == 7)
        #expect(written.last?.details["repeated"] == .number(19999))
        #expect(written.last?.time == 1000 + 19999.0 / 1000)
        #expect(coalescer.flush().isEmpty)
    }

    @Test("100,000 identical denials over ten minutes, written through the coalescer into the log: a few KiB")
    func hundredThousand() throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let log = AuditLog(path: root + "/audit.jsonl")
        let coalescer = AuditCoalescer(window: .seconds(60))
        for index in 0..<100_000 {
            for event in coalescer.admit(denial("flood.test", at: 1000 + Double(index) * 0.006)) { try log.append(event) }
        }
        for event in coalescer.flush() { try log.append(event) }
        let bytes = FileSystem.size(log.path) ?? 0
        let records = lines(log.path)
        print("audit log: 100,000 denials over 600 s → \(records.count) records, \(bytes) bytes")
        #expect(records.count <= 22 && bytes < 8 << 10, "\(records.count) records, \(bytes) bytes")
        let counted = records.compactMap { line -> Int? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            // A summary record counts the denials after the first, which has a record of its own.
            return (object["details"] as? [String: Any])?["repeated"] as? Int ?? 1
        }
        #expect(counted.reduce(0, +) == 100_000, "every denial is counted")
    }

    @Test("after the window, the count is written before the next denial; past the capacity, the oldest destination's count goes first")
    func windowAndCapacity() {
        let coalescer = AuditCoalescer(window: .seconds(10), capacity: 2)
        #expect(coalescer.admit(denial("a.test", at: 0)).count == 1)
        #expect(coalescer.admit(denial("a.test", at: 5)).isEmpty)
        let later = coalescer.admit(denial("a.test", at: 20))
        #expect(later.map { $0.details["repeated"] } == [.number(1), nil])
        #expect(coalescer.admit(denial("b.test", at: 21)).count == 1)
        #expect(coalescer.admit(denial("b.test", at: 22)).isEmpty)
        // A third destination: a.test (the oldest, nothing counted since) makes room silently; b.test keeps counting.
        #expect(coalescer.admit(denial("c.test", at: 23)).count == 1)
        #expect(coalescer.admit(denial("d.test", at: 24)).map { $0.details["repeated"] } == [.number(1), nil], "b.test's count, then d.test")
    }
}
