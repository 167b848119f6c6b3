/// One port of a `[network.ports.<name>]` list: `5432` (the same port on both sides) or
/// `"9000:3000"`, always the host's port first and the guest's second (the Rust airlock's form).
/// The list says the direction: `host = […]` reaches the host (the guest listens on the guest
/// port), `guest = […]` reaches the guest (the host listens on the host port).
public struct PortForward: Sendable, Hashable, CustomStringConvertible {
    public var host: UInt16
    public var guest: UInt16

    public init(host: UInt16, guest: UInt16) {
        self.host = host
        self.guest = guest
    }

    struct Invalid: Error {
        var message: String
    }

    init(_ node: ConfigNode) throws(Invalid) {
        if let number = node.integer {
            guard let port = UInt16(exactly: number), port > 0 else {
                throw Invalid(message: "\(number) is not a port number (1-65535)")
            }
            self.init(host: port, guest: port)
            return
        }
        guard let text = node.string else {
            throw Invalid(message: "must be a port (5432) or \"host:guest\" (\"9000:3000\"), not \(node.typeName)")
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let ports = parts.compactMap { UInt16($0) }.filter { $0 > 0 }
        guard (1...2).contains(parts.count), ports.count == parts.count else {
            throw Invalid(message: "\"\(text)\" is not a port forward; write \"9000:3000\" (host port:guest port) or a single port")
        }
        self.init(host: ports[0], guest: ports[ports.count - 1])
    }

    public var description: String { host == guest ? "\(host)" : "\(host):\(guest)" }
}
