// swift-tools-version: 6.2
import PackageDescription

/// Settings every target of ours shares: Swift 6 mode (strict concurrency) and no warning left standing.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
    // Extensions are visible only from modules a file imports: no API of full Foundation (and
    // with it ICU's 34 MB of data) is reached through a dependency's import by accident.
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "airlock",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "airlock", targets: ["airlock"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // The OCI registry client's HTTP/1.1 and HTTP/2 over TLS (brings swift-nio-ssl).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // TLS interception: the per-project CA and its leaves; TLS both ways.
        .package(url: "https://github.com/apple/swift-certificates", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.36.0"),
        // Test-only: reads the Cloud Hypervisor OpenAPI spec for the contract tests.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // The executable: bootstraps logging, hands off to AirlockCommands.
        .executableTarget(
            name: "airlock",
            dependencies: ["AirlockCommands", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // One file per subcommand, grouped by noun.
        .target(
            name: "AirlockCommands",
            dependencies: [
                "Sandbox", "Config", "GitReview", "GuestLink", "NetworkProxy", "NetworkPolicy", "AirlockSystem", "CShim", "OCI", "Secrets",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The orchestrator: host probing and backend choice, the sandbox manager, booting in
        // phases, sessions and the control socket.
        .target(
            name: "Sandbox",
            dependencies: [
                "AirlockSystem", "Config", "Machine", "QEMU", "CloudHypervisor", "NetworkPolicy", "NetworkProxy", "Middleware", "GuestLink",
                "GitReview", "OCI",
                "CShim", "CAssets", "Clibarchive", "Clibseccomp", "Clibzstd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The configuration: airlock.toml layers, schema, presets, diagnostics.
        .target(
            name: "Config",
            dependencies: ["AirlockSystem", "NetworkPolicy", "Middleware", .product(name: "TOMLKit", package: "TOMLKit")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // What host and guest share below everything: syscalls, errors, files, the confined
        // directory reader, child processes, formatting.
        .target(name: "AirlockSystem", dependencies: ["CShim"], exclude: ["README.md"], swiftSettings: strict),
        // The machine layer: the VirtualMachine protocol, MachineSpec, VMM helper processes,
        // virtiofsd, share transports. Backends depend on it and on nothing higher.
        .target(
            name: "Machine",
            dependencies: ["AirlockSystem", "GuestLink", "CShim", "Clibseccomp", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // Cloud Hypervisor's REST API: client and config types, with no airlock dependency.
        .target(
            name: "CloudHypervisorAPI",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The host↔guest protocol: HTTP/2 streams (swift-nio-http2) carrying setup and exec sessions.
        .target(
            name: "GuestLink",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // PID 1 of the guest VM; built fully static by `make guest` and packed into the initramfs.
        .executableTarget(name: "airlock-guest", dependencies: ["GuestAgent"], swiftSettings: strict),
        // What PID 1 does: mounts, root assembly, processes, the guest network (a library, so
        // tests reach it without a VM).
        .target(
            name: "GuestAgent",
            dependencies: [
                "GuestLink", "AirlockSystem", "CShim", "CGuestInit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The QEMU backend (microvm, QMP, virtio-serial link, virtio-fs or 9p shares).
        .target(
            name: "QEMU",
            dependencies: [
                "Machine", "AirlockSystem", "GuestLink", "CShim",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The Cloud Hypervisor backend (REST API over a Unix socket, virtiofsd, hybrid vsock).
        .target(
            name: "CloudHypervisor",
            dependencies: [
                "CloudHypervisorAPI", "Machine", "AirlockSystem", "GuestLink", "CShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // OCI images: distribution client, content-addressed store, layer extraction.
        .target(
            name: "OCI",
            dependencies: [
                "AirlockSystem", "Clibarchive", "CShim",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // Pure rule matching for the network policy; no I/O.
        .target(name: "NetworkPolicy", dependencies: ["AirlockSystem"], exclude: ["README.md"], swiftSettings: strict),
        // The host side of the guest's network: judges, resolves, connects and relays each
        // egress stream; port forwards; audit records.
        .target(
            name: "NetworkProxy",
            dependencies: [
                "NetworkPolicy", "GuestLink", "AirlockSystem", "Middleware",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // Not shipped: measures the egress relay against a direct loopback connection (`make bench`).
        .executableTarget(
            name: "airlock-netbench",
            dependencies: [
                "NetworkProxy", "NetworkPolicy", "Middleware", "GuestLink", "AirlockSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The secrets vault (`airlock secrets`, `${NAME}` after the environment): a 0600 file or one
        // encrypted with a passphrase (scrypt, ChaCha20-Poly1305).
        .target(
            name: "Secrets",
            dependencies: [
                "AirlockSystem", .product(name: "Crypto", package: "swift-crypto"), .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // Lua middleware: each request's script in a sandboxed Lua 5.4 state (the Rust airlock's API).
        .target(
            name: "Middleware", dependencies: ["Clua"], exclude: ["README.md"],
            // Lua is small: linked in, so the binary needs no Lua library on the user's machine.
            swiftSettings: strict, linkerSettings: [.linkedLibrary(":liblua5.4.a"), .linkedLibrary("m")]),
        // libgit2 wrapper.
        .target(name: "GitReview", dependencies: ["AirlockSystem", "Clibgit2", "CShim"], exclude: ["README.md"], swiftSettings: strict),

        // Syscalls Swift can't reach: fork/exec with PDEATHSIG and setsid.
        .target(name: "CShim"),
        // Runs before the Swift runtime in the guest's PID 1 (mounts /proc).
        .target(name: "CGuestInit"),
        // The guest kernel and initramfs, linked in by `make release` (.incbin).
        .target(name: "CAssets"),
        // libarchive (libarchive-dev's headers), opened with dlopen when OCI images need it:
        // the binary does not require it to start.
        .target(name: "Clibarchive", linkerSettings: [.linkedLibrary("dl")]),

        // C libraries from the system, found through pkg-config.
        .systemLibrary(name: "Clibgit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        // Lua 5.4's headers (liblua5.4-dev); `Middleware` links its static library.
        .systemLibrary(name: "Clua", providers: [.apt(["liblua5.4-dev"])]),
        .systemLibrary(name: "Clibseccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // The embedded guest kernel and initramfs are zstd frames, unpacked once into the cache.
        .systemLibrary(name: "Clibzstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        // Test helpers shared by the test targets: the CLI runner, stand-in servers, registries,
        // fixtures, the VM environment.
        .target(
            name: "TestSupport",
            dependencies: ["AirlockSystem", "CShim", "Sandbox", "OCI"],
            path: "Tests/TestSupport",
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(name: "AirlockSystemTests", dependencies: ["AirlockSystem", "CShim"], swiftSettings: strict),
        .testTarget(name: "NetworkPolicyTests", dependencies: ["NetworkPolicy"], swiftSettings: strict),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "NetworkPolicy", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "AirlockSystem"], swiftSettings: strict),
        .testTarget(
            name: "GuestAgentTests",
            dependencies: ["GuestAgent", "GuestLink", "AirlockSystem", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "GitReviewTests", dependencies: ["GitReview", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SecretsTests", dependencies: ["Secrets", "AirlockSystem"], swiftSettings: strict),
        .testTarget(name: "MiddlewareTests", dependencies: ["Middleware"], swiftSettings: strict),
        .testTarget(name: "OCITests", dependencies: ["OCI", "Sandbox", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "SandboxTests",
            dependencies: [
                "Sandbox", "Config", "Machine", "NetworkProxy", "GuestLink", "GitReview", "AirlockSystem", "TestSupport", "Clibzstd",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NetworkProxyTests",
            dependencies: [
                "NetworkProxy", "NetworkPolicy", "GuestLink", "AirlockSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestLinkTests",
            dependencies: ["GuestLink", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "QEMUTests",
            dependencies: ["QEMU", "Machine", "AirlockSystem"],
            swiftSettings: strict
        ),
        // Covers both Cloud Hypervisor modules: the API leaf and the machine share the stubs.
        .testTarget(
            name: "CloudHypervisorTests",
            dependencies: [
                "CloudHypervisor", "CloudHypervisorAPI", "Machine", "AirlockSystem", "GuestLink", "CShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        // The `airlock` binary as users run it (no VM).
        .testTarget(
            name: "AirlockCommandsTests",
            dependencies: ["AirlockCommands", "Sandbox", "GitReview", "OCI", "AirlockSystem", "CShim", "TestSupport"],
            swiftSettings: strict
        ),
        // Every suite that boots a VM, and only those: `make test` runs this target on its own.
        .testTarget(
            name: "VMTests",
            dependencies: ["Sandbox", "OCI", "AirlockSystem", "TestSupport"],
            swiftSettings: strict
        ),
    ]
)
