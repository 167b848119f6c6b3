/// A call to Cloud Hypervisor's API failed. Three kinds, told apart because each needs a
/// different fix: the socket (`transport`: the VMM is gone, hung, or answered nonsense at the
/// byte level), CH's refusal (`http`: status plus CH's own messages, which name the cause),
/// and an answer airlock cannot read (`decoding`: usually a CH version it does not know).
public enum CloudHypervisorError: Error, Sendable, Equatable, CustomStringConvertible {
    case transport(endpoint: String, TransportFailure)
    /// A non-2xx status. `messages` is CH's JSON array of error strings (outermost cause
    /// first), or the raw body as one message when it is not such an array.
    case http(endpoint: String, status: Int, messages: [String])
    case decoding(endpoint: String, reason: String)

    public enum TransportFailure: Sendable, Equatable {
        /// Nothing accepted the connection on the API socket.
        case connect(socket: String, reason: String)
        /// The connection ended before a whole answer arrived.
        case dropped(reason: String)
        /// No whole answer before the deadline.
        case timeout(Duration)
        /// The answer was larger than the client accepts.
        case responseTooLarge(limit: Int)
    }

    public var description: String {
        switch self {
        case .transport(let endpoint, .connect(let socket, let reason)):
            return "cannot reach Cloud Hypervisor's API at \(socket) for \(endpoint) (\(reason)); "
                + "the cloud-hypervisor process has probably exited: its log says why"
        case .transport(let endpoint, .dropped(let reason)):
            return "Cloud Hypervisor closed the connection during \(endpoint) without a complete answer (\(reason)); "
                + "it may have crashed: its log says why"
        case .transport(let endpoint, .timeout(let duration)):
            return "Cloud Hypervisor did not answer \(endpoint) within \(Self.format(duration)) s; "
                + "the VMM is hung or the host is overloaded: stop the sandbox (`airlock stop`) and start it again"
        case .transport(let endpoint, .responseTooLarge(let limit)):
            return "Cloud Hypervisor's answer to \(endpoint) exceeds \(limit) bytes, which airlock does not accept; "
                + "is the API socket really Cloud Hypervisor's?"
        case .http(let endpoint, let status, let messages):
            let detail = messages.isEmpty ? "" : ": " + messages.joined(separator: ": ")
            return "Cloud Hypervisor refused \(endpoint) with HTTP \(status)\(detail)" + Self.hint(status: status)
        case .decoding(let endpoint, let reason):
            return "cannot read Cloud Hypervisor's answer to \(endpoint) (\(reason)); "
                + "check that `cloud-hypervisor --version` is a release airlock supports"
        }
    }

    /// What a status usually means for airlock's calls.
    static func hint(status: Int) -> String {
        switch status {
        case 400: "; the request was not valid for this Cloud Hypervisor (a version airlock does not support?)"
        case 404: "; there is no VM to act on (not created yet, or already deleted)"
        case 405: "; the VM is not in a state that allows this (not booted, or already shut down)"
        case 409: "; a device with the same id already exists"
        case 429: "; an earlier resize is still in progress: try again"
        case 500...599: "; the messages above say which resource failed (a missing file, KVM not usable, a virtiofsd that went away)"
        default: ""
        }
    }

    /// `2`, `0.3`: seconds as CH's users think of them.
    private static func format(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return seconds == seconds.rounded() ? String(Int64(seconds)) : String(seconds)
    }
}
