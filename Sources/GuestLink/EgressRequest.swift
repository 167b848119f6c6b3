import NIOHPACK

/// One TCP connection the guest captured, as the guest asks the host to carry it: an HTTP/2
/// stream on the egress connection (guest = client, host = server).
///
/// Request: HEADERS `:method POST`, `:path /v1/tcp`, `airlock-host` (the name the guest's DNS
/// handed out a fake address for, or the IP literal dialled), `airlock-ip` (the address the
/// guest program dialled, fake or not), `airlock-port`; no END_STREAM. The guest then streams
/// the connection's bytes as DATA at once (the host may read the first of them to find a TLS
/// SNI or HTTP Host before deciding); END_STREAM is the guest side's FIN.
///
/// Response: `:status 200` then DATA both ways until END_STREAM (the host side's FIN), or
/// `:status 403` with `airlock-reason` and END_STREAM: the guest resets the TCP connection.
/// A denied plain-HTTP request gets `200` and an HTTP `403 Forbidden` response as the data, so
/// the agent can read why. A stream reset (RST_STREAM) from either side resets the connection.
public struct EgressRequest: Sendable, Equatable {
    public static let path = "/v1/tcp"
    public static let hostHeader = "airlock-host"
    public static let ipHeader = "airlock-ip"
    public static let portHeader = "airlock-port"
    public static let reasonHeader = "airlock-reason"

    /// A host name (lower case, no trailing dot) or an IP literal (IPv6 without brackets).
    public var host: String
    /// The address the guest program connected to.
    public var ip: String
    public var port: UInt16

    public init(host: String, ip: String, port: UInt16) {
        self.host = host
        self.ip = ip
        self.port = port
    }

    public var headers: HPACKHeaders {
        [
            ":method": "POST", ":scheme": "http", ":authority": "host", ":path": Self.path,
            Self.hostHeader: host, Self.ipHeader: ip, Self.portHeader: String(port),
        ]
    }

    /// Parses a request from the guest (hostile): every field bounded and checked.
    public init(headers: HPACKHeaders) throws(WireError) {
        guard headers[":path"].first == Self.path, headers[":method"].first == "POST" else {
            throw WireError("egress request for an unknown path")
        }
        guard let host = headers[Self.hostHeader].first, let ip = headers[Self.ipHeader].first,
            let portText = headers[Self.portHeader].first, let port = UInt16(portText), port > 0
        else { throw WireError("egress request without a valid host, ip and port") }
        guard host.utf8.count <= 253, !host.isEmpty,
            host.utf8.allSatisfy({ Self.hostBytes.contains($0) })
        else {
            throw WireError("egress request with an invalid host name")
        }
        guard ip.utf8.count <= 45, !ip.isEmpty, ip.utf8.allSatisfy({ Self.ipBytes.contains($0) }) else {
            throw WireError("egress request with an invalid IP address")
        }
        self.init(host: host.lowercased(), ip: ip.lowercased(), port: port)
    }

    private static let hostBytes = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:".utf8))
    private static let ipBytes = Set(Array("0123456789abcdefABCDEF.:".utf8))
}
