import CloudHypervisor
import Foundation
import GuestLink
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The host side of hybrid vsock against stub peers standing in for Cloud Hypervisor's
/// vsock socket.
@Suite("Hybrid vsock handshake")
struct HybridVsockTests {
    @Test("OK with an arbitrary number: connected, bytes flow both ways, nothing after OK is lost")
    func handshakeSucceeds() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let heard = Mutex<[UInt8]>([])
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            let line = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
            guard line == Array("CONNECT 1024\n".utf8) else { return }
            // The OK line and the guest's first bytes in one write, as a fast guest would.
            UnixStubServer.write(fd, Array("OK 1073741824\nhello".utf8))
            let ping = UnixStubServer.read(fd, count: 4, timeout: 60)
            heard.withLock { $0 = ping }
            UnixStubServer.write(fd, Array("pong".utf8))
        }
        defer { peer.stop() }

        let fd = try await HybridVsock.connect(socket: directory.path + "/vsock.sock", port: 1024, timeout: .seconds(5))
        defer { close(fd) }
        #expect(UnixStubServer.read(fd, count: 5, timeout: 60) == Array("hello".utf8))
        UnixStubServer.write(fd, Array("ping".utf8))
        #expect(UnixStubServer.read(fd, count: 4, timeout: 60) == Array("pong".utf8))
        #expect(heard.withLock { $0 } == Array("ping".utf8))
    }

    @Test("the connected socket carries the link: LinkClient speaks HTTP/2 on it")
    func linkOverHandshake() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let preface = Mutex<[UInt8]>([])
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            _ = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
            UnixStubServer.write(fd, Array("OK 7\n".utf8))
            let bytes = UnixStubServer.read(fd, count: 24, timeout: 60)
            preface.withLock { $0 = bytes }
        }
        defer { peer.stop() }

        let fd = try await HybridVsock.connect(socket: directory.path + "/vsock.sock", port: LinkNames.controlVsockPort, timeout: .seconds(5))
        let client = try await LinkClient.connect(connectedSocket: fd)
        let deadline = Date().addingTimeInterval(60)
        while preface.withLock({ $0.count }) < 24 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(preface.withLock { $0 } == Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8))
        await client.close()
    }

    @Test("nothing listening: retried until the deadline, then a clear error")
    func refused() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let started = Date()
        do {
            _ = try await HybridVsock.connect(
                socket: directory.path + "/vsock.sock", port: 1024, timeout: .milliseconds(500), pause: .milliseconds(20))
            Issue.record("connected to nothing")
        } catch let failure as HybridVsock.Failure {
            guard case .gaveUp(_, .connect(let socket, _)) = failure else {
                Issue.record("expected gaveUp(connect), got \(failure)")
                return
            }
            #expect(socket == directory.path + "/vsock.sock")
            #expect(failure.description.contains("did not accept the link"))
        }
        #expect(Date().timeIntervalSince(started) >= 0.45)
    }

    @Test("a peer that closes at once (guest not listening yet) is retried, and succeeds once the guest listens")
    func closesThenAccepts() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let attempts = Mutex(0)
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            _ = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
            let attempt = attempts.withLock { value -> Int in
                value += 1
                return value
            }
            if attempt >= 3 { UnixStubServer.write(fd, Array("OK 1\n".utf8)) }
        }
        defer { peer.stop() }
        // A generous deadline: three attempts take milliseconds, but not on a loaded machine.
        let fd = try await HybridVsock.connect(socket: directory.path + "/vsock.sock", port: 1024, timeout: .seconds(60), pause: .milliseconds(10))
        close(fd)
        #expect(attempts.withLock { $0 } == 3)
    }

    @Test("a peer that always closes at once: the error says nothing listens on the port")
    func alwaysCloses() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            _ = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
        }
        defer { peer.stop() }
        await #expect(
            throws: HybridVsock.Failure.gaveUp(after: .milliseconds(400), last: .closed(socket: directory.path + "/vsock.sock", port: 1024))
        ) {
            _ = try await HybridVsock.connect(
                socket: directory.path + "/vsock.sock", port: 1024, timeout: .milliseconds(400), pause: .milliseconds(20))
        }
    }

    @Test("a silent peer: the read deadline fires")
    func silent() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            UnixStubServer.waitForClose(fd, timeout: 10)
        }
        defer { peer.stop() }
        do {
            _ = try await HybridVsock.connect(
                socket: directory.path + "/vsock.sock", port: 1024, timeout: .milliseconds(300), readTimeout: .milliseconds(300))
            Issue.record("a silent peer was taken for a guest")
        } catch let failure as HybridVsock.Failure {
            guard case .gaveUp(_, .silent(_, 1024, _)) = failure else {
                Issue.record("expected gaveUp(silent), got \(failure)")
                return
            }
        }
        // (That it gave up as `silent`, rather than hanging until the peer closed after 10 s,
        // is the check; how long it took depends on the machine's load.)
    }

    @Test("garbage instead of OK fails at once, without retrying", arguments: ["NOPE\n", "OK\n", "OK -5\n", "OK 12abc\n", "ok 5\n"])
    func garbage(answer: String) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let attempts = Mutex(0)
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            _ = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
            attempts.withLock { $0 += 1 }
            UnixStubServer.write(fd, Array(answer.utf8))
        }
        defer { peer.stop() }
        let line = String(answer.dropLast())
        await #expect(throws: HybridVsock.Failure.unexpectedAnswer(socket: directory.path + "/vsock.sock", port: 1024, answer: line)) {
            _ = try await HybridVsock.connect(socket: directory.path + "/vsock.sock", port: 1024, timeout: .seconds(5))
        }
        #expect(attempts.withLock { $0 } == 1)
    }

    @Test("an endless line without a newline is refused, not buffered")
    func overlongLine() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let peer = try UnixStubServer(path: directory.path + "/vsock.sock") { fd in
            _ = UnixStubServer.read(fd, through: [UInt8(ascii: "\n")])
            UnixStubServer.write(fd, Array(repeating: UInt8(ascii: "A"), count: 100_000))
        }
        defer { peer.stop() }
        do {
            _ = try await HybridVsock.connect(socket: directory.path + "/vsock.sock", port: 1024, timeout: .seconds(5))
            Issue.record("accepted an endless line")
        } catch let failure as HybridVsock.Failure {
            guard case .unexpectedAnswer(_, _, let answer) = failure else {
                Issue.record("expected unexpectedAnswer, got \(failure)")
                return
            }
            #expect(answer.count < 100)
        }
    }

    @Test("guest→host: the listener is <socket>_<port>, mode 0600, and hands over connections")
    func listener() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let accepted = Mutex(0)
        let listener = try await HybridVsockListener.bind(vsockSocket: directory.path + "/vsock.sock", port: LinkNames.egressVsockPort) { channel in
            accepted.withLock { $0 += 1 }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        #expect(listener.path == directory.path + "/vsock.sock_1025")
        var info = stat()
        #expect(lstat(listener.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)

        // What Cloud Hypervisor does when the guest connects to CID 2, port 1025.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(listener.path.utf8) + [0]) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(result == 0)
        let deadline = Date().addingTimeInterval(5)
        while accepted.withLock({ $0 }) == 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(accepted.withLock { $0 } == 1)
        close(fd)
        await listener.close()
        #expect(lstat(listener.path, &info) != 0)
    }
}
