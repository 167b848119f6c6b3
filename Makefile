# airlock — the entry point for building, testing and trying it.
#   make demo   install what's missing, build the single binary, run it on a sample project
#   make test   install what's missing, build, run the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT := out

# Debian packages the build, the tests and the demo need.
APT_PACKAGES := git pkg-config libgit2-dev libseccomp-dev libarchive-dev \
	qemu-system-x86 qemu-utils e2fsprogs cpio zstd tmux hyperfine python3

.PHONY: deps build release test integration bench demo fmt clean

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

# The single binary, in $(OUT)/airlock.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib
	@mkdir -p $(OUT)
	cp "$$($(SWIFT) build -c release --show-bin-path)/airlock" $(OUT)/airlock
	@ls -l $(OUT)/airlock | awk '{ printf "make release: %s (%.1f MB)\n", $$9, $$5 / 1e6 }' >&2

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

integration: test

bench: release
	scripts/bench/run $(OUT)/airlock

demo: release
	scripts/demo $(OUT)/airlock

fmt:
	$(SWIFT) format --in-place --recursive Package.swift Sources Tests

clean:
	rm -rf .build $(OUT)
