import AirlockSystem
import Dispatch
import Foundation
import Synchronization
import Testing

@testable import GuestAgent

/// A DNS query for `name` of `type`, id 0x1234, recursion desired.
func dnsQuery(_ name: String, type: UInt16 = DNSMessage.typeA, flags: UInt16 = 0x0100, questions: UInt16 = 1) -> [UInt8] {
    var bytes: [UInt8] = [0x12, 0x34, UInt8(flags >> 8), UInt8(flags & 0xff), UInt8(questions >> 8), UInt8(questions & 0xff), 0, 0, 0, 0, 0, 0]
    for label in name.split(separator: ".") {
        bytes.append(UInt8(label.utf8.count))
        bytes += Array(label.utf8)
    }
    bytes += [0, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
    return bytes
}

/// The rcode and the A records' addresses of an answer.
func decode(_ answer: [UInt8]) -> (rcode: UInt8, addresses: [String]) {
    let count = Int(answer[7])
    var addresses: [String] = []
    // The answers follow the echoed question; each A record is 16 bytes, its address last.
    for index in 0..<count {
        let end = answer.count - (count - 1 - index) * 16
        addresses.append(answer[(end - 4)..<end].map(String.init).joined(separator: "."))
    }
    return (answer[3] & 0x0F, addresses)
}

@Suite("The guest's DNS: fake addresses, never a query forwarded")
struct GuestDNSTests {
    @Test("A queries get stable, distinct fake addresses from 198.18.0.0/15, mapped back to their names")
    func fakeAddresses() throws {
        let table = FakeAddresses()
        let first = try #require(DNSMessage.answer(dnsQuery("Example.COM"), addresses: table))
        let again = try #require(DNSMessage.answer(dnsQuery("example.com"), addresses: table))
        let other = try #require(DNSMessage.answer(dnsQuery("api.example.org"), addresses: table))
        #expect(Array(first[0..<2]) == [0x12, 0x34] && first[2] & 0x80 != 0, "an answer to the query's id")
        let address = decode(first).addresses
        #expect(address.count == 1 && address[0].hasPrefix("198.1"))
        #expect(decode(again).addresses == address)
        #expect(decode(other).addresses != address)
        #expect(table.name(for: address[0]) == "example.com")
        #expect(table.name(for: "198.18.99.99") == nil && table.name(for: "not an address") == nil)
        #expect(decode(try #require(DNSMessage.answer(dnsQuery("localhost"), addresses: table))).addresses == ["127.0.0.1"])
    }

    @Test("AAAA is empty, other types REFUSED, responses and short packets ignored, malformed names FORMERR")
    func refusals() throws {
        let table = FakeAddresses()
        let aaaa = try #require(DNSMessage.answer(dnsQuery("example.com", type: DNSMessage.typeAAAA), addresses: table))
        #expect(decode(aaaa) == (0, []))
        let mx = try #require(DNSMessage.answer(dnsQuery("example.com", type: 15), addresses: table))
        #expect(decode(mx).rcode == 5)
        #expect(DNSMessage.answer(dnsQuery("example.com", flags: 0x8100), addresses: table) == nil)
        #expect(DNSMessage.answer([0, 1, 2], addresses: table) == nil)
        #expect(DNSMessage.answer([UInt8](repeating: 0, count: 5000), addresses: table) == nil)
        #expect(decode(try #require(DNSMessage.answer(dnsQuery("a.b", questions: 2), addresses: table))).rcode == 4)
        var pointer = dnsQuery("x")
        pointer[12] = 0xC0
        #expect(decode(try #require(DNSMessage.answer(pointer, addresses: table))).rcode == 1)
        let tooLong = dnsQuery(String(repeating: "a", count: 64) + ".com")
        #expect(decode(try #require(DNSMessage.answer(tooLong, addresses: table))).rcode == 1)
        var dotted = dnsQuery("ab.cd")
        dotted[13] = UInt8(ascii: ".")
        #expect(decode(try #require(DNSMessage.answer(dotted, addresses: table))).rcode == 1)
    }

    @Test("the fake range runs out as SERVFAIL, never by reusing another name's address")
    func exhaustion() throws {
        let table = FakeAddresses()
        var seen = Set<UInt32>()
        var index = 0
        while let address = table.address(for: "host\(index).test") {
            #expect(seen.insert(address).inserted)
            index += 1
        }
        #expect(index == Int(GuestNetwork.fakeRange.count) - 2)
        let answer = try #require(DNSMessage.answer(dnsQuery("one-more.test"), addresses: table))
        #expect(decode(answer).rcode == 2)
    }
}

@Suite("The guest's nftables rule set")
struct GuestRulesetTests {
    @Test("TCP leaving loopback goes to the egress proxy; everything else leaving it is dropped, root's traffic too")
    func structure() {
        let rules = GuestNetwork.ruleset
        #expect(rules.hasPrefix("flush ruleset"))
        #expect(rules.contains("meta l4proto tcp redirect to :\(GuestNetwork.proxyPort)"))
        #expect(rules.contains("type filter hook output priority 0; policy drop;"))
        #expect(rules.contains("type filter hook input priority 0; policy drop;"))
        // Nothing but loopback is ever accepted: no rule names a uid, a port or an address
        // outside 127.0.0.0/8.
        let accepts = rules.split(separator: "\n").filter { $0.contains("accept") && !$0.contains("policy") }
        #expect(accepts.allSatisfy { $0.contains("\"lo\"") || $0.contains("127.0.0.0/8") }, "\(accepts)")
        #expect(!rules.contains("skuid") && !rules.contains("udp"))
    }

    /// `nft -c` still needs netlink: root, or an unprivileged user in a namespace of its own.
    static let checker: [String]? = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") else { return nil }
        if getuid() == 0 { return ["/usr/sbin/nft"] }
        let probe = try? ChildProcess.capture("/usr/bin/unshare", ["-rn", "true"], timeout: .seconds(10))
        return probe?.status == 0 ? ["/usr/bin/unshare", "-rn", "/usr/sbin/nft"] : nil
    }()

    @Test(
        "nft accepts it (checked, not applied)",
        .enabled(if: checker != nil, "needs nft (nftables), and as a non-root user unprivileged user namespaces (unshare -rn)"))
    func nftChecks() throws {
        let file = NSTemporaryDirectory() + "airlock-nft-\(UUID().uuidString.prefix(8)).conf"
        try FileSystem.write(file, Array(GuestNetwork.ruleset.utf8))
        defer { unlink(file) }
        let command = try #require(Self.checker) + ["-c", "-f", file]
        let output = try ChildProcess.capture(command[0], Array(command.dropFirst()), timeout: .seconds(20))
        #expect(output.status == 0, "\(output.text)")
    }
}

