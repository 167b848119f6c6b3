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
}
