/// A port forward from `[network.ports.<name>]`: `5432` (same port both sides) or
/// `"9000:3000"` (first the listening side, then the side connected to).
public struct PortForward: Sendable, Hashable, CustomStringConvertible {
    public var listen: UInt16
    public var connect: UInt16

    public init(listen: UInt16, connect: UInt16) {
        self.listen = listen
        self.connect = connect
    }

    struct Invalid: Error {
        var message: String
    }

    init(_ node: ConfigNode) throws(Invalid) {
        if let number = node.integer {
            guard let port = UInt16(exactly: number), port > 0 else {
                throw Invalid(message: "\(number) is not a port number (1-65535)")
            }
            self.init(listen: port, connect: port)
            return
        }
        guard let text = node.string else {
            throw Invalid(message: "must be a port (5432) or \"listen:connect\" (\"9000:3000\"), not \(node.typeName)")
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let ports = parts.compactMap { UInt16($0) }.filter { $0 > 0 }
        guard (1...2).contains(parts.count), ports.count == parts.count else {
            throw Invalid(message: "\"\(text)\" is not a port forward; write \"9000:3000\" (listen:connect) or a single port")
        }
        self.init(listen: ports[0], connect: ports[ports.count - 1])
    }

    public var description: String { listen == connect ? "\(listen)" : "\(listen):\(connect)" }
}
