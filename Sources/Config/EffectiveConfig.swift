import NetworkPolicy

extension ConfigLoader.Result {
    /// The configuration as it takes effect: built-in defaults under every layer, entries
    /// switched off with `enabled = false` removed. Each value keeps its origin.
    public var effective: ConfigNode {
        let defaults = AirlockConfig.defaultsTree
        return Self.removingDisabled(defaults.merged(with: merged), depth: 0)
    }

    private static func removingDisabled(_ node: ConfigNode, depth: Int) -> ConfigNode {
        guard case .table(let entries) = node.value else { return node }
        let kept = entries.compactMap { entry -> (key: String, node: ConfigNode)? in
            if entry.node["enabled"]?.boolean == false { return nil }
            return (entry.key, removingDisabled(entry.node, depth: depth + 1))
        }
        return ConfigNode(.table(kept), origin: node.origin)
    }
}

extension AirlockConfig {
    /// The defaults of `AirlockConfig()` as a tree, for showing where each value came from.
    static var defaultsTree: ConfigNode {
        let defaults = AirlockConfig()
        func leaf(_ value: ConfigNode.Value) -> ConfigNode { ConfigNode(value, origin: .builtIn) }
        func table(_ entries: [(String, ConfigNode)]) -> ConfigNode {
            ConfigNode(.table(entries.map { (key: $0.0, node: $0.1) }), origin: .builtIn)
        }
        return table([
            (
                "vm",
                table([
                    ("image", leaf(.string(defaults.vm.image))),
                    ("cpus", leaf(.integer(defaults.vm.cpus))),
                    ("memory", leaf(.string(defaults.vm.memory.description))),
                    ("backend", leaf(.string(defaults.vm.backend.rawValue))),
                    ("resolution", leaf(.string(defaults.vm.resolution.rawValue))),
                    ("image_layers", leaf(.string(defaults.vm.imageLayers.rawValue))),
                    ("boot_snapshot", leaf(.boolean(defaults.vm.bootSnapshot))),
                ])
            ),
            ("workspace", table([("mode", leaf(.string(defaults.workspace.mode.rawValue)))])),
            ("network", table([("policy", leaf(.string(defaults.network.policy.rawValue)))])),
            ("disk", table([("size", leaf(.string(defaults.disk.size.description)))])),
        ])
    }
}
