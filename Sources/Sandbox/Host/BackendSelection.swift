import Config
import Machine

/// Which VMM runs the sandbox, and why. `auto` prefers Cloud Hypervisor on a host whose KVM
/// runs standard guests and that has `cloud-hypervisor` and `virtiofsd`; otherwise QEMU, with
/// KVM when usable, else TCG (software emulation).
public struct BackendSelection: Sendable, Equatable {
    /// The choice, or `nil` when nothing can run a sandbox here.
    public var backend: MachineBackend?
    public var accelerator: Accelerator?
    /// Why this choice, in one sentence.
    public var reason: String
    /// When `backend` is nil: what is missing, each with how to get it.
    public var missing: [String]

    public static func choose(_ requested: AirlockConfig.Backend, on host: HostFacts) -> BackendSelection {
        let chMissing = cloudHypervisorMissing(on: host)
        let accelerator: Accelerator = host.kvmRunsStandardGuests ? .kvm : .tcg

        switch requested {
        case .cloudHypervisor:
            if chMissing.isEmpty {
                return BackendSelection(backend: .cloudHypervisor, accelerator: .kvm, reason: "requested in the config", missing: [])
            }
            return BackendSelection(backend: nil, accelerator: nil, reason: "cloud-hypervisor was requested but cannot run here", missing: chMissing)
        case .qemu:
            if host.qemu != nil {
                return BackendSelection(
                    backend: .qemu, accelerator: accelerator, reason: "requested in the config" + tcgNote(host, accelerator), missing: [])
            }
            return BackendSelection(backend: nil, accelerator: nil, reason: "qemu was requested but is not installed", missing: [Self.qemuMissing])
        case .auto:
            if chMissing.isEmpty {
                return BackendSelection(
                    backend: .cloudHypervisor, accelerator: .kvm, reason: "KVM runs standard guests and cloud-hypervisor and virtiofsd are installed",
                    missing: [])
            }
            if host.qemu != nil {
                // KVM problems are explained by the TCG note; name the rest briefly.
                let named = chMissing.filter { !$0.contains("KVM") && !$0.contains("/dev/kvm") }
                    .map { $0.split(separator: ":").first.map(String.init) ?? $0 }
                let why = "Cloud Hypervisor cannot run here" + (named.isEmpty ? "" : " (" + named.joined(separator: "; ") + ")")
                return BackendSelection(backend: .qemu, accelerator: accelerator, reason: why + tcgNote(host, accelerator), missing: [])
            }
            return BackendSelection(
                backend: nil, accelerator: nil, reason: "neither Cloud Hypervisor nor QEMU can run here", missing: chMissing + [Self.qemuMissing])
        }
    }

    static let qemuMissing = "qemu-system-x86_64 is not installed: sudo apt-get install qemu-system-x86"

    private static func tcgNote(_ host: HostFacts, _ accelerator: Accelerator) -> String {
        guard accelerator == .tcg else { return "; using KVM" }
        if host.kvmIsPVMOnly {
            return "; KVM here is PVM (kvm_pvm), which cannot boot a standard kernel, so QEMU uses TCG software emulation (slower)"
        }
        return "; KVM is not usable, so QEMU uses TCG software emulation (slower)"
    }

    /// What keeps Cloud Hypervisor from running, each as "what: how to fix".
    public static func cloudHypervisorMissing(on host: HostFacts) -> [String] {
        var missing: [String] = []
        if host.cloudHypervisor == nil {
            missing.append("cloud-hypervisor is not installed: " + Self.install(.cloudHypervisor, on: host.distribution))
        }
        if host.virtiofsd == nil {
            missing.append("virtiofsd is not installed: " + Self.install(.virtiofsd, on: host.distribution))
        }
        switch host.kvm {
        case .missing:
            missing.append("/dev/kvm does not exist: enable virtualization (VT-x/AMD-V) in the firmware and `sudo modprobe kvm_intel` or `kvm_amd`")
        case .denied:
            missing.append("/dev/kvm is not readable and writable by you: `sudo usermod -aG kvm $USER`, then log in again")
        case .ok:
            if !host.kvmRunsStandardGuests {
                missing.append(
                    host.kvmIsPVMOnly
                        ? "KVM is PVM (kvm_pvm): a standard guest kernel hangs under it; Cloud Hypervisor needs hardware KVM (kvm_intel or kvm_amd)"
                        : "no hardware KVM module (kvm_intel or kvm_amd) is loaded: `sudo modprobe kvm_intel` or `kvm_amd`")
            }
        }
        return missing
    }

    enum Package {
        case cloudHypervisor, virtiofsd
    }

    /// How to get `package` on `distribution`: Debian 13 and Ubuntu 24.04 package the Rust
    /// virtiofsd; of those four only Ubuntu 24.04 packages cloud-hypervisor; Debian 12 and
    /// Ubuntu 22.04 package neither (their QEMU ships the retired C virtiofsd).
    static func install(_ package: Package, on distribution: HostFacts.Distribution?) -> String {
        let id = distribution?.id
        let major = distribution?.major ?? 0
        switch package {
        case .cloudHypervisor:
            if id == "ubuntu" && major >= 24 { return "`sudo apt-get install cloud-hypervisor`" }
            let here = distribution.map { "\($0.description) does not package it; " } ?? ""
            return here + "put the static binary from github.com/cloud-hypervisor/cloud-hypervisor/releases in /usr/local/bin"
        case .virtiofsd:
            if (id == "debian" && major >= 13) || (id == "ubuntu" && major >= 24) { return "`sudo apt-get install virtiofsd`" }
            let here = distribution.map { "\($0.description) does not package the Rust virtiofsd; " } ?? ""
            return here
                + "build it from gitlab.com/virtio-fs/virtiofsd (`cargo build --release`, with libseccomp-dev and libcap-ng-dev) and put it in /usr/local/libexec; without it QEMU shares use virtio-9p"
        }
    }
}
