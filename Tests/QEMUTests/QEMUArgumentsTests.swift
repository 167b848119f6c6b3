import QEMU
import Sandbox
import Testing

@Suite("QEMU command line")
struct QEMUArgumentsTests {
    static func spec(accelerator: BackendSelection.Accelerator) -> MachineSpec {
        MachineSpec(
            kernel: "/k/vmlinuz", initramfs: "/k/initramfs", cpus: 2, memoryMiB: 2048,
            shares: [.init(tag: "usr", hostPath: "/usr", readOnly: true), .init(tag: "workspace", hostPath: "/p/a,b/.airlock/default/workspace", readOnly: false)],
            disk: "/p/.airlock/default/disk.img", runtimeDirectory: "/tmp/airlock-0/abc", consoleLog: "/p/.airlock/default/console.log",
            accelerator: accelerator)
    }

    /// The value following `flag` each time it appears.
    func values(_ arguments: [String], _ flag: String) -> [String] {
        zip(arguments, arguments.dropFirst()).filter { $0.0 == flag }.map(\.1)
    }

    @Test("microvm, TCG, no network device, sockets and shares where expected")
    func tcg() {
        let arguments = QEMUMachine.arguments(for: Self.spec(accelerator: .tcg), tscKilohertz: 2_445_404)
        #expect(values(arguments, "-M").first?.hasPrefix("microvm,acpi=on") == true)
        #expect(values(arguments, "-append").first?.contains("tsc_early_khz=2445404 tsc=reliable") == true)
        #expect(values(arguments, "-accel") == ["tcg"])
        #expect(values(arguments, "-m") == ["2048M"])
        #expect(values(arguments, "-smp") == ["2"])
        #expect(arguments.contains("-nodefaults") && arguments.contains("-no-reboot"))
        #expect(values(arguments, "-qmp") == ["unix:/tmp/airlock-0/abc/qmp.sock,server=on,wait=off"])
        #expect(values(arguments, "-device").contains("virtserialport,chardev=control,name=airlock.control"))
        // No NIC of any kind: the VM's only way out is the link.
        #expect(!arguments.contains { $0.contains("net") })
        let shares = values(arguments, "-fsdev")
        #expect(shares[0] == "local,id=fs0,path=/usr,security_model=none,readonly=on")
        // A comma in a path is doubled so QEMU does not read it as an option separator.
        #expect(shares[1] == "local,id=fs1,path=/p/a,,b/.airlock/default/workspace,security_model=none")
    }

    @Test("KVM when usable")
    func kvm() {
        let arguments = QEMUMachine.arguments(for: Self.spec(accelerator: .kvm), tscKilohertz: 2_445_404)
        #expect(values(arguments, "-accel") == ["kvm"])
        #expect(values(arguments, "-append").first?.contains("tsc_early_khz") == false)
        #expect(values(arguments, "-cpu") == ["host"])
    }
}
