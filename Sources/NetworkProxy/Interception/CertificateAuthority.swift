import AirlockSystem
import Crypto
import FoundationEssentials
import NIOConcurrencyHelpers
import NIOSSL
import NetworkPolicy
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The project's certificate authority for TLS interception: a P-256 key and a self-signed
/// certificate in `<project>/.airlock/ca.pem` (the key and the certificate in one 0600 file;
/// a file, not a directory, which would pass for a sandbox's; never in the clone, never in
/// the VM: the guest gets the certificate only). Made once, on the first start that intercepts; two starts at once make one (the
/// file is linked into place, never renamed over).
///
/// Leaves are minted per name (the SNI the connection was judged and dialled for) with one key
/// per run, valid 30 days, and cached for the run (at most `cacheLimit` names).
public final class CertificateAuthority: Sendable {
    public let certificatePEM: String
    let certificate: Certificate
    let key: Certificate.PrivateKey
    let leafKey: P256.Signing.PrivateKey
    private let leaves = NIOLockedValueBox<[String: Leaf]>([:])
    static let cacheLimit = 4096

    public struct Leaf: Sendable {
        public var chain: [NIOSSLCertificate]
        public var key: NIOSSLPrivateKey
        public var notAfter: Date
    }

    init(certificate: Certificate, key: Certificate.PrivateKey) throws {
        self.certificate = certificate
        self.key = key
        self.certificatePEM = try certificate.serializeAsPEM().pemString
        self.leafKey = P256.Signing.PrivateKey()
    }

    /// Loads the CA at `path`, or makes it (its directory too, 0700).
    public static func loadOrCreate(path: String, project: String) throws -> CertificateAuthority {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if let text = try FileSystem.readText(path, limit: 64 << 10) { return try parse(text, path: path) }
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let now = Date()
        let name = try DistinguishedName {
            OrganizationName("airlock")
            CommonName("airlock CA for \(String(project.suffix(40)))")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-86_400), notValidAfter: now.addingTimeInterval(10 * 365 * 86_400),
            issuer: name, subject: name,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
        let text = try key.serializeAsPEM().pemString + "\n" + certificate.serializeAsPEM().pemString + "\n"
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let temporary = path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        try FileSystem.writeAtomically(temporary, text, mode: 0o600)
        defer { unlink(temporary) }
        // Another start may have made one meanwhile: theirs stays, and is ours too.
        if link(temporary, path) != 0, errno != EEXIST { throw SystemError.last("link", path) }
        guard let written = try FileSystem.readText(path, limit: 64 << 10) else { throw SystemError("read", path, errno: ENOENT) }
        return try parse(written, path: path)
    }

    static func parse(_ text: String, path: String) throws -> CertificateAuthority {
        let documents = try PEMDocument.parseMultiple(pemString: text)
        guard let keyDocument = documents.first(where: { $0.discriminator.hasSuffix("PRIVATE KEY") }),
            let certificateDocument = documents.first(where: { $0.discriminator == "CERTIFICATE" })
        else {
            throw InterceptionError("\(path) does not hold a key and a certificate", hint: "remove it: the next start makes a new one")
        }
        return try CertificateAuthority(
            certificate: Certificate(pemDocument: certificateDocument), key: Certificate.PrivateKey(pemDocument: keyDocument))
    }

    /// The certificate chain and key the guest is shown for `host` (a name or an IP literal).
    public func leaf(for host: String) throws -> Leaf {
        let now = Date()
        if let cached = leaves.withLockedValue({ $0[host] }), cached.notAfter > now.addingTimeInterval(86_400) { return cached }
        let subjectName: GeneralName
        switch IPAddress(host) {
        case .v4(let a, let b, let c, let d)?: subjectName = .ipAddress(ASN1OctetString(contentBytes: [a, b, c, d][...]))
        case .v6(let bytes)?: subjectName = .ipAddress(ASN1OctetString(contentBytes: bytes[...]))
        case nil: subjectName = .dnsName(host)
        }
        let publicKey = Certificate.PublicKey(leafKey.publicKey)
        let notAfter = now.addingTimeInterval(30 * 86_400)
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-86_400), notValidAfter: notAfter,
            issuer: certificate.subject,
            subject: try DistinguishedName { CommonName(String(host.prefix(64))) },
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([subjectName])
                SubjectKeyIdentifier(hash: publicKey)
                AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: key)
        var serializer = DER.Serializer()
        try serializer.serialize(leaf)
        let made = Leaf(
            chain: [try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)],
            key: try NIOSSLPrivateKey(bytes: Array(leafKey.derRepresentation), format: .der), notAfter: notAfter)
        leaves.withLockedValue {
            if $0.count >= Self.cacheLimit { $0.removeAll() }
            $0[host] = made
        }
        return made
    }
}

public struct InterceptionError: ExplainedError, Sendable {
    public var message: String
    public var hint: String?
    public var cause: (any Error)? { nil }

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }
}
