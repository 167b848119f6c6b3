import AirlockSystem
import CShim
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes what a VM prints — its serial console, which the guest controls, and the VMM's own
/// output — to the console log within a size: once the log reaches half of `limit`, it
/// becomes `<log>.1` (replacing the one before) and a new log starts, so both together hold at
/// most `limit` bytes and the latest lines are always there (`FileSystem.tailLines` reads
/// across the two). A guest that floods its console slows itself down (the VMM waits for this
/// recorder), never fills the host's disk.
///
/// The VMM writes its stdout and stderr to `output` (Cloud Hypervisor's serial too, in `tty`
/// mode) and, when there is a `socket`, connects to it with the serial console (QEMU's
/// `-chardev socket,…`); one thread of its own reads them until the VMM has closed them, or
/// `finish` is called (or the recorder is released).
public final class ConsoleRecorder: Sendable {
    /// 1 MiB per sandbox: the console log and the one before it.
    public static let defaultLimit: Int64 = 1 << 20
    /// What a Linux kernel prints when it panics.
    public static let kernelPanicLine = "Kernel panic - not syncing"

    public let log: String
    public let limit: Int64
    /// The write end of the pipe the VMM's stdout and stderr go to (`VMMProcess.spawn(output:)`);
    /// closed by `spawned()`, so the recorder sees the end when the VMM has gone.
    public let output: Int32
    private let listener: Int32
    private let input: Int32
    /// Signalled by `finish` (or when the recorder goes): the thread drains what is there and ends.
    private let stop: StopSignal
    private let panic = PanicWatch()

    /// Starts recording to `log` (appended to), listening on `socket` (0600) when given.
    public init(socket: String?, log: String, limit: Int64 = ConsoleRecorder.defaultLimit) throws(MachineError) {
        self.log = log
        self.limit = limit
        var listener: Int32 = -1
        if let socket {
            unlink(socket)
            listener = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let bound = withUnixAddress(socket) { bind(listener, $0, $1) == 0 } ?? false
            guard listener >= 0, bound, chmod(socket, 0o600) == 0, listen(listener, 1) == 0 else {
                let error = SystemError.last("listen", socket)
                if listener >= 0 { close(listener) }
                throw MachineError("cannot listen for the VM's console", cause: error)
            }
        }
        var output: [Int32] = [-1, -1]
        let made = airlock_pipe(&output)
        guard made == 0, let stop = StopSignal() else {
            let error = SystemError("pipe2", log, errno: made == 0 ? errno : -made)
            for fd in [listener] + output where fd >= 0 { close(fd) }
            throw MachineError("cannot record the VM's console", cause: error)
        }
        self.listener = listener
        self.input = output[0]
        self.output = output[1]
        self.stop = stop
        let recorder = Recording(log: log, limit: limit, panic: panic)
        let (listenerFD, inputFD) = (listener, output[0])
        startThread { recorder.run(listener: listenerFD, output: inputFD, stop: stop) }
    }

    /// The VMM has been started (or failed to): airlock's copy of `output` goes.
    public func spawned() {
        close(output)
    }

    /// Ends `vmm` (SIGKILL) when the guest's kernel panics. `panic=-1` and QEMU's `-no-reboot`
    /// should end it by themselves, but a reboot that never comes (CI once saw a TCG guest
    /// spin after its panic) would leave a boot waiting for its deadline, minutes, and a
    /// session hanging; a guest that prints the line itself only ends its own VM. The kernel
    /// gets `grace` to print the reason and the trace (the console's last lines) and reboot.
    public func endOnKernelPanic(_ vmm: ProcessWaiter, grace: Duration = .seconds(2)) {
        panic.whenSeen {
            Task.detached {
                if await VMMProcess.exited(vmm, within: grace) { return }
                // Not once it has been reaped: its pid may belong to another process by then.
                if !vmm.hasExited {
                    kill(-vmm.pid, SIGKILL)
                    kill(vmm.pid, SIGKILL)
                }
            }
        }
    }

    /// Ends the recording once what is buffered has been written (the VMM has gone).
    public func finish() {
        stop.signal()
    }

    deinit {
        stop.signal()
    }
}

/// The recorder's thread: polls the listener (until the VMM connects), the connection and
/// the output pipe; writes everything to the bounded log; closes its descriptors at the end.
private struct Recording: Sendable {
    let log: String
    let limit: Int64
    let panic: PanicWatch

