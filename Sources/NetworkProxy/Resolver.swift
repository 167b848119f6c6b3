import AirlockSystem
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Turns an allowed host name into addresses. The proxy's only source of names: the guest's
/// own DNS never leaves the VM.
public protocol Resolver: Sendable {
    /// The addresses of `host` (IPv4 and IPv6, in the resolver's order), each with `port`.
    func resolve(host: String, port: UInt16) async throws -> [SocketAddress]
}

/// What resolution failed with.
public struct ResolutionError: Error, Sendable, CustomStringConvertible {
    public var host: String
    public var reason: String
    public var description: String { "cannot resolve \(host): \(reason)" }
}

/// The host's resolver (`getaddrinfo`: `/etc/hosts`, then DNS as the host is set up), run on
/// NIO's blocking thread pool so the cooperative pool never waits on it. A lookup slower than
/// `timeout` fails (its thread finishes in the background).
public struct SystemResolver: Resolver {
    public var timeout: Duration
    public var threadPool: NIOThreadPool

    public init(timeout: Duration = .seconds(10), threadPool: NIOThreadPool = .singleton) {
        self.timeout = timeout
        self.threadPool = threadPool
    }

    public func resolve(host: String, port: UInt16) async throws -> [SocketAddress] {
        let pool = threadPool
        let result = try await withDeadline(timeout, what: "resolving \(host)") {
            try await pool.runIfActive { try Self.getaddrinfo(host: host, port: port) }
        }
        return result
    }

    static func getaddrinfo(host: String, port: UInt16) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        hints.ai_flags = AI_ADDRCONFIG
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw ResolutionError(host: host, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var seen = Set<String>()
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            cursor = entry.pointee.ai_next
            guard let sockaddr = entry.pointee.ai_addr else { continue }
            let address: SocketAddress
            switch entry.pointee.ai_family {
            case AF_INET:
                address = sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: host) }
            case AF_INET6:
                address = sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: host) }
            default:
                continue
            }
            if seen.insert(address.ipAddress ?? "").inserted { addresses.append(address) }
        }
        guard !addresses.isEmpty else { throw ResolutionError(host: host, reason: "no IPv4 or IPv6 address") }
        return addresses
    }
}

/// A fixed map from names to addresses, for tests; names it doesn't know go to `fallback`
/// (none: they fail). Only code can install it: no configuration file names a resolver.
public struct StaticResolver: Resolver {
    public var entries: [String: [String]]
    public var fallback: (any Resolver)?

    public init(_ entries: [String: [String]], fallback: (any Resolver)? = nil) {
        self.entries = Dictionary(entries.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
        self.fallback = fallback
    }

    public func resolve(host: String, port: UInt16) async throws -> [SocketAddress] {
        if let addresses = entries[host.lowercased()] {
            return try addresses.map { try SocketAddress(ipAddress: $0, port: Int(port)) }
        }
        if let fallback { return try await fallback.resolve(host: host, port: port) }
        throw ResolutionError(host: host, reason: "not in the test resolver's map")
    }
}
