import NIOHPACK

/// The guest asks the host to open an address in the user's browser (a CLI's sign-in: its
/// `xdg-open` / `$BROWSER` in the VM is `LinkNames.browserShim`): an HTTP/2 stream on the egress
/// connection for `:path /v1/browse` with the address in `airlock-url`, ended at once. The
/// host checks it (only a known provider's sign-in page) and answers `200` when it opened or
/// showed it, `403` with the reason otherwise.
public struct BrowseRequest: Sendable, Equatable {
    public static let path = "/v1/browse"
    public static let urlHeader = "airlock-url"
    public static let maxLength = 8192

    public var url: String

    public init(url: String) {
        self.url = url
    }

    public var headers: HPACKHeaders {
        [":method": "POST", ":scheme": "http", ":authority": "host", ":path": Self.path, Self.urlHeader: url]
    }

    /// Parses a request from the guest (hostile).
    public init(headers: HPACKHeaders) throws(WireError) {
        guard headers[":path"].first == Self.path, headers[":method"].first == "POST" else { throw WireError("browse request for an unknown path") }
        guard let url = headers[Self.urlHeader].first, !url.isEmpty, url.utf8.count <= Self.maxLength else {
            throw WireError("browse request without an address of at most \(Self.maxLength) bytes")
        }
        self.init(url: url)
    }
}
