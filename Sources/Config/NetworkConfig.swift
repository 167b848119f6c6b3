import NetworkPolicy

extension AirlockConfig.Network {
    /// The policy and the enabled rules, ready for the host proxy.
    public var networkRules: NetworkRules {
        NetworkRules(
            policy: policy,
            rules: rules.map { name, rule in
                NetworkRule(name: name, allow: rule.allow, deny: rule.deny, passthrough: rule.passthrough, allowPrivate: rule.allowPrivate)
            })
    }

    /// `host = ["4000:5000"]` forwards (the guest's port 5000 → the host's 127.0.0.1:4000). A
    /// guest port named twice keeps the entry first by name.
    public var guestForwards: [GuestForward] {
        var seen = Set<UInt16>()
        return ports.sorted(by: { $0.key < $1.key }).flatMap { name, ports in
            ports.toHost.map { GuestForward(guestPort: $0.guest, hostPort: $0.host, entry: name) }
        }.filter { seen.insert($0.guestPort).inserted }
    }

    /// `[network.sockets.<name>]` forwards (a Unix socket in the guest → the host's socket),
    /// by name.
    public var socketForwards: [UnixSocketForward] {
        sockets.sorted(by: { $0.key < $1.key }).map { name, socket in
            UnixSocketForward(entry: name, hostPath: socket.host, guestPath: socket.guest)
        }
    }

    /// `guest = [5432, "9000:3000"]` forwards (the host's 127.0.0.1:9000 → the guest's port 3000).
    public var hostForwards: [HostForward] {
        var seen = Set<UInt16>()
        return ports.sorted(by: { $0.key < $1.key }).flatMap { name, ports in
            ports.toGuest.map { HostForward(listenPort: $0.host, guestPort: $0.guest, entry: name) }
        }.filter { seen.insert($0.listenPort).inserted }
    }
}
