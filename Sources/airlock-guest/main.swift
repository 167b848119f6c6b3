import GuestLink
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// PID 1 of the airlock VM. Sets up the machine, then serves the host over the control port
// until told to power off. If anything fatal happens, it says so on the console (which the
// host keeps in console.log) and powers off: a VM without its agent is of no use.

if getpid() == 1 {
    do {
        try EarlyInit.run()
    } catch {
        System.log("early init failed: \(error)")
        EarlyInit.powerOff()
    }
}

guard let port = EarlyInit.virtioPort(named: LinkNames.controlPort) else {
    System.log("no virtio-serial port named \(LinkNames.controlPort); is the host side wired?")
    EarlyInit.powerOff()
}
let fd = open(port, O_RDWR | O_CLOEXEC | O_NOCTTY)
guard fd >= 0 else {
    System.log("cannot open \(port): \(String(cString: strerror(errno)))")
    EarlyInit.powerOff()
}
guard let socket = PortBridge.start(port: fd) else { EarlyInit.powerOff() }
System.log("ready on \(port)")
do {
    try await LinkServer(group: .singleton).serve(socket: socket)
    System.log("the host closed the control connection")
} catch {
    System.log("control connection failed: \(error)")
}
EarlyInit.powerOff()
