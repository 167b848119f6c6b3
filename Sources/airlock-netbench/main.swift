// Not shipped: `make bench` measures the host-side egress relay against a direct loopback
// connection to the same server, side by side in one process; and (`front`, Front.swift)
// stands in for the guest in front of the relay or the TLS interception for a load generator.
//   airlock-netbench [megabytes] [connections]
//   airlock-netbench front <upstream port> <CA directory> <upstream CA file> intercept|passthrough
import GuestLink
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy
import NetworkProxy

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
if arguments.count > 1 && arguments[1] == "front" {
    try await runFront(Array(arguments.dropFirst(2)))
    exit(0)
}
let megabytes = arguments.count > 1 ? Int(arguments[1]) ?? 1000 : 1000
let connections = arguments.count > 2 ? Int(arguments[2]) ?? 500 : 500
let group = MultiThreadedEventLoopGroup.singleton

/// Sends `size` bytes (when asked by one byte "D") or echoes one byte ("E"), then closes.
final class BenchServerHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let size: Int
    static let chunk = ByteBuffer(repeating: 0x61, count: 1 << 16)
    init(size: Int) { self.size = size }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = unwrapInboundIn(data)
        guard request.readableBytesView.first == UInt8(ascii: "D") else {
            context.writeAndFlush(data, promise: nil)
            return
        }
        var left = size
        while left > 0 {
            let piece = Self.chunk.getSlice(at: 0, length: min(left, Self.chunk.readableBytes)) ?? ByteBuffer()
            left -= piece.readableBytes
            context.write(wrapOutboundOut(piece), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: done)
        done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

typealias ByteChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// One request byte, then everything until EOF; returns the byte count.
func direct(port: Int, request: String) async throws -> Int {
    let channel = try await ClientBootstrap(group: group)
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
        }
    return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: request))
        var total = 0
        for try await buffer in inbound {
            total += buffer.readableBytes
            if request == "E" { break }
        }
        return total
    }
}

/// The same through an HTTP/2 stream to the EgressServer (as the guest does).
func proxied(_ link: LinkClient, port: Int, request: String) async throws -> Int {
    let stream = try await link.openStream()
    return try await stream.executeThenClose { inbound, outbound in
        try await outbound.write(.headers(.init(headers: EgressRequest(host: "bench.test", ip: "198.18.0.1", port: UInt16(port)).headers)))
        try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: request)))))
        var total = 0
        for try await frame in inbound {
            switch frame {
            case .headers(let headers):
                guard headers.headers.first(name: ":status") == "200" else { fatalError("proxy refused: \(headers.headers)") }
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { total += bytes.readableBytes }
                if request == "E" && total > 0 { return total }
                if data.endStream { return total }
            default:
                continue
            }
        }
        return total
    }
}

let size = megabytes * 1_000_000
let server = try await ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { $0.pipeline.addHandler(BenchServerHandler(size: size)) }
    .bind(host: "127.0.0.1", port: 0).get()
let port = server.localAddress?.port ?? 0

var logger = Logger(label: "bench")
logger.logLevel = .error
let rules = NetworkRules(
    policy: .denyByDefault, rules: [NetworkRule(name: "bench", allow: [try HostPattern(parsing: "bench.test")], allowPrivate: true)])
let egress = EgressServer(
    configuration: .init(rules: rules, resolver: StaticResolver(["bench.test": ["127.0.0.1"]])), logger: logger, records: { _ in })
var fds: [Int32] = [-1, -1]
guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { fatalError("socketpair") }
let serving = Task { try await egress.serve(connectedSocket: fds[0]) }
// The guest's side: the guest agent's own link client (1 MiB frames, 4 MiB stream windows).
let link = try await LinkClient.connect(connectedSocket: fds[1])

// Warm up both paths.
func step(_ text: String) {
    if getenv("NETBENCH_DEBUG") != nil {
        let line = Array((text + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}
step("direct")
_ = try await direct(port: port, request: "E")
step("proxied")
_ = try await proxied(link, port: port, request: "E")
step("warm")

/// CPU time of this process (server, relay and client alike), user + system, in seconds.
func cpuTime() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

// Throughput: alternate the two paths three times, keep each one's best; and the CPU time each
// byte costs on either path (less sensitive than wall time to other work on the machine).
var bestDirect = 0.0, bestProxy = 0.0
var cpuDirect = Double.infinity, cpuProxy = Double.infinity
for _ in 0..<3 {
    var start = now(), cpu = cpuTime()
    let a = try await direct(port: port, request: "D")
    bestDirect = max(bestDirect, Double(a) / (now() - start) / 1e6)
    cpuDirect = min(cpuDirect, cpuTime() - cpu)
    start = now()
    cpu = cpuTime()
    let b = try await proxied(link, port: port, request: "D")
    bestProxy = max(bestProxy, Double(b) / (now() - start) / 1e6)
    cpuProxy = min(cpuProxy, cpuTime() - cpu)
    precondition(a == size && b == size, "short transfer: \(a) \(b) of \(size)")
}

// Connection set-up: a new connection, one byte there and back, close; sequential.
var start = now()
for _ in 0..<connections { _ = try await direct(port: port, request: "E") }
let directSetup = (now() - start) / Double(connections) * 1000
start = now()
for _ in 0..<connections { _ = try await proxied(link, port: port, request: "E") }
let proxySetup = (now() - start) / Double(connections) * 1000

func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = scaled / Int(scale), fraction = scaled % Int(scale)
    let text = String(fraction)
    return digits == 0 ? "\(whole)" : "\(whole).\(String(repeating: "0", count: digits - text.count))\(text)"
}
print(
    "relay throughput: \(fixed(bestProxy, 0)) MB/s through the egress proxy, \(fixed(bestDirect, 0)) MB/s direct loopback, ratio \(fixed(bestProxy / bestDirect, 2))x (\(megabytes) MB, best of 3)"
)
print(
    "relay cost: \(fixed(cpuProxy / Double(megabytes) * 1000, 3)) CPU-ms per MB through the egress proxy, \(fixed(cpuDirect / Double(megabytes) * 1000, 3)) direct loopback, ratio \(fixed(cpuProxy / cpuDirect, 2))x (server, relay and client together, user + system, best of 3)"
)
print(
    "connection set-up: \(fixed(proxySetup, 3)) ms through the egress proxy, \(fixed(directSetup, 3)) ms direct loopback, ratio \(fixed(proxySetup / directSetup, 2))x (\(connections) sequential connections, 1-byte round trip)"
)
serving.cancel()
try? await server.close().get()
