import Foundation
import OCI
import Testing

@Suite("Image references")
struct ImageReferenceTests {
    @Test(
        "Docker's defaults and forms",
        arguments: [
            ("alpine", "docker.io/library/alpine:latest"),
            ("debian:bookworm", "docker.io/library/debian:bookworm"),
            ("user/repo", "docker.io/user/repo:latest"),
            ("docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20"),
            ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
            ("ghcr.io/owner/name/sub:v1.2-rc_3", "ghcr.io/owner/name/sub:v1.2-rc_3"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x:tag", "localhost/x:tag"),
            ("127.0.0.1:5000/team/ci:1", "127.0.0.1:5000/team/ci:1"),
            ("alpine@sha256:" + String(repeating: "ab", count: 32), "docker.io/library/alpine@sha256:" + String(repeating: "ab", count: 32)),
            ("r.io:443/a:b@sha256:" + String(repeating: "0", count: 64), "r.io:443/a:b@sha256:" + String(repeating: "0", count: 64)),
        ])
    func parses(_ input: String, _ expected: String) throws {
        #expect(try ImageReference(parsing: input).description == expected)
    }

    @Test(
        "Malformed references are refused",
        arguments: [
            "", "Alpine", "alpine:", "alpine:-x", "a//b", "-a", "a@sha256:12", "a@md5:" + String(repeating: "0", count: 32), "host:99999/x", "a b",
        ])
    func refuses(_ input: String) {
        #expect(throws: OCIError.self) { try ImageReference(parsing: input) }
    }
}
