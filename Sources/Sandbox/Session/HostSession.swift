import AirlockSystem
import CShim
import Dispatch
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Runs one process in the guest with this process's stdin, stdout and stderr: a terminal in
/// raw mode (window size followed, ^C typed through to the guest) or pipes (EOF passed on;
/// SIGINT, SIGTERM, SIGHUP forwarded). Returns the process's exit status.
public struct HostSession: Sendable {
    public var spec: ExecSpec

    public init(spec: ExecSpec) {
        self.spec = spec
    }

    public struct Ended: Sendable, Equatable {
        /// The exit code, or 128 + the signal that ended it.
        public var code: Int32
        public var signal: Int32
    }

    public enum Failure: Error, Sendable, CustomStringConvertible {
        case couldNotStart(String)
        /// The sandbox is shutting down and takes no new session (control socket status 503).
        case stopping
        case lost
        case protocolError(String)

        public var description: String {
            switch self {
            case .couldNotStart(let message): message
            case .stopping: "the sandbox is shutting down"
            case .lost: "the connection to the sandbox was lost before the command ended"
            case .protocolError(let message): "the guest broke the session protocol: \(message)"
            }
        }
    }

    /// The pool that does this process's blocking stdio, off the cooperative pool.
    static let io = NIOThreadPool(numberOfThreads: 3)
    static let ioStarted: Bool = {
        io.start()
        return true
    }()

    public func run(on client: LinkClient) async throws -> Ended {
        _ = Self.ioStarted
        let terminal = spec.terminal != nil ? RawTerminal(fd: 0) : nil
        defer { terminal?.restore() }

        let stream = try await client.openStream()
        return try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(LinkClient.requestHeaders(path: LinkNames.Path.exec))
            try await outbound.write(Self.data(.spec(spec)))

            // Signals: window size on a terminal; forwarded to the process on pipes.
            var sources: [any DispatchSourceSignal] = []
            var previous: [(Int32, sighandler_t?)] = []
            let forwarded = spec.terminal != nil ? [SIGWINCH, SIGTERM, SIGHUP] : [SIGINT, SIGTERM, SIGHUP, SIGQUIT]
            for number in forwarded {
                previous.append((number, signal(number, SIG_IGN)))
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler {
                    let frame: SessionFrame
                    if number == SIGWINCH {
                        var rows: UInt16 = 0, columns: UInt16 = 0
                        guard airlock_get_window_size(0, &rows, &columns) == 0 else { return }
                        frame = .resize(WindowSize(rows: rows, columns: columns))
                    } else {
                        frame = .signal(number)
                    }
                    Task { try? await outbound.write(Self.data(frame)) }
                    // A hang-up or a termination request is passed on, but must end this
                    // process even if the command ignores it (an interactive shell ignores
                    // SIGTERM): give it a moment to exit by itself, then go.
                    if number == SIGHUP || number == SIGTERM {
                        DispatchQueue.global().asyncAfter(deadline: .now() + 3) {
                            terminal?.restore()
                            exit(128 + number)
                        }
                    }
                }
                source.resume()
                sources.append(source)
            }
            defer {
                for source in sources { source.cancel() }
                // As they were: a signal ignored from the start (a background job's SIGINT) stays so.
                for (number, handler) in previous { signal(number, handler) }
            }

            // stdin is read only once the session is accepted (the guest answers 200 as soon as
            // it has the spec): a session turned away reads none of it, so a retry gets it all.
            let readStdin = {
                Task {
                    while !Task.isCancelled {
                        let chunk: [UInt8]? = try? await Self.io.runIfActive {
                            var buffer = [UInt8](repeating: 0, count: 65536)
                            while true {
                                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                                if n < 0 && errno == EINTR { continue }
                                return n > 0 ? Array(buffer[0..<n]) : nil
                            }
                        }
                        guard let chunk, !Task.isCancelled else { break }
                        do {
                            try await outbound.write(Self.data(.stdin(ByteBuffer(bytes: chunk))))
                        } catch {
                            return
                        }
                    }
                    try? await outbound.write(Self.data(.stdinClosed))
                }
            }
            var stdin: Task<Void, Never>?
            defer { stdin?.cancel() }

            var parser = SessionFrameParser()
            for try await payload in inbound {
                switch payload {
                case .headers(let headers):
                    if let status = headers.headers.first(name: ":status"), status != "200" {
                        if status == ControlServer.stoppingStatus { throw Failure.stopping }
                        throw Failure.couldNotStart("the guest refused the session (status \(status))")
                    }
                    if stdin == nil { stdin = readStdin() }
                case .data(let data):
                    guard case .byteBuffer(let bytes) = data.data else { continue }
                    parser.append(bytes)
                    do {
                        while let frame = try parser.next() {
                            switch frame {
                            case .stdout(let bytes): try await Self.write(1, bytes)
                            case .stderr(let bytes): try await Self.write(2, bytes)
                            case .exited(let code, let signal):
                                // Close our half cleanly (END_STREAM, not a reset), so that
                                // nothing still in flight towards us is thrown away.
                                stdin?.cancel()
                                try? await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
                                return Ended(code: code, signal: signal)
                            case .failed(let message): throw Failure.couldNotStart(message)
                            default: throw Failure.protocolError("unexpected frame from the guest")
                            }
                        }
                    } catch let error as WireError {
                        throw Failure.protocolError(error.description)
                    }
                case .rstStream:
                    throw Failure.lost
                default:
                    continue
                }
            }
            throw Failure.lost
        }
    }

    static func data(_ frame: SessionFrame) -> HTTP2Frame.FramePayload {
        .data(.init(data: .byteBuffer(frame.buffer)))
    }

    /// Writes all of `bytes` to `fd` on the I/O pool (a full pipe blocks that thread, and so
    /// holds back the guest through HTTP/2 flow control).
    static func write(_ fd: Int32, _ bytes: ByteBuffer) async throws {
        try await io.runIfActive {
            do {
                try bytes.withUnsafeReadableBytes { try Syscall.writeAll(fd, $0, subject: "fd \(fd)") }
            } catch {
                throw SandboxError("cannot write the session's output", cause: error)
            }
        }
    }
}
