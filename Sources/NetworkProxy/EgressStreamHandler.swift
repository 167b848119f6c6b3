import GuestLink
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy

/// One egress stream: request → (sniff) → the judge's first step → resolve → its second step →
/// connect → relay, and the record.
struct EgressStreamHandler {
    let server: EgressServer
    let stream: EgressStream

    private var judge: EgressJudge { server.configuration.judge }
    private var limits: EgressLimits { server.configuration.limits }

    /// At most this many DATA frames are looked at while sniffing (each look parses from the
    /// start: tiny frames must not buy quadratic work).
    static let sniffFrames = 64
    /// How long a finished stream may take to flush its last frames (or the guest to end its
    /// side after a refusal) before it is reset.
    static let settleTimeout = TimeAmount.seconds(30)

    func run() async {
        let started = ContinuousClock.now
        var record: ConnectionRecord?
        do {
            try await stream.executeThenClose { inbound, outbound in
                var frames = inbound.makeAsyncIterator()
                record = try await handle(&frames, outbound) { record = $0 }
                await Relay.settle(stream.channel, timeout: Self.settleTimeout)
            }
        } catch {
            server.logger.debug("egress stream ended: \(error)")
        }
        if var record {
            let elapsed = ContinuousClock.now - started
            record.durationMilliseconds = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
            server.record(record)
        }
    }

    typealias Frames = NIOAsyncChannelInboundStream<EgressStreamInput>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>

    /// Returns the record of the connection; `progress` keeps the latest one so a relay that
    /// fails still reports what it carried. Reads, sniffs, resolves and relays; every decision
    /// is the judge's.
    private func handle(_ frames: inout Frames, _ outbound: Outbound, progress: (ConnectionRecord) -> Void) async throws -> ConnectionRecord? {
        guard case .frame(.headers(let headers))? = try await frames.next() else { return nil }
        if headers.headers.first(name: ":path") == SocketRequest.path {
            return try await socketForward(headers, &frames, outbound, progress: progress)
        }
        if headers.headers.first(name: ":path") == BrowseRequest.path {
            let refusal: String?
            do {
                let request = try BrowseRequest(headers: headers.headers)
                refusal = await server.configuration.browse?(request.url) ?? "this sandbox opens no browser (no service with a sign-in is on)"
            } catch {
                refusal = error.description
            }
            if let refusal {
                try await Self.refuse(outbound, status: "403", reason: refusal)
            } else {
                try await outbound.write(.headers(.init(headers: [":status": "200"], endStream: true)))
            }
            return nil
        }
        let request: EgressRequest
        do {
            request = try EgressRequest(headers: headers.headers)
        } catch {
            try await Self.refuse(outbound, status: "400", reason: error.description)
            return ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .invalid, reason: error.description)
        }
        var guestFinished = headers.endStream

        if request.host == EgressRequest.forwardHost {
            return try await forward(request, &frames, outbound, guestFinished: guestFinished, progress: progress)
        }

        // The first bytes, when they can change the decision or the shape of a denial.
        let target = EgressJudge.Target(host: request.host, port: request.port)
        var initial = ByteBuffer()
        var sniffed = Sniffed.other
        // With interception every connection is looked at: TLS is ended here whatever its port.
        // A guest silent until the deadline may be a slow TLS client (one that reads its CA
        // bundle after connecting) or a client of a server that speaks first: which one, the
        // first to speak tells, once the upstream is dialled.
        var silent = false
        if judge.needsSniff(target) || server.configuration.interception != nil, !guestFinished {
            switch try await readFirstBytes(&frames, into: &initial, guestFinished: &guestFinished) {
            case .sniffed(let first): sniffed = first
            case .deadline: silent = server.configuration.interception != nil && initial.readableBytes == 0
            case .reset: return nil
            case .upstreamSpoke: break
            }
        }

