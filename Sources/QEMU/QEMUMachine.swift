import CShim
import GuestLink
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// A VM run by `qemu-system-x86_64 -M microvm`: QMP on a Unix socket for the lifecycle, the
/// control link on a virtio-serial port bound to a Unix socket, shares over virtio-9p, the state
/// disk on virtio-blk, the serial console appended to the console log.
public final class QEMUMachine: VirtualMachine {
    public let backend = BackendSelection.Backend.qemu
    public let processID: pid_t
    private let waiter: ProcessWaiter
    private let qmpSocket: String
    private let controlSocket: String

    private init(waiter: ProcessWaiter, qmpSocket: String, controlSocket: String) {
        processID = waiter.pid
        self.waiter = waiter
        self.qmpSocket = qmpSocket
        self.controlSocket = controlSocket
    }

    /// Measured once per process: the host TSC rate a TCG guest must be told.
    public static let hostTSCKilohertz = UInt(airlock_tsc_khz(25))

    /// The kernel command line. Under TCG the guest gets the host's TSC rate (without PIT or
    /// HPET it cannot calibrate and hangs) and trusts it across CPUs.
    public static func kernelCommandLine(for spec: MachineSpec, tscKilohertz: UInt) -> String {
        var line = "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests"
        if spec.accelerator == .tcg { line += " tsc_early_khz=\(tscKilohertz) tsc=reliable" }
        return line
    }

    /// The QEMU command line for `spec` (without the binary), split out for tests.
    /// microvm needs ACPI on: Debian's virtio_mmio finds devices only through ACPI.
    public static func arguments(for spec: MachineSpec, tscKilohertz: UInt = hostTSCKilohertz) -> [String] {
        let qmp = spec.runtimeDirectory + "/qmp.sock"
        let control = spec.runtimeDirectory + "/control.sock"
        var arguments = [
            "-M", "microvm,acpi=on,pit=off,pic=off,rtc=on,isa-serial=on,x-option-roms=off",
            "-accel", spec.accelerator == .kvm ? "kvm" : "tcg",
            "-cpu", spec.accelerator == .kvm ? "host" : "max",
            "-smp", "\(spec.cpus)",
            "-m", "\(spec.memoryMiB)M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", spec.kernel,
            "-initrd", spec.initramfs,
            "-append", kernelCommandLine(for: spec, tscKilohertz: tscKilohertz),
            "-chardev", "file,id=console,path=\(escape(spec.consoleLog))",
            "-serial", "chardev:console",
            "-qmp", "unix:\(escape(qmp)),server=on,wait=off",
            "-chardev", "socket,id=control,path=\(escape(control)),server=on,wait=off",
            "-device", "virtio-serial-device,max_ports=4",
            "-device", "virtserialport,chardev=control,name=\(LinkNames.controlPort)",
            "-drive", "id=state,file=\(escape(spec.disk)),format=raw,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=state",
            "-object", "rng-random,id=rng,filename=/dev/urandom",
            "-device", "virtio-rng-device,rng=rng",
        ]
        for (index, share) in spec.shares.enumerated() {
            arguments += [
                "-fsdev", "local,id=fs\(index),path=\(escape(share.hostPath)),security_model=none" + (share.readOnly ? ",readonly=on" : ""),
                "-device", "virtio-9p-device,fsdev=fs\(index),mount_tag=\(share.tag)",
            ]
        }
        return arguments
    }

    /// QEMU option values separate with commas; a comma in a path is written twice.
    private static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: ",", with: ",,")
    }

    /// Starts QEMU and waits until its QMP socket answers.
    public static func start(_ spec: MachineSpec, qemu: String, timeout: Double = 20) async throws -> QEMUMachine {
        let qmp = spec.runtimeDirectory + "/qmp.sock"
        let control = spec.runtimeDirectory + "/control.sock"
        unlink(qmp)
        unlink(control)
        // QEMU's own complaints (a bad path, a missing device) go to the console log too.
        let log = open(spec.consoleLog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            if log >= 0 { close(log) }
            if devNull >= 0 { close(devNull) }
        }
        let argv = [qemu] + arguments(for: spec)
        let waiter: ProcessWaiter
        do {
            waiter = try ProcessWaiter {
                withCStrings(argv) { args in
                    withCStrings(["PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"]) { env in
                        airlock_spawn(qemu, args, env, devNull, log, log, Int32(AIRLOCK_SPAWN_SETSID | AIRLOCK_SPAWN_PDEATHSIG))
                    }
                }
            }
        } catch {
            throw MachineError("cannot start \(qemu): \(String(cString: strerror(error.errno)))")
        }
        let machine = QEMUMachine(waiter: waiter, qmpSocket: qmp, controlSocket: control)

        // Ready when QMP answers; if QEMU dies first, say why.
        let deadline = monotonicSeconds() + timeout
        while true {
            if machine.waiter.hasExited {
                throw MachineError("QEMU exited during start-up", consoleTail: tailLines(of: spec.consoleLog))
            }
            if (try? QMPClient(path: qmp, timeout: 2)) != nil { return machine }
            if monotonicSeconds() > deadline {
                await machine.stop(grace: .seconds(1))
                throw MachineError("QEMU did not open its QMP socket within \(Int(timeout)) s", consoleTail: tailLines(of: spec.consoleLog))
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    public func connectControl() async throws -> LinkClient {
        try await LinkClient.connect(unixSocket: controlSocket)
    }

    public func waitForExit() async -> Int32? {
        await waiter.wait()
    }

    public func stop(grace: Duration) async {
        // The orchestrator has asked the guest to power off: let it sync its disk and go.
        if await exited(within: grace) { return }
        // Then `quit` (QEMU ends at once), then signals.
        if let client = try? QMPClient(path: qmpSocket, timeout: 1) {
            try? client.execute("quit", timeout: 1)
        }
        for signal in [SIGTERM, SIGKILL] {
            if await exited(within: grace) { return }
            kill(-processID, signal)
            kill(processID, signal)
        }
        _ = await waiter.wait()
    }

    /// Both racers end on cancellation, so the group returns as soon as the first is done.
    private func exited(within duration: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.waiter.wait() != nil }
            group.addTask {
                try? await Task.sleep(for: duration)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}
