#!/usr/bin/env bash
# build-kernel.sh OUTDIR
#
# Produces the airlock guest kernel from Debian's packaged kernel:
#   OUTDIR/vmlinuz              bzImage from the pinned linux-image package
#   OUTDIR/vmlinux              the same kernel, decompressed ELF with the PVH
#                               entry note: QEMU boots it directly (-kernel
#                               vmlinux), ~3.5 s faster under TCG than bzImage
#   OUTDIR/modules/<name>.ko    uncompressed modules: closure of modules.list
#   OUTDIR/modules/load-order   one file name per line, dependencies first
#   OUTDIR/config               the kernel's .config (from /boot/config-*)
#   OUTDIR/kernel.release       uname -r of the kernel, e.g. 6.1.0-56-amd64
#   OUTDIR/build-info           package, version, sha256 of the .deb used
#
# Idempotent and non-interactive. Requires (Debian): apt-get, dpkg-deb, kmod
# (depmod), coreutils, grep, xz-utils (vmlinux extraction; zstd/gzip if the
# kernel or modules use those). The .deb is cached in $AIRLOCK_KERNEL_CACHE
# (default: ${XDG_CACHE_HOME:-$HOME/.cache}/airlock/kernel).
#
# Module signatures are stripped (saves ~0.5 s of RSA verification per boot
# under TCG; loading unsigned modules only sets taint flag E because Debian
# does not set CONFIG_MODULE_SIG_FORCE). Set AIRLOCK_KEEP_MODULE_SIGNATURES=1
# to keep them; they are always kept if the kernel enforces signatures.
set -euo pipefail
export LC_ALL=C

die() { echo "build-kernel.sh: error: $*" >&2; exit 1; }
log() { echo "build-kernel.sh: $*" >&2; }

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# shellcheck source=kernel.env
. "$HERE/kernel.env"
: "${KERNEL_PACKAGE:?kernel.env must set KERNEL_PACKAGE}"
: "${KERNEL_VERSION:?kernel.env must set KERNEL_VERSION}"

CACHE=${AIRLOCK_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock/kernel}
mkdir -p "$CACHE/debs" "$CACHE/extract"

for t in apt-get apt-cache dpkg-deb sha256sum; do
    command -v "$t" >/dev/null || die "'$t' not found (this script needs a Debian/Ubuntu host)"
done
DEPMOD=$(command -v depmod || true)
[ -n "$DEPMOD" ] || for p in /usr/sbin/depmod /sbin/depmod; do [ -x "$p" ] && DEPMOD=$p && break; done

# apt-get download as root warns that the _apt sandbox user cannot write to
# the cache dir; downloading unsandboxed is fine here.
APT_OPTS=()
[ "$(id -u)" = 0 ] && APT_OPTS=(-o APT::Sandbox::User=root)

