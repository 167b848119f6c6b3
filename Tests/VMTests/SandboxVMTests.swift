import AirlockSystem
import Foundation
import TestSupport
import Testing

@Suite(
    "Sandboxes in real VMs", .tags(.vm), .serialized, .timeLimit(.minutes(3)),
    .enabled(if: VMEnvironment.available, VMEnvironment.skipReason))
struct SandboxVMTests {
    @Test("start -- sh -c 'echo hello; exit 7': prints hello, exits 7")
    func exitStatus() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(["start", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7"], in: project)
        #expect(result.status == 7, "stderr: \(result.stderr)")
        #expect(result.stdout == "hello\n")
        #expect(result.stderr.contains("oops"))
    }

    @Test("the guest agent keeps transparent huge pages off for itself (2 MB per idle thread stack); what it runs has them")
    func hugePages() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(
            ["start", "--", "sh", "-c", "cat /sys/kernel/mm/transparent_hugepage/enabled; grep -h THP_enabled /proc/1/status /proc/self/status"],
            in: project)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout == "[always] madvise never\nTHP_enabled:\t0\nTHP_enabled:\t1\n", "\(result.stdout)")
    }

    @Test("[env] ${NAME}: from the vault (airlock secrets) when the host's environment lacks it; the host's value wins")
    func environmentFromVault() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try "[env]\nFROM_VAULT = \"${VAULT_ONLY}\"\nFROM_HOST = \"${IN_BOTH}\"\n".write(
            to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let data = ["XDG_DATA_HOME": project.appendingPathComponent(".data").path]
        for (name, value) in [("VAULT_ONLY", "kept-in-the-vault"), ("IN_BOTH", "the-vault-loses")] {
            let add = try CLI.run(["secrets", "add", name, "--stdin"], in: project, environment: data, stdin: Data(value.utf8))
            #expect(add.status == 0, "\(add.stderr)")
        }
        var environment = data
        environment["IN_BOTH"] = "the-host-wins"
        let result = try CLI.run(["start", "--", "sh", "-c", "echo \"$FROM_VAULT $FROM_HOST\""], in: project, environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "kept-in-the-vault the-host-wins\n")
    }

    @Test("stdin through a pipe, with its end of file: printf 'a\\nb\\n' | airlock start -- wc -l → 2")
    func stdinPipe() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(["start", "--", "wc", "-l"], in: project, stdin: Data("a\nb\n".utf8))
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
    }

    @Test("100 MB through stdout arrive intact")
    func largeOutput() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // `seq` prints the same bytes on both sides; the host computes its own expectation.
        let count = 14_000_000
        let result = try CLI.run(["start", "--", "seq", "1", "\(count)"], in: project)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let reference = Data(try Spawned.run(["/usr/bin/seq", "1", "\(count)"], directory: "/", environment: [:], stdin: nil).stdout)
        #expect(reference.count > 100_000_000)
        #expect(result.stdoutData.count == reference.count)
        #expect(result.stdoutData == reference)
    }

    @Test("a file the command writes lands in the sandbox's clone, not in the project; the project itself is not visible")
    func writesGoToTheClone() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // An untracked file of the project (like a .env): the VM sees the clone, never the project.
        try "TOKEN=secret\n".write(to: project.appendingPathComponent("untracked.env"), atomically: true, encoding: .utf8)
        let result = try CLI.run(
            [
                "start", "--", "sh", "-c",
                """
                pwd; echo agent > made-in-vm.txt; cat README
                test -e untracked.env && echo project-visible
                exit 0
                """,
            ], in: project)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout == project.path + "\nhello\n")
        #expect(!FileManager.default.fileExists(atPath: project.appendingPathComponent("made-in-vm.txt").path))
        let clone = project.appendingPathComponent(".airlock/default/workspace/made-in-vm.txt")
        #expect((try? String(contentsOf: clone, encoding: .utf8)) == "agent\n")
    }

    @Test("/usr/local changes persist in the same sandbox and are absent from another")
    func persistence() throws {
        let project = try VMEnvironment.repository()
        defer {
            _ = try? CLI.run(["rm", "--force", "--name", "other"], in: project)
            VMEnvironment.cleanUp(project)
        }
        let install = try CLI.run(
            [
                "start", "--", "sh", "-c",
                // As an installer would: root inside the VM, whoever runs airlock on the host.
                "sudo sh -c \"mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho installed\\n' > /usr/local/bin/tool && chmod +x /usr/local/bin/tool\"",
            ], in: project)
        #expect(install.status == 0, "stderr: \(install.stderr)")
        let again = try CLI.run(["start", "--", "tool"], in: project)
        #expect(again.status == 0, "stderr: \(again.stderr)")
        #expect(again.stdout == "installed\n")
        let other = try CLI.run(["start", "--name", "other", "--", "sh", "-c", "test ! -e /usr/local/bin/tool"], in: project)
        #expect(other.status == 0, "stderr: \(other.stderr)")
        // And the host's own /usr/local is untouched.
        #expect(
            !FileManager.default.fileExists(atPath: "/usr/local/bin/tool")
                || (try? String(contentsOfFile: "/usr/local/bin/tool", encoding: .utf8)) != "#!/bin/sh\necho installed\n")
    }

    @Test("root inside the VM: sudo without a password, whoever runs airlock; files the agent makes in the clone stay the user's")
    func sudoInTheVM() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let result = try CLI.run(
            [
                "start", "--", "sh", "-c",
                """
                id -u; sudo id -u; sudo -n true && echo non-interactive; sudo -E sh -c 'echo $HOME'; sudo sh -c 'echo $HOME $SUDO_UID'
                touch mine.txt; sudo -u nobody true 2>&1 || echo refused-other-user
                sudo apt-get install -y hello 2>&1 | head -1
                """,
            ], in: project)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let uid = getuid()
        #expect(Array(lines.prefix(3)) == ["\(uid)", "0", "non-interactive"], "\(result.stdout)")
        #expect(lines.count > 4 && lines[4] == "/root \(uid)", "\(result.stdout)")
        if uid != 0 { #expect(lines.count > 3 && lines[3] != "/root", "-E keeps the caller's HOME: \(result.stdout)") }
        #expect(result.stdout.contains("airlock's sudo runs commands as root only, not as nobody\nrefused-other-user"), "\(result.stdout)")
        #expect(result.stdout.contains("has no package database"), "an agent trying apt in the host root reads what to do: \(result.stdout)")
        let mine = project.appendingPathComponent(".airlock/default/workspace/mine.txt").path
        let owner = (try? FileManager.default.attributesOfItem(atPath: mine)[.ownerAccountID]) as? Int
        #expect(owner == Int(uid), "a file the agent made in the clone is the user's")
    }

    /// The first start of a VM configuration boots once more to save a boot snapshot; every
    /// start resumes it. What a resumed guest must renew, it does: its state disk is read
    /// afresh (not from the snapshot boot's scratch disk: the file written in the first start
    /// is there in the second), its randomness differs, and a snapshot that does not load is
    /// dropped for a normal boot.
    @Test(
        "boot snapshots: made once per configuration, resumed by every start; the state disk and randomness are the VM's own; a damaged one is dropped"
    )
    func bootSnapshots() throws {
        // The cache beside the project, not in it (the project's change check watches it).
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-snapshots-\(UUID().uuidString.prefix(8))")
        let project = try VMEnvironment.repository(in: parent)
        defer {
            VMEnvironment.cleanUp(project)
            try? FileManager.default.removeItem(at: parent)
        }
        let cache = parent.appendingPathComponent("cache")
        let environment = ["XDG_CACHE_HOME": cache.path]
        let random = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo"
        let first = try CLI.run(
            ["start", "--verbose", "--", "sh", "-c", "echo kept | sudo tee /usr/local/kept > /dev/null; \(random)"], in: project,
            environment: environment)
        #expect(first.status == 0, "stderr: \(first.stderr)")
        #expect(first.stderr.contains("preparing a boot snapshot"), "\(first.stderr)")
        #expect(first.stderr.contains("resumed the boot snapshot"), "\(first.stderr)")
        let snapshots = cache.appendingPathComponent("airlock/snapshots")
        let files = try FileManager.default.contentsOfDirectory(atPath: snapshots.path)
        #expect(files.count == 1 && files[0].hasSuffix(".state"), "one snapshot, no leftovers: \(files)")
        let state = snapshots.appendingPathComponent(files[0]).path
        #expect(((try? FileManager.default.attributesOfItem(atPath: state)[.posixPermissions]) as? Int) == 0o600)

        let second = try CLI.run(["start", "--verbose", "--", "sh", "-c", "cat /usr/local/kept; \(random)"], in: project, environment: environment)
        #expect(second.status == 0, "stderr: \(second.stderr)")
        #expect(!second.stderr.contains("preparing a boot snapshot"), "\(second.stderr)")
        #expect(second.stderr.contains("resumed the boot snapshot"), "\(second.stderr)")
        let lines = second.stdout.split(separator: "\n")
        #expect(lines.first == "kept", "the state disk written by the first start, not the snapshot boot's: \(second.stdout)")
        #expect(
            lines.count == 2 && lines[1].count == 32 && lines[1] != first.stdout.split(separator: "\n").first,
            "fresh randomness: \(first.stdout) / \(second.stdout)")

        // A snapshot that does not load: dropped, and the VM boots normally.
        try Data(repeating: 0, count: 4096).write(to: URL(fileURLWithPath: state))
        let damaged = try CLI.run(["start", "--verbose", "--", "cat", "/usr/local/kept"], in: project, environment: environment)
        #expect(damaged.status == 0, "stderr: \(damaged.stderr)")
        #expect(damaged.stdout == "kept\n")
        #expect(damaged.stderr.contains("the boot snapshot did not load"), "\(damaged.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state))
    }

    @Test("a corrupt initramfs: a clear error with the console's last lines")
    func corruptInitramfs() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let corrupt = project.appendingPathComponent("corrupt-initramfs")
        try Data(repeating: 0x5A, count: 4096).write(to: corrupt)
        let result = try CLI.run(["start", "--", "true"], in: project, environment: ["AIRLOCK_INITRAMFS": corrupt.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("error: the guest kernel panicked during boot"), "\(result.stderr)")
        #expect(result.stderr.contains("last lines of the console"))
        #expect(result.stderr.contains("  | "))
    }

    @Test(
        "a boot that stalls before the guest agent starts: booted once more, then a clear error",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "needs busybox-static"))
    func stalledBoot() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // An initramfs whose /init waits forever and never says a word: the guest agent never starts.
        let root = project.appendingPathComponent("stalled-root")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root.appendingPathComponent("bin/busybox").path)
        for applet in ["sh", "sleep"] { symlink("busybox", root.appendingPathComponent("bin/" + applet).path) }
        try "#!/bin/sh\nwhile true; do sleep 1000; done\n".write(to: root.appendingPathComponent("init"), atomically: true, encoding: .utf8)
        chmod(root.appendingPathComponent("init").path, 0o755)
        let image = project.appendingPathComponent("stalled-initramfs")
        let packed = try Spawned.run(
            ["/bin/sh", "-c", "find . | cpio -o -H newc --quiet > \(image.path)"], directory: root.path, environment: ["PATH": "/usr/bin:/bin"],
            stdin: nil)
        #expect(packed.status == 0)
        try "[vm]\nboot_snapshot = false\n".write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let result = try CLI.run(["start", "--verbose", "--", "true"], in: project, environment: ["AIRLOCK_INITRAMFS": image.path])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(
            result.stderr.contains("the guest's kernel stalled before the guest agent started (nothing from it in 60 s); booting again"),
            "\(result.stderr)")
        #expect(result.stderr.contains("error: the guest's kernel stalled before the guest agent started"), "\(result.stderr)")
        #expect(result.stderr.components(separatedBy: "booting sandbox default").count == 3, "two boots: \(result.stderr)")
    }

    @Test("while a sandbox runs: ps shows it, exec and a second start join it, another sandbox runs alongside, stop ends it")
    func concurrentSessions() async throws {
        let project = try VMEnvironment.repository()
        defer {
            _ = try? CLI.run(["rm", "--force", "--name", "second"], in: project)
            VMEnvironment.cleanUp(project)
        }
        let ownerErrors = project.appendingPathComponent(".airlock-owner-stderr")
        let main = try CLI.launch(["start", "--", "sleep", "600"], in: project, stderr: ownerErrors)
        defer { main.terminate() }
        try await CLI.waitUntilRunning(project, name: "default", process: main)

        let ps = try CLI.run(["ps", "--json"], in: project)
        let rows = try JSONSerialization.jsonObject(with: ps.stdoutData) as? [[String: Any]]
        let row = rows?.first { $0["name"] as? String == "default" }
        #expect(row?["state"] as? String == "running")
        #expect(row?["backend"] as? String == "qemu")
        // Its VMM runs jailed: the seccomp filter in force, no new privileges, no core dumps.
        let vmm = row?["vmmPID"] as? Int ?? 0
        let status = (try? String(contentsOfFile: "/proc/\(vmm)/status", encoding: .utf8)) ?? ""
        #expect(vmm > 0 && status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "vmmPid \(vmm): \(status)")
        let limits = (try? String(contentsOfFile: "/proc/\(vmm)/limits", encoding: .utf8)) ?? ""
        #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max core file size") && $0.contains(" 0 ") }, "\(limits)")

        let exec = try CLI.run(["exec", "--", "cat", "/etc/hostname"], in: project)
        #expect(exec.status == 0, "stderr: \(exec.stderr)")
        #expect(exec.stdout == "airlock-default\n")
        // A large output through the attach socket arrives whole, followed by its status.
        let relayed = try CLI.run(["exec", "--", "sh", "-c", "seq 1 3000000; exit 5"], in: project)
        #expect(relayed.status == 5, "stderr: \(relayed.stderr)")
        let reference = try Spawned.run(["/usr/bin/seq", "1", "3000000"], directory: "/", environment: [:], stdin: nil).stdout
        #expect(relayed.stdoutData == Data(reference))
        let joined = try CLI.run(["start", "--", "sh", "-c", "hostname; exit 4"], in: project)
        #expect(joined.status == 4, "stderr: \(joined.stderr)")
        #expect(joined.stdout == "airlock-default\n")

        let other = try CLI.run(["start", "--name", "second", "--", "cat", "/etc/hostname"], in: project)
        #expect(other.status == 0, "stderr: \(other.stderr)")
        #expect(other.stdout == "airlock-second\n")
        #expect(main.isRunning)

        let stop = try CLI.run(["stop"], in: project)
        #expect(stop.status == 0, "stderr: \(stop.stderr)")
        main.waitUntilExit()
        let owner = (try? String(contentsOf: ownerErrors, encoding: .utf8)) ?? ""
        #expect(owner.contains("sandbox default was stopped (`airlock stop`) before the command ended"), "owner said: \(owner)")
        let after = try CLI.run(["exec", "--", "true"], in: project)
        #expect(after.status == 1)
        #expect(after.stderr.contains("is not running"))
    }

    @Test("starts at the same moment: one boots, the others wait and join; the sandbox lives until its last session ends")
    func simultaneousStarts() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // The first start owns the sandbox and runs the shortest command; two more start while
        // it boots, wait for it and join; they must still finish after the owner's command.
        let commands = [
            "sleep 3; echo one > one.txt", "sleep 8; echo two > two.txt", "sleep 10; cat README > three.txt",
        ]
        let first = CLI.runInBackground(["start", "--", "sh", "-c", commands[0]], in: project)
        let state = project.appendingPathComponent(".airlock/default/state")
        for _ in 0..<600 where !FileManager.default.fileExists(atPath: state.path) { try await Task.sleep(for: .milliseconds(50)) }
        let others = CLI.runConcurrently(commands.dropFirst().map { ["start", "--", "sh", "-c", $0] }, in: project)
        let results = [first()] + others
        for (command, result) in zip(commands, results) {
            #expect(result?.status == 0, "\(command): \(result?.stderr ?? "did not run")")
        }
        let clone = project.appendingPathComponent(".airlock/default/workspace")
        for (file, text) in [("one.txt", "one\n"), ("two.txt", "two\n"), ("three.txt", "hello\n")] {
            #expect((try? String(contentsOf: clone.appendingPathComponent(file), encoding: .utf8)) == text, "\(file)")
        }
        // One boot: the owner's session is the only one in the audit log.
        let audit = (try? String(contentsOf: project.appendingPathComponent(".airlock/default/audit.jsonl"), encoding: .utf8)) ?? ""
        #expect(audit.components(separatedBy: "\"session.start\"").count - 1 == 1, "\(audit)")
        #expect(results[0]?.stderr.contains("other sessions still run in sandbox default") == true, "\(results[0]?.stderr ?? "")")
    }

    @Test("kill -9 of airlock: no QEMU remains")
    func killNine() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let main = try CLI.launch(["start", "--", "sleep", "600"], in: project)
        let vmm = try await CLI.waitUntilRunning(project, name: "default", process: main)
        #expect(kill(vmm, 0) == 0)
        kill(main.processIdentifier, SIGKILL)
        main.waitUntilExit()
        var gone = false
        for _ in 0..<100 {
            if kill(vmm, 0) != 0 || CLI.isZombie(vmm) {
                gone = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(gone, "QEMU (pid \(vmm)) still runs after its airlock was killed")
        // The next start works on the same sandbox.
        let again = try CLI.run(["start", "--", "true"], in: project)
        #expect(again.status == 0, "stderr: \(again.stderr)")
    }

    @Test("^C during boot: airlock ends, QEMU goes with it, the sandbox starts again")
    func interruptDuringBoot() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // A command that outlasts the boot: a ^C that lands after a resumed snapshot's quick
        // boot still ends a running command, never a finished one.
        let main = try CLI.launch(["start", "--", "sleep", "30"], in: project)
        // The state file names QEMU as soon as it runs; the guest is still booting then.
        let stateFile = project.appendingPathComponent(".airlock/default/state")
        var vmm: Int32?
        let deadline = Date().addingTimeInterval(60)
        while vmm == nil, Date() < deadline, main.isRunning {
            vmm = (try? String(contentsOf: stateFile, encoding: .utf8))?.split(separator: "\n")
                .first { $0.hasPrefix("vmm_pid=") }.flatMap { Int32($0.dropFirst("vmm_pid=".count)) }
            if vmm == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let pid = try #require(vmm, "QEMU never started")
        kill(main.processIdentifier, SIGINT)
        main.waitUntilExit()
        #expect(main.terminationReason == .uncaughtSignal || main.terminationStatus != 0)
        var gone = false
        for _ in 0..<100 {
            if kill(pid, 0) != 0 || CLI.isZombie(pid) {
                gone = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(gone, "QEMU (pid \(pid)) still runs after ^C")
        let ps = try CLI.run(["ps", "--json"], in: project)
        #expect(ps.stdout.contains("\"stopped\""), "\(ps.stdout)")
        let again = try CLI.run(["start", "--", "echo", "again"], in: project)
        #expect(again.status == 0 && again.stdout == "again\n", "stderr: \(again.stderr)")
    }

    @Test("a real session's work comes home: fetch, diff --stat, merge; --fresh and --with-changes")
    func workComesHome() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let files = FileManager.default
        for name in ["one.txt", "two.txt", "gone.txt", "kept.txt"] {
            try "\(name)\n".write(to: project.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try VMEnvironment.git(["add", "-A"], in: project)
        try VMEnvironment.git(["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "files"], in: project)
        func userState() throws -> String {
            let result = try Spawned.run(
                [
                    "/bin/sh", "-c",
                    """
                    git for-each-ref --format='%(refname) %(objectname)' | grep -v '^refs/remotes/airlock/'; git rev-parse HEAD; sha1sum .git/index
                    find . -path ./.git -prune -o -path ./.airlock -prune -o -type f -print0 | sort -z | xargs -0 sha1sum
                    """,
                ], directory: project.path, environment: ProcessInfo.processInfo.environment, stdin: nil)
            return String(decoding: result.stdout, as: UTF8.self)
        }
        let before = try userState()

        // The agent: a new branch, two commits (two edits, one file added, one deleted), one uncommitted edit.
        let session = try CLI.run(
            [
                "start", "--", "sh", "-c",
                """
                set -e
                git switch -q -c agent-work
                echo edited >> one.txt; echo edited >> two.txt; git commit -q -a -m 'edit two files'
                echo new > three.txt; git rm -q gone.txt; git add three.txt; git commit -q -m 'add one, delete one'
                echo uncommitted >> kept.txt
                """,
            ], in: project)
        #expect(session.status == 0, "stderr: \(session.stderr)")
        #expect(!session.stderr.contains("project changed"), "\(session.stderr)")
        #expect(try userState() == before, "the session changed the user's repository")

        // The session's change journal (inotify on the clone while the guest wrote it through
        // the VMM) names what changed: the fetch reads only those files, and finds what a
        // rescan of every file finds.
        let journalled = try CLI.run(["fetch", "--json"], in: project)
        let report = try JSONSerialization.jsonObject(with: Data(journalled.stdout.utf8)) as? [String: Any]
        #expect(report?["workingTreeCheck"] as? String == "journal", "\(journalled.stdout)\(journalled.stderr)")
        #expect(report?["uncommittedPaths"] as? [String] == ["kept.txt"])
        let fetch = try CLI.run(["fetch", "--rescan"], in: project)
        #expect(fetch.status == 0, "stderr: \(fetch.stderr)")
        #expect(fetch.stdout.contains("nothing new"), "the rescan found what the journal did: \(fetch.stdout)")
        let reset = try Spawned.run(
            ["/bin/sh", "-c", "git for-each-ref --format='delete %(refname)' refs/remotes/airlock/ | git update-ref --stdin"],
            directory: project.path, environment: ProcessInfo.processInfo.environment, stdin: nil)
        #expect(reset.status == 0)
        let fresh = try CLI.run(["fetch"], in: project)
        #expect(fresh.stdout.contains("agent-work (current)") && fresh.stdout.contains("2 new commits"), "\(fresh.stdout)")
        #expect(fresh.stdout.contains("uncommitted"))
        let committed = try CLI.run(["diff", "--name-only", "--branch", "agent-work"], in: project)
        #expect(committed.stdout == "gone.txt\none.txt\nthree.txt\ntwo.txt\n")
        let all = try CLI.run(["diff", "--stat"], in: project)
        #expect(all.stdout.contains("5 files changed"), "\(all.stdout)")
        #expect(try userState() == before, "fetch or diff changed the user's repository")

        let merge = try CLI.run(["merge"], in: project)
        #expect(merge.status == 0, "stderr: \(merge.stderr)")
        #expect(files.fileExists(atPath: project.appendingPathComponent("three.txt").path))
        #expect(!files.fileExists(atPath: project.appendingPathComponent("gone.txt").path))

        // --with-changes carries the user's uncommitted edit into a fresh clone; --fresh first
        // fetches the old clone (its uncommitted work is kept on airlock/default/uncommitted).
        try "mine\n".write(to: project.appendingPathComponent("kept.txt"), atomically: true, encoding: .utf8)
        let restart = try CLI.run(["start", "--fresh", "--with-changes", "--", "sh", "-c", "cat kept.txt; git log --format=%s -1; ls"], in: project)
        #expect(restart.status == 0, "stderr: \(restart.stderr)")
        #expect(restart.stdout.hasPrefix("mine\nUncommitted changes from"), "\(restart.stdout)")
        #expect(restart.stdout.contains("three.txt"), "the fresh clone starts from the merged branch")
    }

    @Test(
        "[mask.*] in a real VM: a masked untracked file never reaches the VM (--with-changes included); what the agent writes there never comes home")
    func masks() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try "[mask.secrets]\npaths = [\"secrets\", \"deploy.key\"]\n".write(
            to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        try VMEnvironment.git(["add", "airlock.toml"], in: project)
        try VMEnvironment.git(["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "masks"], in: project)
        let files = FileManager.default
        try files.createDirectory(at: project.appendingPathComponent("secrets"), withIntermediateDirectories: true)
        try "TOKEN=host-secret\n".write(to: project.appendingPathComponent("secrets/token"), atomically: true, encoding: .utf8)
        try "KEY\n".write(to: project.appendingPathComponent("deploy.key"), atomically: true, encoding: .utf8)
        try "mine\n".write(to: project.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)

        let session = try CLI.run(
            [
                "start", "--with-changes", "--", "sh", "-c",
                "cat notes.txt; ls -a; git log --all --format=%H | while read c; do git ls-tree -r --name-only $c; done | sort -u; "
                    + "mkdir -p secrets; echo agent > secrets/made; echo agent > deploy.key; echo ok > work.txt",
            ], in: project)
        #expect(session.status == 0, "stderr: \(session.stderr)")
        #expect(session.stdout.hasPrefix("mine\n"), "the unmasked change is carried over: \(session.stdout)")
        // Neither in the working tree nor in any commit of the clone.
        #expect(!session.stdout.contains("secrets") && !session.stdout.contains("deploy.key"), "\(session.stdout)")

        let fetch = try CLI.run(["fetch", "--json"], in: project)
        #expect(fetch.status == 0, "stderr: \(fetch.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(fetch.stdout.utf8)) as? [String: Any]
        #expect(report?["uncommittedPaths"] as? [String] == ["work.txt"], "\(fetch.stdout)")
        let refused = report?["refused"] as? [String] ?? []
        #expect(
            refused.contains("deploy.key left out: [mask.secrets] hides it") && refused.contains("secrets/made left out: [mask.secrets] hides it"),
            "\(refused)")
        // The project's own files are untouched.
        #expect(try String(contentsOf: project.appendingPathComponent("deploy.key"), encoding: .utf8) == "KEY\n")
    }

    @Test(
        "[workspace] mode = \"mount\" in a real VM: the agent's work lands in the project; even as root it cannot write, move or remove .git, the configuration or .airlock, nor see a mask; read_only holds"
    )
    func mountMode() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let root = project.path
        try "[workspace]\nmode = \"mount\"\n\n[mask.secrets]\npaths = [\"secret.env\", \"private\"]\n".write(
            toFile: root + "/airlock.toml", atomically: true, encoding: .utf8)
        try FileSystem.makeDirectories(root + "/private")
        try FileSystem.write(root + "/private/key", Array("PRIVATE\n".utf8))
        try FileSystem.write(root + "/secret.env", Array("TOKEN=host-secret\n".utf8))
        let gitConfig = try FileSystem.readText(root + "/.git/config") ?? ""
        let script = #"""
            echo agent > work.txt && echo wrote-work
            cat secret.env private/key; sudo cat secret.env private/key
            echo "airlock entries: $(sudo ls -A .airlock | wc -l)"
            sudo sh -c 'echo x > .git/hooks/pre-commit' 2>/dev/null && echo BAD-hook
            sudo sh -c 'echo x >> .git/config' 2>/dev/null && echo BAD-git-config
            sudo sh -c 'echo x >> airlock.toml' 2>/dev/null && echo BAD-config
            sudo sh -c 'echo x > airlock.local.toml' 2>/dev/null && echo BAD-local-config
            sudo rm airlock.local.toml 2>/dev/null && echo BAD-rm-local-config
            sudo mv .git git-moved 2>/dev/null && echo BAD-mv-git
            sudo mv secret.env exposed 2>/dev/null && echo BAD-mv-mask
            sudo mkdir .airlock/x 2>/dev/null && echo BAD-airlock
            sudo mount -o remount,rw "$PWD" 2>/dev/null; sudo sh -c 'echo x > .git/hooks/post-checkout' 2>/dev/null && echo BAD-remount-hook
            git add work.txt 2>/dev/null && echo BAD-git-add
            echo done
            """#
        let session = try CLI.run(["start", "--", "sh", "-c", script], in: project)
        #expect(session.status == 0, "stderr: \(session.stderr)")
        let out = session.stdout
        #expect(out.hasPrefix("wrote-work\nairlock entries: 0\n") && out.hasSuffix("done\n"), "\(out)")
        #expect(!out.contains("BAD-") && !out.contains("host-secret") && !out.contains("PRIVATE"), "\(out)")
        #expect(session.stderr.contains("created an empty airlock.local.toml"), "\(session.stderr)")
        // The work is in the project; nothing the host acts on changed.
        #expect(try FileSystem.readText(root + "/work.txt") == "agent\n")
        #expect(try FileSystem.readText(root + "/secret.env") == "TOKEN=host-secret\n")
        #expect(try FileSystem.readText(root + "/airlock.local.toml") == "")
        #expect(try FileSystem.readText(root + "/.git/config") == gitConfig)
        #expect(!FileSystem.exists(root + "/.git/hooks/pre-commit") && !FileSystem.exists(root + "/.git/hooks/post-checkout"))
        #expect(!FileSystem.exists(root + "/git-moved") && !FileSystem.exists(root + "/exposed") && !FileSystem.exists(root + "/.airlock/x"))
        // Nothing to fetch: the work is already there.
        let fetch = try CLI.run(["fetch"], in: project)
        #expect(fetch.status != 0 && fetch.stderr.contains("shares the project itself"), "\(fetch.stderr)")

        // read_only: the project as it is, nothing written.
        try "[workspace]\nread_only = true\n".write(toFile: root + "/airlock.local.toml", atomically: true, encoding: .utf8)
        let readOnly = try CLI.run(
            [
                "start", "--", "sh", "-c",
                "cat work.txt; echo x > new.txt 2>/dev/null && echo BAD-write; sudo rm work.txt 2>/dev/null && echo BAD-rm; true",
            ],
            in: project)
        #expect(readOnly.status == 0, "stderr: \(readOnly.stderr)")
        #expect(readOnly.stdout == "agent\n", "\(readOnly.stdout)")
        #expect(!FileSystem.exists(root + "/new.txt") && FileSystem.exists(root + "/work.txt"))
    }

    @Test(
        "[mounts.*] in a real VM: directories and single files, read-only against root (write, remount, umount), a file without its siblings, read-write both ways"
    )
    func mounts() throws {
        let project = try VMEnvironment.repository()
        let host = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-mount-src-\(UUID().uuidString.prefix(8))").path
        defer {
            VMEnvironment.cleanUp(project)
            try? FileSystem.removeTree(host)
        }
        for directory in ["ro", "rw", "etc"] { try FileSystem.makeDirectories(host + "/" + directory) }
        try FileSystem.write(host + "/ro/hello.txt", Array("from the host\n".utf8))
        try FileSystem.write(host + "/etc/app.conf", Array("setting = 1\n".utf8))
        try FileSystem.write(host + "/etc/secret", Array("sibling\n".utf8))
        try FileSystem.write(host + "/state.json", Array("{}\n".utf8))
        try """
        [mounts.a-ro-dir]
        source = "\(host)/ro"
        target = "/srv/ro"
        [mounts.b-rw-dir]
        source = "\(host)/rw"
        target = "~/rw"
        read_only = false
        [mounts.c-ro-file]
        source = "\(host)/etc/app.conf"
        target = "~/.config/app/app.conf"
        [mounts.d-rw-file]
        source = "\(host)/state.json"
        target = "config/state.json"
        read_only = false
        [mounts.e-created]
        source = "\(host)/created/new.json"
        target = "/etc/new.json"
        missing = "create-file"
        file_content = "{\\"made\\": true}"
        """.write(toFile: project.path + "/airlock.local.toml", atomically: true, encoding: .utf8)
        let script = #"""
            cat /srv/ro/hello.txt; cat /etc/new.json; echo
            echo x > /srv/ro/new 2>/dev/null && echo BAD-user-write-ro-dir
            sudo sh -c 'echo x > /srv/ro/new' 2>/dev/null && echo BAD-root-write-ro-dir
            sudo mount -o remount,rw /srv/ro 2>/dev/null; sudo sh -c 'echo x > /srv/ro/new2' 2>/dev/null && echo BAD-remount-write-ro-dir
            echo agent > ~/rw/made.txt && echo rw-dir-ok
            cat ~/.config/app/app.conf; stat -c %u ~/.config ~/.config/app | tr '\n' ' '; id -u
            sudo sh -c "echo x >> $HOME/.config/app/app.conf" 2>/dev/null && echo BAD-root-write-ro-file
            sudo mount -o remount,rw,bind "$HOME/.config/app/app.conf" 2>/dev/null
            sudo sh -c "echo x >> $HOME/.config/app/app.conf" 2>/dev/null && echo BAD-remount-write-ro-file
            echo '{"agent": 1}' > config/state.json && echo rw-file-ok
            echo "staged: $(sudo ls -A /proc/1/root/mnt/shares/mounts-ro | tr '\n' ' ')"
            sudo umount "$HOME/.config/app/app.conf" && echo "under the mount: $(wc -c < "$HOME/.config/app/app.conf") bytes"
            """#
        let session = try CLI.run(["start", "--", "sh", "-c", script], in: project)
        #expect(session.status == 0, "stderr: \(session.stderr)")
        let out = session.stdout
        #expect(out.hasPrefix("from the host\n{\"made\": true}\n"), "\(out)")
        #expect(!out.contains("BAD-"), "\(out)")
        #expect(out.contains("rw-dir-ok") && out.contains("rw-file-ok"), "\(out)")
        let uid = getuid()
        #expect(out.contains("setting = 1\n\(uid) \(uid) \(uid)\n"), "parents of a mount in the home are the user's: \(out)")
        #expect(out.contains("staged: file2 file4 \n"), "the staging share holds the mounted files only, never a sibling: \(out)")
        #expect(out.contains("under the mount: 0 bytes"), "\(out)")
        // The host sees the read-write writes, and nothing else changed.
        #expect(try FileSystem.readText(host + "/rw/made.txt") == "agent\n")
        #expect(try FileSystem.readText(host + "/state.json") == "{\"agent\": 1}\n")
        #expect(try FileSystem.readText(host + "/etc/app.conf") == "setting = 1\n")
        #expect(try FileSystem.list(host + "/ro") == ["hello.txt"])
        // What a mount covers in the project is not the agent's work.
        let fetch = try CLI.run(["fetch", "--json"], in: project)
        #expect(fetch.status == 0, "stderr: \(fetch.stderr)")
        #expect(!fetch.stdout.contains("\"config/state.json\"") && !fetch.stdout.contains("\"config\""), "\(fetch.stdout)")
    }

    @Test(
        "[daemons.*] in a real VM: started before sessions as the agent, restarted as configured, logs in the root, ps shows them live, stopped with their signal (SIGKILL after the timeout)"
    )
    func daemons() async throws {
        let project = try VMEnvironment.repository()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-daemon-out-\(UUID().uuidString.prefix(8))").path
        try FileSystem.makeDirectories(out)
        defer {
            VMEnvironment.cleanUp(project)
            try? FileSystem.removeTree(out)
        }
        try #"""
        [mounts.out]
        source = "\#(out)"
        target = "/srv/out"
        read_only = false
        [daemons.web]
        command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "8123", "--directory", "/srv/out"]
        [daemons.flaky]
        command = ["sh", "-c", "echo run; echo oops >&2; exit 3"]
        max_restarts = 2
        [daemons.once]
        command = ["sh", "-c", "echo done"]
        restart = "on-failure"
        [daemons.graceful]
        command = ["sh", "-c", "trap 'echo \"$GREETING from $(pwd) as $(id -u)\" > /srv/out/stopped; exit 0' INT; while :; do sleep 0.2; done"]
        signal = "SIGINT"
        cwd = "~"
        env = { GREETING = "${TEST_GREETING}" }
        [daemons.stubborn]
        command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"]
        timeout = 1
        """#.write(toFile: project.path + "/airlock.local.toml", atomically: true, encoding: .utf8)
        let main = try CLI.launch(["start", "--", "sleep", "600"], in: project, environment: ["TEST_GREETING": "hello"])
        defer { main.terminate() }
        try await CLI.waitUntilRunning(project, name: "default", process: main)

        let probe = #"""
            for i in $(seq 100); do
              python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8123/")' 2>/dev/null \
                && [ "$(wc -l < /airlock/daemons/flaky/stdout.log)" -ge 3 ] && break
              sleep 0.3
            done
            echo "web: $(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8123/").status)')"
            echo "flaky: $(tr '\n' ' ' < /airlock/daemons/flaky/stdout.log)/ $(wc -l < /airlock/daemons/flaky/stderr.log)"
            echo "once: $(cat /airlock/daemons/once/stdout.log)"
            """#
        let seen = try CLI.run(["exec", "--", "sh", "-c", probe], in: project)
        #expect(seen.status == 0, "stderr: \(seen.stderr)")
        #expect(seen.stdout == "web: 200\nflaky: run run run / 3\nonce: done\n", "\(seen.stdout)")

        let ps = try CLI.run(["ps", "--json"], in: project)
        let rows = try JSONSerialization.jsonObject(with: ps.stdoutData) as? [[String: Any]]
        let daemons = (rows?.first?["daemons"] as? [[String: Any]] ?? []).reduce(into: [String: [String: Any]]()) {
            $0[$1["name"] as? String ?? ""] = $1
        }
        #expect(daemons["web"]?["state"] as? String == "running" && (daemons["web"]?["pid"] as? Int ?? 0) > 0, "\(ps.stdout)")
        #expect(daemons["flaky"]?["state"] as? String == "failed" && daemons["flaky"]?["restarts"] as? Int == 2, "\(ps.stdout)")
        #expect(daemons["flaky"]?["lastExit"] as? Int == 3, "\(ps.stdout)")
        #expect(daemons["once"]?["state"] as? String == "exited" && daemons["once"]?["lastExit"] as? Int == 0, "\(ps.stdout)")
        #expect(try CLI.run(["ps"], in: project).stdout.contains("flaky failed, graceful running, once exited, stubborn running, web running"))

        let stop = try CLI.run(["stop"], in: project)
        #expect(stop.status == 0, "stderr: \(stop.stderr)")
        let user = try CLI.run(["exec", "--", "true"], in: project)
        #expect(user.status != 0, "stopped")
        let home = getuid() == 0 ? "/root" : "/home/" + (getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "")
        #expect(try FileSystem.readText(out + "/stopped") == "hello from \(home) as \(getuid())\n")
        let console = try FileSystem.readText(project.path + "/.airlock/default/console.log", limit: 8 << 20) ?? ""
        #expect(console.contains("daemon stubborn: still running 1 s after its signal; killed"), "\(console.suffix(2000))")
    }

    @Test("the guest's network: fake DNS, nothing but TCP leaves, no DNS query leaves, loopback is the VM's own")
    func guestNetwork() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        // A service on the host's loopback that the VM must not reach.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        listen(listener, 8)
        let port = UInt16(bigEndian: address.sin_port)

        let probe = TestFixtures.path("network-probe.py")
        // Through stdin: the VM sees the clone, and an untracked file of the project is not in it.
        let result = try CLI.run(["start", "--", "/usr/bin/python3", "-", "\(port)"], in: project, stdin: try Data(contentsOf: probe))
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = Dictionary(
            result.stdout.split(separator: "\n").map { line -> (String, String) in
                let parts = line.split(separator: " ", maxSplits: 1)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            }, uniquingKeysWith: { $1 })
        let fake = lines["dns-a"] ?? ""
        #expect(fake.hasPrefix("rcode=0 answers=1 address=198.1"), "\(result.stdout)")
        #expect(lines["dns-a-again"] == fake, "the same name (any case, trailing dot) keeps its address")
        #expect(lines["dns-a-tcp"] == fake)
        #expect(lines["dns-aaaa"] == "rcode=0 answers=0 address=-")
        for type in ["txt", "mx", "any"] { #expect(lines["dns-" + type] == "rcode=5 answers=0 address=-", "\(type): \(result.stdout)") }
        #expect(lines["dns-long"]?.hasPrefix("rcode=0 answers=1 address=198.1") == true)
        #expect(lines["localhost"] == "127.0.0.1")
        #expect(lines["getaddrinfo"]?.hasPrefix("198.1") == true, "the system resolver in the VM uses the guest's DNS")
        #expect(lines["udp-external"]?.hasPrefix("blocked") == true, "\(result.stdout)")
        #expect(lines["ipv6"] == "blocked")
        #expect(lines["icmp"] == "blocked")
        #expect(lines["loopback"] == "refused", "127.0.0.1 in the VM must be the VM's own loopback")
        // No DNS query reached the host: nothing was judged, nothing resolved there.
        let log = try CLI.run(["network", "log", "--json"], in: project)
        #expect(!log.stdout.contains("denied.example") && !log.stdout.contains("example.com"), "\(log.stdout)")
    }

    @Test(
        "the network policy end to end: allowed, private refused, denied with a 403 that explains, IP literals, TLS by SNI, port and socket forwards, 200 connections"
    )
    func egressPolicy() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let servers = try TestServers.start(in: project)
        defer { servers.stop() }
        // Names point at 127.0.0.1 through the test-only resolver override (environment only).
        try """
        [network.rules.test]
        allow = ["allowed.test:\(servers.http)", "allowed.test:\(servers.tls)", "both.test", "192.0.2.7"]
        deny = ["both.test"]
        allow_private = true

        [network.rules.public]
        allow = ["public.test"]

        [network.ports.back]
        host = ["\(servers.http):\(servers.http + 2)"]

        [network.sockets.echo]
        host = "\(servers.unix)"
        guest = "/run/airlock/echo.sock"

        [network.sockets.gone]
        host = "\(servers.unix).gone"
        guest = "/run/airlock/gone.sock"
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        try VMEnvironment.git(["add", "airlock.toml"], in: project)
        try VMEnvironment.git(["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "rules"], in: project)
        let probe = TestFixtures.path("egress-probe.py")
        let names = ["allowed.test", "public.test", "denied.test", "both.test"].map { "\($0)=127.0.0.1" }.joined(separator: ",")
        let result = try CLI.run(
            [
                "start", "--", "/usr/bin/python3", "-", "\(servers.http)", "\(servers.tls)", "\(servers.http + 2)", "/run/airlock/echo.sock",
                "/run/airlock/gone.sock",
            ], in: project,
            environment: ["AIRLOCK_TEST_ONLY_RESOLVE": names, "AIRLOCK_TEST_ONLY_UPSTREAM_CA": servers.ca], stdin: try Data(contentsOf: probe))
        #expect(result.status == 0, "stderr: \(result.stderr)")
        var lines: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let parts = line.split(separator: "|", maxSplits: 1)
            if parts.count == 2 { lines[String(parts[0])] = String(parts[1]) }
        }
        #expect(lines["allowed"]?.hasPrefix("200 hello") == true, "\(result.stdout)")
        #expect(
            lines["no-private"]?.hasPrefix("403") == true && lines["no-private"]?.contains("allow_private = true") == true,
            "public.test resolves to 127.0.0.1 and its rule has no allow_private: \(result.stdout)")
        #expect(
            lines["denied"]?.hasPrefix("403") == true && lines["denied"]?.contains("allow = [\"denied.test:\(servers.http)\"]") == true,
            "\(result.stdout)")
        #expect(lines["denied-port"]?.hasPrefix("403") == true)
        #expect(lines["both"]?.hasPrefix("403") == true, "deny wins over allow")
        #expect(lines["ip-literal"]?.hasPrefix("failed") == true || lines["ip-literal"]?.hasPrefix("403") == true)
        #expect(lines["tls-allowed"]?.hasPrefix("ok HTTP/1.0 200") == true, "intercepted, and the upstream verified: \(result.stdout)")
        #expect(lines["tls-denied"]?.hasPrefix("failed ConnectionResetError") == true, "refused at once: \(result.stdout)")
        #expect(
            lines["tls-ip-with-allowed-sni"]?.hasPrefix("failed") == true || lines["tls-ip-with-allowed-sni"] == "ok HTTP/1.0 502 Bad Gateway",
            "an allowed SNI must not carry a connection to an address no rule names with allow_private")
        #expect(lines["forward"]?.hasPrefix("200 hello") == true, "guest forward: \(result.stdout)")
        #expect(lines["concurrent"] == "200/200")
        #expect(lines["unix"] == "15000 ping over unix ", "socket forward: \(result.stdout)")
        // No server at the host path: the guest's connection is reset (or just closed).
        #expect(lines["unix-gone"]?.hasPrefix("failed") == true || lines["unix-gone"]?.hasPrefix("0 ") == true, "\(result.stdout)")

        // Every decision is in the audit log.
        let log = try CLI.run(["network", "log", "--json"], in: project)
        #expect(log.stdout.contains("\"denied.test\"") && log.stdout.contains("\"allowed.test\""), "\(log.stdout.prefix(2000))")
        #expect(
            log.stdout.contains("\"sockets.echo\"") && log.stdout.contains(servers.unix)
                && log.stdout.contains("cannot connect to the host socket \(servers.unix).gone"),
            "the socket forwards are audited: \(log.stdout.suffix(2000))")
    }

    @Test(
        "a hostile guest's floods stay bounded: the console log within 1 MiB (rotated), thousands of identical denials coalesced into a few audit records that count them"
    )
    func floods() throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let script = #"""
            sudo sh -c 'head -c 1500000 /dev/zero | tr "\0" x > /dev/ttyS0; echo; echo flood-end > /dev/ttyS0'
            python3 - <<'EOF'
            import socket
            for i in range(2000):
                try:
                    socket.create_connection(("flood.test", 80), timeout=10).close()
                except OSError:
                    pass
            print("connections done")
            EOF
            """#
        let session = try CLI.run(["start", "--", "sh", "-c", script], in: project)
        #expect(session.status == 0, "stderr: \(session.stderr)")
        #expect(session.stdout.contains("connections done"), "\(session.stdout)")
        let state = project.path + "/.airlock/default"
        let console = (FileSystem.size(state + "/console.log") ?? 0) + (FileSystem.size(state + "/console.log.1") ?? 0)
        #expect(console <= 1 << 20 && FileSystem.exists(state + "/console.log.1"), "\(console) bytes of console log")
        #expect(FileSystem.tailLines(of: state + "/console.log", count: 40).contains { $0.contains("flood-end") })
        let records = ((try FileSystem.readText(state + "/audit.jsonl", limit: 64 << 20)) ?? "").split(separator: "\n").filter {
            $0.contains(#""event":"network""#) && $0.contains("flood.test")
        }
        let counted = try records.map { line -> Int in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return 1 + ((object?["details"] as? [String: Any])?["repeated"] as? Int ?? 0)
        }
        // Every judged denial is counted (a connection the program closes before the guest asks
        // the host is never judged, so not all 2,000 need reach it).
        #expect(records.count <= 6 && counted.reduce(0, +) > 1000, "\(records.count) records counting \(counted.reduce(0, +)) denials")
    }

    @Test(
        "[workspace] max_size: a guest writing past it is paused and the host's usage stays near the limit; without a terminal the session ends; a start over the limit is refused, fetch still works; a limit raised while paused lets it go on"
    )
    func diskGuard() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        try "[workspace]\nmax_size = \"48M\"\n".write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        let clone = project.path + "/.airlock/default/workspace"

        // 200 MB written without a terminal: paused past 48 MiB, ended after the grace.
        let started = Date()
        let flood = try CLI.run(["start", "--", "sh", "-c", "dd if=/dev/zero of=fill bs=1M count=200 2>&1; echo dd-finished"], in: project)
        #expect(flood.status != 0 && !flood.stdout.contains("dd-finished"), "stdout: \(flood.stdout) stderr: \(flood.stderr)")
        #expect(flood.stderr.contains("sandbox default is paused: sandbox default's workspace holds"), "\(flood.stderr)")
        #expect(flood.stderr.contains("over [workspace] max_size = 48"), "\(flood.stderr)")
        #expect(flood.stderr.contains("paused too long at its disk limit"), "\(flood.stderr)")
        let written = FileSystem.size(clone + "/fill") ?? 0
        let usage = FileSystem.allocatedSize(clone)
        print(
            "disk guard: the guest wrote \(written) bytes (workspace \(usage) bytes) against a 48 MiB limit, in \(Date().timeIntervalSince(started)) s"
        )
        #expect(written > 48 << 20 && usage < 150 << 20, "written \(written), workspace \(usage)")
        let audit = (try FileSystem.readText(project.path + "/.airlock/default/audit.jsonl", limit: 16 << 20)) ?? ""
        let pauses = audit.split(separator: "\n").filter { $0.contains(#""event":"limit.disk""#) }
        #expect(pauses.count == 1, "one record per pause")
        print("disk guard: paused at \(pauses.first.map(String.init) ?? "?")")

        // A start finds the workspace over: refused, with the way out; fetch works.
        let refused = try CLI.run(["start", "--", "true"], in: project)
        #expect(refused.status != 0 && refused.stderr.contains("airlock.toml:2:"), "\(refused.stderr)")
        #expect(refused.stderr.contains("airlock fetch") && refused.stderr.contains("max_size"), "\(refused.stderr)")
        let fetch = try CLI.run(["fetch"], in: project)
        #expect(fetch.status == 0, "\(fetch.stderr)")

        // A limit above what it holds: it starts; past the new limit it pauses, and raising the
        // limit again while paused lets it finish.
        let local = project.appendingPathComponent("airlock.local.toml")
        try "[workspace]\nmax_size = \"160M\"\n".write(to: local, atomically: true, encoding: .utf8)
        let errors = project.appendingPathComponent(".airlock-owner-stderr")
        let more = try CLI.launch(
            ["start", "--", "sh", "-c", "dd if=/dev/zero of=more bs=1M count=150 2>/dev/null && echo more-finished"], in: project, stderr: errors)
        defer { more.terminate() }
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, more.isRunning, !((try? String(contentsOf: errors, encoding: .utf8)) ?? "").contains("is paused") {
            try await Task.sleep(for: .milliseconds(100))
        }
        try "[workspace]\nmax_size = \"1G\"\n".write(to: local, atomically: true, encoding: .utf8)
        more.waitUntilExit()
        let said = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        #expect(more.terminationStatus == 0, "\(said)")
        #expect(said.contains("is paused") && said.contains("goes on: there is room again"), "\(said)")
        #expect(FileSystem.size(clone + "/more") == 150 << 20)
    }

    @Test(
        "the host's free-space floor: a guest filling a small file system is paused before it is full, the session ends without a terminal, and a start is refused until there is room",
        .enabled(if: getuid() == 0, "needs root, to mount a small tmpfs for the project"))
    func diskFloor() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-floor-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        let mounted = try Spawned.run(
            ["/bin/mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", base.path], directory: "/", environment: [:], stdin: nil)
        #expect(mounted.status == 0)
        defer {
            _ = try? Spawned.run(["/bin/umount", "-l", base.path], directory: "/", environment: [:], stdin: nil)
            try? FileManager.default.removeItem(at: base)
        }
        let project = try VMEnvironment.repository(in: base)
        defer { VMEnvironment.cleanUp(project) }
        // A state disk the small file system can hold (a start refuses one larger than the space).
        try "[disk]\nsize = \"200M\"\n".write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        // 1 GiB: airlock keeps 51.2 MiB free there (5%), room for the guest writing on while it is
        // being paused (a few MB at TCG speed).
        let flood = try CLI.run(["start", "--", "sh", "-c", "dd if=/dev/zero of=fill bs=1M count=1100 2>&1; echo dd-finished"], in: project)
        #expect(flood.status != 0, "stdout: \(flood.stdout) stderr: \(flood.stderr)")
        #expect(flood.stderr.contains("sandbox default is paused: the file system of \(project.path) has"), "\(flood.stderr)")
        #expect(flood.stderr.contains("below the 51.2 MiB airlock leaves free on the host"), "\(flood.stderr)")
        let free = try FileManager.default.attributesOfFileSystem(forPath: base.path)[.systemFreeSize] as? Int ?? 0
        print("disk floor: \(free) bytes free on the 1 GiB file system after the session")
        #expect(free > 16 << 20, "the file system was never filled: \(free) bytes free")
        let refused = try CLI.run(["start", "--", "true"], in: project)
        #expect(refused.status != 0 && refused.stderr.contains("airlock leaves free on the host"), "\(refused.stderr)")
        try FileManager.default.removeItem(at: project.appendingPathComponent(".airlock/default/workspace/fill"))
        let again = try CLI.run(["start", "--", "true"], in: project)
        #expect(again.status == 0, "\(again.stderr)")
    }

    @Test("guest = [\"host:guest\"]: the host's port reaches a server in the guest, on 127.0.0.1 only")
    func hostForward() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let hostPort = 20000 + Int(getpid() % 10000)
        try """
        [network.ports.web]
        guest = ["\(hostPort):8000"]
        """.write(to: project.appendingPathComponent("airlock.toml"), atomically: true, encoding: .utf8)
        try VMEnvironment.git(["add", "airlock.toml"], in: project)
        try VMEnvironment.git(["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ports"], in: project)
        let main = try CLI.launch(["start", "--", "/usr/bin/python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"], in: project)
        defer { _ = try? CLI.run(["stop"], in: project) }
        try await CLI.waitUntilRunning(project, name: "default", process: main)
        var answer = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let result = try Spawned.run(
                ["/usr/bin/curl", "-s", "-m", "5", "http://127.0.0.1:\(hostPort)/"], directory: "/", environment: [:], stdin: nil)
            answer = String(decoding: result.stdout, as: UTF8.self)
            if answer.contains("Directory listing") { break }
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(answer.contains("Directory listing"), "the forward never answered: \(answer)")
        let listening = try Spawned.run(
            ["/bin/sh", "-c", "ss -ltnH 'sport = :\(hostPort)'"], directory: "/", environment: ProcessInfo.processInfo.environment, stdin: nil)
        let text = String(decoding: listening.stdout, as: UTF8.self)
        #expect(text.contains("127.0.0.1:\(hostPort)") && !text.contains("0.0.0.0:\(hostPort)") && !text.contains("*:\(hostPort)"), "\(text)")
    }

    @Test("an interactive shell through tmux: output, window size, ^C, exit status", .enabled(if: Tmux.available, "needs tmux"))
    func interactive() async throws {
        let project = try VMEnvironment.repository()
        defer { VMEnvironment.cleanUp(project) }
        let session = "airlock-test-\(getpid())"
        let status = project.appendingPathComponent("exit-status")
        let environment = ["AIRLOCK_KERNEL", "AIRLOCK_INITRAMFS"].compactMap { name in
            ProcessInfo.processInfo.environment[name].map { "\(name)='\($0)'" }
        }.joined(separator: " ")
        let command = "cd '\(project.path)' && env \(environment) '\(CLI.binary)' start -- bash --norc -i; echo $? > '\(status.path)'; sleep 30"
        try Tmux.run(["new-session", "-d", "-s", session, "-x", "100", "-y", "30", command])
        defer { _ = try? Tmux.run(["kill-session", "-t", session]) }

        try await Tmux.waitFor(session, toShow: "bash")
        try Tmux.run(["send-keys", "-t", session, "echo marker-$((6*7))", "Enter"])
        try await Tmux.waitFor(session, toShow: "marker-42")

        try Tmux.run(["resize-window", "-t", session, "-x", "120", "-y", "40"])
        try Tmux.run(["send-keys", "-t", session, "stty size", "Enter"])
        try await Tmux.waitFor(session, toShow: "40 120")

        try Tmux.run(["send-keys", "-t", session, "sleep 100", "Enter"])
        try await Task.sleep(for: .milliseconds(500))
        try Tmux.run(["send-keys", "-t", session, "C-c"])
        try Tmux.run(["send-keys", "-t", session, "echo still-$((1+1))", "Enter"])
        try await Tmux.waitFor(session, toShow: "still-2", timeout: 20)

        try Tmux.run(["send-keys", "-t", session, "exit 3", "Enter"])
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? String(contentsOf: status, encoding: .utf8)) == nil {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect((try? String(contentsOf: status, encoding: .utf8)) == "3\n")
    }
}
