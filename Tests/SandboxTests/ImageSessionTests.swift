import Config
import Foundation
import GuestLink
import Logging
import TestSupport
import Testing

@testable import Sandbox

@Suite("Sessions in an image's root")
struct ImageSessionTests {
    @Test("The image's User resolves against its /etc/passwd and /etc/group")
    func users() throws {
        let passwd = "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1001:Dev:/home/dev:/bin/sh\nsvc:x:999:999::/var/svc:/usr/sbin/nologin\n"
        let group = "root:x:0:\nstaff:x:50:\n"
        #expect(
            try ImageRoot.resolveUser(nil, passwd: passwd, group: group) == .init(name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/bash"))
        #expect(
            try ImageRoot.resolveUser("dev", passwd: passwd, group: group)
                == .init(name: "dev", uid: 1000, gid: 1001, home: "/home/dev", shell: "/bin/sh"))
        #expect(try ImageRoot.resolveUser("1000:staff", passwd: passwd, group: group).gid == 50)
        #expect(try ImageRoot.resolveUser("4242:7", passwd: passwd, group: group) == .init(name: nil, uid: 4242, gid: 7, home: "/", shell: "/bin/sh"))
        #expect(try ImageRoot.resolveUser("svc", passwd: passwd, group: group).shell == "/bin/sh")
        #expect(throws: SandboxError.self) { try ImageRoot.resolveUser("nobody", passwd: passwd, group: group) }
    }

    @Test("Entrypoint, Cmd, WorkingDir and Env shape the session: the command after -- replaces Cmd")
    func sessionSpec() throws {
        let project = try CLI.project(files: [:])
        defer { try? FileManager.default.removeItem(at: project) }
        let manager = SandboxManager(
            project: Project.discover(from: project.path), loaded: .init(config: AirlockConfig()), environment: [:], logger: .init(label: "test"))
        let paths = try manager.paths("default")
        var image = ImageRoot(
            reference: "r/x", manifestDigest: "sha256:00", layers: [], environment: ["PATH=/opt/bin:/bin", "GREETING=hi"],
            entrypoint: ["/entry"], command: ["serve", "--port=1"], workingDirectory: "/srv",
            user: .init(name: "dev", uid: 1000, gid: 1000, home: "/home/dev", shell: "/bin/ash"))
        let own = manager.sessionSpec(.init(command: [], environment: ["X": "1"], workingDirectory: project.path), paths: paths, image: image)
        #expect(own.arguments == ["/entry", "serve", "--port=1"])
        #expect(own.workingDirectory == "/srv")
        #expect(own.user == 1000 && own.group == 1000)
        #expect(
            own.environment.contains("PATH=/opt/bin:/bin") && own.environment.contains("GREETING=hi") && own.environment.contains("HOME=/home/dev"))
        #expect(own.environment.contains("X=1") && own.environment.contains("USER=dev"))
        let mine = manager.sessionSpec(.init(command: ["make", "test"], workingDirectory: project.path), paths: paths, image: image)
        #expect(mine.arguments == ["/entry", "make", "test"])
        #expect(mine.workingDirectory == Project.discover(from: project.path).root)
        image.entrypoint = []
        image.command = []
        #expect(manager.sessionSpec(.init(command: [], workingDirectory: project.path), paths: paths, image: image).arguments == ["/bin/ash", "-l"])
    }
}
