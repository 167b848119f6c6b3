import Clua

/// A Lua 5.4 state with the safe standard libraries only (base, string, table, math, utf8,
/// coroutine) and a memory account (`MiddlewareRun` turns its limit on while a script runs).
/// Every read of a table is raw: no metamethod a script set runs outside the script.
final class LuaState {
    let L: OpaquePointer
    let account: UnsafeMutablePointer<airlock_lua_account>

    init(memoryLimit: Int = MiddlewareRun.memoryLimit) throws(MiddlewareError) {
        account = .allocate(capacity: 1)
        account.initialize(
            to: airlock_lua_account(
                used: 0, limit: memoryLimit, enforce: 0, exceeded: 0, shared: MiddlewareMemory.shared, shared_limit: MiddlewareMemory.limit))
        guard let L = airlock_lua_newstate(account) else {
            account.deallocate()
            throw MiddlewareError("no memory for a Lua state")
        }
        self.L = L
        airlock_lua_open_safe_libraries(L)
    }

    deinit {
        lua_close(L)
        account.deallocate()
    }

    /// Compiles `text` (never bytecode) and pushes the chunk; returns the error instead.
    func load(_ text: String, name: String) -> String? {
        var text = text
        let status = text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { luaL_loadbufferx(L, $0.baseAddress, $0.count, name, "t") }
        }
        return loadError(status, name)
    }

    /// Loads what `dump` made of airlock's own prelude in this process, the one chunk ever
    /// loaded as bytecode; returns the error instead.
    func load(ownBytecode bytes: [UInt8], name: String) -> String? {
        let status = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { luaL_loadbufferx(L, $0.baseAddress, $0.count, name, "b") }
        }
        return loadError(status, name)
    }

    /// nil when the load succeeded (the chunk is pushed); else its message, popped.
    private func loadError(_ status: Int32, _ name: String) -> String? {
        guard status != LUA_OK else { return nil }
        defer { airlock_lua_pop(L, 1) }
        return string(at: -1) ?? "cannot load \(name)"
    }

    /// The function on top of the stack as bytecode (with its debug information).
    func dump() -> [UInt8] {
        final class Sink {
            var bytes: [UInt8] = []
        }
        let sink = Sink()
        _ = lua_dump(
            L,
            { _, data, size, sink in
                guard let data, let sink else { return 1 }
                Unmanaged<Sink>.fromOpaque(sink).takeUnretainedValue().bytes += UnsafeRawBufferPointer(start: data, count: size)
                return 0
            }, Unmanaged.passUnretained(sink).toOpaque(), 0)
        return withExtendedLifetime(sink) { sink.bytes }
    }

    func push(_ text: String, on thread: OpaquePointer? = nil) {
        var text = text
        text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(thread ?? L, $0.baseAddress, $0.count) }
        }
    }

    func push(_ bytes: [UInt8], on thread: OpaquePointer) {
        bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(thread, $0.baseAddress, $0.count) }
        }
    }

    /// The string at `index` (a number is converted; anything else is nil).
    func string(at index: Int32, on thread: OpaquePointer? = nil) -> String? {
        bytes(at: index, on: thread).map { String(decoding: $0, as: UTF8.self) }
    }

    func bytes(at index: Int32, on thread: OpaquePointer? = nil) -> [UInt8]? {
        let thread = thread ?? L
        let type = lua_type(thread, index)
        guard type == LUA_TSTRING || type == LUA_TNUMBER else { return nil }
        var length = 0
        guard let pointer = airlock_lua_tostring(thread, index, &length) else { return nil }
        return Array(UnsafeRawBufferPointer(start: pointer, count: length))
    }

    /// Pushes `table[key]` without metamethods; returns its type.
    func rawField(_ table: Int32, _ key: String, on thread: OpaquePointer) -> Int32 {
        push(key, on: thread)
        return lua_rawget(thread, table)
    }
}

/// What all middleware holds at once in this process: every Lua state, and the bodies read for
/// scripts (`reserve` before holding, `release` after). A guest sending many requests at once
/// to a script's host gets refusals, never the host's memory.
public enum MiddlewareMemory {
    public static let limit = 512 << 20
    nonisolated(unsafe) static let shared: UnsafeMutablePointer<Int> = {
        let count = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        count.initialize(to: 0)
        return count
    }()

    public static func reserve(_ bytes: Int) -> Bool { airlock_shared_reserve(shared, limit, bytes) != 0 }
    public static func release(_ bytes: Int) { airlock_shared_release(shared, bytes) }
    public static var held: Int { airlock_shared_load(shared) }
}

/// Bytes one request reserved from `MiddlewareMemory`, released when it ends.
public final class MiddlewareHold: @unchecked Sendable {
    public private(set) var bytes = 0

    public init() {}

    /// Reserves `count` more; false when all middleware together would hold past the limit.
    public func reserve(_ count: Int) -> Bool {
        guard MiddlewareMemory.reserve(count) else { return false }
        bytes += count
        return true
    }

    deinit { MiddlewareMemory.release(bytes) }
}
