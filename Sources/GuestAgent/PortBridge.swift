import AirlockSystem

#if canImport(Glibc)
import Glibc
#endif

/// Joins the virtio-serial port to one end of a Unix socket pair with two copying threads
/// doing plain blocking I/O; NIO then serves the other end, a real socket.
///
/// Why not hand the port's character device to NIO directly: NIO waits for writability with
/// edge-triggered epoll, and the virtio console driver can let that edge pass while the host
/// drains the port, which left large transfers stalled with every queue empty. Blocking
/// writes on the device have no such race.
enum PortBridge {
    /// Returns the socket for NIO; the bridge runs until either side closes.
    static func start(port: Int32) -> Int32? {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            System.log("socketpair: \(errorText(errno))")
            return nil
        }
        let link = pair[1]
        startThread { run(port, link, "port→link") }
        startThread { run(link, port, "link→port") }
        return pair[0]
    }

    private static func run(_ source: Int32, _ destination: Int32, _ name: String) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                if n < 0 { System.log("\(name): read: \(errorText(errno))") }
                shutdown(destination, Int32(SHUT_WR))
                return
            }
            do {
                try buffer.withUnsafeBytes { try Syscall.writeAll(destination, UnsafeRawBufferPointer(rebasing: $0[0..<n]), subject: name) }
            } catch {
                System.log("\(name): \(error)")
                return
            }
        }
    }
}
