import Clua

/// A middleware as configured: its name, its Lua script and its `env` values. Checked when
/// the configuration loads (`syntaxError`); run per request by `MiddlewareRun`.
public struct MiddlewareScript: Sendable {
    public var name: String
    public var source: String
    /// `env.*` as the script sees them; a name whose template resolved nowhere is absent (nil).
    public var environment: [String: String]

    public init(name: String, source: String, environment: [String: String]) {
        self.name = name
        self.source = source
        self.environment = environment
    }

    /// The script inside a function, as the Rust airlock runs it: `req` is its parameter,
    /// never a global shared between requests. On the script's first line, so the lines Lua
    /// names in errors are the script's own.
    var wrapped: String { "return function(req) " + source + "\nend" }

    /// The first syntax error in `source` with its line in the script (1-based), or nil.
    /// Text only: bytecode is refused.
    public static func syntaxError(in source: String) -> (line: Int?, message: String)? {
        guard let state = try? LuaState() else { return (nil, "no memory for a Lua state") }
        guard let error = state.load(MiddlewareScript(name: "", source: source, environment: [:]).wrapped, name: "=script") else { return nil }
        // "script:<line>: <message>".
        let rest = error.drop { $0 != ":" }.dropFirst()
        if let colon = rest.firstIndex(of: ":"), let line = Int(rest[..<colon]) {
            return (line, String(rest[rest.index(after: colon)...].drop { $0 == " " }))
        }
        return (nil, error)
    }
}

/// One script running for one request, in a Lua state of its own (no globals survive a
/// request; nothing one request leaves is seen by another). The state has no `io`, `os`,
/// `package`, `debug`, `load`, `loadfile`, `dofile` or `require`; it holds at most
/// `memoryLimit` bytes and runs at most `instructionLimit` VM instructions, after which it is
/// stopped in a way no `pcall` in it can catch.
///
/// The driver (`InterceptedConnection`) calls `resume` with `.start`, then answers each `Step`
/// until `.done`, `.deny` or `.failed`.
public final class MiddlewareRun {
    public static let memoryLimit = 64 << 20
    public static let instructionLimit: Int32 = 1_000_000
    /// The most a script may hand back: a body it set, all headers together.
    public static let bodyLimit = 16 << 20
    static let headersLimit = 256 << 10

    public enum Answer {
        case start
        case body([UInt8])
        case matches(Bool)
        case logged
        case response(status: Int, headers: [(name: String, value: String)])
        /// The request cannot have what it asked for: raised in the script as an error.
        case refusal(String)
    }

    public enum Step {
        /// `req:body()` (`response` false) or `res:body()`: answer `.body`.
        case needsBody(response: Bool)
        case hostMatches(String)
        case log(String)
        /// `req:send()`: run the rest of the chain with `RequestEdit`, answer `.response`.
        case send(RequestEdit)
        case deny
        /// The script ended: the request as it left it (sent on when it did not call send), and
        /// the response as it left it when it did.
        case done(RequestEdit, ResponseEdit?)
        case failed(String)
    }

    /// What a script changed in a request: `headers` holds only changed names (nil: removed).
    public struct RequestEdit: Sendable {
        public var path: String
        public var headers: [String: String?]
        /// A body it set (`setBody`), else nil: the body goes on as it was.
        public var body: [UInt8]?
    }

    public struct ResponseEdit: Sendable {
        public var status: Int
        public var headers: [String: String?]
        public var body: [UInt8]?
    }

    private let state: LuaState
    private let thread: OpaquePointer
    private let method: String
    private let host: String
    private let requestHeaders: [String: String]
    private var responseHeaders: [String: String] = [:]

    /// Header names a script may not set: airlock frames the message and fixes its host.
    static let reserved: Set<String> = [
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    ]

    public init(_ script: MiddlewareScript, method: String, path: String, host: String, headers: [(name: String, value: String)])
        throws(MiddlewareError)
    {
        self.method = method
        self.host = host
        self.requestHeaders = Self.headerMap(headers)
        do { state = try LuaState() } catch { throw MiddlewareError("no memory for a Lua state") }
        let L = state.L
        // The token, the API (its result: the run function, kept at 1), `env`, the script (2).
        lua_createtable(L, 0, 0)
        lua_pushvalue(L, -1)
        lua_setfield(L, airlock_lua_registry_index(), "airlock.token")
        let loaded =
            Prelude.bytecode.isEmpty
            ? state.load(Prelude.source, name: Prelude.chunkName) : state.load(ownBytecode: Prelude.bytecode, name: Prelude.chunkName)
        if let error = loaded { throw MiddlewareError("the middleware API did not load: \(error)") }
        lua_rotate(L, -2, 1)
        guard airlock_lua_pcall(L, 1, 1) == LUA_OK else { throw MiddlewareError("the middleware API failed: \(state.string(at: -1) ?? "")") }
        lua_createtable(L, 0, Int32(script.environment.count))
        for (name, value) in script.environment {
            state.push(value)
            lua_setfield(L, -2, name)
        }
        lua_setglobal(L, "env")
        if let error = state.load(script.wrapped, name: "=" + script.name) { throw MiddlewareError(error) }
        guard airlock_lua_pcall(L, 0, 1) == LUA_OK else { throw MiddlewareError(state.string(at: -1) ?? "the script failed") }
        // The coroutine (kept at 3): the run function, the script's function, the request.
        guard let thread = lua_newthread(L) else { throw MiddlewareError("no memory for a Lua thread") }
        self.thread = thread
        airlock_lua_limit_instructions(thread, Self.instructionLimit)
        lua_pushvalue(L, 1)
        lua_pushvalue(L, 2)
        lua_xmove(L, thread, 2)
        state.push(method, on: thread)
        state.push(path, on: thread)
        state.push(host, on: thread)
        pushHeaders(requestHeaders)
    }

