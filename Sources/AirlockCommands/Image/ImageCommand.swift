import ArgumentParser

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Manage the OCI images sandboxes boot from ([vm] image = \"debian:bookworm\").",
        discussion: """
            Images come from the local Docker daemon when it has them ([vm] resolution = \
            "auto", the default; "docker" or "registry" to insist; `pull --from` overrides), \
            else from their registry (Docker Hub by default; credentials from \
            ~/.docker/config.json, or asked on the terminal and never saved), unpacked into $XDG_CACHE_HOME/airlock/oci (default \
            ~/.cache/airlock/oci), one directory per layer, and stacked with overlayfs in the \
            guest. A registry without TLS needs `insecure = true` in [registries."host:port"].
            """,
        subcommands: [ImageList.self, ImagePull.self, ImageRemove.self, ImagePrune.self],
        defaultSubcommand: ImageList.self
    )
}
