/// What this host can give a sandbox, for the checks that the configuration asks for no more:
/// CPUs and memory the host has, and a state disk the file system can hold.
public struct HostCapacity: Sendable, Equatable {
    public var cpus: Int
    public var memoryBytes: UInt64
    /// Free space where the sandbox's state lives (nil when unknown: not checked).
    public var freeDiskBytes: UInt64?

    public init(cpus: Int, memoryBytes: UInt64, freeDiskBytes: UInt64?) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.freeDiskBytes = freeDiskBytes
    }
}

extension ConfigLoader.Result {
    /// `[vm] cpus` and `memory` against the host's, `[disk] size` against the free space (less
    /// what an existing disk image of `existingDisk` bytes already holds); each problem at the
    /// `file:line:column` of the value.
    public func problems(on host: HostCapacity, existingDisk: UInt64 = 0) -> [ConfigDiagnostic] {
        var problems: [ConfigDiagnostic] = []
        func at(_ path: String...) -> SourceLocation? {
            var node: ConfigNode? = merged
            for key in path { node = node?[key] }
            return node?.origin.location
        }
        if config.vm.cpus > host.cpus {
            problems.append(
                ConfigDiagnostic(
                    at: at("vm", "cpus"), "[vm] cpus is \(config.vm.cpus), but this host has \(host.cpus)",
                    hint: "set [vm] cpus to at most \(host.cpus)"))
        }
        // The host needs memory of its own: the VM may have at most what the host has.
        if config.vm.memory.bytes > host.memoryBytes {
            problems.append(
                ConfigDiagnostic(
                    at: at("vm", "memory"),
                    "[vm] memory is \(config.vm.memory), but this host has \(ByteSize(bytes: (host.memoryBytes >> 20) << 20))",
                    hint: "set [vm] memory to less, e.g. \"\(ByteSize.mebibytes(max(256, host.memoryBytes >> 21)))\""))
        }
        if let free = host.freeDiskBytes, config.disk.size.bytes > existingDisk, config.disk.size.bytes - existingDisk > free {
            problems.append(
                ConfigDiagnostic(
                    at: at("disk", "size"),
                    "[disk] size is \(config.disk.size), more than the \(ByteSize(bytes: (free >> 20) << 20)) free for the sandbox's state disk",
                    hint: "free disk space, or set [disk] size lower"))
        }
        return problems
    }
}
