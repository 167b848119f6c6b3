import CloudHypervisor
import Config
import GuestLink
import Machine
import QEMU

/// Builds the backend `BackendSelection` chose: the one place that knows each VMM's start.
struct MachineLauncher: Sendable {
    var backend: MachineBackend
    var accelerator: Accelerator
    var start: @Sendable (MachineSpec, EgressHandler?) async throws -> any VirtualMachine

    /// The launcher for `selection` on `host`, or why none can run.
    static func make(_ selection: BackendSelection, host: HostFacts, config: AirlockConfig, progress: (@Sendable (String) -> Void)?) throws
        -> MachineLauncher
    {
        guard let backend = selection.backend else {
            throw SandboxError(
                "no backend can run the sandbox: \(selection.reason)", hint: selection.missing.joined(separator: "\n  hint: "))
        }
        let accelerator = selection.accelerator ?? .tcg
        switch backend {
        case .cloudHypervisor:
            // BackendSelection chose it, so both were found; checked again, not assumed.
            guard let cloudHypervisor = host.cloudHypervisor?.path, let virtiofsd = host.virtiofsd?.path else {
                throw SandboxError("cloud-hypervisor or virtiofsd disappeared", hint: "run `airlock doctor`")
            }
            return MachineLauncher(backend: backend, accelerator: accelerator) { spec, egress in
                try await CloudHypervisorMachine.start(
                    spec, cloudHypervisor: cloudHypervisor, virtiofsd: virtiofsd,
                    guestListeners: egress.map { [LinkNames.egressVsockPort: $0] } ?? [:])
            }
        case .qemu:
            guard let qemu = host.qemu?.path else { throw SandboxError("qemu-system-x86_64 disappeared", hint: "run `airlock doctor`") }
            let vhostVsock = host.vhostVsock == .ok
            // The Rust virtiofsd when installed (QEMU's retired C one is never used): virtio-fs
            // for every share but image layers; otherwise 9p.
            let virtiofsd = host.virtiofsd?.path
            // Boots once per VM configuration; later starts resume that boot (BootSnapshot).
            let snapshots = config.vm.bootSnapshot ? BootSnapshot(directory: host.cacheDirectory + "/snapshots") : nil
            return MachineLauncher(backend: backend, accelerator: accelerator) { spec, egress in
                try await QEMUMachine.start(
                    spec, qemu: qemu, vhostVsock: vhostVsock, virtiofsd: virtiofsd, egress: egress, snapshots: snapshots, progress: progress)
            }
        }
    }
}
