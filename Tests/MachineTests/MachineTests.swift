import AirlockSystem
import Foundation
import Machine
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("The machine layer's helper processes")
struct MachineLayerTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "airlock-machine-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(path)
        return path
    }

    @Test("a helper runs in a session of its own with nothing of the user's environment; its output lands in the log")
    func spawnedHelper() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let log = root + "/vmm.log"
        setenv("AIRLOCK_SECRET_FOR_TEST", "leaked", 1)
        defer { unsetenv("AIRLOCK_SECRET_FOR_TEST") }
        let helper = try VMMProcess.spawn("/bin/sh", ["-c", "env; echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$"], log: log)
        let status = await helper.wait()
        #expect(status.map { ExitStatus(waitStatus: $0).code } == 0)
        let text = try FileSystem.readText(log) ?? ""
        #expect(!text.contains("AIRLOCK_SECRET_FOR_TEST"))
        #expect(text.contains("PATH=/usr/local/bin:/usr/bin:/bin"))
        #expect(text.contains("sid=\(helper.pid) pid=\(helper.pid)"), "the helper leads its own session: \(text)")
    }

    @Test("terminate: SIGTERM first, SIGKILL after the grace for a helper that ignores it; always reaped")
    func termination() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let stubborn = try VMMProcess.spawn("/bin/sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], log: root + "/log")
        while !(((try? FileSystem.readText(root + "/log")) ?? nil)?.contains("ready") ?? false) { try await Task.sleep(for: .milliseconds(10)) }
        let started = ContinuousClock.now
        await VMMProcess.terminate(stubborn, grace: .milliseconds(300))
        #expect(stubborn.hasExited)
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        #expect(kill(stubborn.pid, 0) != 0)
        #expect(await VMMProcess.exited(stubborn, within: .zero))
    }

    @Test("a virtiofsd that exits before making its socket is named, with its log's last lines; none is left running")
    func virtiofsdFailure() async throws {
        let root = try scratch()
        defer { try? FileSystem.removeTree(root) }
        let fake = root + "/virtiofsd"
        try FileSystem.write(fake, Array("#!/bin/sh\necho \"refusing $2\" >&2\nexit 1\n".utf8), mode: 0o755)
        let share = MachineSpec.Share(tag: "usr", hostPath: "/usr", readOnly: true)
        let error = await #expect(throws: MachineError.self) {
            _ = try await Virtiofsd.start(fake, serving: [.init(share: share, socket: root + "/fs0.sock")], log: root + "/vmm.log")
        }
        #expect(error?.message.contains("virtiofsd for /usr exited before creating its socket") == true)
        #expect(error?.consoleTail.contains { $0.contains("refusing --shared-dir=/usr") } == true)
    }

    @Test("virtiofsd's arguments are fixed flags; the shared directory can never read as an option")
    func virtiofsdArguments() {
        let share = MachineSpec.Share(tag: "x", hostPath: "--help", readOnly: true)
        let arguments = Virtiofsd.arguments(socket: "/run/fs0.sock", share: share)
        #expect(arguments.contains("--shared-dir=--help") && arguments.contains("--readonly"))
        #expect(arguments.allSatisfy { $0.hasPrefix("--") })
        #expect(!Virtiofsd.arguments(socket: "/s", share: .init(tag: "w", hostPath: "/w", readOnly: false)).contains("--readonly"))
    }

    @Test("an image layer stays on 9p even with virtiofsd; the machine error prints the console's last lines")
    func transportsAndErrors() {
        #expect(ShareTransport.qemu(for: .init(tag: "l", hostPath: "/l", readOnly: true, mappedOwnership: true), virtiofsd: true) == .ninep)
        #expect(ShareTransport.qemu(for: .init(tag: "w", hostPath: "/w", readOnly: false), virtiofsd: true) == .virtiofs)
        let error = MachineError("the VM stopped", cause: SystemError("open", "/dev/kvm", errno: EACCES), consoleTail: ["panic"])
        #expect(error.description == "the VM stopped: open /dev/kvm: Permission denied\nlast lines of the console:\n  | panic")
    }
}

