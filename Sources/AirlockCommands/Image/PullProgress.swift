import AirlockSystem
import OCI
import Sandbox
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Pull progress on stderr: on a terminal, one line per layer redrawn in place (bytes, total,
/// rate, state) and an overall line; otherwise plain lines as layers finish. Events come from
/// concurrent downloads, so the state is behind a mutex.
final class PullProgress: PullReporting {
    struct Layer {
        var digest: Digest
        var total: Int64
        var bytes: Int64 = 0
        var state = "waiting"
        var started: Double?
        var finished: Double?
    }

    struct State {
        var reference = ""
        var layers: [Layer] = []
        var drawnLines = 0
        var lastDraw = 0.0
        var started = 0.0
        /// A Docker daemon export: bytes so far, the daemon's size estimate, when it started.
        var exported: Int64 = 0
        var exportEstimate: Int64 = 0
        var exportStarted: Double?
    }

    let quiet: Bool
    let terminal: Bool
    /// Times here are seconds since the reporter was made (rates and elapsed times).
    private let origin = ContinuousClock.now
    private let state = Mutex(State())

    init(quiet: Bool) {
        self.quiet = quiet
        self.terminal = isatty(2) == 1 && getenv("TERM").map { String(cString: $0) } != "dumb"
    }

    private func clockNow() -> Double { (ContinuousClock.now - origin).seconds }

    func handle(_ event: PullEvent) {
        guard !quiet else { return }
        var lines: [String] = []
        state.withLock { state in
            let now = clockNow()
            func index(_ digest: Digest) -> Int? { state.layers.firstIndex { $0.digest == digest } }
            switch event {
            case .resolved(let reference, let manifest, let layers):
                state.reference = reference
                if let started = state.exportStarted {
                    let elapsed = now - started
                    lines.append(
                        (terminal ? "\r\u{1B}[2K" : "") + "read \(formatBytes(state.exported)) from the Docker daemon in \(formatDecimal(elapsed)) s")
                }
                var seen = Set<Digest>()
                state.layers = layers.filter { seen.insert($0.digest).inserted }.map { Layer(digest: $0.digest, total: $0.size) }
                if !terminal {
                    let total = layers.reduce(0) { $0 + $1.size }
                    lines.append(
                        (state.exportStarted != nil ? "importing " : "pulling ")
                            + "\(reference) (\(manifest.short), \(layers.count) layers, \(formatBytes(total)))")
                }
            case .layerCached(let digest, _):
                if let i = index(digest) {
                    state.layers[i].state = "cached"
                    state.layers[i].bytes = state.layers[i].total
                }
                if !terminal { lines.append("layer \(digest.short): already unpacked") }
            case .layerProgress(let digest, let bytes, _):
                if let i = index(digest) {
                    if state.layers[i].started == nil { state.layers[i].started = now }
                    state.layers[i].bytes = bytes
                    state.layers[i].state = "downloading"
                }
            case .layerResumed(let digest, let from):
                if !terminal { lines.append("layer \(digest.short): resumed an interrupted download at \(formatBytes(from))") }
            case .layerExtracting(let digest):
                if let i = index(digest) {
                    state.layers[i].state = "unpacking"
                    state.layers[i].bytes = state.layers[i].total
                    if !terminal && state.exportStarted != nil {
                        lines.append("layer \(digest.short): \(formatBytes(state.layers[i].total)), its diff_id checked")
                    } else if !terminal {
                        let elapsed = now - (state.layers[i].started ?? now)
                        lines.append(
                            "layer \(digest.short): downloaded \(formatBytes(state.layers[i].total))"
                                + (elapsed > 0.001
                                    ? " in \(formatDecimal(elapsed)) s (\(formatBytes(Int64(Double(state.layers[i].total) / elapsed)))/s)" : ""))
                    }
                }
            case .exportProgress(let bytes, let estimate):
                if state.exportStarted == nil { state.exportStarted = now }
                state.exported = bytes
                state.exportEstimate = estimate
                if terminal && now - state.lastDraw > 0.1 {
                    state.lastDraw = now
                    let rate =
                        now - (state.exportStarted ?? now) > 0.2
                        ? ", \(formatBytes(Int64(Double(bytes) / (now - (state.exportStarted ?? now)))))/s" : ""
                    lines.append(
                        "\r\u{1B}[2Kreading from the Docker daemon: \(formatBytes(bytes))"
                            + (estimate > 0 ? " of about \(formatBytes(estimate))" : "") + rate + "\u{1B}[1A")
                }
                return
            case .layerDone(let digest, let info):
                if let i = index(digest) {
                    state.layers[i].state = "done"
                    state.layers[i].finished = now
                }
                if !terminal { lines.append("layer \(digest.short): unpacked \(info.files) files, \(formatBytes(info.bytes))") }
            }
            if terminal && (now - state.lastDraw > 0.1 || isFinal(event)) {
                state.lastDraw = now
                lines = redraw(&state, now: now)
            }
        }
        write(lines)
    }

    private func isFinal(_ event: PullEvent) -> Bool {
        switch event {
        case .layerDone, .layerCached, .resolved: true
        default: false
        }
    }

    private func redraw(_ state: inout State, now: Double) -> [String] {
        var output = ""
        if state.drawnLines > 0 { output += "\u{1B}[\(state.drawnLines)A" }
        var lines: [String] = []
        for layer in state.layers {
            var line = "  \(layer.digest.short)  \(layer.state.padding(to: 11))  \(formatBytes(layer.bytes)) / \(formatBytes(layer.total))"
            if layer.state == "downloading", let started = layer.started, now - started > 0.2 {
                line += "  \(formatBytes(Int64(Double(layer.bytes) / (now - started))))/s"
            }
            lines.append(line)
        }
        let done = state.layers.reduce(Int64(0)) { $0 + $1.bytes }
        let total = state.layers.reduce(Int64(0)) { $0 + $1.total }
        let elapsed = max(0.001, now - state.started)
        lines.append("\(state.reference): \(formatBytes(done)) / \(formatBytes(total)), \(formatBytes(Int64(Double(done) / elapsed)))/s")
        for line in lines { output += "\r\u{1B}[2K" + line + "\n" }
        state.drawnLines = lines.count
        return [output]
    }

    func finish(succeeded: Bool = true) {
        guard !quiet else { return }
        let lines: [String] = state.withLock { state in
            if terminal { return state.layers.isEmpty ? [] : redraw(&state, now: clockNow()) }
            let elapsed = clockNow() - state.started
            return state.reference.isEmpty || !succeeded ? [] : ["\(state.reference): done in \(formatDecimal(elapsed)) s"]
        }
        write(lines)
    }

    private func write(_ lines: [String]) {
        for line in lines {
            Terminal.standardError.write(line.hasSuffix("\n") ? line : line + "\n")
        }
    }
}
