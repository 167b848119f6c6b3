# airlock — the entry point for building, testing and trying it.
#   make demo   install what's missing, build the single binary, run it on a sample project
#   make test   install what's missing, build, run the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT := out

# Debian packages the build, the tests and the demo need.
APT_PACKAGES := git pkg-config libgit2-dev zlib1g-dev libseccomp-dev libarchive-dev libzstd-dev liblua5.4-dev \
	qemu-system-x86 qemu-utils e2fsprogs nftables cpio zstd xz-utils kmod binutils gcc libc6-dev \
	tmux hyperfine python3 file curl openssl iproute2 dbus gnome-keyring libsecret-tools \
	docker-registry skopeo umoci apache2-utils busybox-static docker.io squashfs-tools-ng

# The guest: the static PID 1, the Debian kernel and the initramfs, in $(ASSETS).
ASSETS := $(OUT)/assets
GUEST_BUILD := .build-guest
GUEST_SOURCES := $(shell find Sources/airlock-guest Sources/GuestAgent Sources/GuestLink Sources/AirlockSystem Sources/CShim Sources/CGuestInit -type f) Package.swift

.PHONY: deps build guest kernel release test integration bench demo fmt fmt-check clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing" >&2; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "make deps: Swift 6.2 or later is needed (https://www.swift.org/install/linux/)" >&2; exit 1; }

build: deps
	$(SWIFT) build

# The guest agent, fully static (its own build folder: other flags than the host's).
guest: deps $(ASSETS)/airlock-guest
$(ASSETS)/airlock-guest: $(GUEST_SOURCES)
	$(SWIFT) build -c release --product airlock-guest --scratch-path $(GUEST_BUILD) -Xswiftc -static-executable -Xswiftc -Osize 2>&1 \
	  | grep -v "statically linked applications requires at runtime" >&2; test $${PIPESTATUS[0]} -eq 0
	@mkdir -p $(ASSETS)
	strip -o $@ "$$($(SWIFT) build -c release --product airlock-guest --scratch-path $(GUEST_BUILD) --show-bin-path)/airlock-guest"
	@file $@ | grep -q 'statically linked' || { echo "make guest: $@ is not static" >&2; exit 1; }

# The guest kernel (Debian's, pinned in Kernel/kernel.env) and the initramfs around the agent.
# QEMU boots the uncompressed ELF vmlinux (PVH) seconds faster than the bzImage under TCG.
kernel: guest $(ASSETS)/vmlinux $(ASSETS)/initramfs
$(ASSETS)/vmlinux: Kernel/kernel.env Kernel/modules.list Kernel/build-kernel.sh
	@# apt-get download needs package lists; a machine that has every package may have none.
	Kernel/build-kernel.sh $(ASSETS)/kernel || { $(SUDO) apt-get update -q && Kernel/build-kernel.sh $(ASSETS)/kernel; }
	cp $(ASSETS)/kernel/vmlinux $@
	sha256sum $@ | cut -c1-64 > $@.sha256
$(ASSETS)/initramfs: $(ASSETS)/airlock-guest $(ASSETS)/vmlinux Kernel/build-initramfs.sh
	Kernel/build-initramfs.sh $(ASSETS)/airlock-guest $(ASSETS)/kernel $@
	sha256sum $@ | cut -c1-64 > $@.sha256
	@touch Sources/CAssets/assets.S

# The single binary, in $(OUT)/airlock, with the kernel and initramfs inside as zstd frames
# (unpacked once into the cache by the first start of a version), the size of each part
# printed; it needs only the shared libraries scripts/check-libraries names.
release: deps kernel $(ASSETS)/vmlinux.zst $(ASSETS)/initramfs.zst
	$(SWIFT) build -c release --product airlock --static-swift-stdlib -Xlinker --no-export-dynamic \
	  -Xcc -DAIRLOCK_EMBED_ASSETS -Xcc -I$(abspath $(ASSETS))
	@mkdir -p $(OUT)
	strip -o $(OUT)/airlock "$$($(SWIFT) build -c release --product airlock --show-bin-path)/airlock"
	scripts/binary-size "$$($(SWIFT) build -c release --product airlock --show-bin-path)/airlock" $(OUT)/airlock
	scripts/check-libraries $(OUT)/airlock
$(ASSETS)/%.zst: $(ASSETS)/%
	zstd -19 -T0 -q -f -o $@ $<
	@touch Sources/CAssets/assets.S

# Unit tests, then the VM tests on their own (they boot the assets built by `make kernel`;
# alone, so that no other suite competes with QEMU for the two cores). Every suite that boots
# a VM lives in the VMTests target (tagged `.vm`; this swift test cannot filter by tag), so
# the passes select by target.
VM_ENV := AIRLOCK_KERNEL=$(abspath $(ASSETS)/vmlinux) AIRLOCK_INITRAMFS=$(abspath $(ASSETS)/initramfs)
test: deps kernel
	$(SWIFT) build --build-tests
	scripts/check-libraries "$$($(SWIFT) build --show-bin-path)/airlock"
	@# One test at a time: several suites flood loopback or wait on deadlines, and on two cores
	@# running them side by side starves the others.
	$(SWIFT) test --skip-build --skip '^VMTests\.' --no-parallel
	$(VM_ENV) $(SWIFT) test --skip-build --filter '^VMTests\.'
	@# Run as root, both passes again as an ordinary user (most users are not root).
	scripts/test-as-user $(ASSETS)

integration: deps kernel
	$(SWIFT) build --build-tests
	$(VM_ENV) $(SWIFT) test --skip-build --filter '^VMTests\.'

# What `make bench` also compares against (mitmproxy brings a Python stack the tests do not need).
BENCH_PACKAGES := nghttp2-client nghttp2-server mitmproxy

bench: release
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BENCH_PACKAGES)"
	scripts/bench/run $(OUT)/airlock

demo: release
	scripts/demo $(OUT)/airlock

fmt:
	$(SWIFT) format --in-place --recursive --parallel Package.swift Sources Tests

# What CI checks: the tree is as `make fmt` leaves it (.swift-format).
fmt-check:
	$(SWIFT) format lint --strict --recursive --parallel Package.swift Sources Tests

clean:
	rm -rf .build $(GUEST_BUILD) $(OUT)