    func run(listener: Int32, output: Int32, stop: StopSignal) {
        var writer = BoundedFile(path: log, limit: limit)
        // The serial connection: not yet made (the listener is polled), open, or ended.
        var connection: Int32 = -1
        var connectionEnded = listener < 0
        var outputOpen = true
        var stopping = false
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var scanner = PanicScanner()
        defer {
            for fd in [listener, output, connection] where fd >= 0 { close(fd) }
            writer.close()
        }
        /// Reads once from `fd` into the log; false at its end.
        func drain(_ fd: Int32) -> Bool {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 { return errno == EINTR || errno == EAGAIN }
            if count == 0 { return false }
            writer.write(buffer[0..<count])
            if scanner.finds(buffer[0..<count]) { panic.seen() }
            return true
        }
        // Until the VMM has closed both (or its output, never having connected: it is gone).
        while outputOpen || (connection >= 0 && !connectionEnded) {
            let serial = connectionEnded ? -1 : (connection >= 0 ? connection : listener)
            var fds = [
                pollfd(fd: serial, events: Int16(POLLIN), revents: 0),
                pollfd(fd: outputOpen ? output : -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopping ? -1 : stop.read, events: Int16(POLLIN), revents: 0),
            ]
            // Once asked to stop: whatever is still there, without waiting for more.
            let ready = poll(&fds, nfds_t(fds.count), stopping ? 0 : -1)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { return }
            if fds[2].revents != 0 { stopping = true }
            if fds[0].revents != 0 {
                if connection < 0 {
                    connection = accept(listener, nil, nil)
                    if connection >= 0 { _ = fcntl(connection, F_SETFD, FD_CLOEXEC) }
                } else if !drain(connection) {
                    connectionEnded = true
                }
            }
            if fds[1].revents != 0 && !drain(output) { outputOpen = false }
        }
    }
}

/// Finds the line a Linux kernel prints when it panics, across the chunks the console
/// arrives in.
struct PanicScanner {
    static let marker = Array(ConsoleRecorder.kernelPanicLine.utf8)
    /// The end of what came before: a marker may begin there.
    private var carried: [UInt8] = []
    private var found = false

    /// Whether the marker has appeared by the end of `chunk` (once true, stays true).
    mutating func finds(_ chunk: ArraySlice<UInt8>) -> Bool {
        if found { return true }
        let text = carried + chunk
        let marker = Self.marker
        if text.count >= marker.count {
            for start in text.indices.dropLast(marker.count - 1) where text[start] == marker[0] {
                if text[start..<start + marker.count].elementsEqual(marker) {
                    found = true
                    return true
                }
            }
        }
        carried = Array(text.suffix(marker.count - 1))
        return false
    }
}

/// Whether the console has shown a kernel panic, and what to do when it does (run once, on
/// the recorder's thread or at once when it already has).
private final class PanicWatch: Sendable {
    private let state = Mutex<(seen: Bool, action: (@Sendable () -> Void)?)>((false, nil))

    func whenSeen(_ action: @escaping @Sendable () -> Void) {
        let already = state.withLock { state in
            if !state.seen { state.action = action }
            return state.seen
        }
        if already { action() }
    }

    func seen() {
        let action = state.withLock { state -> (@Sendable () -> Void)? in
            if state.seen { return nil }
            state.seen = true
            return state.action
        }
        action?()
    }
}

/// A pipe one side writes a byte to so that a thread polling the other stops. Both ends live
/// as long as the object, which the recorder and its thread share: a signal after the thread
/// has ended never writes into a pipe without a reader (SIGPIPE), and the thread never polls a
/// closed descriptor.
private final class StopSignal: Sendable {
    let read: Int32
    private let write: Int32

    init?() {
        var fds: [Int32] = [-1, -1]
        guard airlock_pipe(&fds) == 0 else { return nil }
        read = fds[0]
        write = fds[1]
    }

    func signal() {
        var byte: UInt8 = 1
        _ = Glibc.write(write, &byte, 1)
    }

    deinit {
        close(read)
        close(write)
    }
}

/// A file that never grows past half of `limit`: at that point it becomes `<path>.1` and a
/// new one starts.
private struct BoundedFile {
    let path: String
    let limit: Int64
    private var fd: Int32 = -1
    private var size: Int64 = 0

    init(path: String, limit: Int64) {
        self.path = path
        self.limit = limit
        reopen()
    }

    private mutating func reopen() {
        if fd >= 0 { Glibc.close(fd) }
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        var info = stat()
        size = fd >= 0 && fstat(fd, &info) == 0 ? Int64(info.st_size) : 0
    }

    mutating func write(_ bytes: ArraySlice<UInt8>) {
        var rest = bytes
        while !rest.isEmpty {
            let room = max(0, limit / 2 - size)
            if room == 0 {
                rename(path, path + ".1")
                reopen()
                continue
            }
            let part = rest.prefix(Int(room))
            let written = part.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }  // the disk is full: dropped rather than blocking the VM
            size += Int64(written)
            rest = rest.dropFirst(written)
        }
    }

    mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
