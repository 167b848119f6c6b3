import AirlockSystem
import Foundation
import NIOSSL
import Testing

@testable import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

@Suite("The interception CA", .enabled(if: which("openssl") != nil, "needs the openssl program"))
struct CertificateAuthorityTests {
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-ca-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("made once (0600 in a 0700 directory), the same on every load, one when many starts make it at once")
    func madeOnce() async throws {
        let base = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let directory = base + "/ca"
        let made = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 {
                group.addTask { try CertificateAuthority.loadOrCreate(path: directory + "/ca.pem", project: "/p").certificatePEM }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(made.count == 1, "eight starts at once, one CA")
        #expect(try CertificateAuthority.loadOrCreate(path: directory + "/ca.pem", project: "/p").certificatePEM == made.first)
        var info = stat()
        #expect(stat(directory + "/ca.pem", &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(directory, &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect(FileSystem.entries(directory) == ["ca.pem"], "no temporary files left")
    }

    @Test("a leaf verifies against the CA for its name, and only for it; an IP literal's, v4 or v6, for its address (openssl verify)")
    func leafVerifies() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let authority = try CertificateAuthority.loadOrCreate(path: directory + "/ca/ca.pem", project: "/p")
        try authority.certificatePEM.write(toFile: directory + "/root.pem", atomically: true, encoding: .utf8)
        let leaf = try authority.leaf(for: "api.test")
        try Data(try leaf.chain[0].toDERBytes()).write(to: URL(fileURLWithPath: directory + "/leaf.der"))
        let converted = try await runProgram(["openssl", "x509", "-inform", "der", "-in", directory + "/leaf.der", "-out", directory + "/leaf.pem"])
        #expect(converted?.status == 0, "\(converted?.output ?? "")")
        let verify = { (name: String) in
            try await runProgram(["openssl", "verify", "-CAfile", directory + "/root.pem", "-verify_hostname", name, directory + "/leaf.pem"])
        }
        let good = try await verify("api.test")
        #expect(good?.status == 0 && good?.output.contains("OK") == true, "\(good?.output ?? "")")
        let other = try await verify("other.test")
        #expect(
            other?.status != 0 && other?.output.contains("hostname mismatch") == true,
            "a leaf for api.test is not one for other.test: \(other?.output ?? "")")
        #expect(try authority.leaf(for: "api.test").notAfter == leaf.notAfter, "cached for the run")
        // An IP literal (a program that connected to one) gets an IP address name, v4 or v6.
        for ip in ["10.1.2.3", "fd00::1"] {
            try Data(try authority.leaf(for: ip).chain[0].toDERBytes()).write(to: URL(fileURLWithPath: directory + "/ip.der"))
            _ = try await runProgram(["openssl", "x509", "-inform", "der", "-in", directory + "/ip.der", "-out", directory + "/ip.pem"])
            let verified = try await runProgram(["openssl", "verify", "-CAfile", directory + "/root.pem", "-verify_ip", ip, directory + "/ip.pem"])
            #expect(verified?.status == 0, "\(ip): \(verified?.output ?? "")")
        }
    }

    @Test("a damaged CA file: an error that says which file and what to do")
    func damaged() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory + "/ca", withIntermediateDirectories: true)
        try "not a certificate\n".write(toFile: directory + "/ca/ca.pem", atomically: true, encoding: .utf8)
        #expect {
            try CertificateAuthority.loadOrCreate(path: directory + "/ca/ca.pem", project: "/p")
        } throws: { error in
            "\(error)".contains(directory + "/ca/ca.pem") && "\(error)".contains("remove it")
        }
    }
}
