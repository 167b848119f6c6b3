import GuestLink
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NetworkPolicy

/// One egress stream: request → (sniff) → decision → resolve → connect → relay, and the record.
struct EgressStreamHandler {
    let server: EgressServer
    let stream: EgressStream

    private var rules: NetworkRules { server.configuration.rules }
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
    /// fails still reports what it carried.
    private func handle(_ frames: inout Frames, _ outbound: Outbound, progress: (ConnectionRecord) -> Void) async throws -> ConnectionRecord? {
        guard case .frame(.headers(let headers))? = try await frames.next() else { return nil }
        if headers.headers.first(name: ":path") == SocketRequest.path {
            return try await socketForward(headers, &frames, outbound, progress: progress)
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

        let literal = IPAddress(request.host).map(\.description)
        let name = literal == nil ? request.host : nil
        let preliminary = rules.decide(host: name, ip: literal, port: request.port)

        // The first bytes, when they can change the decision or the shape of a denial.
        var initial = ByteBuffer()
        var sniffed = Sniffed.other
        if literal != nil || request.port == 80 || request.port == 443 || !preliminary.isAllowed, !guestFinished {
            sniffed = .needMore
            var looked = 0
            reading: while let element = try await frames.next() {
                switch element {
                case .sniffDeadline:
                    break reading
                case .frame(.data(let data)):
                    if case .byteBuffer(var bytes) = data.data { initial.writeBuffer(&bytes) }
                    guestFinished = data.endStream
                    looked += 1
                    sniffed = Sniffed.sniff(Array(initial.readableBytesView.prefix(Sniffed.limit)))
                    if sniffed != .needMore || guestFinished || initial.readableBytes >= Sniffed.limit || looked >= Self.sniffFrames { break reading }
                case .frame(.headers(let trailers)):
                    if trailers.endStream {
                        guestFinished = true
                        break reading
                    }
                case .frame(.rstStream):
                    return nil
                case .frame, .relayStarted:
                    continue
                }
            }
            if sniffed == .needMore { sniffed = .other }
        }

        // The decision, with the sniffed names.
        let names = sniffed.names.filter { $0 != request.host }
        var decision = preliminary
        if let literal, let first = names.first {
            // Judged by IP and name together (see `NetworkRules.decide`): the first denial, or
            // the first name's allowance.
            let judged = names.map { rules.decide(host: $0, ip: literal, port: request.port) }
            decision = judged.first(where: { !$0.isAllowed }) ?? rules.decide(host: first, ip: literal, port: request.port)
        } else if decision.isAllowed {
            // A name that also carries another SNI/Host: that one must be allowed too.
            if let denied = names.lazy.map({ rules.decide(host: $0, ip: nil, port: request.port) }).first(where: { !$0.isAllowed }) {
                decision = denied
            }
        }
        let shownName = name ?? names.first
        var record = ConnectionRecord(
            name: shownName, ip: literal, port: request.port, rule: decision.rule,
            verdict: decision.verdict == .passthrough ? .passthrough : decision.isAllowed ? .allow : .deny,
            reason: decision.description)
        guard decision.isAllowed else {
            try await deny(outbound, sniffed: sniffed, reason: decision.description, fix: decision.fix)
            return record
        }

        // An IP literal that only its names opened (no rule or policy allows the address
        // itself) must be an address of each of those names: otherwise any server on the
        // internet could be reached by sending an allowed name in its SNI or Host.
        if let literal, !names.isEmpty, !rules.decide(host: nil, ip: literal, port: request.port).isAllowed {
            for sniffedName in names {
                let resolved = (try? await server.configuration.resolver.resolve(host: sniffedName, port: request.port)) ?? []
                let ips = resolved.compactMap(\.ipAddress)
                guard !ips.contains(where: { IPAddress($0) == IPAddress(literal) }) else { continue }
                record.verdict = .refused
                record.reason =
                    "\(literal) is not an address of \(sniffedName)"
                    + (ips.isEmpty ? " (it does not resolve here)" : " (it resolves to \(ips.prefix(4).joined(separator: ", ")))")
                    + "; a connection to an IP literal is opened by the names it carries only when they resolve to it"
                try await deny(
                    outbound, sniffed: sniffed, reason: record.reason,
                    fix:
                        "connect by name, or add [network.rules.<name>] allow = [\"\(literal):\(request.port)\"] to airlock.toml if that address is meant to be reachable"
                )
                return record
            }
        }

        // Where to connect: the literal, or the name's addresses that are not private (unless
        // the rule allows it) and not named by a deny pattern.
        var addresses: [SocketAddress] = []
        if let literal {
            if let address = IPAddress(literal), address.isPrivate, !decision.allowPrivate {
                record.verdict = .refused
                record.reason =
                    "\(literal) is a loopback, private, link-local or metadata address; only a rule that names it with allow_private = true opens it"
                try await deny(
                    outbound, sniffed: sniffed, reason: record.reason,
                    fix: "add [network.rules.<name>] allow = [\"\(decision.subject)\"] and allow_private = true to airlock.toml")
                return record
            }
            addresses = [try SocketAddress(ipAddress: literal, port: Int(request.port))]
        } else {
            let resolved: [SocketAddress]
            do {
                resolved = try await server.configuration.resolver.resolve(host: request.host, port: request.port)
            } catch {
                record.verdict = .refused
                record.reason = "\(error)"
                try await Self.refuse(outbound, status: "502", reason: record.reason)
                return record
            }
            var refusedPrivate: [String] = []
            for address in resolved {
                guard let ip = address.ipAddress else { continue }
                if let denied = rules.explicitlyDenied(ip: ip, port: request.port) {
                    record.reason = "\(request.host) resolves to \(ip): \(denied.description)"
                    continue
                }
                if IPAddress(ip)?.isPrivate ?? true, !decision.allowPrivate {
                    refusedPrivate.append(ip)
                    continue
                }
                addresses.append(address)
            }
            if addresses.isEmpty {
                record.verdict = .refused
                let fix: String
                if !refusedPrivate.isEmpty {
                    let rule = decision.rule.map { "[network.rules.\($0)]" } ?? "a rule allowing it"
                    record.reason =
                        "\(request.host) resolves only to loopback/private/link-local addresses (\(refusedPrivate.prefix(4).joined(separator: ", "))); refused without allow_private = true"
                    fix = "add allow_private = true to \(rule) in airlock.toml if \(request.host) is meant to reach a private network"
                } else {
                    fix = "remove the deny pattern naming that address"
                }
                try await deny(outbound, sniffed: sniffed, reason: record.reason, fix: fix)
                return record
            }
        }

        // Connect (each address in turn), answer, relay.
        var lastError: (any Error)?
        for address in addresses {
            do {
                let upstream = try await Self.connectGlued(to: address, on: stream.channel.eventLoop, timeout: limits.connectTimeout)
                record.ip = address.ipAddress
                progress(record)
                return await Relay.glue(
                    frames: &frames, response: Self.ok, guestFinished: guestFinished, initial: initial,
                    stream: stream.channel, upstream: upstream, record: record, progress: progress)
            } catch {
                lastError = error
            }
        }
        record.verdict = .refused
        record.reason = "cannot connect to \(request.host) port \(request.port): \(lastError.map { "\($0)" } ?? "no address")"
        try await Self.refuse(outbound, status: "502", reason: record.reason)
        return record
    }

    /// `host.airlock.internal:<guest port>` → the host's 127.0.0.1:<host port>.
    private func forward(
        _ request: EgressRequest, _ frames: inout Frames, _ outbound: Outbound, guestFinished: Bool,
        progress: (ConnectionRecord) -> Void
    ) async throws -> ConnectionRecord {
        var record = ConnectionRecord(name: request.host, ip: nil, port: request.port, rule: nil, verdict: .deny, reason: "")
        guard let forward = server.configuration.guestForwards[request.port] else {
            record.reason = "no guest port forward for \(EgressRequest.forwardHost):\(request.port)"
            try await Self.refuse(
                outbound, status: "403",
                reason: record.reason + "; add [network.ports.<name>] guest = [\"\(request.port):<host port>\"] to airlock.toml")
            return record
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
                frames: &frames, response: Self.ok, guestFinished: guestFinished, initial: ByteBuffer(),
                stream: stream.channel, upstream: upstream, record: record, progress: progress)
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
        _ headers: HTTP2Frame.FramePayload.Headers, _ frames: inout Frames, _ outbound: Outbound,
        progress: (ConnectionRecord) -> Void
    ) async throws -> ConnectionRecord {
        let request: SocketRequest
        do {
            request = try SocketRequest(headers: headers.headers)
        } catch {
            try await Self.refuse(outbound, status: "400", reason: error.description)
            return ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .invalid, reason: error.description)
        }
        var record = ConnectionRecord(name: nil, ip: nil, port: 0, rule: nil, verdict: .deny, reason: "")
        guard let forward = server.configuration.socketForwards[request.name] else {
            record.reason = "no Unix-socket forward named \"\(request.name)\""
            try await Self.refuse(
                outbound, status: "403",
                reason: record.reason + "; add [network.sockets.\(request.name)] host = \"<host socket>\" guest = \"<guest path>\" to airlock.toml")
            return record
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
            frames: &frames, response: Self.ok, guestFinished: headers.endStream, initial: ByteBuffer(),
            stream: stream.channel, upstream: upstream, record: record, progress: progress)
    }

    private static let ok = HTTP2Frame.FramePayload.headers(.init(headers: [":status": "200"]))

    /// A denial: an HTTP 403 page for a plain HTTP request (agents read it), else `403`.
    private func deny(_ outbound: Outbound, sniffed: Sniffed, reason: String, fix: String) async throws {
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
