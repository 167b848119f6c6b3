import AirlockSystem
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

@Suite("[mask.*]: what git does not track, never in the clone and never brought home")
struct MaskTests {
    static let masks = MaskedPaths(["secrets": ["secrets", "./config/key.pem"], "notes": ["private/"]])

    @Test("paths are normalised; a mask covers its path and everything below, nothing beside it")
    func covering() {
        #expect(Self.masks.paths.map(\.path) == ["private", "secrets", "config/key.pem"])
        #expect(Self.masks.covering("secrets/a/b")?.entry == "mask.secrets")
        #expect(Self.masks.covering("config/key.pem")?.entry == "mask.secrets")
        #expect(Self.masks.covering("secrets-not")?.entry == nil)
        #expect(Self.masks.covering("config/key.pem.bak") == nil)
        #expect(MaskedPaths(["x": ["", "."]]).isEmpty)
    }

    @Test("a masked path git tracks is found: at a tip quickly, in an older commit only by the history walk")
    func trackedPaths() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n", "config/key.pem": "KEY\n"])
        defer { fixture.cleanUp() }
        let project = try Repository.open(fixture.project.path)
        let atTip = try project.maskedPathsInHistory(Self.masks, history: false)
        #expect(atTip.map(\.path.path) == ["config/key.pem"])
        #expect(atTip.first?.reference == "HEAD" || atTip.first?.reference == "main")

        // Removed since: still in the history a clone holds.
        try fixture.sh("git rm -q config/key.pem && git commit -q -m 'drop the key'", in: fixture.project)
        #expect(try Repository.open(fixture.project.path).maskedPathsInHistory(Self.masks, history: false).isEmpty)
        let inHistory = try Repository.open(fixture.project.path).maskedPathsInHistory(Self.masks, history: true)
        #expect(inHistory.map(\.path.path) == ["config/key.pem"] && inHistory.first?.reference == nil)
        // On another branch's tip, or a tag's.
        try fixture.sh("git checkout -q -b other && mkdir -p secrets && echo s > secrets/s && git add -A && git commit -q -m s", in: fixture.project)
        try fixture.sh("git checkout -q main && git tag -a -m t v1 other && git branch -D -q other", in: fixture.project)
        let tagged = try Repository.open(fixture.project.path).maskedPathsInHistory(Self.masks, history: false)
        #expect(tagged.map { "\($0.path.path) \($0.reference ?? "-")" } == ["secrets refs/tags/v1"])
    }

    @Test("--with-changes: a masked untracked file is not carried over; the rest is")
    func withChanges() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        try fixture.write("token\n", to: "secrets/token")
        try fixture.write("mine\n", to: "notes.txt")
        try fixture.write("b\n", to: "a.txt")
        let patch = String(decoding: try Repository.open(fixture.project.path).uncommittedPatch(excluding: Self.masks), as: UTF8.self)
        #expect(patch.contains("notes.txt") && patch.contains("a.txt"))
        #expect(!patch.contains("secrets") && !patch.contains("token"))
        let all = String(decoding: try Repository.open(fixture.project.path).uncommittedPatch(), as: UTF8.self)
        #expect(all.contains("secrets/token"))
    }

    @Test("fetch: masked files are left out of the uncommitted capture (staged or not) and named; a branch whose new commit has one is not fetched")
    func fetch() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        let mirror = fixture.project.appendingPathComponent(".airlock/default/mirror.git").path
        func fetch() throws -> FetchReport {
            try SandboxFetch.run(
                project: fixture.project.path, clone: fixture.clone.path, mirror: mirror, sandbox: "default", base: nil, masks: Self.masks)
        }
        try fixture.agent("git checkout -q -b work && echo w > work.txt && git add work.txt && git commit -q -m work")
        #expect(try fetch().branches.contains { $0.name == "work" && $0.after != nil })
        let fetchedWork = try fixture.sh("git rev-parse refs/remotes/airlock/default/work", in: fixture.project)

        try fixture.agent("mkdir -p secrets private && echo s > secrets/new && echo p > private/staged && git add private/staged && echo n > new.txt")
        var report = try fetch()
        #expect(report.uncommittedPaths == ["new.txt"], "\(report.uncommittedPaths)")
        #expect(report.refused.contains("secrets/new left out: [mask.secrets] hides it"), "\(report.refused)")
        #expect(report.refused.contains("private/staged left out: [mask.notes] hides it"), "\(report.refused)")
        let captured = try fixture.sh("git ls-tree -r --name-only refs/remotes/airlock/default/uncommitted", in: fixture.project)
        #expect(!captured.contains("secrets") && !captured.contains("private") && captured.contains("new.txt"))

        // Committed in the clone: the branch keeps what the last fetch brought.
        try fixture.agent("git reset -q && git add secrets/new && git commit -q -m 'add a secret' && echo more > work.txt && git commit -q -am more")
        report = try fetch()
        #expect(
            report.refused.contains { $0.hasPrefix("`work` is not fetched: commit ") && $0.contains("has secrets, which [mask.secrets] hides") },
            "\(report.refused)")
        #expect(try fixture.sh("git rev-parse refs/remotes/airlock/default/work", in: fixture.project) == fetchedWork)
        // The uncommitted capture sits on that history: not fetched either.
        #expect(report.uncommittedPaths.isEmpty)
    }
}