/// A scripted `waitpid(-1)`: the reaper's thread blocks here until the test says which child
/// ended.
final class ScriptedChildren: Sendable {
    private let ended = Mutex<[(pid: pid_t, status: Int32)]>([])
    private let ready = DispatchSemaphore(value: 0)

    func exit(_ pid: pid_t, status: Int32) {
        ended.withLock { $0.append((pid, status)) }
        ready.signal()
    }

    func next() -> (pid: pid_t, status: Int32)? {
        ready.wait()
        return ended.withLock { $0.removeFirst() }
    }
}

@Suite("The guest's reaper")
struct ReaperTests {
    @Test("a child that ends before anyone waits keeps its status; waits in any order; orphans are reaped and forgotten")
    func reaping() async {
        let children = ScriptedChildren()
        let reaper = Reaper(waitAny: { children.next() })
        let early = reaper.spawn {
            children.exit(101, status: 3 << 8)
            return 101
        }
        #expect(early == 101)
        let second = reaper.spawn { 102 }
        let third = reaper.spawn { 103 }
        // An orphan re-parented to PID 1: nobody asked for it.
        children.exit(999, status: 0)
        children.exit(103, status: 9)
        try? await Task.sleep(for: .milliseconds(50))
        #expect(await reaper.wait(for: 101) == ExitStatus(code: 3))
        async let waitingForSecond = reaper.wait(for: second)
        #expect(await reaper.wait(for: third) == ExitStatus(code: 137, signal: 9))
        children.exit(102, status: 0)
        #expect(await waitingForSecond == ExitStatus(code: 0))
        #expect(reaper.spawn { -2 } == -2, "a failed spawn is reported, not registered")
    }
}

