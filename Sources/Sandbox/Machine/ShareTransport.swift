/// How a share reaches the guest. Cloud Hypervisor has only virtio-fs; QEMU uses virtio-fs
/// when the Rust virtiofsd is installed and virtio-9p otherwise, and 9p for image layers shared
/// as directories (`LayerTransport`).
public enum ShareTransport: String, Sendable, Equatable {
    case virtiofs = "virtio-fs"
    case ninep = "virtio-9p"

    /// QEMU's transport for `share`. An image layer (`mappedOwnership`) keeps its files' owners,
    /// modes and device nodes in `user.virtfs.*` xattrs, which only 9p's `mapped-xattr` model
    /// turns back into ownership; virtiofsd would show the extracting user's files with those
    /// xattrs as plain data. So layers stay on 9p even when virtiofsd is there.
    public static func qemu(for share: MachineSpec.Share, virtiofsd: Bool) -> ShareTransport {
        virtiofsd && !share.mappedOwnership ? .virtiofs : .ninep
    }

    /// What `doctor` and `start --verbose` say about the shares of `backend` on `host`, and why.
    /// `layers`: how an OCI image root's layers travel (nil: the root is the host's).
    public static func explain(backend: BackendSelection.Backend, on host: HostFacts, layers: LayerTransport? = nil) -> String {
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

/// How an OCI image's layers reach the guest. An extracted layer keeps its files' owners,
/// modes and device nodes in `user.virtfs.*` xattrs, which only QEMU's 9p (`mapped-xattr`)
/// presents as such; virtio-fs would show the extracting user's files. So on Cloud Hypervisor
/// (virtio-fs only) each layer becomes a read-only squashfs disk instead, built once per layer
/// by `tar2sqfs` with the owners real again; QEMU can use those too (`[vm] image_layers`).
public enum LayerTransport: String, Sendable, Equatable {
    /// A 9p share with mapped-xattr ownership (QEMU only).
    case share
    /// A read-only virtio-blk disk holding the layer as squashfs.
    case block

    /// The transport for `configured` on `backend`, or why there is none.
    public static func choose(_ configured: AirlockConfig.ImageLayers, backend: BackendSelection.Backend, on host: HostFacts) throws -> LayerTransport
    {
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
