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

    /// `guest = ["5000:4000"]` forwards (the guest's port → the host's 127.0.0.1 port). A
    /// guest port named twice keeps the entry first by name.
    public var guestForwards: [GuestForward] {
        var seen = Set<UInt16>()
        return ports.sorted(by: { $0.key < $1.key }).flatMap { name, ports in
            ports.guest.map { GuestForward(guestPort: $0.listen, hostPort: $0.connect, entry: name) }
        }.filter { seen.insert($0.guestPort).inserted }
    }

    /// `[network.sockets.<name>]` forwards (a Unix socket in the guest → the host's socket),
    /// by name.
    public var socketForwards: [UnixSocketForward] {
        sockets.sorted(by: { $0.key < $1.key }).map { name, socket in
            UnixSocketForward(entry: name, hostPath: socket.host, guestPath: socket.guest)
        }
    }

    /// `host = [5432, "9000:3000"]` forwards (the host's 127.0.0.1 port → the guest's port).
    public var hostForwards: [HostForward] {
        var seen = Set<UInt16>()
        return ports.sorted(by: { $0.key < $1.key }).flatMap { name, ports in
            ports.host.map { HostForward(listenPort: $0.listen, guestPort: $0.connect, entry: name) }
        }.filter { seen.insert($0.listenPort).inserted }
    }
}
