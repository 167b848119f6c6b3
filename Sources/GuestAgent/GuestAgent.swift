import AirlockSystem
import CShim
import GuestLink
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// PID 1 of the airlock VM. Sets up the machine, then serves the host over the control port
/// until told to power off. If anything fatal happens, it says so on the console (which the
/// host keeps in console.log) and powers off: a VM without its agent is of no use.
public enum GuestAgent {
    public static func main() async -> Never {
        if getpid() == 1 {
            LinkServer.warmUp(group: .singleton)
            do {
                try EarlyInit.run()
            } catch {
                System.log("early init failed: \(error)")
                EarlyInit.powerOff()
            }
        }

        // The control link: the first transport that exists. A virtio-serial port named
        // airlock.control (QEMU without vhost-vsock), else vsock (Cloud Hypervisor's hybrid vsock, or
        // QEMU with vhost-vsock), on which the host connects to port LinkNames.controlVsockPort.
        switch EarlyInit.controlTransport() {
        case .serialPort(let port)?:
            // A boot that makes a boot snapshot: the host saves the VM when the port opens.
            if EarlyInit.snapshotBoot {
                await EarlyInit.fileSystemModules.wait()
                await EarlyInit.networkModules.wait()
                // Every VM resumed from the snapshot starts with this heap: give back what
                // loading the modules freed (about 4 MB of the agent's 6).
                malloc_trim(0)
            }
            let fd = open(port, O_RDWR | O_CLOEXEC | O_NOCTTY)
            guard fd >= 0 else {
                System.log("cannot open \(port): \(errorText(errno))")
                EarlyInit.powerOff()
            }
            EarlyInit.waitForHost(port: fd)
            guard let socket = PortBridge.start(port: fd) else { EarlyInit.powerOff() }
            System.log("ready on \(port)")
            do {
                try await LinkServer(group: .singleton).serve(socket: socket)
                System.log("the host closed the control connection")
            } catch {
                System.log("control connection failed: \(error)")
            }
        case .vsock(let cid)?:
            System.log("ready on vsock port \(LinkNames.controlVsockPort) (CID \(cid))")
            do {
                try await LinkServer(group: .singleton).serve(vsockPort: LinkNames.controlVsockPort)
            } catch {
                System.log("cannot listen on vsock port \(LinkNames.controlVsockPort): \(error)")
            }
        case nil:
            System.log(
                "no control transport: neither a virtio-serial port named \(LinkNames.controlPort) nor a vsock device; is the host side wired?")
        }
        EarlyInit.powerOff()
    }
}
