/// How a share reaches the guest. Cloud Hypervisor has only virtio-fs; QEMU uses virtio-fs
/// when the Rust virtiofsd is installed and virtio-9p otherwise, and always for image layers.
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
    /// `image`: the root is an OCI image (its layers are shares too).
    public static func explain(backend: BackendSelection.Backend, on host: HostFacts, image: Bool = false) -> String {
        switch backend {
        case .cloudHypervisor:
            return "virtio-fs through virtiofsd (\(host.virtiofsd?.path ?? "?")), one process per share: Cloud Hypervisor has no 9p"
        case .qemu:
            if let virtiofsd = host.virtiofsd {
                let layers = image
                    ? "; the image's layers stay on virtio-9p (their owners live in 9p mapped-xattr form, which virtio-fs cannot present)"
                    : "; OCI image layers would stay on virtio-9p (mapped-xattr ownership)"
                return "virtio-fs through virtiofsd (\(virtiofsd.path)), one process per share" + layers
            }
            let legacy = host.legacyVirtiofsd.map { "; \($0) is QEMU's retired C virtiofsd, which airlock does not drive" } ?? ""
            return "virtio-9p: the Rust virtiofsd is not installed\(legacy)"
        }
    }
}
