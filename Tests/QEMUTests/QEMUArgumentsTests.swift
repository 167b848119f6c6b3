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

    @Test("vhost-vsock: a vhost-vsock-device (virtio-mmio) with the guest CID, and no control serial port")
    func vhostVsock() {
        let arguments = QEMUMachine.arguments(for: Self.spec(accelerator: .kvm), tscKilohertz: 2_445_404, vsockCID: 123_456)
        let devices = values(arguments, "-device")
        #expect(devices.contains("vhost-vsock-device,guest-cid=123456"))
        #expect(!devices.contains { $0.contains("vhost-vsock-pci") })
        #expect(!devices.contains { $0.hasPrefix("virtserialport") && $0.contains("airlock.control") })
        #expect(!values(arguments, "-chardev").contains { $0.contains("control.sock") })
        // Without a CID: the serial port, and no vsock device.
        let serial = values(QEMUMachine.arguments(for: Self.spec(accelerator: .kvm), tscKilohertz: 2_445_404), "-device")
        #expect(!serial.contains { $0.hasPrefix("vhost-vsock") })
    }

    @Test("guest CIDs: at least 3, below 2^31, stable for a sandbox, different per sandbox and per retry")
    func vsockCIDs() {
        let directories = (0..<200).map { "/run/user/1000/airlock/\(String($0, radix: 16))" }
        var seen = Set<UInt32>()
        for directory in directories {
            let first = QEMUMachine.vsockCID(runtimeDirectory: directory, attempt: 0)
            #expect(first >= 3 && first < 1 << 31)
            #expect(QEMUMachine.vsockCID(runtimeDirectory: directory, attempt: 0) == first)
            let retries = (1..<8).map { QEMUMachine.vsockCID(runtimeDirectory: directory, attempt: $0) }
            #expect(Set(retries + [first]).count == 8, "retries must try other CIDs")
            #expect(retries.allSatisfy { $0 >= 3 && $0 < 1 << 31 })
            seen.insert(first)
        }
        #expect(seen.count >= 199, "sandboxes should rarely share a first CID")
    }
}
