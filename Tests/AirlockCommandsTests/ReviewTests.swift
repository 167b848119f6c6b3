import Foundation
import TestSupport
import Testing

@testable import GitReview

@Suite("fetch, diff, log, merge and review of a sandbox's clone")
struct ReviewFlowTests {
    @Test("fetch imports branches and uncommitted work; diff --stat lists exactly the changed files; merge brings the commits")
    func fullFlow() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.agent(
            """
            git switch -q -c feature
            sed -i 's/^line 5$/line five/' a.txt && echo added > e.txt && git rm -q d.txt && git add -A && git commit -q -m 'first'
            sed -i 's/^b 3$/b three/' b.txt && git commit -q -a -m 'second'
            echo uncommitted >> c.txt
            """)
        let before = try fixture.userState()

        let fetch = try fixture.airlock(["fetch"])
        #expect(fetch.status == 0, "\(fetch.stderr)")
        #expect(fetch.stdout.contains("feature (current)"))
        #expect(fetch.stdout.contains("2 new commits"))
        #expect(fetch.stdout.contains("uncommitted"))
        let refs = try fixture.sh("git for-each-ref --format='%(refname)' refs/remotes/airlock/", in: fixture.project)
        #expect(
            refs.split(separator: "\n").sorted() == [
                "refs/remotes/airlock/default/feature", "refs/remotes/airlock/default/main", "refs/remotes/airlock/default/uncommitted",
            ])
        // The clone was left as it was: its edit is still uncommitted there.
        #expect(try fixture.sh("git status --porcelain", in: fixture.clone) == " M c.txt\n")

        let stat = try fixture.airlock(["diff", "--name-only"])
        #expect(stat.status == 0, "\(stat.stderr)")
        #expect(stat.stdout == "a.txt\nb.txt\nc.txt\nd.txt\ne.txt\n")
        let committedOnly = try fixture.airlock(["diff", "--stat", "--branch", "feature"])
        #expect(committedOnly.stdout.contains("4 files changed"), "\(committedOnly.stdout)")
        let patch = try fixture.airlock(["diff"])
        #expect(patch.stdout.contains("+line five") && patch.stdout.contains("-line 5"))

        let log = try fixture.airlock(["log", "--branch", "feature", "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]]
        #expect(entries?.count == 2)
        // Newest first, each with git's own file list and line counts.
        for (index, entry) in (entries ?? []).enumerated() {
            let numstat = try fixture.sh("git diff --numstat feature~\(index + 1) feature~\(index)", in: fixture.clone)
            let rows = numstat.split(separator: "\n").map { $0.split(separator: "\t") }
            #expect(entry["files"] as? [String] == rows.map { String($0[2]) })
            #expect(entry["additions"] as? Int == rows.reduce(0) { $0 + Int($1[0])! })
            #expect(entry["deletions"] as? Int == rows.reduce(0) { $0 + Int($1[1])! })
        }

        // Until the merge, the user's repository is byte-identical (only refs/remotes/airlock changed).
        #expect(try fixture.userState() == before)

        let merge = try fixture.airlock(["merge"])
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(merge.stdout.contains("fast-forwarded main"))
        #expect(try fixture.sh("git log --format=%s", in: fixture.project) == "second\nfirst\ninitial\n")
        #expect(!FileManager.default.fileExists(atPath: fixture.project.appendingPathComponent("d.txt").path))

        let again = try fixture.airlock(["fetch"])
        #expect(again.stdout.contains("nothing new"), "\(again.stdout)")
        let audit = try String(contentsOf: fixture.project.appendingPathComponent(".airlock/default/audit.jsonl"), encoding: .utf8)
        #expect(audit.contains("\"event\":\"fetch\"") && audit.contains("\"event\":\"merge\""))
    }

    @Test("merge refuses a dirty working tree and a detached HEAD; a conflict leaves git's merge state")
    func mergeRefusalsAndConflicts() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.agent("sed -i 's/^line 1$/agent line 1/' a.txt && git commit -q -a -m agent")

        try fixture.write("local edit\n", to: "b.txt")
        let dirty = try fixture.airlock(["merge"])
        #expect(dirty.status == 1)
        #expect(dirty.stderr.contains("uncommitted changes (b.txt)"))
        try fixture.sh("git checkout -q b.txt && git switch -q --detach", in: fixture.project)
        let detached = try fixture.airlock(["merge"])
        #expect(detached.status == 1)
        #expect(detached.stderr.contains("HEAD is detached"))

        try fixture.sh("git switch -q main && sed -i 's/^line 1$/user line 1/' a.txt && git commit -q -a -m user", in: fixture.project)
        let conflict = try fixture.airlock(["merge"])
        #expect(conflict.status == 1)
        #expect(conflict.stderr.contains("conflicts in:") && conflict.stderr.contains("a.txt"))
        #expect(FileManager.default.fileExists(atPath: fixture.project.appendingPathComponent(".git/MERGE_HEAD").path))
        let text = try String(contentsOf: fixture.project.appendingPathComponent("a.txt"), encoding: .utf8)
        #expect(text.contains("<<<<<<<") && text.contains(">>>>>>>"))
        #expect(try fixture.sh("git status --porcelain", in: fixture.project).contains("UU a.txt"))
    }

    @Test("merge without a fast-forward makes a merge commit; --ff-only refuses it")
    func mergeCommit() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.agent("echo agent >> c.txt && git commit -q -a -m agent")
        try fixture.sh("echo user >> b.txt && git commit -q -a -m user", in: fixture.project)
        let ffOnly = try fixture.airlock(["merge", "--ff-only"])
        #expect(ffOnly.status == 1 && ffOnly.stderr.contains("not a fast-forward"))
        let merge = try fixture.airlock(["merge"])
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(try fixture.sh("git log -1 --format='%P' | wc -w", in: fixture.project).trimmingCharacters(in: .whitespacesAndNewlines) == "2")
        #expect(try fixture.sh("git status --porcelain --untracked-files=no", in: fixture.project) == "")
    }

    @Test(
        "changes to files the host or the user's tools act on are flagged by fetch, diff, log, review and merge; a change to the sandbox's configuration is taken only when confirmed (--yes), and the next start is told"
    )
    func flaggedChanges() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.write("[network]\npolicy = \"allow-always\"\n", to: "airlock.toml", inClone: true)
        try fixture.write("on: push\n", to: ".github/workflows/ci.yml", inClone: true)
        try fixture.write("export X=1\n", to: "sub/.envrc", inClone: true)
        try fixture.agent("echo more >> a.txt && git add -A && git commit -q -m 'agent work'")

        let fetch = try fixture.airlock(["fetch"])
        #expect(fetch.status == 0, "\(fetch.stderr)")
        #expect(fetch.stdout.contains("security-relevant changes"), "\(fetch.stdout)")
        for path in ["airlock.toml", ".github/workflows/ci.yml", "sub/.envrc"] { #expect(fetch.stdout.contains(path), "\(path): \(fetch.stdout)") }
        #expect(!fetch.stdout.contains("  a.txt"))
        let json = try fixture.airlock(["fetch", "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let flagged = report?["flagged"] as? [[String: Any]] ?? []
        #expect(flagged.map { $0["path"] as? String } == [".github/workflows/ci.yml", "airlock.toml", "sub/.envrc"], "\(json.stdout)")
        #expect(flagged.first { $0["path"] as? String == "airlock.toml" }?["policy"] as? Bool == true)
        let diff = try fixture.airlock(["diff", "--name-only"])
        #expect(diff.stderr.contains("security-relevant changes") && diff.stdout.hasPrefix(".github/workflows/ci.yml\n"), "\(diff.stdout)")
        let log = try fixture.airlock(["log", "--json"])
        #expect(log.stdout.contains("\"policy\":true") || log.stdout.contains("\"policy\" : true"), "\(log.stdout)")

        // Without a terminal and without --yes, neither merge nor review takes the configuration.
        let before = try fixture.userState()
        let merge = try fixture.airlock(["merge"])
        #expect(merge.status == 1 && merge.stderr.contains("the sandbox's own configuration") && merge.stderr.contains("--yes"), "\(merge.stderr)")
        let review = try fixture.airlock(["review", "--accept-all"])
        #expect(review.status == 1 && review.stderr.contains("the sandbox's own configuration"), "\(review.stderr)")
        #expect(try fixture.userState() == before)
        // Files that are flagged but not the configuration are taken without a question.
        let other = try fixture.airlock(["review", "--accept", "sub/.envrc", "a.txt"])
        #expect(other.status == 0, "\(other.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fixture.project.path + "/.airlock/policy-changed"))

        let confirmed = try fixture.airlock(["merge", "--yes"])
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        let note = try String(contentsOfFile: fixture.project.path + "/.airlock/policy-changed", encoding: .utf8)
        #expect(note.contains("`airlock merge`") && note.contains("+policy = \"allow-always\"") && !note.contains("ci.yml"), "\(note)")
        // The next start says so once (here it then fails for want of a guest kernel, which is after).
        let start = try fixture.airlock(["start", "--", "true"], environment: ["AIRLOCK_KERNEL": "/nonexistent/vmlinux"])
        #expect(
            start.stderr.contains("this start runs with a configuration the agent changed") && start.stderr.contains("allow-always"),
            "\(start.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fixture.project.path + "/.airlock/policy-changed"))
    }

    @Test("review --accept takes exactly the named files, as one commit with the agent in a trailer")
    func reviewAcceptPaths() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.agent("echo more >> a.txt && echo more >> b.txt && git commit -q -a -m 'agent work'")
        let result = try fixture.airlock(["review", "--accept", "b.txt"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try fixture.sh("git show --name-only --format= HEAD", in: fixture.project) == "b.txt\n")
        let message = try fixture.sh("git log -1 --format=%B", in: fixture.project)
        #expect(message.contains("Co-authored-by: Agent <agent@example.com>"))
        #expect(message.hasPrefix("agent work\n"))
        let unknown = try fixture.airlock(["review", "--accept", "nope.txt"])
        #expect(unknown.status == 1 && unknown.stderr.contains("not changed by the agent: nope.txt"))
        let noTerminal = try fixture.airlock(["review"])
        #expect(noTerminal.status == 1 && noTerminal.stderr.contains("needs a terminal"))
    }

    @Test("review --accept-all --apply changes the working tree only; HEAD stays")
    func reviewApply() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        try fixture.agent("echo more >> a.txt && git rm -q d.txt && git commit -q -a -m 'agent work' && echo new > e.txt")
        let head = try fixture.sh("git rev-parse HEAD", in: fixture.project)
        let result = try fixture.airlock(["review", "--accept-all", "--apply"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try fixture.sh("git rev-parse HEAD", in: fixture.project) == head)
        #expect(try fixture.sh("git status --porcelain", in: fixture.project) == " M a.txt\n D d.txt\n?? e.txt\n")
    }

    @Test("review driven through tmux: one hunk accepted, the other rejected, a whole file rejected", .enabled(if: Tmux.available, "needs tmux"))
    func reviewInteractive() async throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        try fixture.sh("git config user.name User && git config user.email user@example.com", in: fixture.project)
        // a.txt gets two hunks far apart; b.txt one change.
        try fixture.agent(
            "sed -i -e 's/^line 2$/line TWO/' -e 's/^line 19$/line NINETEEN/' a.txt && sed -i 's/^b 1$/b ONE/' b.txt && git commit -q -a -m 'agent edits'"
        )
        let session = "airlock-review-\(getpid())"
        let done = fixture.project.appendingPathComponent(".airlock/review-status")
        let command =
            "cd '\(fixture.project.path)' && HOME='\(fixture.project.path)' GIT_CONFIG_NOSYSTEM=1 PAGER=cat '\(CLI.binary)' review -m 'picked'; echo $? > '\(done.path)'; sleep 30"
        try Tmux.run(["new-session", "-d", "-s", session, "-x", "120", "-y", "40", command])
        defer { _ = try? Tmux.run(["kill-session", "-t", session]) }

        try await Tmux.waitFor(session, toShow: "(1/2) M a.txt", timeout: 30)
        try Tmux.run(["send-keys", "-t", session, "h", "Enter"])
        try await Tmux.waitFor(session, toShow: "a.txt hunk 1/2", timeout: 10)
        try Tmux.run(["send-keys", "-t", session, "y", "Enter"])
        try await Tmux.waitFor(session, toShow: "a.txt hunk 2/2", timeout: 10)
        // Reject, undo, reject again: undo goes back to the same hunk.
        try Tmux.run(["send-keys", "-t", session, "n", "Enter"])
        try await Tmux.waitFor(session, toShow: "(2/2) M b.txt", timeout: 10)
        try Tmux.run(["send-keys", "-t", session, "u", "Enter"])
        try await Tmux.waitFor(session, toShow: "accept this file? [y,n,h,d,u,q,?] u", timeout: 10)
        try Tmux.run(["send-keys", "-t", session, "n", "Enter"])
        try Tmux.run(["send-keys", "-t", session, "n", "Enter"])
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, (try? String(contentsOf: done, encoding: .utf8)) == nil {
            try await Task.sleep(for: .milliseconds(100))
        }
        let screen = try Tmux.run(["capture-pane", "-p", "-t", session])
        #expect((try? String(contentsOf: done, encoding: .utf8)) == "0\n", "pane:\n\(screen)")
        let shown = try fixture.sh("git show --format=%s HEAD", in: fixture.project)
        #expect(shown.contains("picked"))
        #expect(shown.contains("+line TWO"))
        #expect(!shown.contains("NINETEEN"))
        #expect(!shown.contains("b.txt"))
        let a = try String(contentsOf: fixture.project.appendingPathComponent("a.txt"), encoding: .utf8)
        #expect(a.contains("line TWO\n") && a.contains("line 19\n"))
    }
}

