import AirlockSystem
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL to airlock at many points of start, boot, session, fetch, review and merge: after
/// each, no VMM or helper remains, the project passes `git fsck` and is as it was before the
/// operation or as the operation leaves it, no state file or configuration is half written, no
/// commit of the agent is lost, and the next command works.
@Suite(
    "kill -9 anywhere", .tags(.vm), .serialized, .timeLimit(.minutes(10)),
    .enabled(if: VMEnvironment.available, VMEnvironment.skipReason))
struct KillNineTests {
    /// Runs `arguments` and sends SIGKILL `after` its start (when it is still running);
    /// returns whether it finished by itself first.
    @discardableResult
    func kill9(_ arguments: [String], in project: URL, after delay: Double) async throws -> Bool {
        let process = try CLI.launch(arguments, in: project)
        try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
        let finished = !process.isRunning
        if !finished { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return finished
    }

    func shell(_ script: String, in project: URL) throws -> (status: Int32, output: String) {
        let result = try Spawned.run(
            ["/bin/sh", "-c", script], directory: project.path, environment: ProcessInfo.processInfo.environment, stdin: nil)
        return (result.status, String(decoding: result.stdout + result.stderr, as: UTF8.self))
    }

    /// Processes whose command line names the project (QEMU, virtiofsd: their paths are in it).
    func leftovers(_ project: URL) -> [String] {
        FileSystem.entries("/proc").compactMap { entry -> String? in
            guard let pid = Int32(entry), pid != getpid(), let bytes = try? FileSystem.read("/proc/\(entry)/cmdline", limit: 64 << 10) else {
                return nil
            }
            let line = String(decoding: bytes.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(project.path + "/") && !CLI.isZombie(pid) ? "\(pid): \(line.prefix(160))" : nil
        }
    }

    /// What must hold after every kill; `point` names it in failures.
    func expectIntact(_ project: URL, point: String, configuration: String) async throws {
        var remaining = leftovers(project)
        for _ in 0..<60 where !remaining.isEmpty {
            try await Task.sleep(for: .milliseconds(50))
            remaining = leftovers(project)
        }
        #expect(remaining.isEmpty, "\(point): left running: \(remaining)")
        let fsck = try shell("git fsck --full --no-progress 2>&1 && git for-each-ref >/dev/null", in: project)
        #expect(fsck.status == 0, "\(point): \(fsck.output)")
        #expect(try String(contentsOf: project.appendingPathComponent("airlock.toml"), encoding: .utf8) == configuration, "\(point)")
        let state = project.appendingPathComponent(".airlock/default/state").path
        if let text = try FileSystem.readText(state) {
            #expect(text.hasPrefix("pid=") && text.hasSuffix("\n") && text.contains("vmm_pid="), "\(point): state file \(text)")
        }
        let ps = try CLI.run(["ps", "--json"], in: project)
        #expect(ps.status == 0 && ps.stdout.contains("\"stopped\""), "\(point): \(ps.stdout) \(ps.stderr)")
        let log = try CLI.run(["network", "log", "--json"], in: project)
        #expect(log.status == 0, "\(point): \(log.stderr)")
    }

    @Test("start, boot and session: killed at 10 moments; then the next start works and the agent's commit is kept")
    func startAndSession() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let configuration = "[vm]\ncpus = 1\n"
        try configuration.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let before = try shell("git for-each-ref; git rev-parse HEAD; git status --porcelain", in: project).output
        // The first start makes the clone, the disk and the boot snapshot; the agent commits.
        let first = try CLI.run(
            ["start", "--", "sh", "-c", "git switch -q -c agent && echo one > agent.txt && git add agent.txt && git commit -q -m agent"], in: project)
        #expect(first.status == 0, "\(first.stderr)")
        let agentTip = try shell("git -C .airlock/default/workspace rev-parse agent", in: project).output.trimmingWhitespace()
        let session = ["start", "--", "sh", "-c", "echo more >> agent.txt; git commit -q -a -m more; sleep 30"]
        var interrupted = 0
        defer { print("kill -9: \(interrupted) of 10 starts killed while running") }
        for delay in [0.0, 0.03, 0.1, 0.25, 0.5, 1.0, 1.6, 2.5, 4.0, 7.0] {
            if try await !kill9(session, in: project, after: delay) { interrupted += 1 }
            try await expectIntact(project, point: "start killed after \(delay) s", configuration: configuration)
            #expect(try shell("git for-each-ref; git rev-parse HEAD; git status --porcelain", in: project).output == before, "the project")
            // The agent's first commit is still in its clone.
            let kept = try shell("git -C .airlock/default/workspace merge-base --is-ancestor \(agentTip) agent && echo kept", in: project)
            #expect(kept.output.contains("kept"), "after \(delay) s: \(kept.output)")
            let next = try CLI.run(["start", "--", "true"], in: project)
            #expect(next.status == 0, "the start after a kill after \(delay) s: \(next.stderr)")
        }
        let next = try CLI.run(["start", "--", "git", "log", "--format=%s", "-1", "agent"], in: project)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(["agent\n", "more\n"].contains(next.stdout), "\(next.stdout)")
    }

    @Test("fetch, review and merge: killed at 16 moments; the project is as before or as after, never between")
    func reviewCommands() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let configuration = "[vm]\ncpus = 1\n"
        try configuration.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        _ = try shell("git config user.name t && git config user.email t@example.com && git add airlock.toml && git commit -q -m config", in: project)
        let session = try CLI.run(
            [
                "start", "--", "sh", "-c",
                "for i in $(seq 1 40); do echo $i > file$i.txt; done; git add -A; git commit -q -m 'forty files'; echo edit >> README; git commit -q -a -m edit",
            ], in: project)
        #expect(session.status == 0, "\(session.stderr)")
        let base = try shell("git rev-parse HEAD", in: project).output.trimmingWhitespace()
        /// The project's branches (their trees: a commit made again differs by its date), HEAD,
        /// index and working tree (not the airlock/ remote refs).
        func userState() throws -> String {
            try shell(
                "git for-each-ref --format='%(refname) %(tree)' refs/heads refs/tags; git rev-parse HEAD^{tree}; git diff --quiet && git diff --cached --quiet && echo clean; git status --porcelain --untracked-files=all | grep -v '^?? .airlock'",
                in: project
            ).output
        }
        func reset() throws {
            _ = try shell("git reset -q --hard \(base) && git clean -qfd -e .airlock -e airlock.toml", in: project)
        }
        let untouched = try userState()
        func airlockRefs() throws -> String { try shell("git for-each-ref refs/remotes/airlock/", in: project).output }
        func dropAirlockRefs() throws {
            _ = try shell("git for-each-ref --format='delete %(refname)' refs/remotes/airlock/ | git update-ref --stdin", in: project)
        }

        // Kills at fractions of how long the command takes here (most land while it runs).
        let fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
        func timed(_ command: [String]) throws -> (CLI.Run, Double) {
            let started = Date()
            let result = try CLI.run(command, in: project)
            return (result, Date().timeIntervalSince(started))
        }

        // fetch: the airlock/ refs are all there or none (dropped before each try).
        let (full, fetchTime) = try timed(["fetch"])
        #expect(full.status == 0, "\(full.stderr)")
        let fetched = try airlockRefs()
        var interrupted = 0
        var resumed = 0
        defer {
            print(
                "kill -9: \(interrupted) of 16 fetch, merge and review runs killed while running; \(resumed) checkouts finished by the next command")
        }
        for delay in [0.0] + fractions.map({ $0 * fetchTime }) {
            try dropAirlockRefs()
            if try await !kill9(["fetch"], in: project, after: delay) { interrupted += 1 }
            try await expectIntact(project, point: "fetch killed after \(delay) s", configuration: configuration)
            let refs = try airlockRefs()
            #expect(refs.isEmpty || refs == fetched, "fetch killed after \(delay) s left: \(refs)")
            #expect(try userState() == untouched, "fetch changed the project")
            let next = try CLI.run(["fetch"], in: project)
            let refetched = try airlockRefs()
            #expect(next.status == 0 && refetched == fetched, "the fetch after a kill after \(delay) s: \(next.stderr)")
        }

        // merge and review: HEAD is where it was with nothing changed, or the finished result.
        for command in [["merge"], ["review", "--accept-all", "-m", "reviewed"]] {
            let (done, took) = try timed(command)
            #expect(done.status == 0, "\(command): \(done.stderr)")
            let finished = try userState()
            #expect(finished != untouched)
            for delay in fractions.map({ $0 * took }) {
                try reset()
                if try await !kill9(command, in: project, after: delay) { interrupted += 1 }
                // Right after the kill: as before, as after, or a checkout recorded as begun,
                // which the next airlock command (here `ps`, in `expectIntact`) finishes.
                let immediate = try userState()
                let pending = FileSystem.exists(project.path + "/.git/airlock-checkout")
                if pending { resumed += 1 }
                #expect(immediate == untouched || immediate == finished || pending, "\(command[0]) killed after \(delay) s: \(immediate)")
                try await expectIntact(project, point: "\(command[0]) killed after \(delay) s", configuration: configuration)
                let state = try userState()
                #expect(state == untouched || state == finished, "\(command[0]) killed after \(delay) s: \(state)")
                #expect(!pending || state == finished, "a begun checkout is finished by the next command")
                #expect(!FileSystem.exists(project.path + "/.git/airlock-checkout"))
                if state == untouched {
                    let next = try CLI.run(command, in: project)
                    let after = try userState()
                    #expect(next.status == 0 && after == finished, "\(command[0]) after a kill after \(delay) s: \(next.stderr)")
                }
            }
            try reset()
        }
        // Kills land while the command runs or after it finished (which must hold too). How
        // many land inside depends on how steady the machine's timing is (15 of 16 usually,
        // 7 seen under load): at least 5 keeps the test from passing without interrupting.
        #expect(interrupted >= 5, "only \(interrupted) of 16 kills interrupted a command")
    }
}