# ---------------------------------------------------------------------------
# 1. Get the .deb (cached).
# ---------------------------------------------------------------------------
deb_path() { # package version -> path of the cached .deb (may not exist)
    local v=${2//:/%3a}
    echo "$CACHE/debs/${1}_${v}_amd64.deb"
}

fetch() { # package version -> 0 if the .deb is in the cache afterwards
    local pkg=$1 ver=$2 deb tmp
    deb=$(deb_path "$pkg" "$ver")
    [ -s "$deb" ] && return 0
    tmp=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
    if (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q download "$pkg=$ver" >&2); then
        local f
        f=$(ls "$tmp"/*.deb)
        mv "$f" "$deb"
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    return 1
}

PKG=$KERNEL_PACKAGE
VER=$KERNEL_VERSION
FALLBACK=0
if ! fetch "$PKG" "$VER"; then
    # Pinned version no longer downloadable: fall back to what the
    # linux-image-amd64 meta package currently depends on.
    NEWPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
             sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
    [ -n "$NEWPKG" ] || die "cannot download $PKG=$VER and cannot resolve linux-image-amd64 (run apt-get update?)"
    NEWVER=$(apt-cache policy "$NEWPKG" | sed -n 's/^ *Candidate: //p')
    if [ -z "$NEWVER" ] || [ "$NEWVER" = "(none)" ]; then die "no candidate version for $NEWPKG"; fi
    {
        echo "######################################################################"
        echo "## WARNING: pinned kernel $PKG=$VER is not available"
        echo "##          from the apt archive any more."
        echo "## FALLING BACK to $NEWPKG=$NEWVER"
        echo "##          (current dependency of linux-image-amd64)."
        echo "## Update Kernel/kernel.env to:"
        echo "##   KERNEL_PACKAGE=$NEWPKG"
        echo "##   KERNEL_VERSION=$NEWVER"
        echo "## and re-verify the guest (see Kernel/README.md)."
        echo "######################################################################"
    } >&2
    PKG=$NEWPKG
    VER=$NEWVER
    FALLBACK=1
    fetch "$PKG" "$VER" || die "cannot download $PKG=$VER either"
fi
DEB=$(deb_path "$PKG" "$VER")

# Sanity-check the package identity (apt already verified it against the
# signed archive metadata).
[ "$(dpkg-deb -f "$DEB" Package)" = "$PKG" ] || die "$DEB is not $PKG"
[ "$(dpkg-deb -f "$DEB" Version)" = "$VER" ] || die "$DEB is not version $VER"
DEB_SHA=$(sha256sum "$DEB" | cut -d' ' -f1)

# ---------------------------------------------------------------------------
# 2. Extract (cached, keyed by the .deb's sha256).
# ---------------------------------------------------------------------------
ROOT="$CACHE/extract/${PKG}_${VER//:/%3a}"
if [ ! -f "$ROOT/.airlock-extracted" ] || [ "$(cat "$ROOT/.airlock-extracted")" != "$DEB_SHA" ]; then
    log "extracting $(basename "$DEB")"
    rm -rf "$ROOT" "$ROOT.tmp"
    mkdir -p "$ROOT.tmp"
    dpkg-deb -x "$DEB" "$ROOT.tmp"
    echo "$DEB_SHA" > "$ROOT.tmp/.airlock-extracted"
    mv "$ROOT.tmp" "$ROOT"
fi

# Module tree: lib/modules (bookworm) or usr/lib/modules (merged-usr packages).
if [ -d "$ROOT/lib/modules" ]; then DEPMOD_BASE=$ROOT
elif [ -d "$ROOT/usr/lib/modules" ]; then DEPMOD_BASE=$ROOT/usr
else die "no lib/modules in $PKG"; fi
KREL=$(ls "$DEPMOD_BASE/lib/modules")
[ "$(echo "$KREL" | wc -l)" = 1 ] || die "expected exactly one kernel release in $PKG, got: $KREL"
MODDIR=$DEPMOD_BASE/lib/modules/$KREL
KIMG=$ROOT/boot/vmlinuz-$KREL
KCONFIG=$ROOT/boot/config-$KREL
[ -f "$KIMG" ] || die "missing $KIMG"
[ -f "$KCONFIG" ] || die "missing $KCONFIG"

# Debian ships no modules.dep (postinst runs depmod); generate it once.
if [ ! -s "$MODDIR/modules.dep" ]; then
    [ -n "$DEPMOD" ] || die "modules.dep missing and depmod not found: apt-get install kmod"
    log "running depmod for $KREL"
    "$DEPMOD" -b "$DEPMOD_BASE" "$KREL"
fi

# ---------------------------------------------------------------------------
# 3. Resolve the dependency closure of modules.list.
# ---------------------------------------------------------------------------
canon() { # path or name -> canonical module name
    local n=${1##*/}
    n=${n%.ko*}
    echo "${n//-/_}"
}

# modules.dep -> "name path dep1 dep2 ..." (names canonical, deps sorted so
# the result does not depend on depmod's output order).
declare -A MPATH MDEPS BUILTIN
while read -r name path deps; do
    MPATH[$name]=$path
    MDEPS[$name]=$deps
done < <(awk -F'[: ]+' '
    function canon(p,  n) { n = p; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); return n }
    {
        line = canon($1) " " $1
        n = 0; delete d
        for (i = 2; i <= NF; i++) if ($i != "") d[++n] = canon($i)
        # insertion sort (small lists)
        for (i = 2; i <= n; i++) { v = d[i]; j = i - 1; while (j > 0 && d[j] > v) { d[j+1] = d[j]; j-- } d[j+1] = v }
        for (i = 1; i <= n; i++) if (i == 1 || d[i] != d[i-1]) line = line " " d[i]
        print line
    }' "$MODDIR/modules.dep")

while read -r b; do BUILTIN[$b]=1; done < <(awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); print n }' "$MODDIR/modules.builtin")

declare -A STATE   # unset = new, 1 = visiting, 2 = done
ORDER=()
visit() {
    local m=$1 d
    case "${STATE[$m]:-0}" in
        2) return ;;
        1) die "dependency cycle at $m" ;;
    esac
    STATE[$m]=1
    for d in ${MDEPS[$m]}; do visit "$d"; done
    STATE[$m]=2
    ORDER+=("$m")
}