@Suite("A merge or review a crash interrupted is finished by the next command")
struct PendingCheckoutTests {
    @Test("a checkout recorded as begun, with the working tree half updated, is finished: the branch moves and the tree is clean")
    func resumes() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n", "b.txt": "b\n", "gone.txt": "g\n"])
        defer { fixture.cleanUp() }
        let base = try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace()
        _ = try fixture.sh(
            "git checkout -q -b next && echo A > a.txt && echo B > b.txt && git rm -q gone.txt && echo n > new.txt && git add -A && git commit -q -m next && git checkout -q main",
            in: fixture.project)
        let target = try fixture.sh("git rev-parse next", in: fixture.project).trimmingWhitespace()
        // As a kill in the middle of the checkout leaves it: one file written, the rest not.
        try "refs/heads/main\n\(base)\n\(target)\nairlock merge\n".write(
            to: fixture.project.appendingPathComponent(".git/airlock-checkout"), atomically: true, encoding: .utf8)
        try fixture.write("A\n", to: "a.txt")
        let said = PendingCheckout.resume(repositoryAt: fixture.project.path)
        #expect(said?.contains("finished the airlock merge that was interrupted: main is at") == true, "\(said ?? "nothing")")
        #expect(try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace() == target)
        #expect(try fixture.sh("git status --porcelain --untracked-files=no", in: fixture.project).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: fixture.project.appendingPathComponent("gone.txt").path))
        #expect(!FileManager.default.fileExists(atPath: fixture.project.appendingPathComponent(".git/airlock-checkout").path))
        #expect(PendingCheckout.resume(repositoryAt: fixture.project.path) == nil, "nothing left to do")
    }

    @Test("git's lock files the killed operation left are removed; while the operation still runs (its lock held), nothing is touched")
    func staleLocksAndLiveOperation() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        let base = try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace()
        _ = try fixture.sh("git checkout -q -b next && echo A > a.txt && git commit -q -am next && git checkout -q main", in: fixture.project)
        let target = try fixture.sh("git rev-parse next", in: fixture.project).trimmingWhitespace()
        let git = fixture.project.appendingPathComponent(".git").path
        try "refs/heads/main\n\(base)\n\(target)\nairlock review\n".write(
            toFile: git + "/airlock-checkout", atomically: true, encoding: .utf8)
        // A kill while the branch was being written: its lock file stays (and an index lock).
        try "\(target)\n".write(toFile: git + "/refs/heads/main.lock", atomically: false, encoding: .utf8)
        try "".write(toFile: git + "/index.lock", atomically: false, encoding: .utf8)

        // The operation still running (its lock held): another command leaves all as it is.
        let repository = try Repository.open(fixture.project.path)
        let held = try #require(PendingCheckout.lock(repository, wait: false))
        #expect(PendingCheckout.resume(repositoryAt: fixture.project.path) == nil)
        #expect(FileSystem.exists(git + "/airlock-checkout") && FileSystem.exists(git + "/refs/heads/main.lock"))
        #expect(try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace() == base)
        close(held)

        let said = PendingCheckout.resume(repositoryAt: fixture.project.path)
        #expect(said?.contains("finished the airlock review that was interrupted") == true, "\(said ?? "nothing")")
        #expect(try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace() == target)
        #expect(try fixture.sh("git status --porcelain --untracked-files=no", in: fixture.project).isEmpty)
        for gone in ["/airlock-checkout", "/refs/heads/main.lock", "/index.lock"] { #expect(!FileSystem.exists(git + gone), "\(gone)") }
    }

    @Test("a branch moved since, or a record that names nothing, is left alone and the record removed")
    func leftAlone() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        let record = fixture.project.appendingPathComponent(".git/airlock-checkout")
        let zero = String(repeating: "0", count: 40)
        try "refs/heads/main\n\(zero)\n\(zero)\nairlock review\n".write(to: record, atomically: true, encoding: .utf8)
        let head = try fixture.sh("git rev-parse HEAD", in: fixture.project)
        #expect(PendingCheckout.resume(repositoryAt: fixture.project.path)?.contains("left main alone") == true)
        #expect(try fixture.sh("git rev-parse HEAD", in: fixture.project) == head)
        try "garbage".write(to: record, atomically: true, encoding: .utf8)
        #expect(PendingCheckout.resume(repositoryAt: fixture.project.path)?.contains("did not name a checkout") == true)
        #expect(!FileManager.default.fileExists(atPath: record.path))
    }
}

@Suite("The flagged section's patch")
struct FlaggedPatchTests {
    @Test("only the flagged files' diff: a file whose text looks like another file's diff header cannot slip into it")
    func onlyThoseFiles() throws {
        let fixture = try ReviewFixture(files: ["airlock.toml": "[vm]\ncpus = 1\n", "notes.txt": "n\n"])
        defer { fixture.cleanUp() }
        let base = try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace()
        try fixture.write("[vm]\ncpus = 2\n", to: "airlock.toml")
        // A diff header, then a fake change to airlock.toml, inside an ordinary file.
        try fixture.write("diff --git a/airlock.toml b/airlock.toml\n+policy = \"allow-always\"\n", to: "notes.txt")
        _ = try fixture.sh("git -c user.name=t -c user.email=t@e commit -q -a -m change", in: fixture.project)
        let head = try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingWhitespace()
        let repository = try Repository.open(fixture.project.path)
        let patch = try Differ(repository: repository).patch(from: ObjectID(hex: base)!, to: ObjectID(hex: head)!, only: ["airlock.toml"])
        #expect(patch.contains("+cpus = 2"), "\(patch)")
        #expect(!patch.contains("allow-always") && !patch.contains("notes.txt"), "\(patch)")
    }
}
