import AirlockSystem
import Config
import Foundation
import Machine
import Testing

@testable import Sandbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("Doctor and backend selection")
struct DoctorTests {
    static let assets = GuestAssets.Lookup(
        kernel: .init(path: "/k", source: .environment), initramfs: .init(path: "/i", source: .environment))

    /// A host like the build machine: PVM KVM, QEMU only.
    static func pvmHost() -> HostFacts {
        HostFacts(
            kvm: .ok, kvmModules: ["kvm_pvm"], cloudHypervisor: nil, virtiofsd: nil, legacyVirtiofsd: "/usr/lib/qemu/virtiofsd",
            qemu: .init(path: "/usr/bin/qemu-system-x86_64", version: "QEMU emulator version 7.2.22"),
            vhostVsock: .missing, distribution: .init(id: "debian", version: "12"), assets: assets,
            libraries: [.init(name: "libgit2", version: "1.5.1")],
            cacheDirectory: "/home/u/.cache/airlock", cacheFreeBytes: 50 << 30)
    }

    /// A workstation with hardware KVM and everything installed.
    static func kvmHost() -> HostFacts {
        var host = pvmHost()
        host.kvmModules = ["kvm_intel"]
        host.cloudHypervisor = .init(path: "/usr/bin/cloud-hypervisor", version: "cloud-hypervisor v48.0")
        host.virtiofsd = .init(path: "/usr/libexec/virtiofsd", version: "virtiofsd 1.13.2")
        host.tar2sqfs = .init(path: "/usr/bin/tar2sqfs", version: "tar2sqfs (squashfs-tools-ng) 1.2.0")
        host.vhostVsock = .ok
        host.landlockABI = 6
        return host
    }

    private func check(_ report: Doctor.Report, _ id: String) -> Doctor.Check? {
        report.checks.first { $0.id == id }
    }

    @Test("share views: mount mode's needs are reported, with the fix for Ubuntu's AppArmor restriction or the sysctl elsewhere")
    func shareViews() {
        #expect(check(Doctor.examine(Self.pvmHost(), requested: .auto), "share-views")?.status == .pass)
        var host = Self.pvmHost()
        host.shareViewProblem = "unshare: Operation not permitted"
        var found = check(Doctor.examine(host, requested: .auto), "share-views")
        #expect(found?.status == .warn && found?.summary.contains("mode = \"mount\" cannot start") == true)
        #expect(found?.fix?.contains("user.max_user_namespaces") == true, "\(found?.fix ?? "")")
        host.distribution = .init(id: "ubuntu", version: "24.04")
        found = check(Doctor.examine(host, requested: .auto), "share-views")
        #expect(found?.fix?.contains("apparmor") == true && found?.fix?.contains("userns") == true, "\(found?.fix ?? "")")
        #expect(Doctor.examine(host, requested: .auto).canRunSandbox, "clone mode still runs")
    }

    @Test("the VMM jail: a host where it cannot be applied fails the check, with the fix; no sandbox runs unjailed")
    func vmmJail() {
        var host = Self.pvmHost()
        #expect(check(Doctor.examine(host, requested: .auto), "vmm-jail")?.status == .warn, "no Landlock: a warning")
        host.landlockABI = 6
        #expect(check(Doctor.examine(host, requested: .auto), "vmm-jail")?.status == .pass)
        host.vmmJailProblem = "a jailed process runs without its seccomp filter (Seccomp: 0)"
        let report = Doctor.examine(host, requested: .auto)
        let found = check(report, "vmm-jail")
        #expect(found?.status == .fail && found?.summary.contains("Seccomp: 0") == true && found?.fix?.contains("CONFIG_SECCOMP_FILTER") == true)
        #expect(!report.canRunSandbox)
    }

