import Foundation
import TestSupport
import Testing

@Suite("airlock network and rule errors")
struct NetworkCLITests {
    @Test("config validate reports a bad rule pattern at its file:line:column, exit 2")
    func badPattern() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[network.rules.web]\nallow = [\"ok.example\", \"https://bad.example/\"]\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try CLI.run(["config", "validate"], in: directory)
        #expect(result.status == 2)
        #expect(result.stderr.contains("airlock.toml:2:24: error:"), "\(result.stderr)")
        #expect(result.stderr.contains("network.rules.web.allow[1]"))
    }

    @Test("config validate: a socket forward whose guest path is inside the project, at its file:line:column, exit 2")
    func socketInProject() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = 2\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        try "[network.sockets.agent]\nhost = \"~/.ssh/agent.sock\"\nguest = \"\(directory.path)/agent.sock\"\n"
            .write(to: directory.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let result = try CLI.run(["config", "validate"], in: directory)
        #expect(result.status == 2)
        #expect(result.stderr.contains("airlock.toml:3:1: error:") && result.stderr.contains("inside the project"), "\(result.stderr)")
    }

    @Test("network log: a table of network decisions (other events skipped), --json lines, an empty log")
    func log() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = 2\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let state = directory.appendingPathComponent(".airlock/default")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let empty = try CLI.run(["network", "log"], in: directory)
        #expect(empty.status == 0)
        #expect(empty.stderr.contains("no network decisions yet"))
        let lines = [
            #"{"details":{"bytes_down":5120,"bytes_up":300,"direction":"egress","duration_ms":12,"ip":"160.79.104.10","name":"api.anthropic.com","port":443,"reason":"api.anthropic.com:443 allowed by [network.rules.claude-code] allow \"api.anthropic.com:443\"","rule":"claude-code","verdict":"allow"},"event":"network","sandbox":"default","time":1795000000.5}"#,
            #"{"details":{"argv":["true"]},"event":"session.start","sandbox":"default","time":1795000001}"#,
            #"{"details":{"bytes_down":0,"bytes_up":0,"direction":"egress","duration_ms":300,"name":"evil.test","port":80,"reason":"evil.test:80 denied by the policy deny-by-default (no rule allows it)","verdict":"deny"},"event":"network","sandbox":"default","time":1795000002}"#,
            #"{"details":{"bytes_down":70,"bytes_up":40,"direction":"egress","duration_ms":5,"port":0,"reason":"guest /run/airlock/agent.sock → host /h/agent.sock","rule":"sockets.agent","socket":"/h/agent.sock","verdict":"forward"},"event":"network","sandbox":"default","time":1795000003}"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(to: state.appendingPathComponent("audit.jsonl"), atomically: true, encoding: .utf8)
        let table = try CLI.run(["network", "log"], in: directory)
        #expect(table.status == 0)
        let rows = table.stdout.split(separator: "\n").map(String.init)
        #expect(rows.first?.hasPrefix("TIME") == true)
        #expect(rows.contains { $0.contains("allow") && $0.contains("api.anthropic.com:443") && $0.contains("claude-code") && $0.contains("5.1 kB") })
        #expect(rows.contains { $0.contains("deny") && $0.contains("evil.test:80") && $0.contains("(policy)") })
        #expect(rows.contains { $0.contains("denied by the policy deny-by-default") })
        #expect(rows.contains { $0.contains("forward") && $0.contains("unix:/h/agent.sock") && $0.contains("sockets.agent") }, "\(table.stdout)")
        #expect(!table.stdout.contains("session.start"))
        let json = try CLI.run(["network", "log", "--json"], in: directory)
        let objects = try json.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == 3)
        #expect(objects.allSatisfy { $0?["event"] as? String == "network" })
        let missing = try CLI.run(["network", "log", "--name", "nope"], in: directory)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no sandbox nope"))
    }

    @Test("network log: the rotated file first, then the current one; coalesced denials say how many more came")
    func rotatedAndCoalesced() throws {
        let directory = try CLI.project(files: ["airlock.toml": "[vm]\ncpus = 2\n"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let state = directory.appendingPathComponent(".airlock/default")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let older =
            #"{"details":{"direction":"egress","name":"older.test","port":80,"reason":"older.test:80 denied","verdict":"deny"},"event":"network","sandbox":"default","time":1795000000}"#
        let lines = [
            #"{"details":{"dropped_bytes":100,"dropped_events":2,"limit_bytes":64},"event":"audit.rotated","sandbox":"","time":1795000001}"#,
            #"{"details":{"direction":"egress","name":"flood.test","port":80,"reason":"flood.test:80 denied","verdict":"deny"},"event":"network","sandbox":"default","time":1795000002}"#,
            #"{"details":{"direction":"egress","name":"flood.test","port":80,"reason":"flood.test:80 denied","repeated":19999,"verdict":"deny"},"event":"network","sandbox":"default","time":1795000050}"#,
        ]
        try (older + "\n").write(to: state.appendingPathComponent("audit.1.jsonl"), atomically: true, encoding: .utf8)
        try (lines.joined(separator: "\n") + "\n").write(to: state.appendingPathComponent("audit.jsonl"), atomically: true, encoding: .utf8)
        let table = try CLI.run(["network", "log"], in: directory)
        #expect(table.status == 0)
        let out = table.stdout
        let olderAt = try #require(out.range(of: "older.test:80"))
        let floodAt = try #require(out.range(of: "flood.test:80"))
        #expect(olderAt.lowerBound < floodAt.lowerBound, "\(out)")
        #expect(out.contains("flood.test:80 denied (19999 more like it until"), "\(out)")
    }
}
