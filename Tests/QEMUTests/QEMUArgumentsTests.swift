import AirlockSystem
import Machine
import QEMU
import Testing

@Suite("QEMU command line")
struct QEMUArgumentsTests {
    static func spec(accelerator: Accelerator) -> MachineSpec {
        MachineSpec(
            kernel: "/k/vmlinuz", initramfs: "/k/initramfs", cpus: 2, memoryMiB: 2048,
            shares: [
                .init(tag: "usr", hostPath: "/usr", readOnly: true),
                .init(tag: "workspace", hostPath: "/p/a,b/.airlock/default/workspace", readOnly: false),
            ],
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
        #expect(values(arguments, "-device").contains("virtserialport,chardev=control,name=airlock.control,id=control"))
        // No NIC of any kind: the VM's only way out is the link.
        #expect(!arguments.contains { $0.contains("net") })
        let shares = values(arguments, "-fsdev")
        #expect(shares[0] == "local,id=fs0,path=/usr,security_model=none,readonly=on")
        // A comma in a path is doubled so QEMU does not read it as an option separator.
        #expect(shares[1] == "local,id=fs1,path=/p/a,,b/.airlock/default/workspace,security_model=none")
    }

    @Test("the state disk and an image's layer disks: virtio-blk with serials, the layers read-only")
    func disks() {
        var spec = Self.spec(accelerator: .tcg)
        spec.readOnlyDisks = [.init(serial: "oci0", path: "/c/oci/a,b.sqfs"), .init(serial: "oci1", path: "/c/oci/c.sqfs")]
        let arguments = QEMUMachine.arguments(for: spec, tscKilohertz: 2_445_404)
        #expect(
            values(arguments, "-drive") == [
                "id=state,file=/p/.airlock/default/disk.img,format=raw,if=none,discard=unmap",
                "id=oci0,file=/c/oci/a,,b.sqfs,format=raw,if=none,readonly=on",
                "id=oci1,file=/c/oci/c.sqfs,format=raw,if=none,readonly=on",
            ])
        let devices = values(arguments, "-device").filter { $0.hasPrefix("virtio-blk-device") }
        #expect(
            devices == [
                "virtio-blk-device,drive=state,serial=airlock-state",
                "virtio-blk-device,drive=oci0,serial=oci0",
                "virtio-blk-device,drive=oci1,serial=oci1",
            ])
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

    @Test("virtiofsd: every share but image layers is a vhost-user-fs-device (virtio-mmio) on its virtiofsd's socket; RAM is a shared memfd backend")
    func virtiofs() {
        var spec = Self.spec(accelerator: .tcg)
        spec.shares.append(.init(tag: "layer0", hostPath: "/c/oci/l0", readOnly: true, mappedOwnership: true))
        let arguments = QEMUMachine.arguments(for: spec, tscKilohertz: 2_445_404, virtiofsd: true)
        #expect(values(arguments, "-M") == ["microvm,acpi=on,pit=off,pic=off,rtc=on,isa-serial=on,x-option-roms=off,memory-backend=mem"])
        #expect(values(arguments, "-object").contains("memory-backend-memfd,id=mem,size=2048M,share=on"))
        #expect(values(arguments, "-m") == ["2048M"], "the backend's size must equal -m")
        #expect(values(arguments, "-global") == ["virtio-mmio.force-legacy=false"], "vhost-user refuses legacy virtio-mmio devices")
        let chardevs = values(arguments, "-chardev")
        #expect(chardevs.contains("socket,id=fs0,path=/tmp/airlock-0/abc/fs0.sock"))
        #expect(chardevs.contains("socket,id=fs1,path=/tmp/airlock-0/abc/fs1.sock"))
        let devices = values(arguments, "-device")
        #expect(devices.contains("vhost-user-fs-device,chardev=fs0,tag=usr,queue-size=1024"))
        #expect(devices.contains("vhost-user-fs-device,chardev=fs1,tag=workspace,queue-size=1024"))
        #expect(!devices.contains { $0.contains("-pci") }, "microvm has no PCI")
        // The image layer stays on 9p: its owners are in mapped-xattr form.
        #expect(values(arguments, "-fsdev") == ["local,id=fs2,path=/c/oci/l0,security_model=mapped-xattr,readonly=on"])
        #expect(devices.contains("virtio-9p-device,fsdev=fs2,mount_tag=layer0"))
        #expect(!devices.contains { $0.contains("mount_tag=usr") || $0.contains("mount_tag=workspace") })
        // virtiofsd is started on exactly the sockets QEMU connects to, with the read-only flag.
        let served = QEMUMachine.virtiofsShares(of: spec, virtiofsd: true)
        #expect(served.map(\.socket) == ["/tmp/airlock-0/abc/fs0.sock", "/tmp/airlock-0/abc/fs1.sock"])
        #expect(Virtiofsd.arguments(socket: served[0].socket, share: served[0].share).contains("--readonly"))
        #expect(!Virtiofsd.arguments(socket: served[1].socket, share: served[1].share).contains("--readonly"))
        #expect(Virtiofsd.arguments(socket: served[1].socket, share: served[1].share).contains("--shared-dir=/p/a,b/.airlock/default/workspace"))

        // Without virtiofsd: all 9p and ordinary RAM, as before.
        let ninep = QEMUMachine.arguments(for: spec, tscKilohertz: 2_445_404)
        #expect(values(ninep, "-fsdev").count == 3)
        #expect(!ninep.contains { $0.contains("vhost-user") || $0.contains("memory-backend") || $0.contains("force-legacy") })
        #expect(QEMUMachine.virtiofsShares(of: spec, virtiofsd: false).isEmpty)
        // Only image layers: nothing for virtiofsd, so no shared memory either.
        spec.shares = [spec.shares[2]]
        let layersOnly = QEMUMachine.arguments(for: spec, tscKilohertz: 2_445_404, virtiofsd: true)
        #expect(!layersOnly.contains { $0.contains("vhost-user") || $0.contains("memory-backend") })
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
