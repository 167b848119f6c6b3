import Foundation
import TestSupport
import Testing

@testable import GitReview

@Suite("Hunk selection")
struct HunkApplierTests {
    static func hunk(_ oldStart: Int, _ oldLines: Int, _ newStart: Int, _ newLines: Int) -> FileChange.Hunk {
        FileChange.Hunk(header: "", oldStart: oldStart, oldLines: oldLines, newStart: newStart, newLines: newLines, lines: [])
    }

    static let old = Array("1\n2\n3\n4\n5\n6\n7\n8\n9\n".utf8)
    // Line 2 changed, line 8 removed, a line added after 9.
    static let new = Array("1\nTWO\n3\n4\n5\n6\n7\n9\nten\n".utf8)
    static let hunks = [hunk(1, 3, 1, 3), hunk(7, 3, 7, 3)]

    @Test(
        "every combination of two hunks",
        arguments: [
            ([true, true], "1\nTWO\n3\n4\n5\n6\n7\n9\nten\n"),
            ([false, false], "1\n2\n3\n4\n5\n6\n7\n8\n9\n"),
            ([true, false], "1\nTWO\n3\n4\n5\n6\n7\n8\n9\n"),
            ([false, true], "1\n2\n3\n4\n5\n6\n7\n9\nten\n"),
        ])
    func combinations(_ accepted: [Bool], _ expected: String) {
        let result = HunkApplier.apply(old: Self.old, new: Self.new, hunks: Self.hunks, accepted: accepted)
        #expect(String(decoding: result, as: UTF8.self) == expected)
    }

    @Test("insertion at the very start (a zero-line old range) and a last line without newline")
    func edges() {
        let old = Array("a\nb".utf8)
        let new = Array("new\na\nb\nc".utf8)
        // @@ -0,0 +1 @@ and @@ -2 +3,2 @@
        let hunks = [Self.hunk(0, 0, 1, 1), Self.hunk(2, 1, 3, 2)]
        #expect(String(decoding: HunkApplier.apply(old: old, new: new, hunks: hunks, accepted: [true, false]), as: UTF8.self) == "new\na\nb")
        #expect(String(decoding: HunkApplier.apply(old: old, new: new, hunks: hunks, accepted: [false, true]), as: UTF8.self) == "a\nb\nc")
    }
}

@Suite("The project's fingerprint around a session")
struct FingerprintTests {
    @Test("a changed, added or removed file, a moved ref and a changed index are all reported")
    func detectsChanges() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        let before = ProjectFingerprint.take(project: fixture.project.path)
        #expect(ProjectFingerprint.take(project: fixture.project.path).differences(since: before).isEmpty)
        // Changes under .airlock (the sandbox's own state) and refs/remotes/airlock don't count.
        try fixture.write("state", to: ".airlock/default/other")
        try fixture.sh("git update-ref refs/remotes/airlock/default/x HEAD", in: fixture.project)
        #expect(ProjectFingerprint.take(project: fixture.project.path).differences(since: before).isEmpty)

        try fixture.write("changed\n", to: "c.txt")
        try fixture.write("new\n", to: "sub/new.txt")
        try FileManager.default.removeItem(at: fixture.project.appendingPathComponent("d.txt"))
        try fixture.sh("git update-ref refs/heads/planted HEAD && git add c.txt", in: fixture.project)
        let differences = ProjectFingerprint.take(project: fixture.project.path).differences(since: before)
        #expect(differences.contains("changed: file c.txt"))
        #expect(differences.contains("added: file sub/new.txt"))
        #expect(differences.contains("removed: file d.txt"))
        #expect(differences.contains("added: ref refs/heads/planted"))
        #expect(differences.contains("changed: index"))
    }
}

@Suite("The workspace clone")
struct WorkspaceCloneTests {
    @Test("submodules checked out in the project are initialised in the clone at their recorded commits, from the project's copy")
    func submodules() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        let library = fixture.project.appendingPathComponent(".airlock/library")
        try FileManager.default.createDirectory(at: library, withIntermediateDirectories: true)
        try fixture.sh(
            "git init -q -b main . && echo v1 > lib.txt && git add . && git commit -q -m v1 && echo v2 > lib.txt && git commit -q -a -m v2",
            in: library)
        try fixture.sh(
            """
            git -c protocol.file.allow=always submodule add -q '\(library.path)' vendor/lib
            (cd vendor/lib && git checkout -q HEAD~1)
            git add vendor/lib && git commit -q -m 'add lib at v1'
            """, in: fixture.project)
        // The library moves on and then disappears: the clone must come from the project's copy.
        try FileManager.default.removeItem(at: library)

        let destination = fixture.project.appendingPathComponent(".airlock/second").path
        let clone = try Repository.cloneLocal(from: fixture.project.path, to: destination, branch: "main")
        let missing = try clone.initialiseSubmodules(fromProject: fixture.project.path)
        #expect(missing.isEmpty)
        #expect(try String(contentsOfFile: destination + "/vendor/lib/lib.txt", encoding: .utf8) == "v1\n")
        let recorded = try fixture.sh("git rev-parse HEAD:vendor/lib", in: fixture.project)
        let checkedOut = try fixture.sh("git rev-parse HEAD", in: URL(fileURLWithPath: destination + "/vendor/lib"))
        #expect(recorded == checkedOut)
        #expect(try fixture.sh("git config --get submodule.vendor/lib.url", in: URL(fileURLWithPath: destination)).contains("library"))
    }
}

@Suite("Loose objects imported into the mirror are bounded")
struct LooseImportLimitTests {
    @Test("past the budget for inflated loose objects, the rest is refused and named")
    func budget() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        // Three blobs of 600 KB of zeros (a few KB each on disk) against a 1 MiB budget.
        try fixture.agent("for i in 1 2 3; do head -c 600000 /dev/zero | tr '\\0' \"$i\" | git hash-object -w --stdin > /dev/null; done")
        _ = LibGit2Runtime.initialised
        var limits = CloneMirror.Limits()
        limits.looseBytes = 1 << 20
        let mirror = fixture.project.appendingPathComponent(".airlock/default/mirror.git").path
        let synced = try CloneMirror.sync(
            clone: fixture.clone.path, into: mirror, projectObjects: fixture.project.appendingPathComponent(".git/objects").path, limits: limits)
        let refused = synced.refusals.filter { $0.contains("of loose objects a fetch") }
        #expect(refused.count == 2, "\(synced.refusals)")
    }
}
