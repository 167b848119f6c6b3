import AirlockSystem
import CShim
import GuestLink
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

typealias ByteChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>
typealias InboundFrames = NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator
typealias OutboundFrames = NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>

/// One process run for the host: its stdio over the stream, its exit status at the end.
struct ExecSession {
    var inbound: InboundFrames
    let outbound: OutboundFrames

    /// After the process exits, its output is passed on for as long as it keeps coming; once
    /// nothing has come for this long, the session ends (a background process that keeps the
    /// terminal or pipes open does not hold it).
    static let idleAfterExit: Double = 1

    mutating func run() async throws {
        var parser = SessionFrameParser()
        var early: [SessionFrame] = []
        var spec: ExecSpec?
        // The spec comes first; anything after it in the same DATA frame is kept for later.
        while spec == nil {
            guard let payload = try await inbound.next() else { return }
            guard case .data(let data) = payload, case .byteBuffer(let bytes) = data.data else { continue }
            parser.append(bytes)
            while let frame = try parser.next() {
                if case .spec(let decoded) = frame, spec == nil { spec = decoded } else { early.append(frame) }
            }
        }
        guard let spec else { return }

        try await outbound.write(.headers(.init(headers: [":status": "200"])))
        let process: RunningProcess
        do {
            process = try await RunningProcess.start(spec)
        } catch {
            try await send(.failed("\(error)"), end: true)
            return
        }

        let outbound = self.outbound
        let lastOutput = NIOLockedValueBox(EarlyInit.now())
        let outputs = Task {
            await withTaskGroup(of: Void.self) { group in
                for (channel, isError) in process.outputs {
                    group.addTask {
                        do {
                            try await channel.executeThenClose { input, _ in
                                for try await chunk in input {
                                    lastOutput.withLockedValue { $0 = EarlyInit.now() }
                                    var frame = ByteBuffer()
                                    (isError ? SessionFrame.stderr(chunk) : .stdout(chunk)).write(to: &frame)
                                    try await outbound.write(.data(.init(data: .byteBuffer(frame))))
                                }
                            }
                        } catch {
                            // EIO from a terminal whose last writer closed is its end of file.
                        }
                    }
                }
            }
        }
        let handoff = Handoff(value: inbound)
        let input = Task { [early, parser] in
            var parser = parser
            var inboundFrames = handoff.value
            await process.deliver(early)
            do {
                while let payload = try await inboundFrames.next() {
                    guard case .data(let data) = payload else { continue }
                    if case .byteBuffer(let bytes) = data.data {
                        parser.append(bytes)
                        var frames: [SessionFrame] = []
                        while let frame = try parser.next() { frames.append(frame) }
                        await process.deliver(frames)
                    }
                    if data.endStream { break }
                }
                await process.deliver([.stdinClosed])
            } catch {
                // The host went away or broke the protocol: hang up on the process.
                kill(-process.pid, SIGHUP)
                await process.deliver([.stdinClosed])
            }
        }

        let status = await Reaper.shared.wait(for: process.pid)
        let drained = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await outputs.value
                return true
            }
            group.addTask {
                // Output has stopped: close the pipes or terminal, which ends the pumps (each
                // after the write it is in) and so the other racer.
                while (try? await Task.sleep(for: .milliseconds(200))) != nil {
                    if EarlyInit.now() - lastOutput.withLockedValue({ $0 }) > Self.idleAfterExit {
                        process.closeOutputs()
                        return false
                    }
                }
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        _ = drained
        try await send(.exited(code: status.code, signal: status.signal), end: true)
        // Wait for the host to close its half (it does on reading the exit status): closing the
        // stream before that would reset it, and a reset can discard what is still in flight.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await input.value }
            group.addTask { try? await Task.sleep(for: .seconds(5)) }
            await group.next()
            input.cancel()
            group.cancelAll()
        }
    }

    private func send(_ frame: SessionFrame, end: Bool) async throws {
        try await outbound.write(.data(.init(data: .byteBuffer(frame.buffer), endStream: end)))
    }
}

/// A started process and the channels to its stdio.
final class RunningProcess: Sendable {
    let pid: pid_t
    /// Output channels, `true` for stderr.
    let outputs: [(ByteChannel, Bool)]
    /// Where stdin goes (the terminal, or the stdin pipe).
    let input: ByteChannel
    /// A duplicate of the terminal's master side for resizing, or -1.
    let terminal: Int32