    @Test("PVM host: says plainly that KVM can't run a standard guest, picks QEMU with TCG")
    func pvm() {
        let report = Doctor.examine(Self.pvmHost(), requested: .auto)
        #expect(check(report, "kvm-usable")?.status == .warn)
        #expect(check(report, "kvm-usable")?.summary.contains("PVM (kvm_pvm)") == true)
        #expect(check(report, "kvm-usable")?.summary.contains("hangs") == true)
        #expect(check(report, "cloud-hypervisor")?.status == .warn)
        // Debian 12 packages neither: the fixes say where to get them instead.
        #expect(check(report, "cloud-hypervisor")?.fix?.contains("debian 12 does not package it") == true)
        #expect(check(report, "cloud-hypervisor")?.fix?.contains("github.com/cloud-hypervisor/cloud-hypervisor/releases") == true)
        #expect(check(report, "virtiofsd")?.fix?.contains("gitlab.com/virtio-fs/virtiofsd") == true)
        #expect(check(report, "virtiofsd")?.summary.contains("retired C virtiofsd") == true)
        #expect(check(report, "qemu")?.status == .pass)
        #expect(report.selection == BackendSelection(backend: .qemu, accelerator: .tcg, reason: report.selection.reason, missing: []))
        #expect(report.selection.reason.contains("TCG"))
        #expect(report.canRunSandbox)
    }

    @Test(
        "install hints are true for the distribution: which of Debian 12/13 and Ubuntu 22.04/24.04 package cloud-hypervisor and virtiofsd",
        arguments: [
            ("debian", "12", false, false), ("debian", "13", false, true), ("ubuntu", "22.04", false, false), ("ubuntu", "24.04", true, true),
        ])
    func installHints(id: String, version: String, packagesCloudHypervisor: Bool, packagesVirtiofsd: Bool) {
        var host = Self.pvmHost()
        host.distribution = .init(id: id, version: version)
        let report = Doctor.examine(host, requested: .auto)
        let cloudHypervisor = check(report, "cloud-hypervisor")?.fix ?? ""
        let virtiofsd = check(report, "virtiofsd")?.fix ?? ""
        #expect(cloudHypervisor.contains("apt-get install cloud-hypervisor") == packagesCloudHypervisor, "\(cloudHypervisor)")
        #expect(cloudHypervisor.contains("does not package it") == !packagesCloudHypervisor)
        #expect(virtiofsd.contains("apt-get install virtiofsd") == packagesVirtiofsd, "\(virtiofsd)")
        #expect(virtiofsd.contains("gitlab.com/virtio-fs/virtiofsd") == !packagesVirtiofsd)
        #expect(HostFacts.Distribution(osRelease: "PRETTY_NAME=\"X\"\nID=\(id)\nVERSION_ID=\"\(version)\"\n") == host.distribution)
    }

