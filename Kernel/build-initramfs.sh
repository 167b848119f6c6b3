#!/usr/bin/env bash
# build-initramfs.sh INIT_BINARY KERNEL_OUTDIR OUT_CPIO
#
# Builds the airlock guest initramfs (newc cpio), deterministically:
#   /init                         INIT_BINARY, mode 0755
#   /dev/console                  char 5:1 (so the kernel can give /init fds 0/1/2)
#   /dev /proc /sys /tmp /run /mnt  empty mount points
#   /lib/modules/*.ko             from KERNEL_OUTDIR/modules (build-kernel.sh)
#   /lib/modules/load-order       ditto; load in this order with finit_module(2)
#   /sbin/nft /sbin/mke2fs /sbin/e2fsck /sbin/resize2fs  host binaries (see AIRLOCK_INITRAMFS_TOOLS)
#   /lib/x86_64-linux-gnu/*.so.*  their shared-library closure (ldd), plus
#   /lib64/ld-linux-x86-64.so.2   the dynamic loader at its canonical path
#   /etc/mke2fs.conf              host mke2fs defaults (if present)
# If INIT_BINARY is dynamically linked its library closure is added as well.
#
# Environment:
#   AIRLOCK_INITRAMFS_COMPRESSION  none (default; boots fastest under TCG, see README.md) | gzip | zstd
#   AIRLOCK_INITRAMFS_TOOLS        space-separated absolute paths of host
#                                  binaries to copy to /sbin/<basename>
#                                  (default: "/usr/sbin/nft /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs")
#   SOURCE_DATE_EPOCH              mtime of every entry (default 0)
#
# Same inputs (same files, same host tool binaries) => byte-identical output.
set -euo pipefail
export LC_ALL=C

die() { echo "build-initramfs.sh: error: $*" >&2; exit 1; }

[ $# -eq 3 ] || { echo "usage: $0 INIT_BINARY KERNEL_OUTDIR OUT_CPIO" >&2; exit 2; }
INIT=$1
KOUT=$2
OUT=$3
COMP=${AIRLOCK_INITRAMFS_COMPRESSION:-none}
TOOLS=${AIRLOCK_INITRAMFS_TOOLS:-/usr/sbin/nft /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs}
EPOCH=${SOURCE_DATE_EPOCH:-0}

[ -f "$INIT" ] || die "INIT_BINARY '$INIT' not found"
[ -f "$KOUT/modules/load-order" ] || die "'$KOUT' is not a build-kernel.sh output dir"
for t in cpio ldd find sort touch; do command -v "$t" >/dev/null || die "'$t' not found"; done
case "$COMP" in
    none) ;;
    gzip) command -v gzip >/dev/null || die "gzip not found" ;;
    zstd) command -v zstd >/dev/null || die "zstd not found" ;;
    *) die "AIRLOCK_INITRAMFS_COMPRESSION must be none, gzip or zstd" ;;
esac
# The kernel must be able to unpack it.
if [ "$COMP" != none ] && [ -f "$KOUT/config" ]; then
    opt=$( [ "$COMP" = gzip ] && echo CONFIG_RD_GZIP || echo CONFIG_RD_ZSTD )
    grep -q "^$opt=y" "$KOUT/config" || die "kernel has no $opt=y, cannot use $COMP"
fi

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/airlock-initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"/{dev,proc,sys,tmp,run,mnt,sbin,etc,lib/modules}

# --- /init -----------------------------------------------------------------
cp "$INIT" "$R/init"

# --- modules -----------------------------------------------------------------
while IFS= read -r m; do
    [ -n "$m" ] || continue
    cp "$KOUT/modules/$m" "$R/lib/modules/$m"
done < "$KOUT/modules/load-order"
cp "$KOUT/modules/load-order" "$R/lib/modules/load-order"

# --- tools + shared-library closure ----------------------------------------------
add_libs() { # binary -> copy every ldd-resolved object to the same path in $R
    local bin=$1 out line path
    if ! out=$(ldd "$bin" 2>&1); then
        case "$out" in
            *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
            *) die "ldd $bin failed: $out" ;;
        esac
    fi
    case "$out" in *"statically linked"*) return 0 ;; esac
    while read -r line; do                        # read strips the leading tab
        case "$line" in
            *"not found"*) die "ldd $bin: $line" ;;
            *"=> /"*) path=${line#*=> }; path=${path%% (*} ;;
            /*)       path=${line%% (*} ;;        # the dynamic loader
            *)        continue ;;                  # linux-vdso.so.1
        esac
        path=${path%%[[:space:]]*}
        if [ ! -e "$R$path" ]; then
            mkdir -p "$R$(dirname "$path")"
            cp -L "$path" "$R$path"
        fi
    done <<< "$out"
}

add_libs "$INIT"
for t in $TOOLS; do
    [ -x "$t" ] || die "tool '$t' not found (apt-get install nftables e2fsprogs?)"
    cp -L "$t" "$R/sbin/$(basename "$t")"
    add_libs "$t"
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$R/etc/mke2fs.conf"

# --- normalise metadata ----------------------------------------------------------
find "$R" -type d -exec chmod 0755 {} +
find "$R" -type f -exec chmod 0644 {} +
chmod 0755 "$R/init" "$R"/sbin/*
find "$R" -type f -name 'ld-linux*' -exec chmod 0755 {} +
find "$R" -type f -name '*.so*' -exec chmod 0755 {} +
chmod 1777 "$R/tmp"
find "$R" -depth -exec touch -h -d "@$EPOCH" {} +

# --- archive -----------------------------------------------------------------------
# Main archive: sorted paths, owner 0:0, no device/inode numbers from the host.
(cd "$R" && find . -mindepth 1 -printf '%P\n' | sort |
    cpio --quiet -o -H newc --reproducible -R 0:0) > "$STAGE/main.cpio"

# Second (concatenated) archive with /dev/console, written by hand so that no
# mknod/root is needed. newc header: magic + 13 fields of 8 hex digits.
newc_entry() { # name mode(octal) rdevmajor rdevminor ino
    local name=$1 mode=$2 maj=$3 min=$4 ino=$5 namesize pad
    namesize=$(( ${#name} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" "$((8#$mode))" 0 0 1 "$EPOCH" 0 0 0 "$maj" "$min" "$namesize" 0
    printf '%s\0' "$name"
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    head -c "$pad" /dev/zero
}
{
    newc_entry dev/console 020600 5 1 1
    newc_entry TRAILER!!! 0 0 0 0
} > "$STAGE/dev.cpio"

mkdir -p "$(dirname "$OUT")"
case "$COMP" in
    none) cat "$STAGE/main.cpio" "$STAGE/dev.cpio" > "$OUT.tmp" ;;
    gzip) cat "$STAGE/main.cpio" "$STAGE/dev.cpio" | gzip -n -9 > "$OUT.tmp" ;;
    # The kernel's zstd decompressor needs a bounded window: keep the level <= 19, no --long.
    zstd) cat "$STAGE/main.cpio" "$STAGE/dev.cpio" | zstd -q -19 -T1 --no-check -c > "$OUT.tmp" ;;
esac
mv -f "$OUT.tmp" "$OUT"
echo "build-initramfs.sh: $OUT ($COMP, $(stat -c %s "$OUT") bytes, $(wc -l < "$KOUT/modules/load-order") modules)" >&2
