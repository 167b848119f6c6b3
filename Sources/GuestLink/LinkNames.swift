/// Names both sides agree on.
public enum LinkNames {
    /// The host's interception CA in the guest, alone and appended to the system's bundle
    /// (`RootBuilder.trustAuthority`), and the variables that point runtimes with trust stores
    /// of their own at them (Node adds its extra certificates to its built-in roots).
    public static let caFile = "/run/airlock/ca.pem"
    public static let caBundle = "/run/airlock/ca-bundle.pem"
    public static let trustEnvironment = ["NODE_EXTRA_CA_CERTS": caFile, "SSL_CERT_FILE": caBundle, "REQUESTS_CA_BUNDLE": caBundle]

    /// `xdg-open` in the VM, also its `$BROWSER` where the host sets it: writes the address to
    /// `browserFIFO`, which the guest agent carries to the host (`BrowseRequest`).
    public static let browserShimDirectory = "/run/airlock/bin"
    public static let browserShim = browserShimDirectory + "/xdg-open"
    public static let browserFIFO = "/run/airlock/browser.open"

    /// The virtio-serial port carrying the host→guest control connection (host is the HTTP/2 client).
    public static let controlPort = "airlock.control"
    /// The virtio-serial port carrying the guest→host connection (guest is the HTTP/2 client).
    public static let egressPort = "airlock.egress"
    /// vsock ports for the same two connections when vsock is the transport.
    public static let controlVsockPort: UInt32 = 1024
    public static let egressVsockPort: UInt32 = 1025

    /// Request paths on the control connection.
    public enum Path {
        /// Body: `SetupSpec`. The guest assembles its root and answers when ready for sessions.
        public static let setup = "/v1/setup"
        /// Body: `ExecSpec` as the first session frame; then a session (see `SessionFrame`).
        public static let exec = "/v1/exec"
        /// The guest stops its daemons (each with its signal and timeout), syncs its disks and
        /// powers off; it answers once the daemons are stopped.
        public static let powerOff = "/v1/poweroff"
        /// Answer: `DaemonStatus.encode` of every `[daemons.*]` entry.
        public static let daemons = "/v1/daemons"
    }

    /// 9p/virtiofs mount tag of the workspace share.
    public static let workspaceTag = "workspace"
    /// The virtio-blk serial of the state disk: with an image's layer disks beside it, the
    /// guest cannot rely on it being /dev/vda.
    public static let stateDiskSerial = "airlock-state"
}
