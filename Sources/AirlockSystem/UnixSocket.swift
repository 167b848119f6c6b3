#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a `sockaddr_un` for `path`; nil when the path does not fit.
public func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T? {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard !bytes.isEmpty, bytes.count < capacity else { return nil }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

/// A connected, blocking, close-on-exec Unix stream socket.
public func connectUnixSocket(_ path: String) throws(SystemError) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .last("socket", path) }
    let failure = withUnixAddress(path) { address, length in
        var result: Int32
        repeat { result = connect(fd, address, length) } while result < 0 && errno == EINTR
        return result == 0 ? 0 : errno
    }
    guard failure == 0 else {
        close(fd)
        throw SystemError("connect", path, errno: failure ?? ENAMETOOLONG)
    }
    return fd
}