@Suite("A hostile clone: fetch refuses or ignores each trick, touches nothing outside, and says what it refused")
struct HostileCloneTests {
    /// Something outside the clone that a trick points at; it must stay as it was.
    static func outsideRepository(_ fixture: ReviewFixture) throws -> URL {
        let outside = fixture.project.appendingPathComponent(".airlock/outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try fixture.sh("git init -q . && echo secret > secret.txt && git add . && git commit -q -m secret", in: outside)
        return outside
    }

    struct Trick: CustomTestStringConvertible, Sendable {
        var name: String
        /// Shell run in the clone; `$OUTSIDE` is a repository outside it.
        var script: String
        /// Fetch fails as a whole (else it succeeds with a refusal).
        var fails: Bool
        /// Words the message must contain.
        var says: String
        var testDescription: String { name }
    }

    static let tricks: [Trick] = [
        Trick(
            name: ".git/objects is a symlink to another repository's objects",
            script: "git commit -q --allow-empty -m x && rm -rf .git/objects && ln -s \"$OUTSIDE/.git/objects\" .git/objects",
            fails: true, says: "objects is missing, a symlink or unreadable"),
        Trick(
            name: "a pack replaced by a symlink to a file outside",
            script:
                "git commit -q --allow-empty -m x && git gc -q && p=$(ls .git/objects/pack/*.pack) && rm \"$p\" && ln -s \"$OUTSIDE/secret.txt\" \"$p\"",
            fails: true, says: "a symlink?"),
        Trick(
            name: "packed-refs is a symlink",
            script:
                "git switch -q -c side && git commit -q --allow-empty -m s && git pack-refs --all && mv .git/packed-refs .git/real && ln -s \"$PWD/.git/real\" .git/packed-refs",
            fails: false, says: "packed-refs ignored: it is a symlink"),
        Trick(
            name: "objects/info/alternates points at another repository",
            script: "echo \"$OUTSIDE/.git/objects\" > .git/objects/info/alternates && git commit -q --allow-empty -m x",
            fails: false, says: "alternates ignored"),
        Trick(
            name: "config with core.fsmonitor and core.hooksPath, and hooks",
            script:
                "git config core.fsmonitor \"touch $OUTSIDE/fsmonitor-ran\" && git config core.hooksPath \"$OUTSIDE\" && printf '#!/bin/sh\\ntouch $OUTSIDE/hook-ran\\n' > .git/hooks/post-checkout && chmod +x .git/hooks/post-checkout && git -c core.fsmonitor=false commit -q --allow-empty -m x",
            fails: false, says: ""),
        Trick(
            name: "a 5 GB sparse loose object",
            script:
                "git commit -q --allow-empty -m x && mkdir -p .git/objects/ab && truncate -s 5G .git/objects/ab/cdef0123456789abcdef0123456789abcdef01",
            fails: false, says: "more than the limit"),
        Trick(
            name: "a loose object whose content does not hash to its name",
            script:
                "git commit -q --allow-empty -m x && mkdir -p .git/objects/ab && printf 'blob 3\\0abc' | python3 -c 'import zlib,sys; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))' > .git/objects/ab/cdef0123456789abcdef0123456789abcdef01",
            fails: false, says: "does not hash to its name"),
        Trick(
            name: "a loose object inflating far past its declared size (a zlib bomb)",
            script:
                "git commit -q --allow-empty -m x && mkdir -p .git/objects/ab && python3 -c 'import zlib,sys; sys.stdout.buffer.write(zlib.compress(b\"blob 10\\0\" + bytes(1 << 30), 9))' > .git/objects/ab/cdef0123456789abcdef0123456789abcdef02",
            fails: false, says: "not a well-formed loose object"),
        Trick(
            name: "a 5 GB sparse file in the working tree",
            script: "truncate -s 5G huge.bin",
            fails: false, says: "huge.bin left out"),
        Trick(
            name: "a ref name with ..",
            script: "git commit -q --allow-empty -m x && cp .git/refs/heads/main '.git/refs/heads/evil..name'",
            fails: false, says: "not a valid branch name"),
        Trick(
            name: "a ref that is a symlink to a file outside",
            script: "ln -s \"$OUTSIDE/.git/refs/heads/master\" .git/refs/heads/stolen",
            fails: false, says: "refs/heads/stolen ignored: it is a symlink"),
        Trick(
            name: ".git is a file pointing at another repository",
            script: "rm -rf .git && echo \"gitdir: $OUTSIDE/.git\" > .git",
            fails: true, says: "is a file"),
        Trick(
            name: ".git is a symlink",
            script: "mv .git ../git-moved && ln -s \"$OUTSIDE/.git\" .git",
            fails: true, says: "is a symlink"),
    ]

    @Test("fetch against a hostile clone", arguments: tricks)
    func trick(_ trick: Trick) throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        let outside = try Self.outsideRepository(fixture)
        let outsideBefore = try fixture.sh("find . -type f -print0 | sort -z | xargs -0 sha1sum; git for-each-ref", in: outside)
        let userBefore = try fixture.userState()
        try fixture.agent("OUTSIDE='\(outside.path)'; " + trick.script)

        let result = try fixture.airlock(["fetch"])
        if trick.fails {
            #expect(result.status == 1, "stdout: \(result.stdout)")
        } else {
            #expect(result.status == 0, "stderr: \(result.stderr)")
        }
        #expect(trick.says.isEmpty || result.stderr.contains(trick.says), "stderr: \(result.stderr)")
        // Nothing outside was touched, nothing ran, and the user's repository only gained airlock refs.
        #expect(try fixture.sh("find . -type f -print0 | sort -z | xargs -0 sha1sum; git for-each-ref", in: outside) == outsideBefore)
        #expect(!FileManager.default.fileExists(atPath: outside.appendingPathComponent("fsmonitor-ran").path))
        #expect(!FileManager.default.fileExists(atPath: outside.appendingPathComponent("hook-ran").path))
        #expect(try fixture.userState() == userBefore)
        let refs = try fixture.sh("git for-each-ref --format='%(refname)'", in: fixture.project)
        #expect(!refs.contains("secret") && !refs.contains("evil") && !refs.contains("stolen"))
        // The secret never became an object of the user's repository.
        let secretBlob = try fixture.sh("echo secret | git hash-object --stdin", in: fixture.project).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.sh("git cat-file -e \(secretBlob) 2>/dev/null && echo present || echo absent", in: fixture.project) == "absent\n")
    }

    @Test("an uncommitted symlink to a host file is captured as a symlink, never as the file's content")
    func symlinkInWorkingTree() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        let outside = try Self.outsideRepository(fixture)
        try fixture.agent("ln -s '\(outside.path)/secret.txt' leak")
        let result = try fixture.airlock(["fetch"])
        #expect(result.status == 0, "\(result.stderr)")
        let mode = try fixture.sh("git ls-tree refs/remotes/airlock/default/uncommitted leak", in: fixture.project)
        #expect(mode.hasPrefix("120000 blob"))
        let content = try fixture.sh("git cat-file -p refs/remotes/airlock/default/uncommitted:leak", in: fixture.project)
        #expect(content == outside.path + "/secret.txt")
    }
}

