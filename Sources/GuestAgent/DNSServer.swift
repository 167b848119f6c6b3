import AirlockSystem
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Names the guest looked up, each with the fake address it was given. The proxy turns a
/// connection to a fake address back into the name, so the host judges (and resolves) names,
/// and a denied name never produces a real DNS query anywhere.
final class FakeAddresses: Sendable {
    private struct Table {
        var byName: [String: UInt32] = [:]
        var byAddress: [UInt32: String] = [:]
        var next: UInt32 = 1
    }

    private let table = NIOLockedValueBox(Table())
    static let shared = FakeAddresses()

    /// The fake IPv4 address (host byte order) for `name`, or nil when the range is used up.
    func address(for name: String) -> UInt32? {
        table.withLockedValue { table in
            if let known = table.byName[name] { return known }
            guard table.next < GuestNetwork.fakeRange.count - 1 else { return nil }
            let address = GuestNetwork.fakeRange.first + table.next
            table.next += 1
            table.byName[name] = address
            table.byAddress[address] = name
            return address
        }
    }

    /// The name behind a fake address (dotted text), if it is one.
    func name(for address: String) -> String? {
        var parsed = in_addr()
        guard inet_pton(AF_INET, address, &parsed) == 1 else { return nil }
        let value = UInt32(bigEndian: parsed.s_addr)
        return table.withLockedValue { $0.byAddress[value] }
    }
}

/// The guest's resolver on 127.0.0.53, UDP and TCP port 53. A queries get fake addresses from
/// `FakeAddresses` (localhost gets 127.0.0.1), AAAA queries an empty answer (IPv6 is off),
/// every other type REFUSED. Nothing is ever forwarded: no DNS query leaves the VM.
/// Blocking sockets on threads of their own (it is a small, quiet server).
enum DNSServer {
    static func start() throws {
        let udp = try bind(type: Int32(SOCK_DGRAM.rawValue))
        let tcp = try bind(type: Int32(SOCK_STREAM.rawValue))
        guard listen(tcp, 64) == 0 else { throw SystemError("listen", "dns tcp", errno: errno) }
        startThread { serveUDP(udp) }
        startThread { serveTCP(tcp) }
    }

    private static func bind(type: Int32) throws -> Int32 {
        let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", "dns", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(53).bigEndian
        address.sin_addr.s_addr = GuestNetwork.inet(GuestNetwork.resolverAddress)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw SystemError("bind", "\(GuestNetwork.resolverAddress):53", errno: errno) }
        return fd
    }

    private static func serveUDP(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var peer = sockaddr_storage()
            var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &peerLength) }
            }
            if n < 0 { if errno == EINTR { continue } else { return } }
            guard let answer = DNSMessage.answer(Array(buffer[0..<n])) else { continue }
            _ = withUnsafePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, answer, answer.count, 0, $0, peerLength) }
            }
        }
    }

    private static func serveTCP(_ listener: Int32) {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { if errno == EINTR || errno == ECONNABORTED { continue } else { return } }
            // A few seconds per client at most: a stalled one must not hold the thread.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            while let query = readFrame(fd), let answer = DNSMessage.answer(query) {
                var framed = [UInt8(answer.count >> 8), UInt8(answer.count & 0xff)]
                framed += answer
                guard (try? Syscall.writeAll(fd, framed, subject: "dns tcp")) != nil else { break }
            }
            close(fd)
        }
    }

    /// One length-prefixed DNS message from a TCP client.
    private static func readFrame(_ fd: Int32) -> [UInt8]? {
        guard let header = readExactly(fd, 2) else { return nil }
        let length = Int(header[0]) << 8 | Int(header[1])
        guard length >= 12 else { return nil }
        return readExactly(fd, length)
    }

    private static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        guard let bytes = try? Syscall.read(fd, exactly: count, subject: "a DNS client"), bytes.count == count else { return nil }
        return bytes
    }
}

/// Just enough DNS (RFC 1035) to answer one question per query. Everything is bounds-checked:
/// queries come from the agent.
enum DNSMessage {
    static let typeA: UInt16 = 1
    static let typeAAAA: UInt16 = 28
    static let classIN: UInt16 = 1

    /// The answer to `query`, or nil to stay silent (not a query, or unparseable header).
    static func answer(_ query: [UInt8], addresses: FakeAddresses = .shared) -> [UInt8]? {
        guard query.count >= 12, query.count <= 4096 else { return nil }
        let flags = UInt16(query[2]) << 8 | UInt16(query[3])
        guard flags & 0x8000 == 0 else { return nil }  // a response, not a query
        let questions = UInt16(query[4]) << 8 | UInt16(query[5])
        let opcode = (flags >> 11) & 0xF
        let response = Array(query[0..<2])
        let recursionDesired = flags & 0x0100
        func reply(_ rcode: UInt16, question: ArraySlice<UInt8>?, answers: [[UInt8]]) -> [UInt8] {
            let replyFlags = 0x8000 | 0x0400 | recursionDesired | 0x0080 | rcode
            var message = response
            message += [UInt8(replyFlags >> 8), UInt8(replyFlags & 0xff)]
            message += [0, question == nil ? 0 : 1, 0, UInt8(answers.count), 0, 0, 0, 0]
            if let question { message += question }
            for answer in answers { message += answer }
            return message
        }
        guard opcode == 0, questions == 1 else { return reply(4, question: nil, answers: []) }  // NOTIMP / FORMERR-ish
        guard let (name, end) = parseName(query, from: 12), end + 4 <= query.count else {
            return reply(1, question: nil, answers: [])  // FORMERR
        }
        let type = UInt16(query[end]) << 8 | UInt16(query[end + 1])
        let qclass = UInt16(query[end + 2]) << 8 | UInt16(query[end + 3])
        let question = query[12..<(end + 4)]
        guard qclass == classIN else { return reply(5, question: question, answers: []) }
        switch type {
        case typeA:
            let address: UInt32
            if name == "localhost" || name.hasSuffix(".localhost") {
                address = 0x7F00_0001
            } else if let fake = addresses.address(for: name) {
                address = fake
            } else {
                return reply(2, question: question, answers: [])  // SERVFAIL: out of fake addresses
            }
            let record: [UInt8] = [
                0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4,
                UInt8(address >> 24), UInt8((address >> 16) & 0xff), UInt8((address >> 8) & 0xff), UInt8(address & 0xff),
            ]
            return reply(0, question: question, answers: [record])
        case typeAAAA:
            return reply(0, question: question, answers: [])
        default:
            return reply(5, question: question, answers: [])  // REFUSED
        }
    }

    /// A name of uncompressed labels (queries never need pointers): lower case, dot-joined, and
    /// the offset after it. nil for pointers, over-long labels or names, or running off the end.
    static func parseName(_ bytes: [UInt8], from start: Int) -> (String, Int)? {
        var offset = start
        var labels: [String] = []
        var total = 0
        while true {
            guard offset < bytes.count else { return nil }
            let length = Int(bytes[offset])
            offset += 1
            if length == 0 { break }
            guard length <= 63, offset + length <= bytes.count else { return nil }
            total += length + 1
            guard total <= 255 else { return nil }
            let label = bytes[offset..<(offset + length)]
            guard label.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ".") }) else { return nil }
            labels.append(String(decoding: label, as: UTF8.self).lowercased())
            offset += length
        }
        guard !labels.isEmpty else { return nil }
        return (labels.joined(separator: "."), offset)
    }
}
