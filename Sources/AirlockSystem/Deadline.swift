import Synchronization

/// A wait that gave up.
public struct DeadlineExceeded: Error, Sendable, CustomStringConvertible {
    public var what: String
    public var after: Duration
    public var description: String { "\(what) took longer than \(after)" }
}

/// Runs `operation` and returns its result, or throws `DeadlineExceeded` after `timeout`
/// without waiting for it (an operation that ignores cancellation, like a blocking lookup on
/// a thread or a call to a peer that does not answer, finishes in the background and its
/// result is dropped).
public func withDeadline<T: Sendable>(_ timeout: Duration, what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let waiting = Locked<CheckedContinuation<T, any Error>?>(nil)
    let finish: @Sendable (Result<T, any Error>) -> Void = { result in
        let continuation = waiting.value.withLock { value -> CheckedContinuation<T, any Error>? in
            defer { value = nil }
            return value
        }
        continuation?.resume(with: result)
    }
    let tasks = Locked<[Task<Void, Never>]>([])
    defer { tasks.value.withLock { $0.forEach { $0.cancel() } } }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            waiting.value.withLock { $0 = continuation }
            let operationTask = Task {
                do { finish(.success(try await operation())) } catch { finish(.failure(error)) }
            }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                finish(.failure(DeadlineExceeded(what: what, after: timeout)))
            }
            tasks.value.withLock { $0 = [operationTask, timer] }
        }
    } onCancel: {
        finish(.failure(CancellationError()))
    }
}

/// A `Mutex` closures can share.
private final class Locked<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}
