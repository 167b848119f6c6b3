import Config
import Machine

extension ShareTransport {
    /// What `doctor` and `start --verbose` say about the shares of `backend` on `host`, and why.
    /// `layers`: how an OCI image root's layers travel (nil: the root is the host's).
    public static func explain(backend: MachineBackend, on host: HostFacts, layers: LayerTransport? = nil) -> String {
        let shares: String
        switch backend {
        case .cloudHypervisor:
            shares = "virtio-fs through virtiofsd (\(host.virtiofsd?.path ?? "?")), one process per share: Cloud Hypervisor has no 9p"
        case .qemu:
            if let virtiofsd = host.virtiofsd {
                shares = "virtio-fs through virtiofsd (\(virtiofsd.path)), one process per share"
            } else {
                let legacy = host.legacyVirtiofsd.map { "; \($0) is QEMU's retired C virtiofsd, which airlock does not drive" } ?? ""
                shares = "virtio-9p: the Rust virtiofsd is not installed\(legacy)"
            }
        }
        switch layers {
        case nil: return shares
        case .block?: return shares + "; the image's layers are read-only squashfs disks (built once by tar2sqfs, owners intact)"
        case .share?:
            return shares
                + (host.virtiofsd == nil
                    ? "" : "; the image's layers stay on virtio-9p (their owners live in 9p mapped-xattr form, which virtio-fs cannot present)")
        }
    }
}

extension LayerTransport {
    /// The transport for `configured` on `backend`, or why there is none.
    public static func choose(_ configured: AirlockConfig.ImageLayers, backend: MachineBackend, on host: HostFacts) throws -> LayerTransport {
        let transport: LayerTransport =
            switch configured {
            case .auto: backend == .cloudHypervisor ? .block : .share
            case .share: .share
            case .block: .block
            }
        if transport == .share && backend == .cloudHypervisor {
            throw SandboxError(
                "[vm] image_layers = \"share\" needs QEMU: Cloud Hypervisor has no 9p, and virtio-fs cannot carry the layers' owners",
                hint: "remove the setting (Cloud Hypervisor uses block images) or set [vm] backend = \"qemu\"")
        }
        if transport == .block && host.tar2sqfs == nil {
            let why =
                backend == .cloudHypervisor
                ? "on Cloud Hypervisor an OCI image's layers reach the guest as squashfs disks" : "[vm] image_layers = \"block\""
            throw SandboxError(
                "\(why), which tar2sqfs builds, and it is not installed",
                hint: "sudo apt-get install squashfs-tools-ng (or set [vm] backend = \"qemu\")")
        }
        return transport
    }
}
