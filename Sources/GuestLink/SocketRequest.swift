import NIOHPACK

/// One connection to a Unix-socket forward (`[network.sockets.<name>]`), as the guest asks the
/// host to carry it: an HTTP/2 stream on the egress connection like `EgressRequest`, for
/// `:path /v1/unix`, naming only the forward's entry (`airlock-socket`). The guest never names a
/// host path: the host connects to the socket its configuration gives that entry, and refuses
/// (`403`) a name it does not know, or answers `502` when nothing listens there. After `200`,
/// DATA both ways as for `EgressRequest`, END_STREAM being each side's shutdown of writing.
public struct SocketRequest: Sendable, Equatable {
    public static let path = "/v1/unix"
    public static let nameHeader = "airlock-socket"
    /// Entry names: `[A-Za-z0-9._-]`, at most 64 bytes (the config loader checks the same).
    public static let maxNameLength = 64

    public var name: String

    public init(name: String) {
        self.name = name
    }

    public var headers: HPACKHeaders {
        [":method": "POST", ":scheme": "http", ":authority": "host", ":path": Self.path, Self.nameHeader: name]
    }

    /// Parses a request from the guest (hostile).
    public init(headers: HPACKHeaders) throws(WireError) {
        guard headers[":path"].first == Self.path, headers[":method"].first == "POST" else {
            throw WireError("socket request for an unknown path")
        }
        guard let name = headers[Self.nameHeader].first, Self.isValidName(name) else {
            throw WireError("socket request without a valid forward name")
        }
        self.init(name: name)
    }

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maxNameLength && name.utf8.allSatisfy { nameBytes.contains($0) }
    }

    private static let nameBytes = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".utf8))
}
