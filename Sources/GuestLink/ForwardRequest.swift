import NIOHPACK

/// A host port forward (`[network.ports.<name>] guest = ["9000:3000"]`): the host accepted a
/// connection on 127.0.0.1:9000 and asks the guest to carry it to the guest's port 3000. One
/// HTTP/2 stream on the *control* connection (host = client, guest = server).
///
/// Request: HEADERS `:method POST`, `:path /v1/forward`, `airlock-port` (the guest port,
/// connected to on the guest's 127.0.0.1); no END_STREAM. The host sends no DATA until it has
/// the answer.
///
/// Response: `:status 200` once the guest's connection is made, then DATA both ways until
/// END_STREAM (each side's FIN); or `:status 502` with `airlock-reason` and END_STREAM when
/// nothing listens there: the host closes the accepted connection. RST_STREAM from either side
/// resets the connection.
public struct ForwardRequest: Sendable, Equatable {
    public static let path = "/v1/forward"
    public static let portHeader = "airlock-port"
    public static let reasonHeader = EgressRequest.reasonHeader

    /// The port on the guest's loopback.
    public var port: UInt16

    public init(port: UInt16) {
        self.port = port
    }

    public var headers: HPACKHeaders {
        [":method": "POST", ":scheme": "http", ":authority": "guest", ":path": Self.path, Self.portHeader: String(port)]
    }

    /// Parses a request from the host.
    public init(headers: HPACKHeaders) throws(WireError) {
        guard headers[":path"].first == Self.path, headers[":method"].first == "POST" else {
            throw WireError("forward request for an unknown path")
        }
        guard let text = headers[Self.portHeader].first, text.utf8.count <= 5, let port = UInt16(text), port > 0 else {
            throw WireError("forward request without a valid port")
        }
        self.init(port: port)
    }
}

extension EgressRequest {
    /// The reserved destination name of guest port forwards (`[network.ports.<name>] host =
    /// ["4000:5000"]`): the guest listens on its 127.0.0.1:5000 and carries each connection as
    /// an egress request for `host.airlock.internal` port 5000; the host connects it to its own
    /// 127.0.0.1:4000. No network rule applies to this name: only the forwards do.
    public static let forwardHost = "host.airlock.internal"
}