    private init(pid: pid_t, outputs: [(ByteChannel, Bool)], input: ByteChannel, terminal: Int32) {
        self.pid = pid
        self.outputs = outputs
        self.input = input
        self.terminal = terminal
    }

    deinit {
        if terminal >= 0 { close(terminal) }
    }

    static let group = MultiThreadedEventLoopGroup.singleton

    static func start(_ spec: ExecSpec) async throws -> RunningProcess {
        let chroot = FileSystem.exists(RootBuilder.root + "/proc/1") ? RootBuilder.root : nil
        // No PR_SET_NO_NEW_PRIVS: the agent may become root through the guest's own sudo
        // (setuid root); the VM is the boundary.
        var options = airlock_spawn_options()
        if spec.user != 0 || spec.group != 0 {
            options.set_ids = 1
            options.uid = spec.user
            options.gid = spec.group
        }
        if let size = spec.terminal {
            var master: Int32 = -1, slave: Int32 = -1
            let opened = airlock_open_pty(size.rows, size.columns, &master, &slave)
            guard opened == 0 else { throw SystemError("openpty", "", errno: -opened) }
            options.controlling_terminal = 1
            let pid: pid_t
            do {
                pid = try ProcessRunner.spawn(
                    spec.arguments, environment: spec.environment, stdin: slave, stdout: slave, stderr: slave,
                    options: options, root: chroot, workingDirectory: spec.workingDirectory)
            } catch {
                close(slave)
                close(master)
                throw error
            }
            close(slave)
            let resizer = dup(master)
            let channel = try await NIOPipeBootstrap(group: group).takingOwnershipOfDescriptor(inputOutput: master) { channel in
                channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
            }
            return RunningProcess(pid: pid, outputs: [(channel, false)], input: channel, terminal: resizer)
        }

        var stdinPipe: [Int32] = [-1, -1], stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1]
        for index in 0..<3 {
            let result = index == 0 ? airlock_pipe(&stdinPipe) : index == 1 ? airlock_pipe(&stdoutPipe) : airlock_pipe(&stderrPipe)
            guard result == 0 else { throw SystemError("pipe2", "", errno: -result) }
        }
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(
                spec.arguments, environment: spec.environment, stdin: stdinPipe[0], stdout: stdoutPipe[1], stderr: stderrPipe[1],
                options: options, root: chroot, workingDirectory: spec.workingDirectory)
        } catch {
            for fd in stdinPipe + stdoutPipe + stderrPipe { close(fd) }
            throw error
        }
        close(stdinPipe[0])
        close(stdoutPipe[1])
        close(stderrPipe[1])
        let bootstrap = NIOPipeBootstrap(group: group)
        let input = try await bootstrap.takingOwnershipOfDescriptor(output: stdinPipe[1]) { channel in
            channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
        }
        let stdout = try await bootstrap.takingOwnershipOfDescriptor(input: stdoutPipe[0]) { channel in
            channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
        }
        let stderr = try await bootstrap.takingOwnershipOfDescriptor(input: stderrPipe[0]) { channel in
            channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
        }
        return RunningProcess(pid: pid, outputs: [(stdout, false), (stderr, true)], input: input, terminal: -1)
    }

    /// Acts on frames from the host, in order.
    func deliver(_ frames: [SessionFrame]) async {
        for frame in frames {
            switch frame {
            case .stdin(let bytes):
                try? await input.channel.writeAndFlush(bytes)
            case .stdinClosed:
                if terminal < 0 {
                    try? await input.channel.close(mode: .output)
                } else {
                    // On a terminal, end of input is ^D at the start of a line, as typed.
                    try? await input.channel.writeAndFlush(ByteBuffer(bytes: [4]))
                }
            case .resize(let size):
                if terminal >= 0 { _ = airlock_set_window_size(terminal, size.rows, size.columns) }
            case .signal(let number):
                if (1...64).contains(number) { kill(-pid, number) }
            case .spec, .stdout, .stderr, .exited, .failed:
                continue
            }
        }
    }

    func closeOutputs() {
        for (channel, _) in outputs { channel.channel.close(promise: nil) }
    }
}

/// Moves a non-Sendable value into one task.
// @unchecked: `ExecSession.run` hands its stream iterator to the input task and never uses it
// again, so the iterator has exactly one user at any time.
struct Handoff<Value>: @unchecked Sendable {
    var value: Value
}