        deciding: while true {
            // Step 1: by the names; nothing denied here is ever resolved.
            let pending: EgressJudge.Pending
            switch judge.judge(target, sniffed: sniffed.names) {
            case .deny(let denial):
                try await deny(outbound, sniffed: sniffed, denial)
                return ConnectionRecord(denial, target: target)
            case .resolve(let allowed):
                pending = allowed
            }
            var record = ConnectionRecord(
                name: pending.shownName, ip: target.literal?.description, port: target.port, rule: pending.decision.rule,
                verdict: pending.decision.verdict == .passthrough ? .passthrough : .allow, reason: pending.decision.description)

            // Step 2: by the addresses the host resolves for the names the judge named.
            var resolved: [String: [IPAddress]] = [:]
            for name in pending.namesToResolve {
                do {
                    resolved[name] = try await server.configuration.resolver.resolve(host: name, port: target.port).compactMap {
                        $0.ipAddress.flatMap(IPAddress.init)
                    }
                } catch  where name == target.name {
                    record.verdict = .refused
                    record.reason = "\(error)"
                    try await Self.refuse(outbound, status: "502", reason: record.reason)
                    return record
                } catch {
                    resolved[name] = []
                }
            }
            let addresses: [IPAddress]
            switch judge.settle(pending, resolved: resolved) {
            case .refuse(let denial):
                try await deny(outbound, sniffed: sniffed, denial)
                return ConnectionRecord(denial, target: target)
            case .connect(let allowed, _, _):
                addresses = allowed
            }

            // TLS to a name, not passthrough: ended here (`InterceptedConnection`).
            if let interception = server.configuration.interception, pending.decision.verdict != .passthrough, case .tls(let names) = sniffed,
                let name = names.first ?? target.name, let address = addresses.first
            {
                return try await intercept(
                    name: name, address: address, interception: interception, record: record, &frames, outbound, guestFinished: guestFinished,
                    initial: initial, progress: progress)
            }

            // Connect (each address in turn), answer, relay.
            var lastError: (any Error)?
            for address in addresses {
                let upstream: any Channel
                do {
                    let socketAddress = try SocketAddress(ipAddress: address.description, port: Int(target.port))
                    upstream = try await Self.connectGlued(to: socketAddress, on: stream.channel.eventLoop, timeout: limits.connectTimeout)
                } catch {
                    lastError = error
                    continue
                }
                if silent {
                    silent = false
                    switch try await firstToSpeak(upstream, &frames, into: &initial, guestFinished: &guestFinished) {
                    case .sniffed(let late) where late != .other:
                        // The guest spoke first, and said what it is: judged (and intercepted) as
                        // if it had in time; this connection was for a server that speaks first.
                        upstream.close(promise: nil)
                        sniffed = late
                        continue deciding
                    case .reset:
                        upstream.close(promise: nil)
                        return nil
                    case .sniffed, .upstreamSpoke, .deadline:
                        break
                    }
                }
                record.ip = address.description
                progress(record)
                return await Relay.glue(
                    frames: &frames, response: Self.ok, guestFinished: guestFinished, initial: initial, stream: stream.channel, upstream: upstream,
                    record: record, progress: progress)
            }
            record.verdict = .refused
            record.reason = "cannot connect to \(request.host) port \(request.port): \(lastError.map { "\($0)" } ?? "no address")"
            try await Self.refuse(outbound, status: "502", reason: record.reason)
            return record
        }
    }

    /// What the guest's first bytes said, or what came before they did.
    enum FirstBytes {
        case sniffed(Sniffed)
        case deadline
        case upstreamSpoke
        case reset
    }

    /// Reads the guest's first bytes into `initial` until they say what they are, the stream
    /// ends, the sniff deadline passes or a dialled upstream speaks first.
    private func readFirstBytes(_ frames: inout Frames, into initial: inout ByteBuffer, guestFinished: inout Bool) async throws -> FirstBytes {
        var looked = 0
        var sniffed = Sniffed.needMore
        while let element = try await frames.next() {
            switch element {
            case .sniffDeadline:
                return .deadline
            case .upstreamSpoke:
                return .upstreamSpoke
            case .frame(.data(let data)):
                if case .byteBuffer(var bytes) = data.data { initial.writeBuffer(&bytes) }
                guestFinished = data.endStream
                looked += 1
                sniffed = Sniffed.sniff(Array(initial.readableBytesView.prefix(Sniffed.limit)))
                if sniffed != .needMore || guestFinished || initial.readableBytes >= Sniffed.limit || looked >= Self.sniffFrames {
                    return .sniffed(sniffed == .needMore ? .other : sniffed)
                }
            case .frame(.headers(let trailers)):
                if trailers.endStream {
                    guestFinished = true
                    return .sniffed(.other)
                }
            case .frame(.rstStream):
                return .reset
            case .frame, .relayStarted:
                continue
            }
        }
        return .sniffed(.other)
    }

    /// After a silent sniff, with `upstream` dialled: whoever speaks first. The upstream's
    /// words wait in its `UpstreamHold` for the relay; the guest's are read into `initial`.
    private func firstToSpeak(_ upstream: any Channel, _ frames: inout Frames, into initial: inout ByteBuffer, guestFinished: inout Bool) async throws
        -> FirstBytes
    {
        let stream = self.stream.channel
        try await stream.eventLoop.submit {
            let deadline = try stream.pipeline.syncOperations.handler(type: SniffDeadlineHandler.self)
            try upstream.pipeline.syncOperations.addHandler(UpstreamHold { deadline.signal(.upstreamSpoke) })
        }.get()
        while true {
            switch try await readFirstBytes(&frames, into: &initial, guestFinished: &guestFinished) {
            case .deadline: continue
            case let word: return word
            }
        }
    }

    /// Ends the guest's TLS here and serves its requests (`InterceptedConnection`) over a new
    /// connection to `address`.
    private func intercept(
        name: String, address: IPAddress, interception: Interception, record: ConnectionRecord, _ frames: inout Frames, _ outbound: Outbound,
        guestFinished: Bool, initial: ByteBuffer, progress: (ConnectionRecord) -> Void
    ) async throws -> ConnectionRecord {
        var record = record
        do {
            let connection = InterceptedConnection(
                name: name, port: Int(record.port), address: address, interception: interception, rule: record.rule, logger: server.logger)
            let (guestSide, served) = try await InterceptedConnection.open(connection, on: stream.channel.eventLoop)
            record.ip = address.description
            record.reason += "; intercepted"
            progress(record)
            let carried = await Relay.glue(
                frames: &frames, response: Self.ok, guestFinished: guestFinished, initial: initial, stream: stream.channel, upstream: guestSide,
                record: record, progress: progress)
            await withTaskCancellationHandler {
                await served.value
            } onCancel: {
                served.cancel()
            }
            return carried
        } catch {
            record.verdict = .refused
            record.reason = "cannot intercept the connection to \(name): \(error)"
            try await Self.refuse(outbound, status: "502", reason: record.reason)
            return record
        }
    }

    /// `host.airlock.internal:<guest port>` → the host's 127.0.0.1:<host port>.
    private func forward(
        _ request: EgressRequest, _ frames: inout Frames, _ outbound: Outbound, guestFinished: Bool, progress: (ConnectionRecord) -> Void
    ) async throws -> ConnectionRecord {
        var record = ConnectionRecord(name: request.host, ip: nil, port: request.port, rule: nil, verdict: .deny, reason: "")
        let forward: GuestForward
        switch judge.judgeForward(host: request.host, port: request.port) {
        case .deny(let reason, let fix):
            record.reason = reason
            try await Self.refuse(outbound, status: "403", reason: reason + "; " + fix)
            return record
        case .forward(let allowed):
            forward = allowed
        }
        record.rule = "ports.\(forward.entry)"
        record.verdict = .forward
        record.reason = "guest port \(forward.guestPort) → host 127.0.0.1:\(forward.hostPort)"
        record.ip = "127.0.0.1"
        do {
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: Int(forward.hostPort))
            let upstream = try await Self.connectGlued(to: address, on: stream.channel.eventLoop, timeout: limits.connectTimeout)
            progress(record)
            return await Relay.glue(
                frames: &frames, response: Self.ok, guestFinished: guestFinished, initial: ByteBuffer(), stream: stream.channel, upstream: upstream,
                record: record, progress: progress)
        } catch {
            record.verdict = .refused
            record.reason = "cannot connect to the host's 127.0.0.1:\(forward.hostPort) for [network.ports.\(forward.entry)]: \(error)"
            try await Self.refuse(outbound, status: "502", reason: record.reason)
            return record
        }
    }

    /// A `[network.sockets.<name>]` forward: the guest names the entry, never a path; only a
    /// configured entry's host socket is connected.
    private func socketForward(
        _ headers: HTTP2Frame.FramePayload.Headers, _ frames: inout Frames, _ outbound: Outbound, progress: (ConnectionRecord) -> Void
    ) async throws -> ConnectionRecord {
        let request: SocketRequest
        do {
            request = try SocketRequest(headers: headers.headers)
        } catch {
            try await Self.refuse(outbound, status: "400", reason: error.description)
            return ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .invalid, reason: error.description)
        }
        var record = ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .deny, reason: "")
        let forward: UnixSocketForward
        switch judge.judgeSocket(named: request.name) {
        case .deny(let reason, let fix):
            record.reason = reason
            try await Self.refuse(outbound, status: "403", reason: reason + "; " + fix)
            return record
        case .forward(let allowed):
            forward = allowed
        }
        record.rule = "sockets.\(forward.entry)"
        record.socket = forward.hostPath
        record.verdict = .forward
        record.reason = "guest \(forward.guestPath) → host \(forward.hostPath)"
        let upstream: any Channel
        do {
            let address = try SocketAddress(unixDomainSocketPath: forward.hostPath)
            upstream = try await Self.connectGlued(to: address, on: stream.channel.eventLoop, timeout: limits.connectTimeout)
        } catch {
            record.verdict = .refused
            record.reason = "cannot connect to the host socket \(forward.hostPath) for [network.sockets.\(forward.entry)]: \(error)"
            try await Self.refuse(outbound, status: "502", reason: record.reason)
            return record
        }
        progress(record)
        return await Relay.glue(
            frames: &frames, response: Self.ok, guestFinished: headers.endStream, initial: ByteBuffer(), stream: stream.channel, upstream: upstream,
            record: record, progress: progress)
    }

    private static let ok = HTTP2Frame.FramePayload.headers(.init(headers: [":status": "200"]))

    /// A denial: an HTTP 403 page for a plain HTTP request (agents read it), else `403`.
    private func deny(_ outbound: Outbound, sniffed: Sniffed, _ denial: EgressJudge.Denial) async throws {
        let reason = denial.reason
        let fix = denial.fix
        guard case .http(_, let requestLine) = sniffed else {
            try await Self.refuse(outbound, status: "403", reason: reason + "; to allow: " + fix)
            return
        }
        let page = DenialPage.http(requestLine: requestLine, reason: reason, fix: fix)
        try await outbound.write(.headers(.init(headers: [":status": "200", EgressRequest.reasonHeader: DenialPage.headerValue(reason)])))
        try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: page)), endStream: true)))
    }

    static func refuse(_ outbound: Outbound, status: String, reason: String) async throws {
        let headers: HPACKHeaders = [":status": status, EgressRequest.reasonHeader: DenialPage.headerValue(reason)]
        try await outbound.write(.headers(.init(headers: headers, endStream: true)))
    }

    /// A connection to `address` (TCP, or a Unix socket) for `Relay.glue`: on the stream's event
    /// loop `loop` (no thread hop per chunk), half-closable, reading only when the relay asks.
    static func connectGlued(to address: SocketAddress, on loop: any EventLoop, timeout: TimeAmount) async throws -> any Channel {
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 * 1024, maximum: upstreamReadMaximum))
            .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1 << 20))
        if case .unixDomainSocket = address {
        } else {
            bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        return try await bootstrap.connect(to: address).get()
    }

    /// The largest read from an upstream (one DATA payload). Each connection keeps a buffer
    /// of up to this size: 256 KiB × 512 streams bounds what one guest makes the host hold
    /// (1 MiB reads measured no faster here).
    static let upstreamReadMaximum = 256 << 10
}

/// The text a denied plain-HTTP request gets.
enum DenialPage {
    static func http(requestLine: String, reason: String, fix: String) -> String {
        let body = """
            airlock: the sandbox's network policy blocked this request.

              request:  \(String(requestLine.prefix(200)))
              reason:   \(reason)
              to allow: \(fix)

            """
        return "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\nX-Airlock-Reason: \(headerValue(reason))\r\n\r\n" + body
    }

    /// Printable ASCII only (no CR/LF), bounded.
    static func headerValue(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(600).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? $0 : "?" }))
    }
}

extension ConnectionRecord {
    /// The record of a connection the judge turned away.
    init(_ denial: EgressJudge.Denial, target: EgressJudge.Target) {
        self.init(
            name: denial.shownName, ip: target.literal?.description, port: target.port, rule: denial.rule,
            verdict: denial.kind == .denied ? .deny : .refused, reason: denial.reason)
    }
}