@Suite("The uncommitted capture matches git's own view of the working tree")
struct UncommittedCaptureTests {
    @Test("edits, additions, deletions, a file turned directory and back, ignored files, modes, symlinks, staged changes")
    func matchesGit() throws {
        let fixture = try ReviewFixture(files: [
            "a.txt": "a\n", "a.b": "dot\n", "a/one": "1\n", "t": "file\n", "dir2/x": "x\n", "run.sh": "#!/bin/sh\n",
            "staged.txt": "s\n", ".gitignore": "build/\n*.log\n", "z/deep/er/file": "deep\n",
        ])
        defer { fixture.cleanUp() }
        try fixture.agent(
            """
            echo changed >> a.txt
            echo new > a/new && echo sibling > a-b && rm a.b
            rm t && mkdir t && echo inside > t/x
            rm -r dir2 && echo now-a-file > dir2
            mkdir -p build && echo ignored > build/out && echo ignored > debug.log
            chmod +x run.sh && ln -s a.txt link
            echo staged >> staged.txt && git add staged.txt
            echo deeper > z/deep/er/new
            """)
        let result = try fixture.airlock(["fetch"])
        #expect(result.status == 0, "\(result.stderr)")
        let ours = try fixture.sh("git rev-parse refs/remotes/airlock/default/uncommitted^{tree}", in: fixture.project)
        // git's own answer, from a copy of the clone.
        let copy = fixture.project.appendingPathComponent(".airlock/copy")
        try fixture.sh("cp -a '\(fixture.clone.path)' '\(copy.path)'", in: fixture.project)
        let theirs = try fixture.sh("git add -A && git write-tree", in: copy)
        let difference =
            ours == theirs
            ? ""
            : try fixture.sh(
                "git diff --stat \(ours.trimmingCharacters(in: .whitespacesAndNewlines)) \(theirs.trimmingCharacters(in: .whitespacesAndNewlines))",
                in: copy)
        #expect(ours == theirs, "airlock's capture differs from git add -A:\n\(difference)")
    }
}