    public func resume(_ answer: Answer) -> Step {
        var arguments: Int32 = 0
        switch answer {
        case .start:
            arguments = 5
        case .body(let bytes):
            lua_pushboolean(thread, 1)
            state.push(bytes, on: thread)
            arguments = 2
        case .matches(let matches):
            lua_pushboolean(thread, 1)
            lua_pushboolean(thread, matches ? 1 : 0)
            arguments = 2
        case .logged:
            lua_pushboolean(thread, 1)
            arguments = 1
        case .response(let status, let headers):
            responseHeaders = Self.headerMap(headers)
            lua_pushboolean(thread, 1)
            lua_pushinteger(thread, lua_Integer(status))
            pushHeaders(responseHeaders)
            arguments = 3
        case .refusal(let reason):
            lua_pushboolean(thread, 0)
            state.push(reason, on: thread)
            arguments = 2
        }
        state.account.pointee.enforce = 1
        var results: Int32 = 0
        let status = lua_resume(thread, state.L, arguments, &results)
        state.account.pointee.enforce = 0
        if state.account.pointee.exceeded != 0 {
            return .failed("the script ran past its limit of \(Self.instructionLimit) instructions for one request")
        }
        defer { airlock_lua_pop(thread, results) }
        switch status {
        case LUA_OK:
            guard results >= 1, lua_type(thread, -results) == LUA_TTABLE else { return .failed("the script's request went missing") }
            let request = lua_absindex(thread, -results)
            do {
                let edit = try requestEdit(at: request)
                guard state.rawField(request, "_response", on: thread) == LUA_TTABLE else {
                    airlock_lua_pop(thread, 1)
                    return .done(edit, nil)
                }
                defer { airlock_lua_pop(thread, 1) }
                return .done(edit, try responseEdit(at: lua_absindex(thread, -1)))
            } catch {
                return .failed(error.message)
            }
        case LUA_YIELD:
            return step(yielded: results)
        case LUA_ERRMEM:
            return .failed(
                "the script ran out of memory (one request's script may hold \(Self.memoryLimit >> 20) MiB, all middleware together \(MiddlewareMemory.limit >> 20) MiB)"
            )
        default:
            return .failed(state.string(at: -1, on: thread) ?? "the script failed")
        }
    }

    /// An airlock yield: the token, what is asked, its argument.
    private func step(yielded count: Int32) -> Step {
        let first = lua_absindex(thread, -count)
        lua_getfield(thread, airlock_lua_registry_index(), "airlock.token")
        let ours = count >= 2 && lua_rawequal(thread, first, -1) != 0
        airlock_lua_pop(thread, 1)
        guard ours, let kind = state.string(at: first + 1, on: thread) else {
            return .failed("the script yielded (coroutine.yield outside a coroutine of its own)")
        }
        switch kind {
        case "body": return .needsBody(response: state.string(at: first + 2, on: thread) == "response")
        case "hostMatches": return .hostMatches(state.string(at: first + 2, on: thread) ?? "")
        case "log": return .log(String((state.string(at: first + 2, on: thread) ?? "").prefix(2000)))
        case "deny": return .deny
        case "send":
            do { return .send(try requestEdit(at: first + 2)) } catch { return .failed(error.message) }
        default: return .failed("the script asked for \(kind)")
        }
    }

    // MARK: Reading back

