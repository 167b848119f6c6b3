/// An image reference as `docker pull` reads it: `[registry[:port]/]repository[:tag][@digest]`.
///
/// Defaults follow Docker's normalization: no registry means `docker.io`, a one-component
/// repository on Docker Hub gets `library/`, no tag and no digest means `latest`. The first
/// component is a registry when it contains `.` or `:` or is `localhost`.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry as written (`docker.io`, `localhost:5000`, `ghcr.io`).
    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    public static let dockerHub = "docker.io"

    public init(parsing text: String) throws(OCIError) {
        func fail(_ why: String) -> OCIError {
            OCIError(
                .reference, "invalid image reference \"\(text)\": \(why)",
                hint: "write it as docker does: alpine, debian:bookworm, ghcr.io/owner/name:tag, localhost:5000/name@sha256:…")
        }
        guard !text.isEmpty, text.utf8.count <= 512 else { throw fail("empty or longer than 512 characters") }
        var rest = Substring(text)
        if let at = rest.firstIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) } catch { throw fail(error.message) }
            rest = rest[..<at]
        }
        // A tag is after the last ':' that comes after the last '/' (a port's ':' is before it).
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let tag = String(rest[rest.index(after: colon)...])
            guard Self.isValidTag(tag) else { throw fail("tag \"\(tag)\" must be 1–128 of [A-Za-z0-9_.-], not starting with . or -") }
            self.tag = tag
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if components.count > 1, let first = components.first, first.contains(".") || first.contains(":") || first == "localhost" {
            guard Self.isValidRegistry(first) else { throw fail("registry \"\(first)\" is not a host name with an optional port") }
            registry = first
            components.removeFirst()
        } else {
            registry = Self.dockerHub
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = Self.dockerHub }
        guard !components.isEmpty, components.allSatisfy(Self.isValidPathComponent) else {
            throw fail("repository names are lowercase letters, digits and separators (. _ __ -) between /")
        }
        if registry == Self.dockerHub && components.count == 1 { components.insert("library", at: 0) }
        repository = components.joined(separator: "/")
        if tag == nil && digest == nil { tag = "latest" }
    }

    /// The full, normalized form: `docker.io/library/alpine:latest`.
    public var description: String {
        var text = registry + "/" + repository
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest.description }
        return text
    }

    /// What the registry API is asked for: the digest when there is one, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// The host the API lives on (Docker Hub's API is not at docker.io).
    public var apiHost: String { registry == Self.dockerHub ? "registry-1.docker.io" : registry }

    static func isValidTag(_ tag: String) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else { return false }
        return tag.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    static func isValidRegistry(_ host: String) -> Bool {
        var name = Substring(host)
        if let colon = host.lastIndex(of: ":") {
            let port = host[host.index(after: colon)...]
            guard let number = Int(port), (1...65535).contains(number) else { return false }
            name = host[..<colon]
        }
        return !name.isEmpty && name.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` from the distribution spec.
    static func isValidPathComponent(_ component: String) -> Bool {
        let bytes = Array(component.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if isLowerAlphanumeric(byte) {
                index += 1
                continue
            }
            // A separator: '.', '_', '__' or a run of '-', followed by an alphanumeric.
            if byte == UInt8(ascii: ".") {
                index += 1
            } else if byte == UInt8(ascii: "_") {
                index += index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "_") ? 2 : 1
            } else if byte == UInt8(ascii: "-") {
                while index < bytes.count && bytes[index] == UInt8(ascii: "-") { index += 1 }
            } else {
                return false
            }
            guard index < bytes.count, isLowerAlphanumeric(bytes[index]) else { return false }
        }
        return bytes.count <= 255
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowerAlphanumeric(byte) || (byte >= 65 && byte <= 90)
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 97 && byte <= 122)
    }
}