@Suite("The console log: bounded, whatever the VM writes")
struct ConsoleRecorderTests {
    @Test("a flood on the serial socket and the VMM's output stays within the limit; the last lines of both are there")
    func bounded() async throws {
        let root = NSTemporaryDirectory() + "airlock-console-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(root)
        defer { try? FileSystem.removeTree(root) }
        let log = root + "/console.log"
        let recorder = try ConsoleRecorder(socket: root + "/console.sock", log: log, limit: 64 << 10)
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
            for i in range(40000): s.sendall(b"serial line %d\\r\\n" % i)
            s.sendall(b"serial end\\r\\n"); s.close()
            for i in range(20000): sys.stdout.write("output line %d\\n" % i)
            print("output end")
            """
        let process: ProcessWaiter
        do {
            defer { recorder.spawned() }
            process = try VMMProcess.spawn("/usr/bin/python3", ["-c", script, root + "/console.sock"], output: recorder.output)
        }
        #expect(await process.wait().map { ExitStatus(waitStatus: $0).code } == 0)
        // The recorder ends by itself once both are closed.
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileSystem.tailLines(of: log, count: 1).contains("output end") && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let sizes = (FileSystem.size(log) ?? 0) + (FileSystem.size(log + ".1") ?? 0)
        #expect(sizes <= 64 << 10 && sizes > 32 << 10, "\(sizes) bytes")
        #expect(FileSystem.tailLines(of: log, count: 1) == ["output end"])
        let both = (try FileSystem.readText(log + ".1") ?? "") + (try FileSystem.readText(log) ?? "")
        #expect(both.contains("serial end") || !both.contains("serial line"), "the serial's last line, unless the output pushed it out")
        #expect(FileSystem.exists(log + ".1"), "rotated")
    }

    @Test("a guest kernel panic ends the VMM, even when the line arrives in pieces and the VMM would spin on", .timeLimit(.minutes(1)))
    func kernelPanic() async throws {
        let root = NSTemporaryDirectory() + "airlock-console-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(root)
        defer { try? FileSystem.removeTree(root) }
        let recorder = try ConsoleRecorder(socket: root + "/console.sock", log: root + "/console.log")
        defer { recorder.finish() }
        // A stand-in VMM: boot lines, the panic split across two writes, then it keeps running
        // (as a guest whose reboot never comes).
        let script = """
            import socket, sys, time
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
            s.sendall(b"[    0.9] VFS: Cannot open root device\\r\\n[    1.0] Kernel pan"); time.sleep(0.3)
            s.sendall(b"ic - not syncing: VFS: Unable to mount root fs\\r\\n")
            time.sleep(600)
            """
        let process: ProcessWaiter
        do {
            defer { recorder.spawned() }
            process = try VMMProcess.spawn("/usr/bin/python3", ["-c", script, root + "/console.sock"], output: recorder.output)
        }
        recorder.endOnKernelPanic(process)
        let status = await process.wait()
        #expect(status.map { ExitStatus(waitStatus: $0) } == ExitStatus(waitStatus: SIGKILL), "ended by the recorder: \(String(describing: status))")
        #expect(try FileSystem.readText(root + "/console.log")?.contains("Unable to mount root fs") == true)

        // Without the line, nothing is ended.
        let calm = try ConsoleRecorder(socket: root + "/calm.sock", log: root + "/calm.log")
        defer { calm.finish() }
        let quiet: ProcessWaiter
        do {
            defer { calm.spawned() }
            quiet = try VMMProcess.spawn(
                "/usr/bin/python3",
                [
                    "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'Kernel: panic - syncing\\n')",
                    root + "/calm.sock",
                ],
                output: calm.output)
        }
        calm.endOnKernelPanic(quiet)
        #expect(await quiet.wait().map { ExitStatus(waitStatus: $0).code } == 0)
    }

    @Test("a VMM that never connects its console: its own output is recorded all the same")
    func endings() async throws {
        let root = NSTemporaryDirectory() + "airlock-console-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectories(root)
        defer { try? FileSystem.removeTree(root) }
        let recorder = try ConsoleRecorder(socket: root + "/console.sock", log: root + "/console.log")
        let process: ProcessWaiter
        do {
            defer { recorder.spawned() }
            process = try VMMProcess.spawn("/bin/sh", ["-c", "echo started"], output: recorder.output)
        }
        _ = await process.wait()
        let deadline = ContinuousClock.now + .seconds(10)
        while FileSystem.tailLines(of: root + "/console.log") != ["started"] && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(FileSystem.tailLines(of: root + "/console.log") == ["started"])
        recorder.finish()
    }
}

@Suite("A share's view: read-only and hidden parts, held in a mount namespace on the host")
struct ShareViewTests {
    /// A project with what mount mode protects, a masked file and directory, and work.
    func project() throws -> String {
        let root = NSTemporaryDirectory() + "airlock-view-\(UUID().uuidString.prefix(8))"
        for directory in [".git/hooks", "src", "secrets", ".airlock/default"] { try FileSystem.makeDirectories(root + "/" + directory) }
        for (path, text) in [
            (".git/config", "[core]\n"), ("airlock.toml", "[vm]\ncpus = 1\n"), ("src/a.txt", "a\n"), ("secret.env", "TOKEN=real\n"),
            ("secrets/key", "private\n"), (".airlock/default/empty", ""),
        ] {
            try FileSystem.writeAtomically(root + "/" + path, text)
        }
        return root
    }

    func view(_ root: String, readOnly: Bool = false) -> ShareView {
        ShareView(
            source: root,
            steps: (readOnly ? [.readOnly("")] : []) + [
                .readOnly(".git"), .readOnly("airlock.toml"), .hideFile("secret.env", emptyFile: root + "/.airlock/default/empty"),
                .hideDirectory("secrets"), .hideDirectory(".airlock"),
            ])
    }

    /// Where the view is shown: an empty directory in the project's `.airlock/`.
    func mountPoint(_ root: String) throws -> String {
        try FileSystem.makeDirectories(root + "/.airlock/default/view")
        return root + "/.airlock/default/view"
    }

    /// Runs `script` with sh in the view's directory; returns its exit status and output.
    func run(_ script: String, in view: ShareView) async throws -> (status: Int32?, output: String) {
        let log = NSTemporaryDirectory() + "airlock-view-\(UUID().uuidString.prefix(8)).log"
        defer { unlink(log) }
        let at = try mountPoint(view.source)
        let process = try VMMProcess.spawn("/bin/sh", ["-c", "cd \(at) && " + script], log: log, views: [(view, at)])
        let status = await process.wait().map { ExitStatus(waitStatus: $0).code }
        return (status, try FileSystem.readText(log) ?? "")
    }

    @Test(
        "inside the view: the work is writable; .git and the configuration cannot be written, moved or removed; masks and .airlock are empty; the host's files stay"
    )
    func inside() async throws {
        let root = try project()
        defer { try? FileSystem.removeTree(root) }
        let (status, output) = try await run(
            """
            echo new > src/new.txt && echo wrote-work
            echo x > .git/hooks/pre-commit && echo wrote-hook
            echo x >> .git/config && echo wrote-git-config
            echo x >> airlock.toml && echo wrote-config
            mv .git git-moved && echo moved-git
            rm airlock.toml && echo removed-config
            mv secret.env exposed && echo moved-mask
            rm -r secrets && echo removed-masked-dir
            cat secret.env secrets/key
            echo y > secret.env && echo wrote-mask
            touch secrets/new && echo wrote-masked-dir
            echo "listing: $(ls -A secrets .airlock)"
            echo done
            """, in: view(root))
        #expect(status == 0)
        #expect(output.contains("wrote-work") && output.contains("done"), "\(output)")
        for leak in [
            "wrote-hook", "wrote-git-config", "wrote-config", "moved-git", "removed-config", "moved-mask", "removed-masked-dir", "TOKEN", "private",
            "wrote-mask", "wrote-masked-dir", "default",
        ] {
            #expect(!output.contains(leak), "\(leak): \(output)")
        }
        #expect(FileSystem.exists(root + "/src/new.txt"), "the work reaches the project")
        #expect(try FileSystem.readText(root + "/secret.env") == "TOKEN=real\n")
        #expect(try FileSystem.readText(root + "/secrets/key") == "private\n")
        #expect(try FileSystem.readText(root + "/airlock.toml") == "[vm]\ncpus = 1\n")
        #expect(try FileSystem.readText(root + "/.git/config") == "[core]\n")
        #expect(!FileSystem.exists(root + "/.git/hooks/pre-commit") && !FileSystem.exists(root + "/exposed"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/.airlock") == ["default"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/.airlock/default/view").isEmpty, "the view is only in its namespace")
    }

    @Test("read_only: nothing of the project is writable through the view")
    func readOnlyView() async throws {
        let root = try project()
        defer { try? FileSystem.removeTree(root) }
        let (status, output) = try await run(
            "echo x > src/new.txt && echo wrote-new; echo x >> src/a.txt && echo wrote-a; rm src/a.txt && echo removed; cat src/a.txt; echo done",
            in: view(root, readOnly: true))
        #expect(status == 0)
        #expect(output.contains("a\ndone"), "\(output)")
        #expect(!output.contains("wrote") && !output.contains("removed"), "\(output)")
        #expect(try FileSystem.readText(root + "/src/a.txt") == "a\n" && !FileSystem.exists(root + "/src/new.txt"))
    }

    @Test("a process in the view cannot take a mount away to uncover what it hides, even with the capabilities of a user namespace of its own")
    func lockedMounts() async throws {
        let root = try project()
        defer { try? FileSystem.removeTree(root) }
        let log = root + "/out.log"
        let at = try mountPoint(root)
        // A new user namespace gives every capability in it, as a compromised virtiofsd could
        // get (its jail lets it unshare, for its own sandbox); the mounts it copies from the
        // view's namespace are locked together.
        let script = """
            unshare -Urm sh -c '
              umount \(at)/.git && echo umounted-git
              umount -l \(at)/secrets && echo umounted-secrets
              mount -o remount,rw,bind \(at)/.git && echo remounted
              cat \(at)/secrets/key
              echo x > \(at)/.git/hooks/post-checkout && echo wrote-hook
              echo inner-done'
            echo done
            """
        let process = try VMMProcess.spawn("/bin/sh", ["-c", script], log: log, views: [(view(root), at)], jail: .fileServer)
        #expect(await process.wait().map { ExitStatus(waitStatus: $0).code } == 0)
        let output = try FileSystem.readText(log) ?? ""
        #expect(output.contains("inner-done") && output.contains("done"), "\(output)")
        for uncovered in ["umounted-git", "umounted-secrets", "remounted", "private", "wrote-hook"] {
            #expect(!output.contains(uncovered), "\(output)")
        }
        #expect(!FileSystem.exists(root + "/.git/hooks/post-checkout"))

        // A VMM (QEMU serving 9p) cannot even make the namespace.
        let vmmLog = root + "/vmm.log"
        let vmm = try VMMProcess.spawn("/bin/sh", ["-c", script], log: vmmLog, views: [(view(root), at)])
        #expect(await vmm.wait().map { ExitStatus(waitStatus: $0).code } == 0)
        let refused = try FileSystem.readText(vmmLog) ?? ""
        #expect(refused.contains("Operation not permitted") && !refused.contains("inner-done") && refused.contains("done"), "\(refused)")
    }

    @Test("a symbolic link where the view mounts is refused, not followed")
    func symlinkRefused() async throws {
        let root = try project()
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.removeTree(root + "/secrets")
        #expect(symlink("/etc", root + "/secrets") == 0)
        let error = #expect(throws: MachineError.self) {
            try VMMProcess.spawn("/bin/true", [], log: root + "/vmm.log", views: [(view(root), try mountPoint(root))])
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("mount"))
    }
}

@Suite("The VMM jail: what a taken-over VMM still cannot do")
struct VMMJailTests {
    /// Tries each call the jail refuses (and some it allows), through ctypes; prints
    /// `name=result` lines, where the result is 0 or the errno name. The calls that would act on
    /// the host if let through (module loading, kexec, mount) run only with the argument `jailed`.
    static let probe = """
        import ctypes, errno, os, resource, socket, sys
        libc = ctypes.CDLL(None, use_errno=True)
        def call(name, number, *args):
            result = libc.syscall(number, *args)
            print(f"{name}={'0' if result >= 0 else errno.errorcode[ctypes.get_errno()]}")
        # x86_64 system call numbers.
        call("ptrace", 101, 0, 0, 0, 0)                       # PTRACE_TRACEME
        call("bpf", 321, 0, 0, 0)
        call("keyctl", 250, 0, -3, 0)                        # KEYCTL_GET_KEYRING_ID of the session keyring
        call("personality_change", 135, 0x0040000)           # ADDR_NO_RANDOMIZE
        call("personality_linux", 135, 0)
        if sys.argv[1:] == ["jailed"]:
            call("init_module", 175, 0, 0, b"")
            call("kexec_load", 246, 0, 1, 0, 0)
            call("mount", 165, b"none", b"/nonexistent-airlock-target", b"tmpfs", 0, 0)
            call("unshare", 272, 0x10000000)                 # CLONE_NEWUSER
        for family, name in [(socket.AF_INET, "inet"), (socket.AF_INET6, "inet6"), (socket.AF_NETLINK, "netlink"), (socket.AF_UNIX, "unix")]:
            try:
                socket.socket(family, socket.SOCK_DGRAM).close(); print(f"socket_{name}=0")
            except OSError as error:
                print(f"socket_{name}={errno.errorcode[error.errno]}")
        print("core=%d,%d" % resource.getrlimit(resource.RLIMIT_CORE))
        print("nofile=%d,%d" % resource.getrlimit(resource.RLIMIT_NOFILE))
        for line in open("/proc/self/status"):
            if line.startswith(("Seccomp:", "NoNewPrivs:")): print(line.split(":")[0] + "=" + line.split()[1])
        """

    func results(_ output: String) -> [String: String] {
        Dictionary(
            output.split(separator: "\n").compactMap { line in
                let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                return parts.count == 2 ? (parts[0], parts[1]) : nil
            }, uniquingKeysWith: { $1 })
    }

    /// Runs the probe through `VMMProcess.spawn` with `jail`; returns what it printed.
    func jailed(_ jail: VMMJail) async throws -> [String: String] {
        let log = NSTemporaryDirectory() + "airlock-jail-\(UUID().uuidString.prefix(8)).log"
        defer { unlink(log) }
        let process = try VMMProcess.spawn("/usr/bin/python3", ["-c", Self.probe, "jailed"], log: log, jail: jail)
        let status = await process.wait().map { ExitStatus(waitStatus: $0).code }
        let output = try FileSystem.readText(log) ?? ""
        #expect(status == 0, "\(output)")
        return results(output)
    }

    @Test(
        "a process started through the VMM spawn path cannot ptrace, load modules, kexec, use bpf or keys, change personality, or open other than Unix sockets"
    )
    func refused() async throws {
        // The same probe outside the jail: these calls get as far as the kernel's own checks.
        let free = try ChildProcess.capture("/usr/bin/python3", ["-c", Self.probe])
        let unjailed = results(free.text)
        #expect(unjailed["ptrace"] == "0" && unjailed["socket_inet"] == "0" && unjailed["Seccomp"] == "0", "\(free.text)")
        #expect(unjailed["personality_change"] == "0")

        for jail in [VMMJail.vmm, .fileServer] {
            let result = try await jailed(jail)
            for call in [
                "ptrace", "bpf", "keyctl", "personality_change", "init_module", "kexec_load", "socket_inet", "socket_inet6", "socket_netlink",
            ] {
                #expect(result[call] == "EPERM", "\(jail.kind): \(call) gave \(result[call] ?? "nothing")")
            }
            #expect(result["personality_linux"] == "0" && result["socket_unix"] == "0", "\(result)")
            #expect(result["Seccomp"] == "2" && result["NoNewPrivs"] == "1", "\(result)")
            #expect(result["core"] == "0,0", "\(result)")
            let openFiles = result["nofile"]?.split(separator: ",").compactMap { Int($0) } ?? []
            #expect(openFiles.count == 2 && openFiles.allSatisfy { $0 <= 1 << 20 }, "\(result)")
            if jail.kind == .vmm {
                #expect(result["mount"] == "EPERM" && result["unshare"] == "EPERM", "\(result)")
                #expect(openFiles == [4096, 4096] || openFiles.allSatisfy { $0 < 4096 }, "\(result)")
            } else {
                // virtiofsd sets up its own sandbox: mount reaches the kernel, which finds no
                // such target (it looks the path up before it checks privileges).
                #expect(result["mount"] == "ENOENT", "\(result)")
            }
        }
    }
}

@Suite("The VMM jail's file system (Landlock): the VM's own paths and the system's, nothing else")
struct VMMLandlockTests {
    @Test(
        "a VMM jailed for its spec reads its kernel and read-only share, writes its writable share and runtime directory, and reaches nothing else: not the user's files, not abstract sockets, no signals out",
        .enabled(if: VMMJail.landlockABI > 0, "this kernel has no Landlock"))
    func confined() async throws {
        let root = NSTemporaryDirectory() + "airlock-landlock-\(UUID().uuidString.prefix(8))"
        defer { try? FileSystem.removeTree(root) }
        for directory in ["ro", "rw", "run", "secret"] { try FileSystem.makeDirectories(root + "/" + directory) }
        for (path, text) in [("kernel", "k"), ("ro/file", "r"), ("secret/key", "private"), ("rw/file", "w")] {
            try FileSystem.writeAtomically(root + "/" + path, text)
        }
        let spec = MachineSpec(
            kernel: root + "/kernel", initramfs: root + "/kernel", cpus: 1, memoryMiB: 256,
            shares: [.init(tag: "ro", hostPath: root + "/ro", readOnly: true), .init(tag: "rw", hostPath: root + "/rw", readOnly: false)],
            disk: root + "/disk.img", runtimeDirectory: root + "/run", consoleLog: root + "/console.log", accelerator: .tcg)
        let script = """
            import os, socket, sys
            root = sys.argv[1]
            def attempt(name, action):
                try:
                    action(); print(name + "=ok")
                except OSError as error:
                    print(name + "=" + (os.strerror(error.errno) if error.errno else str(error)))
            attempt("kernel", lambda: open(root + "/kernel").read())
            attempt("read_ro", lambda: open(root + "/ro/file").read())
            attempt("write_ro", lambda: open(root + "/ro/new", "w").close())
            attempt("write_rw", lambda: open(root + "/rw/new", "w").close())
            attempt("socket_in_run", lambda: socket.socket(socket.AF_UNIX).bind(root + "/run/s.sock"))
            attempt("secret", lambda: open(root + "/secret/key").read())
            attempt("list_home", lambda: os.listdir(os.path.expanduser("~")))
            attempt("etc_shadow", lambda: open("/etc/shadow").read())
            attempt("abstract", lambda: socket.socket(socket.AF_UNIX).connect("\\0airlock-landlock-test"))
            attempt("signal_out", lambda: os.kill(int(sys.argv[2]), 0))
            """
        // An abstract socket outside, which the jailed process must not reach.
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array("\0airlock-landlock-test".utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in name.enumerated() { raw[index] = byte } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        #expect(withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } } == 0)
        #expect(listen(listener, 1) == 0)

        let log = root + "/out.log"
        let process = try VMMProcess.spawn("/usr/bin/python3", ["-c", script, root, "\(getpid())"], log: log, jail: .vmm(for: spec))
        #expect(await process.wait().map { ExitStatus(waitStatus: $0).code } == 0)
        let output = try FileSystem.readText(log) ?? ""
        let results = Dictionary(
            output.split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                return parts.count == 2 ? (parts[0], parts[1]) : nil
            }, uniquingKeysWith: { $1 })
        for allowed in ["kernel", "read_ro", "write_rw", "socket_in_run"] {
            #expect(results[allowed] == "ok", "\(allowed): \(output)")
        }
        for refused in ["write_ro", "secret", "list_home", "etc_shadow"] {
            #expect(results[refused] == "Permission denied", "\(refused): \(output)")
        }
        if VMMJail.landlockABI >= 6 {
            #expect(results["abstract"] == "Operation not permitted", "\(output)")
            #expect(results["signal_out"] == "Operation not permitted", "\(output)")
        }
        #expect(!FileSystem.exists(root + "/ro/new") && FileSystem.exists(root + "/rw/new"))
    }
}