    private func requestEdit(at table: Int32) throws(MiddlewareError) -> RequestEdit {
        _ = state.rawField(table, "method", on: thread)
        _ = state.rawField(table, "host", on: thread)
        let unchanged =
            lua_type(thread, -2) == LUA_TSTRING && state.string(at: -2, on: thread) == method
            && lua_type(thread, -1) == LUA_TSTRING && state.string(at: -1, on: thread) == host
        airlock_lua_pop(thread, 2)
        guard unchanged else { throw MiddlewareError("req.method and req.host cannot be changed") }
        guard state.rawField(table, "path", on: thread) == LUA_TSTRING, let path = state.string(at: -1, on: thread), path.hasPrefix("/"),
            !path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F })
        else {
            airlock_lua_pop(thread, 1)
            throw MiddlewareError("req.path must be a string that starts with / and has no spaces or control characters")
        }
        airlock_lua_pop(thread, 1)
        return RequestEdit(path: path, headers: try headerEdits(table, against: requestHeaders, of: "req"), body: try setBody(table, of: "req"))
    }

    private func responseEdit(at table: Int32) throws(MiddlewareError) -> ResponseEdit {
        let type = state.rawField(table, "status", on: thread)
        var exact: Int32 = 0
        let status = Int(lua_tointegerx(thread, -1, &exact))
        airlock_lua_pop(thread, 1)
        guard type == LUA_TNUMBER, exact != 0, (100...999).contains(status) else {
            throw MiddlewareError("res.status must be an integer from 100 to 999")
        }
        return ResponseEdit(status: status, headers: try headerEdits(table, against: responseHeaders, of: "res"), body: try setBody(table, of: "res"))
    }

    private func setBody(_ table: Int32, of owner: String) throws(MiddlewareError) -> [UInt8]? {
        defer { airlock_lua_pop(thread, 1) }
        guard state.rawField(table, "_bodySet", on: thread) == LUA_TBOOLEAN, lua_toboolean(thread, -1) != 0 else { return nil }
        airlock_lua_pop(thread, 1)
        _ = state.rawField(table, "_body", on: thread)
        guard let bytes = state.bytes(at: -1, on: thread) else { throw MiddlewareError("\(owner):setBody left no body") }
        guard bytes.count <= Self.bodyLimit else {
            throw MiddlewareError("\(owner):setBody: \(bytes.count) bytes, more than \(Self.bodyLimit >> 20) MiB")
        }
        return bytes
    }

    /// The `headers` table against what the script was given: each changed name, nil when
    /// removed. Names are compared in lower case; values must be strings (or numbers).
    private func headerEdits(_ table: Int32, against given: [String: String], of owner: String) throws(MiddlewareError) -> [String: String?] {
        guard state.rawField(table, "headers", on: thread) == LUA_TTABLE else {
            airlock_lua_pop(thread, 1)
            throw MiddlewareError("\(owner).headers must be a table")
        }
        let headers = lua_absindex(thread, -1)
        defer { airlock_lua_pop(thread, 1) }
        var now: [String: String] = [:]
        var total = 0
        lua_pushnil(thread)
        // Each turn: the name at -2, the value at -1; the name stays for the next turn.
        while lua_next(thread, headers) != 0 {
            guard lua_type(thread, -2) == LUA_TSTRING, let key = state.string(at: -2, on: thread) else {
                airlock_lua_pop(thread, 2)
                throw MiddlewareError("\(owner).headers: every name must be a string")
            }
            let type = lua_type(thread, -1)
            guard type == LUA_TSTRING || type == LUA_TNUMBER, let value = state.string(at: -1, on: thread) else {
                airlock_lua_pop(thread, 2)
                throw MiddlewareError("\(owner).headers[\"\(key.prefix(100))\"] must be a string")
            }
            total += key.utf8.count + value.utf8.count
            guard total <= Self.headersLimit else {
                airlock_lua_pop(thread, 2)
                throw MiddlewareError("\(owner).headers hold more than \(Self.headersLimit >> 10) KiB")
            }
            now[key.lowercased()] = value
            airlock_lua_pop(thread, 1)
        }
        var edits: [String: String?] = [:]
        for name in Set(now.keys).union(given.keys) where now[name] != given[name] {
            guard !Self.reserved.contains(name) else {
                throw MiddlewareError("\(owner).headers: \(name) is airlock's to set (it frames the message or names the connection's host)")
            }
            guard Self.isToken(name) else { throw MiddlewareError("\(owner).headers: \"\(name.prefix(100))\" is not a header name") }
            if let value = now[name], value.utf8.contains(where: { $0 == 0 || $0 == 10 || $0 == 13 }) {
                throw MiddlewareError("\(owner).headers: the value of \(name) holds a line break or NUL")
            }
            edits[name] = now[name]
        }
        return edits
    }

    // MARK: Helpers

    static func headerMap(_ headers: [(name: String, value: String)]) -> [String: String] {
        var map: [String: String] = [:]
        for (name, value) in headers {
            let key = name.lowercased()
            map[key] = map[key].map { $0 + ", " + value } ?? value
        }
        return map
    }

    private func pushHeaders(_ headers: [String: String]) {
        lua_createtable(thread, 0, Int32(headers.count))
        for (name, value) in headers {
            state.push(value, on: thread)
            lua_setfield(thread, -2, name)
        }
    }

    static func isToken(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A)
                    || "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
    }
}

public struct MiddlewareError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}
