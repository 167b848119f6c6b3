// swift-tools-version: 6.2
import PackageDescription

/// Settings every target of ours shares: Swift 6 mode (strict concurrency) and no warning left standing.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
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
                "Sandbox", "GitReview",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Core: configuration, host probing, backend selection.
        .target(
            name: "Sandbox",
            dependencies: [
                "NetworkPolicy", "CShim", "Clibarchive", "Clibseccomp",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Pure rule matching for the network policy; no I/O.
        .target(name: "NetworkPolicy", swiftSettings: strict),
        // libgit2 wrapper.
        .target(name: "GitReview", dependencies: ["Clibgit2"], swiftSettings: strict),

        // Syscalls Swift can't reach: fork/exec with PDEATHSIG and setsid.
        .target(name: "CShim"),

        // C libraries from the system, found through pkg-config.
        .systemLibrary(name: "Clibgit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        .systemLibrary(name: "Clibseccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "Clibarchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),

        .testTarget(
            name: "SandboxTests",
            dependencies: ["Sandbox", "NetworkPolicy"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "AirlockCommandsTests",
            dependencies: ["AirlockCommands", "Sandbox", "GitReview"],
            swiftSettings: strict
        ),
    ]
)