@Suite("airlock's diff of two commits matches git's")
struct DiffMatchesGitTests {
    @Test("names and stat: nested edits, a file turned directory and back, modes, symlinks, deletions, nothing changed")
    func matchesGit() throws {
        let fixture = try ReviewFixture(files: [
            "a.txt": "a\n", "a.b": "dot\n", "a/one": "1\n", "t": "file\n", "dir2/x": "x\n", "dir2/y/z": "z\n", "run.sh": "#!/bin/sh\n",
            "z/deep/er/file": "deep\n", "z/deep/same": "same\n", "z/other/same": "same\n",
            // Names that look like pathspec syntax: none may drop out of a diff.
            "!bang.txt": "1\n", "#hash.txt": "1\n", "back\\slash.txt": "1\n", "star*.txt": "1\n",
            "trailing-space ": "1\n", " leading-space": "1\n",
            "long.txt": "1\n2\n3\n", "image.bin": "\u{0}\u{1}\u{2}", "data.dat": "text\n", ".gitattributes": "*.dat -diff\n",
            "mixed.txt": (1...300).map { "m\($0)\n" }.joined(), "to-link": "was a file\n", "exec.bin": "\u{0}x",
        ])
        defer { fixture.cleanUp() }
        try fixture.agent(
            """
            echo changed >> a.txt
            echo new > a/new && echo sibling > a-b && rm a.b
            rm t && mkdir t && echo inside > t/x
            rm -r dir2 && echo now-a-file > dir2
            chmod +x run.sh && ln -s a.txt link
            echo deeper > z/deep/er/new && rm z/deep/er/file
            for f in '!bang.txt' '#hash.txt' 'back\\slash.txt' 'star*.txt' 'trailing-space ' ' leading-space'; do echo 2 >> "$f"; done
            seq 1 150 > long.txt && printf '\\0\\3' >> image.bin && echo more >> data.dat
            sed -i '1,40d' mixed.txt && seq 1 7 >> mixed.txt && rm to-link && ln -s a.txt to-link && chmod +x exec.bin
            git add -A && git -c user.name=agent -c user.email=agent@example.com commit -q -m work
            """)
        let base = try fixture.sh("git rev-parse HEAD", in: fixture.project).trimmingCharacters(in: .whitespacesAndNewlines)
        let names = try fixture.airlock(["diff", "--name-only"])
        #expect(names.status == 0, "\(names.stderr)")
        // git quotes unusual names (a backslash) unless -z: its NUL-separated list, as lines.
        let gitNames = try fixture.sh("git diff --name-only -z \(base) refs/remotes/airlock/default/main | tr '\\0' '\\n'", in: fixture.project)
        #expect(names.stdout == gitNames)
        let stat = try fixture.airlock(["diff", "--stat"])
        let gitStat = try fixture.sh("git diff --stat=80 --summary \(base) refs/remotes/airlock/default/main", in: fixture.project)
        // Rows name files (` path<padding> | n +-`), then the totals, then create/delete/mode
        // lines. A name's own trailing spaces can't be told from the padding: compared without.
        // Whole rows are compared: names (quoted as git quotes them), counts, bars scaled to the
        // width (long.txt), binary sizes (image.bin, and data.dat through its attribute).
        func trailingTrimmed(_ text: Substring) -> String { String(text.reversed().drop { $0 == " " }.reversed()) }
        func parts(_ text: String) -> (files: Set<String>, rows: [String: String], rest: [String]) {
            let lines = text.split(separator: "\n").map(String.init)
            let rows = lines.filter { $0.contains(" | ") }.map { $0.dropFirst().split(separator: "|", maxSplits: 1) }
            return (
                Set(rows.map { trailingTrimmed($0[0]) }),
                Dictionary(rows.map { (trailingTrimmed($0[0]), String($0[1])) }, uniquingKeysWith: { a, _ in a }),
                lines.filter { !$0.contains(" | ") }.map { $0.trimmingCharacters(in: .whitespaces) }
            )
        }
        #expect(parts(stat.stdout).files == parts(gitStat).files, "\(stat.stdout)")
        #expect(parts(stat.stdout).files.count == gitNames.split(separator: "\n").count)
        #expect(parts(stat.stdout).rest == parts(gitStat).rest, "\(stat.stdout)\n---\n\(gitStat)")
        for (name, row) in parts(stat.stdout).rows {
            #expect(parts(gitStat).rows[name] == row, "\(name): \(row) against git's \(parts(gitStat).rows[name] ?? "nothing")")
        }
        #expect(parts(stat.stdout).rows["data.dat"]?.contains("Bin") == true && parts(stat.stdout).rows["long.txt"]?.contains("+") == true)
        // Nothing changed between a commit and itself.
        let same = try fixture.airlock(["diff", "--name-only", "refs/remotes/airlock/default/main"])
        #expect(same.status == 0 && same.stdout.isEmpty, "\(same.stdout)\(same.stderr)")
    }
}

