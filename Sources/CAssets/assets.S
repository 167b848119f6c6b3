/* The guest assets as zstd frames (and the SHA-256 of what each unpacks to), embedded by
 * `make release`, which builds with
 *   -Xcc -DAIRLOCK_EMBED_ASSETS -Xcc -I<dir with vmlinux.zst, initramfs.zst, *.sha256>
 * Plain `swift build` embeds nothing and airlock finds the assets through AIRLOCK_KERNEL /
 * AIRLOCK_INITRAMFS or the cache. clang does not track .incbin inputs: the Makefile touches
 * this file whenever the assets change. */
    .section .rodata.airlock_assets, "a"
    .balign 64
    .globl airlock_kernel_start, airlock_kernel_end
    .globl airlock_initramfs_start, airlock_initramfs_end
    .globl airlock_kernel_digest, airlock_initramfs_digest
airlock_kernel_start:
#ifdef AIRLOCK_EMBED_ASSETS
    .incbin "vmlinux.zst"
#endif
airlock_kernel_end:
    .balign 64
airlock_initramfs_start:
#ifdef AIRLOCK_EMBED_ASSETS
    .incbin "initramfs.zst"
#endif
airlock_initramfs_end:
airlock_kernel_digest:
#ifdef AIRLOCK_EMBED_ASSETS
    .incbin "vmlinux.sha256", 0, 64
#endif
    .byte 0
airlock_initramfs_digest:
#ifdef AIRLOCK_EMBED_ASSETS
    .incbin "initramfs.sha256", 0, 64
#endif
    .byte 0
    .section .note.GNU-stack, "", @progbits
