import AirlockSystem
import GuestLink
import NIOCore
import NIOHPACK
import NIOHTTP2

#if canImport(Glibc)
import Glibc
#endif

/// A CLI's "open this address in the browser" (its sign-in) goes to the host: the root gets
/// `xdg-open` (`LinkNames.browserShim`, a shell script, which the host puts first on the
/// sessions' PATH and names in `$BROWSER` when a service's sign-in is on) writing the address
/// to a FIFO; PID 1 reads it and asks the host (`BrowseRequest`), which decides.
enum BrowserRelay {
    static let shim = """
        #!/bin/sh
        # airlock: opens a sign-in page in the browser of the computer running airlock, which
        # checks it first (only a known provider's sign-in page opens).
        case "$1" in
          https://*) ;;
          *) echo "xdg-open (airlock): only a provider's sign-in page (https) opens, in the browser where airlock runs" >&2; exit 1 ;;
        esac
        printf '%s\\n' "$1" > \(LinkNames.browserFIFO) || exit 1
        echo "airlock: the sign-in page opens in the browser where airlock runs (or airlock shows its address there)" >&2

        """

    /// The shim and the FIFO in the new root.
    static func install(root: String) throws {
        try FileSystem.makeDirectories(root + LinkNames.browserShimDirectory, mode: 0o755)
        try FileSystem.write(root + LinkNames.browserShim, Array(shim.utf8))
        chmod(root + LinkNames.browserShim, 0o755)
        let fifo = root + LinkNames.browserFIFO
        unlink(fifo)
        guard mkfifo(fifo, 0o666) == 0 else { throw SystemError("mkfifo", fifo, errno: errno) }
        chmod(fifo, 0o666)
    }

    /// Reads addresses from the FIFO (one a line, at most `BrowseRequest.maxLength` bytes; at
    /// most 5 a minute go to the host) for as long as the VM runs.
    static func start(root: String, link: EgressLink) {
        let fifo = root + LinkNames.browserFIFO
        startThread {
            // Read-write: the FIFO never reaches end of file when a writer closes it.
            let fd = open(fifo, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { return System.log("browser relay: cannot open \(fifo): \(String(cString: strerror(errno)))") }
            var line: [UInt8] = []
            var sent: [ContinuousClock.Instant] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return }
                for byte in buffer[..<count] {
                    guard byte != UInt8(ascii: "\n") else {
                        sent.removeAll { ContinuousClock.now - $0 > .seconds(60) }
                        let url = String(decoding: line, as: UTF8.self)
                        let tooLong = line.count > BrowseRequest.maxLength
                        line.removeAll()
                        guard !url.isEmpty, !tooLong else { continue }
                        guard sent.count < 5 else {
                            System.log("browser relay: more than 5 addresses a minute; this one is dropped")
                            continue
                        }
                        sent.append(.now)
                        Task { await ask(url, link: link) }
                        continue
                    }
                    if line.count <= BrowseRequest.maxLength { line.append(byte) }
                }
            }
        }
    }

    static func ask(_ url: String, link: EgressLink) async {
        do {
            let stream = try await link.openStream()
            try await stream.executeThenClose { inbound, outbound in
                try await outbound.write(.headers(.init(headers: BrowseRequest(url: url).headers, endStream: true)))
                var frames = inbound.makeAsyncIterator()
                if case .headers(let headers)? = try await frames.next(), headers.headers.first(name: ":status") != "200" {
                    System.log("browser relay: the host refused: \(headers.headers.first(name: EgressRequest.reasonHeader) ?? "no reason")")
                }
            }
        } catch {
            System.log("browser relay: \(error)")
        }
    }
}