@Suite("Fetched objects are complete")
struct FetchConnectivityTests {
    @Test(
        "branches, a merge, moved directories and a revert; then an incremental fetch; then one with the fetched refs gone: git fsck finds every object"
    )
    func complete() throws {
        let fixture = try ReviewFixture(files: ["a/x": "1\n", "a/y/z": "2\n", "b.txt": "b\n", "c/d/e/f": "deep\n"])
        defer { fixture.cleanUp() }
        let fsck = {
            try fixture.sh(
                "git fsck --connectivity-only --no-dangling 2>&1 && git rev-list --objects --all | cut -d' ' -f1 | git cat-file --batch-check | grep -c missing || true",
                in: fixture.project)
        }
        try fixture.agent(
            """
            git switch -q -c one && echo 3 >> a/x && git commit -qam one1 && mv c cc && git add -A && git commit -qm moved
            git switch -q -c two main && echo two > a/y/new && git add -A && git commit -qm two1
            git switch -q one && git merge -q --no-edit two && echo 1 > a/x && git commit -qam reverted
            """)
        #expect(try fixture.airlock(["fetch"]).status == 0)
        do {
            let result = try fsck()
            #expect(result == "0\n", "\(result)")
        }
        try fixture.agent("mkdir -p g/h && echo new > g/h/i && git add -A && git commit -qm more && echo dirty >> b.txt")
        #expect(try fixture.airlock(["fetch"]).status == 0)
        do {
            let result = try fsck()
            #expect(result == "0\n", "\(result)")
        }
        try fixture.sh("git for-each-ref --format='delete %(refname)' refs/remotes/airlock/ | git update-ref --stdin", in: fixture.project)
        #expect(try fixture.airlock(["fetch"]).status == 0)
        do {
            let result = try fsck()
            #expect(result == "0\n", "\(result)")
        }
        #expect(try fixture.sh("git log --format=%s refs/remotes/airlock/default/one", in: fixture.project).hasPrefix("more\nreverted\n"))
    }