while IFS= read -r line; do
    line=${line%%#*}
    for w in $line; do
        m=$(canon "$w")
        if [ -n "${MPATH[$m]:-}" ]; then
            visit "$m"
        elif [ -n "${BUILTIN[$m]:-}" ]; then
            log "note: $m is built into $KREL, skipping"
        else
            die "module '$w' from modules.list not found in $PKG $VER ($KREL)"
        fi
    done
done < "$HERE/modules.list"

# ---------------------------------------------------------------------------
# Helpers for step 4.
# ---------------------------------------------------------------------------
extract_vmlinux() { # bzImage out -> decompressed ELF (like scripts/extract-vmlinux)
    local img=$1 out=$2 magic cmd off
    for spec in '\xFD7zXZ\x00|xz -dcq --single-stream' '\x28\xB5\x2F\xFD|zstd -dcq' '\x1F\x8B\x08|gzip -dcq'; do
        magic=${spec%%|*}
        cmd=${spec#*|}
        command -v "${cmd%% *}" >/dev/null || continue
        for off in $(grep -aboP "$magic" "$img" | cut -d: -f1); do
            tail -c +$((off + 1)) "$img" | $cmd > "$out" 2>/dev/null || true
            if [ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ]; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}

strip_signature() { # module.ko (in place); no-op if unsigned
    local f=$1 size siglen
    tail -c 28 "$f" | cmp -s - <(printf '~Module signature appended~\n') || return 0
    size=$(stat -c %s "$f")
    siglen=$(tail -c 32 "$f" | head -c 4 | od -An -tu1 | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
    truncate -s $((size - 28 - 12 - siglen)) "$f"
}

STRIP_SIGS=1
[ "${AIRLOCK_KEEP_MODULE_SIGNATURES:-0}" = 1 ] && STRIP_SIGS=0
grep -q '^CONFIG_MODULE_SIG_FORCE=y' "$KCONFIG" && STRIP_SIGS=0

# ---------------------------------------------------------------------------
# 4. Write OUTDIR (staged, then swapped in).
# ---------------------------------------------------------------------------
mkdir -p "$OUTDIR"
STAGE=$(mktemp -d "$OUTDIR/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/modules"
cp "$KIMG" "$STAGE/vmlinuz"
extract_vmlinux "$KIMG" "$STAGE/vmlinux" || die "could not extract vmlinux from $KIMG"
if command -v readelf >/dev/null && ! readelf -n "$STAGE/vmlinux" | grep -q 'Xen.*0x00000012'; then
    log "WARNING: vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); QEMU cannot boot it, use vmlinuz"
fi
cp "$KCONFIG" "$STAGE/config"
echo "$KREL" > "$STAGE/kernel.release"
for m in "${ORDER[@]}"; do
    src=$MODDIR/${MPATH[$m]}
    dst=$STAGE/modules/$m.ko
    case "$src" in
        *.ko)     cp "$src" "$dst" ;;
        *.ko.xz)  xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc "$src" > "$dst" ;;
        *.ko.gz)  gzip -dc "$src" > "$dst" ;;
        *)        die "unknown module format: $src" ;;
    esac
    [ "$STRIP_SIGS" = 1 ] && strip_signature "$dst"
    echo "$m.ko" >> "$STAGE/modules/load-order"
done
chmod 0644 "$STAGE"/modules/* "$STAGE/vmlinuz" "$STAGE/vmlinux" "$STAGE/config" "$STAGE/kernel.release"
{
    echo "KERNEL_PACKAGE=$PKG"
    echo "KERNEL_VERSION=$VER"
    echo "KERNEL_RELEASE=$KREL"
    echo "DEB_SHA256=$DEB_SHA"
    echo "MODULES=${#ORDER[@]}"
    echo "MODULE_SIGNATURES_STRIPPED=$STRIP_SIGS"
    echo "PINNED=$KERNEL_PACKAGE=$KERNEL_VERSION"
    echo "FALLBACK=$FALLBACK"
} > "$STAGE/build-info"
chmod 0644 "$STAGE/build-info"

for f in vmlinuz vmlinux config kernel.release build-info; do mv -f "$STAGE/$f" "$OUTDIR/$f"; done
rm -rf "$OUTDIR/modules"
mv "$STAGE/modules" "$OUTDIR/modules"

log "$PKG $VER ($KREL): $(wc -l < "$OUTDIR/modules/load-order") modules -> $OUTDIR"
