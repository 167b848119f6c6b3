import AirlockSystem
import CShim

#if canImport(Glibc)
import Glibc
#endif

/// The guest's network, which has no card: loopback, a dummy interface that carries the
/// default route (so connect() to any address gets as far as netfilter), and an nftables rule
/// set that sends every TCP connection to the egress proxy on loopback and drops everything
/// else that would leave loopback. DNS answers come from the guest's own resolver on
/// loopback. IPv6 is switched off and its traffic dropped all the same.
enum GuestNetwork {
    /// The dummy interface's address (no packet ever leaves through it).
    static let dummyAddress = "10.201.0.2"
    /// Where the guest's resolver listens (UDP and TCP 53); `/etc/resolv.conf` names it.
    static let resolverAddress = "127.0.0.53"
    /// Where redirected TCP connections arrive (the egress proxy).
    static let proxyPort: UInt16 = 15001
    /// Fake addresses the resolver hands out, one per name: 198.18.0.0/15 (RFC 2544).
    static let fakeRange = (first: UInt32(198) << 24 | UInt32(18) << 16, count: UInt32(1) << 17)

    /// Every TCP connection that does not stay on loopback goes to the proxy; anything else
    /// that would leave loopback is dropped. Root's own traffic is no exception (the proxy
    /// itself never connects over TCP: it carries connections over the egress link).
    static let ruleset = """
        flush ruleset
        table inet airlock {
            chain to_proxy {
                type nat hook output priority -100; policy accept;
                oifname "lo" return
                ip daddr 127.0.0.0/8 return
                meta l4proto tcp redirect to :\(proxyPort)
            }
            chain outbound {
                type filter hook output priority 0; policy drop;
                oifname "lo" accept
                # Redirected connections: the hook still names the original interface, but
                # the destination is now the proxy on loopback.
                ip daddr 127.0.0.0/8 accept
            }
            chain inbound {
                type filter hook input priority 0; policy drop;
                iifname "lo" accept
            }
        }

        """

    /// Configures the interfaces and rules, then starts the resolver, the egress proxy and the
    /// listeners of guest→host port forwards.
    /// Returns the egress link, for the Unix-socket forwards started once the root exists.
    @discardableResult
    static func start(forwardPorts: [UInt16]) async throws -> EgressLink {
        try await configure()
        try DNSServer.start()
        let link = EgressLink()
        try await EgressProxy.start(link: link)
        for port in forwardPorts { try await GuestForwards.listen(port: port, link: link) }
        return link
    }

    static func configure() async throws {
        try check(airlock_interface_up("lo", 0, 0), "bring up lo")
        try check(airlock_interface_up("dummy0", inet(dummyAddress), 32), "configure dummy0")
        try check(airlock_default_route("dummy0"), "add the default route")
        for path in [
            "/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/lo/disable_ipv6",
        ] {
            try? FileSystem.write(path, Array("1\n".utf8))
        }
        try FileSystem.write("/run/airlock-nftables.conf", Array(ruleset.utf8), mode: 0o600)
        let status = try await ProcessRunner.runToCompletion(["/sbin/nft", "-f", "/run/airlock-nftables.conf"])
        guard status == 0 else { throw SystemError("nft -f", "/run/airlock-nftables.conf", errno: EIO) }
    }

    private static func check(_ result: Int32, _ what: String) throws {
        guard result == 0 else { throw SystemError(what, "", errno: -result) }
    }

    /// An IPv4 address in network byte order.
    static func inet(_ text: String) -> UInt32 {
        var address = in_addr()
        inet_pton(AF_INET, text, &address)
        return address.s_addr
    }
}