    @Test("a submodule entry whose commit id equals the id of the directory that replaces it: the tree is still packed")
    func submoduleIDReused() throws {
        let fixture = try ReviewFixture(files: ["a.txt": "a\n"])
        defer { fixture.cleanUp() }
        try fixture.agent(
            """
            mkdir -p /tmp/airlock-subtree-$$ && tree=$(printf 'hello\\n' > /tmp/airlock-subtree-$$/f && git hash-object -w /tmp/airlock-subtree-$$/f | xargs printf '100644 blob %s\\tf\\n' | git mktree) && rm -rf /tmp/airlock-subtree-$$
            git update-index --add --cacheinfo 160000,$tree,x && git commit -qm 'x as a submodule'
            git rm -q --cached x && mkdir x && printf 'hello\\n' > x/f && git add x && git commit -qm 'x as a directory'
            test "$(git rev-parse HEAD:x)" = "$tree"
            """)
        #expect(try fixture.airlock(["fetch"]).status == 0)
        let fsck = try fixture.sh(
            "git fsck --connectivity-only --no-dangling 2>&1; git cat-file -p refs/remotes/airlock/default/main:x/f", in: fixture.project)
        #expect(fsck == "hello\n", "\(fsck)")
    }
}

@Suite("The mirror shares the project's packs")
struct MirrorSharingTests {
    @Test("a clone pack the project holds under the same name is not copied; one with other bytes under that name is not read")
    func sharedPacks() throws {
        let fixture = try ReviewFixture()
        defer { fixture.cleanUp() }
        // A packed project, cloned the way the workspace clone copies objects (names kept).
        try fixture.sh(
            "git gc -q && rm -rf .airlock/default/workspace && git clone -q --no-hardlinks . .airlock/default/workspace", in: fixture.project)
        let pack = try fixture.sh("ls .git/objects/pack/ | grep '\\.pack$'", in: fixture.project).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!pack.isEmpty)
        try fixture.agent("echo more >> a.txt && git -c user.name=agent -c user.email=agent@example.com commit -q -am more")
        let fetched = try fixture.airlock(["fetch"])
        #expect(fetched.status == 0, "\(fetched.stderr)")
        let mirror = fixture.project.appendingPathComponent(".airlock/default/mirror.git")
        #expect(!FileManager.default.fileExists(atPath: mirror.appendingPathComponent("objects/pack/" + pack).path), "the project's pack was copied")
        let alternates = try String(contentsOf: mirror.appendingPathComponent("objects/info/alternates"), encoding: .utf8)
        // The project's objects, then the mirror's own pack of imported loose objects.
        let lines = alternates.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasSuffix("/.git/objects") && lines[1] == mirror.path + "/loose", "\(alternates)")
        let diff = try fixture.airlock(["diff", "--name-only"])
        #expect(diff.stdout == "a.txt\n", "\(diff.stdout)\(diff.stderr)")

        // The clone's copy of that pack replaced by other bytes: the project's pack is read. (After
        // the agent's commit: git in the clone may itself need that pack, and fail on it.)
        try fixture.agent("echo again >> a.txt && git -c user.name=agent -c user.email=agent@example.com commit -q -am again")
        try fixture.agent("chmod u+w .git/objects/pack/\(pack) && head -c 4096 /dev/urandom > .git/objects/pack/\(pack)")
        let again = try fixture.airlock(["fetch"])
        #expect(again.status == 0, "\(again.stderr)")
        let log = try fixture.sh("git log --format=%s refs/remotes/airlock/default/main -3", in: fixture.project)
        #expect(log.hasPrefix("again\nmore\n"), "\(log)")
    }
}