    @Test("a virtiofsd is the Rust one by what it takes, not by the first line it prints")
    func virtiofsdRecognition() {
        // What Debian 12's /usr/lib/qemu/virtiofsd prints for a non-root user, for --version and --help alike.
        #expect(!HostFacts.isRustVirtiofsd(help: "setgroups() failed with error=1:Operation not permitted"))
        #expect(!HostFacts.isRustVirtiofsd(help: "usage: /usr/lib/qemu/virtiofsd [options]\n    -o source=PATH   shared directory tree"))
        #expect(
            HostFacts.isRustVirtiofsd(
                help: "Usage: virtiofsd [OPTIONS] --socket-path <SOCKET_PATH>\n      --shared-dir <SHARED_DIR>  Shared directory path\n"))
    }

    @Test(
        "QEMU's C virtiofsd is never taken for the Rust one, as root or as another user",
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/lib/qemu/virtiofsd"), "needs QEMU's C virtiofsd (qemu-system-x86 on Debian 12)"))
    func realLegacyVirtiofsd() throws {
        let output = try ChildProcess.capture("/usr/lib/qemu/virtiofsd", ["--help"])
        #expect(!HostFacts.isRustVirtiofsd(help: output.text), "\(output.text)")
        let facts = HostFacts.probe(
            environment: ["PATH": "/usr/lib/qemu:/usr/bin:/bin", "HOME": NSTemporaryDirectory()], configuredAssets: .init(), libraries: [])
        #expect(facts.virtiofsd?.path != "/usr/lib/qemu/virtiofsd")
        #expect(facts.legacyVirtiofsd == "/usr/lib/qemu/virtiofsd")
    }

    @Test("shares: QEMU uses virtio-fs when the Rust virtiofsd is there (image layers stay on 9p), 9p otherwise; Cloud Hypervisor always virtio-fs")
    func shareTransports() {
        let pvm = Doctor.examine(Self.pvmHost(), requested: .auto)
        #expect(check(pvm, "shares")?.summary.hasPrefix("virtio-9p: the Rust virtiofsd is not installed") == true)
        #expect(check(pvm, "shares")?.summary.contains("/usr/lib/qemu/virtiofsd is QEMU's retired C virtiofsd") == true)

        var withVirtiofsd = Self.pvmHost()
        withVirtiofsd.virtiofsd = .init(path: "/usr/libexec/virtiofsd", version: "virtiofsd 1.13.2")
        let qemu = Doctor.examine(withVirtiofsd, requested: .auto)
        #expect(qemu.selection.backend == .qemu)
        #expect(check(qemu, "shares")?.summary.hasPrefix("virtio-fs through virtiofsd (/usr/libexec/virtiofsd)") == true)
        #expect(ShareTransport.explain(backend: .qemu, on: withVirtiofsd, layers: .share).contains("the image's layers stay on virtio-9p"))

        let directory = MachineSpec.Share(tag: "usr", hostPath: "/usr", readOnly: true)
        let layer = MachineSpec.Share(tag: "layer0", hostPath: "/c/l0", readOnly: true, mappedOwnership: true)
        #expect(ShareTransport.qemu(for: directory, virtiofsd: true) == .virtiofs)
        #expect(ShareTransport.qemu(for: directory, virtiofsd: false) == .ninep)
        #expect(ShareTransport.qemu(for: layer, virtiofsd: true) == .ninep)

        let ch = Doctor.examine(Self.kvmHost(), requested: .auto)
        #expect(check(ch, "shares")?.summary.hasPrefix("virtio-fs through virtiofsd") == true)
        #expect(
            ShareTransport.explain(backend: .cloudHypervisor, on: Self.kvmHost(), layers: .block).hasSuffix(
                "the image's layers are read-only squashfs disks (built once by tar2sqfs, owners intact)"))
        #expect(check(Doctor.examine(Self.kvmHost(), requested: .qemu), "shares")?.summary.hasPrefix("virtio-fs") == true)
    }

    @Test(
        "image layers: block disks on Cloud Hypervisor (share refused there), 9p shares on QEMU unless block is asked for; block needs tar2sqfs, which doctor reports"
    )
    func layerTransports() throws {
        let kvm = Self.kvmHost(), pvm = Self.pvmHost()
        #expect(try LayerTransport.choose(.auto, backend: .cloudHypervisor, on: kvm) == .block)
        #expect(try LayerTransport.choose(.auto, backend: .qemu, on: kvm) == .share)
        #expect(try LayerTransport.choose(.block, backend: .qemu, on: kvm) == .block)
        #expect(try LayerTransport.choose(.share, backend: .qemu, on: pvm) == .share)
        #expect(try LayerTransport.choose(.auto, backend: .qemu, on: pvm) == .share, "QEMU's default needs no tar2sqfs")
        #expect { try LayerTransport.choose(.share, backend: .cloudHypervisor, on: kvm) } throws: { error in
            (error as? SandboxError)?.message.contains("needs QEMU") == true
        }
        var noTool = kvm
        noTool.tar2sqfs = nil
        #expect { try LayerTransport.choose(.auto, backend: .cloudHypervisor, on: noTool) } throws: { error in
            let error = error as? SandboxError
            return error?.message.contains("tar2sqfs") == true && error?.hint?.contains("squashfs-tools-ng") == true
        }
        #expect { try LayerTransport.choose(.block, backend: .qemu, on: pvm) } throws: {
            ($0 as? SandboxError)?.message.contains("not installed") == true
        }
        #expect(check(Doctor.examine(kvm, requested: .auto), "tar2sqfs")?.status == .pass)
        let missing = check(Doctor.examine(pvm, requested: .auto), "tar2sqfs")
        #expect(missing?.status == .warn && missing?.fix == "sudo apt-get install squashfs-tools-ng")
    }

    @Test("hardware KVM with cloud-hypervisor and virtiofsd: auto picks Cloud Hypervisor")
    func kvm() {
        let report = Doctor.examine(Self.kvmHost(), requested: .auto)
        #expect(report.selection.backend == .cloudHypervisor)
        #expect(report.selection.accelerator == .kvm)
        #expect(report.checks.allSatisfy { $0.status == .pass })
        // QEMU asked for explicitly gets KVM.
        #expect(BackendSelection.choose(.qemu, on: Self.kvmHost()).accelerator == .kvm)
    }

    @Test("cloud-hypervisor requested where it can't run: no backend, each missing piece named with its fix")
    func chRequestedOnPVM() {
        let report = Doctor.examine(Self.pvmHost(), requested: .cloudHypervisor)
        #expect(report.selection.backend == nil)
        #expect(report.selection.missing.count == 3)
        #expect(report.selection.missing.contains { $0.hasPrefix("cloud-hypervisor is not installed") })
        #expect(report.selection.missing.contains { $0.hasPrefix("virtiofsd is not installed") })
        #expect(report.selection.missing.contains { $0.contains("kvm_pvm") })
        #expect(check(report, "backend")?.status == .fail)
        #expect(!report.canRunSandbox)
    }

    @Test("/dev/kvm not accessible: the kvm group hint")
    func kvmDenied() {
        var host = Self.kvmHost()
        host.kvm = .denied
        let report = Doctor.examine(host, requested: .auto)
        #expect(check(report, "kvm-device")?.fix?.contains("usermod -aG kvm") == true)
        #expect(report.selection.backend == .qemu)
        #expect(report.selection.accelerator == .tcg)
    }

    @Test("nothing installed: fails, exit non-zero")
    func nothing() {
        var host = Self.pvmHost()
        host.qemu = nil
        let report = Doctor.examine(host, requested: .auto)
        #expect(check(report, "qemu")?.status == .fail)
        #expect(check(report, "qemu")?.fix == "sudo apt-get install qemu-system-x86")
        #expect(report.selection.backend == nil)
        #expect(!report.canRunSandbox)
    }

    @Test("missing guest assets fail with the way to build them")
    func missingAssets() {
        var host = Self.pvmHost()
        host.assets = .init(kernel: nil, initramfs: .init(path: "/i", source: .config), broken: ["/nope (from AIRLOCK_KERNEL)"])
        let report = Doctor.examine(host, requested: .auto)
        #expect(check(report, "guest-assets")?.status == .fail)
        #expect(check(report, "guest-assets")?.summary.contains("kernel not found") == true)
        #expect(check(report, "guest-assets")?.summary.contains("/nope (from AIRLOCK_KERNEL)") == true)
        #expect(check(report, "guest-assets")?.fix?.contains("make kernel") == true)
        #expect(!report.canRunSandbox)
    }

    @Test(
        "low disk space warns, very low fails",
        arguments: [
            (UInt64(100) << 20, Doctor.Status.fail), (UInt64(1) << 30, .warn), (UInt64(5) << 30, .pass),
        ])
    func space(free: UInt64, status: Doctor.Status) {
        var host = Self.pvmHost()
        host.cacheFreeBytes = free
        #expect(check(Doctor.examine(host, requested: .auto), "cache-space")?.status == status)
    }

    @Test("asset lookup: environment first, then config, then embedded; broken paths reported")
    func assetLookup() throws {
        let file = "/tmp/airlock-asset-\(getpid())"
        close(open(file, O_CREAT | O_WRONLY, 0o600))
        defer { unlink(file) }
        let fromEnvironment = GuestAssets.locate(configured: .init(kernel: "/nonexistent"), environment: ["AIRLOCK_KERNEL": file], embedded: false)
        #expect(fromEnvironment.kernel == .init(path: file, source: .environment))
        #expect(fromEnvironment.initramfs == nil)
        let fromConfig = GuestAssets.locate(configured: .init(kernel: file), environment: ["AIRLOCK_KERNEL": "/nonexistent"], embedded: false)
        #expect(fromConfig.kernel?.source == .config)
        #expect(fromConfig.broken == ["/nonexistent (from AIRLOCK_KERNEL)"])
        let embedded = GuestAssets.locate(configured: .init(), environment: [:], embedded: true)
        #expect(embedded.kernel?.source == .embedded)
        #expect(embedded.initramfs?.source == .embedded)
        let overridden = GuestAssets.locate(configured: .init(), environment: ["AIRLOCK_INITRAMFS": file], embedded: true)
        #expect(overridden.initramfs?.source == .environment)
    }

    @Test("the real machine: facts agree with /sys/module and PATH")
    func realMachine() {
        let facts = HostFacts.probe(environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root"], configuredAssets: .init(), libraries: [])
        var info = stat()
        #expect(facts.kvmModules.contains("kvm_pvm") == (stat("/sys/module/kvm_pvm", &info) == 0))
        #expect((facts.kvm == .missing) == (stat("/dev/kvm", &info) != 0))
        #expect((facts.qemu != nil) == (access("/usr/bin/qemu-system-x86_64", X_OK) == 0))
        if let qemu = facts.qemu { #expect(qemu.version?.hasPrefix("QEMU emulator version") == true) }
        #expect(facts.cacheFreeBytes != nil)
        #expect((facts.tar2sqfs != nil) == (access("/usr/bin/tar2sqfs", X_OK) == 0))
        let report = Doctor.examine(facts, requested: .auto)
        #expect(
            report.checks.map(\.id) == [
                "kvm-device", "kvm-usable", "cloud-hypervisor", "virtiofsd", "qemu", "tar2sqfs", "vhost-vsock", "guest-assets", "libraries",
                "cache-space", "share-views", "vmm-jail", "backend", "shares",
            ])
        // This machine allows user namespaces (mount mode's VM test runs here, as root and not).
        #expect(facts.shareViewProblem == nil, "\(facts.shareViewProblem ?? "")")
        // And seccomp filters: the probe found the filter in force in a jailed process.
        #expect(facts.vmmJailProblem == nil, "\(facts.vmmJailProblem ?? "")")
        #expect(check(report, "vmm-jail")?.summary.contains("seccomp filter") == true)
        #expect(facts.landlockABI > 0 && check(report, "vmm-jail")?.summary.contains("Landlock ABI") == true, "this kernel has Landlock")
    }
}

@Suite("Project discovery")
struct ProjectTests {
    @Test("finds the git root above, and adds the exclude lines once")
    func discoverAndExclude() throws {
        let root = "/tmp/airlock-project-\(getpid())"
        for directory in [root, root + "/.git", root + "/.git/info", root + "/sub", root + "/sub/deeper"] { mkdir(directory, 0o755) }
        defer {
            unlink(root + "/.git/info/exclude")
            for directory in [root + "/sub/deeper", root + "/sub", root + "/.git/info", root + "/.git", root] { rmdir(directory) }
        }
        let project = Project.discover(from: root + "/sub/deeper")
        #expect(project.root == root)
        #expect(project.gitCommonDir == root + "/.git")
        try project.ensureExcluded()
        try project.ensureExcluded()
        let text = try LocalFiles().readText(root + "/.git/info/exclude") ?? ""
        #expect(text.components(separatedBy: "\n").filter { $0 == "/airlock.local.toml" }.count == 1)
        #expect(text.contains("/.airlock/"))
        #expect(Project.discover(from: "/").root == "/")
    }
}