@Suite("Image whiteouts made real")
struct WhiteoutTests {
    @Test(
        "each whiteout becomes a 0/0 character device; its parents take the layer's modes",
        .enabled(if: getuid() == 0, "mknod of a character device needs CAP_MKNOD (the guest's PID 1 has it; run as root to check)"))
    func whiteouts() throws {
        let root = NSTemporaryDirectory() + "airlock-whiteouts-\(UUID().uuidString.prefix(8))"
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.makeDirectories(root + "/layer/etc/private", mode: 0o700)
        try RootBuilder.makeWhiteouts(["old", "etc/private/key", "etc/private/other"], in: root + "/whiteouts", above: root + "/layer")
        for path in ["old", "etc/private/key", "etc/private/other"] {
            let info = try #require(FileSystem.status(root + "/whiteouts/" + path))
            #expect(info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == 0, "\(path)")
        }
        #expect(FileSystem.status(root + "/whiteouts/etc/private").map { $0.st_mode & 0o777 } == 0o700)
    }
}

@Suite("The guest's sudo")
struct SudoTests {
    @Test("options agents and scripts use; only root; a command is needed unless a shell is asked for")
    func parsing() throws {
        #expect(try Sudo.parse(["apt-get", "install", "-y", "x"]).command == ["apt-get", "install", "-y", "x"])
        let preserved = try Sudo.parse(["-E", "-n", "--", "npm", "i", "-g", "x"])
        #expect(preserved.preserveEnvironment && preserved.command == ["npm", "i", "-g", "x"])
        #expect(try Sudo.parse(["-u", "root", "id"]).command == ["id"])
        #expect(try Sudo.parse(["-uroot", "id"]).command == ["id"])
        #expect(try Sudo.parse(["--user=0", "id"]).command == ["id"])
        #expect(try Sudo.parse(["-i"]).login)
        #expect(try Sudo.parse(["-s", "echo", "hi"]).shell)
        #expect(try Sudo.parse(["-v"]).nothing)
        #expect(throws: Sudo.UsageError.otherUser("nobody")) { try Sudo.parse(["-u", "nobody", "id"]) }
        #expect(throws: Sudo.UsageError.noCommand) { try Sudo.parse(["-E"]) }
        #expect(throws: Sudo.UsageError.unknownOption("-Z")) { try Sudo.parse(["-Z", "id"]) }
        #expect(throws: Sudo.UsageError.missingValue("-u")) { try Sudo.parse(["-u"]) }
        #expect(Sudo.invoked(as: ["/usr/local/bin/sudo", "id"]) && Sudo.invoked(as: ["sudo"]) && !Sudo.invoked(as: ["/init"]))
    }

    @Test("the environment: reset to root's with terminal and locale kept, or the caller's with -E; SUDO_* either way")
    func environment() throws {
        let caller = ["HOME": "/home/u", "USER": "u", "TERM": "xterm", "LANG": "C.UTF-8", "SECRET": "x", "PATH": "/home/u/bin:/usr/bin"]
        let reset = Sudo.environment(caller, invocation: try Sudo.parse(["id"]), uid: 1000, gid: 1000, shell: "/bin/bash")
        #expect(reset["HOME"] == "/root" && reset["USER"] == "root" && reset["TERM"] == "xterm" && reset["LANG"] == "C.UTF-8")
        #expect(reset["SECRET"] == nil && reset["PATH"] == Sudo.securePath && reset["SHELL"] == "/bin/bash")
        #expect(reset["SUDO_USER"] == "u" && reset["SUDO_UID"] == "1000" && reset["SUDO_COMMAND"] == "id")
        let kept = Sudo.environment(caller, invocation: try Sudo.parse(["-E", "id"]), uid: 1000, gid: 1000, shell: "/bin/sh")
        #expect(kept["HOME"] == "/home/u" && kept["SECRET"] == "x" && kept["SUDO_UID"] == "1000")
        #expect(Sudo.resolve("sh", path: "/nonexistent:/bin") == "/bin/sh")
        #expect(Sudo.resolve("./x", path: "/bin") == "./x")
        #expect(Sudo.resolve("no-such-tool-anywhere", path: "/bin:/usr/bin") == nil)
    }

    @Test("apt in a root without a package database gets what to do instead; with one, nothing is said")
    func packageManagerHint() throws {
        let root = NSTemporaryDirectory() + "airlock-sudo-\(UUID().uuidString.prefix(8))"
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.makeDirectories(root)
        let hint = try #require(Sudo.packageManagerHint(["/usr/bin/apt-get", "install", "-y", "jq"], root: root))
        #expect(hint.contains("apt-get cannot install anything here") && hint.contains("[vm] image = \"debian:bookworm\""))
        #expect(Sudo.packageManagerHint(["pip", "install", "x"], root: root) == nil)
        try FileSystem.write(root + "/var/lib/dpkg/status", [])
        #expect(Sudo.packageManagerHint(["apt-get", "install", "jq"], root: root) == nil)
    }
}