@Suite("The change journal: a fetch after a session reads only what the session touched, and finds what a full scan finds")
struct ChangeJournalTests {
    /// Runs `before` in the clone, then `session` between a journal's begin and seal (the test
    /// plays the guest, writing the clone directly), then fetches. Returns how the fetch looked
    /// at the working tree, and whether its capture equals git's (`git add -A` in a copy) and a
    /// full rescan's.
    static func session(_ fixture: ReviewFixture, before: String = "", _ session: String) throws -> (
        check: String?, matchesGit: Bool, matchesRescan: Bool
    ) {
        if !before.isEmpty { try fixture.agent(before) }
        let state = fixture.project.appendingPathComponent(".airlock/default").path
        let recorder = try #require(
            ChangeJournal.Recorder.begin(
                project: fixture.project.path, clone: fixture.clone.path, mirror: state + "/mirror.git", file: state + "/changes.json"))
        // The agent starts once the VM has booted, by when the baseline (taken during the boot)
        // is there; without a VM the test waits for it as the boot would.
        #expect(recorder.waitForBaseline())
        try fixture.agent(session)
        recorder.seal()
        let fetched = try fixture.airlock(["fetch", "--json"])
        #expect(fetched.status == 0, "\(fetched.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(fetched.stdout.utf8)) as? [String: Any]
        let tree = {
            try fixture.sh(
                "git rev-parse refs/remotes/airlock/default/uncommitted^{tree} 2>/dev/null || git rev-parse refs/remotes/airlock/default/main^{tree}",
                in: fixture.project)
        }
        let ours = try tree()
        let copy = fixture.project.appendingPathComponent(".airlock/copy")
        try fixture.sh("rm -rf '\(copy.path)' && cp -a '\(fixture.clone.path)' '\(copy.path)'", in: fixture.project)
        let theirs = try fixture.sh("git add -A && git write-tree", in: copy)
        let rescan = try fixture.airlock(["fetch", "--rescan"])
        #expect(rescan.status == 0, "\(rescan.stderr)")
        return (report?["workingTreeCheck"] as? String, ours == theirs, ours == (try tree()))
    }

    static let files = [
        "a.txt": "a\n", "a.b": "dot\n", "a/one": "1\n", "t": "file\n", "dir2/x": "x\n", "dir2/y/z": "z\n", "run.sh": "#!/bin/sh\n",
        "staged.txt": "s\n", ".gitignore": "build/\n*.log\n", "z/deep/er/file": "deep\n", "keep/k": "k\n", "untouched.txt": "u\n",
    ]

    @Test("edits, additions, deletions, type changes, modes, symlinks, moved and new directories, staging, commits, work left from before")
    func matchesFullScan() throws {
        let fixture = try ReviewFixture(files: Self.files)
        defer { fixture.cleanUp() }
        let result = try Self.session(
            fixture,
            before: """
                echo before >> keep/k && echo loose > loose-before.txt && echo staged-before >> untouched.txt && git add untouched.txt
                """,
            """
            echo changed >> a.txt
            echo new > a/new && echo sibling > a-b && rm a.b
            rm t && mkdir t && echo inside > t/x
            rm -r dir2 && echo now-a-file > dir2
            mkdir -p build && echo ignored > build/out && echo ignored > debug.log
            chmod +x run.sh && ln -s a.txt link
            echo staged >> staged.txt && git add staged.txt
            mv z zz && echo deeper > zz/deep/er/new
            mkdir -p fresh/nested/dir && echo f > fresh/nested/dir/f && echo g > fresh/g && rm fresh/g
            echo committed >> a/one && git commit -q -m 'agent' a/one
            git rm -q --cached untouched.txt
            """)
        #expect(result.check == "journal")
        #expect(result.matchesGit && result.matchesRescan)
    }

    @Test("a session that changed nothing: the capture is the work left from before")
    func quietSession() throws {
        let fixture = try ReviewFixture(files: Self.files)
        defer { fixture.cleanUp() }
        let result = try Self.session(fixture, before: "echo before >> a.txt && echo new > new.txt", "true")
        #expect(result.check == "journal")
        #expect(result.matchesGit && result.matchesRescan)
    }

    @Test(
        "what the journal can't vouch for makes fetch read every file",
        arguments: [
            "echo 'a.txt' >> .gitignore",  // ignore rules changed
            "ln a.txt second-name && echo through-the-link >> second-name",  // a hard link
        ])
    func fallsBackToScan(_ session: String) throws {
        let fixture = try ReviewFixture(files: Self.files)
        defer { fixture.cleanUp() }
        let result = try Self.session(fixture, session)
        #expect(result.check == "scan")
        #expect(result.matchesGit && result.matchesRescan)
    }

    @Test("a file name that is not UTF-8 makes fetch read every file")
    func notUTF8() throws {
        let fixture = try ReviewFixture(files: Self.files)
        defer { fixture.cleanUp() }
        let result = try Self.session(fixture, "echo x > \"$(printf 'bad\\377name')\"")
        #expect(result.check == "scan")
    }

    @Test("an edit on the host after the session is seen by --rescan, and by the next session's baseline")
    func rescan() throws {
        let fixture = try ReviewFixture(files: Self.files)
        defer { fixture.cleanUp() }
        _ = try Self.session(fixture, "echo in-session >> a.txt")
        try fixture.agent("echo by-hand >> untouched.txt")
        let captured = {
            try fixture.sh("git diff --name-only refs/remotes/airlock/default/main refs/remotes/airlock/default/uncommitted", in: fixture.project)
        }
        let journalled = try fixture.airlock(["fetch"])
        #expect(journalled.status == 0)
        #expect(try captured() == "a.txt\n")  // the journal's blind spot
        let rescan = try fixture.airlock(["fetch", "--rescan", "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(rescan.stdout.utf8)) as? [String: Any]
        #expect(report?["workingTreeCheck"] as? String == "scan")
        #expect(try captured() == "a.txt\nuntouched.txt\n")
        try fixture.agent("echo by-hand-again >> b-by-hand.txt")
        let next = try Self.session(fixture, "true")
        #expect(next.check == "journal" && next.matchesGit)
    }
}
