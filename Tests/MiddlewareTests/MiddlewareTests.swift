import Testing

@testable import Middleware

/// The Lua middleware API and its sandbox, driven the way `InterceptedConnection` drives it.
@Suite("Lua middleware", .serialized)
struct MiddlewareTests {
    /// Runs `source` for a GET of /v1/items on api.test to its end, answering each step with
    /// `answer` (a body, a response, a pattern match); returns the last step and the log.
    func run(
        _ source: String, environment: [String: String] = [:], headers: [(name: String, value: String)] = [("Accept", "*/*")],
        answer: (MiddlewareRun.Step) -> MiddlewareRun.Answer? = { _ in nil }
    ) throws -> (step: MiddlewareRun.Step, log: [String]) {
        let run = try MiddlewareRun(
            MiddlewareScript(name: "test", source: source, environment: environment), method: "GET", path: "/v1/items?page=2", host: "api.test",
            headers: headers)
        var log: [String] = []
        var step = run.resume(.start)
        while true {
            if case .log(let line) = step {
                log.append(line)
                step = run.resume(.logged)
                continue
            }
            guard let next = answer(step) else { return (step, log) }
            step = run.resume(next)
        }
    }

    @Test("setHeader, header (any case), path, env: the request's edits come back as changed names only")
    func edits() throws {
        let (step, log) = try run(
            """
            req:setHeader("Authorization", "Bearer " .. env.TOKEN)
            req.headers["x-added"] = "1"
            req.headers.accept = nil
            req.path = "/v2" .. req.path:sub(4)
            log(req.method, req.host, req:header("AUTHORIZATION"), env.MISSING)
            """, environment: ["TOKEN": "real-token"])
        guard case .done(let request, let response) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(request.path == "/v2/items?page=2")
        #expect(request.headers == ["authorization": "Bearer real-token", "x-added": "1", "accept": nil])
        #expect(request.body == nil && response == nil)
        #expect(log == ["GET api.test Bearer real-token nil"])
    }

    @Test("deny() stops the chain; a pcall in the script cannot catch it")
    func deny() throws {
        let (step, _) = try run("pcall(function() req:deny() end)\nreq:setHeader('x', 'after')")
        guard case .deny = step else {
            Issue.record("\(step)")
            return
        }
    }

    @Test("send() returns the response: status, headers and body edited on its way back")
    func send() throws {
        let (step, log) = try run(
            """
            local res = req:send()
            log(res.status, res:header("Content-Type"), res:body():text(), #res:body())
            res.status = 203
            res:setHeader("X-Sandbox", "true")
            res:setBody({ ok = true, list = { 1, 2 } })
            """
        ) { step in
            switch step {
            case .send(let request):
                #expect(request.path == "/v1/items?page=2")
                return .response(status: 200, headers: [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
            case .needsBody(let response):
                #expect(response)
                return .body(Array("hello".utf8))
            default:
                return nil
            }
        }
        guard case .done(_, let response?) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(log == ["200 text/plain hello 5"])
        #expect(response.status == 203)
        // Untouched names (the two Set-Cookie) are not edits: they go back as they came.
        #expect(response.headers == ["x-sandbox": "true"])
        #expect(response.body.map { String(decoding: $0, as: UTF8.self) } == #"{"list":[1,2],"ok":true}"#)
    }

    @Test("body():json() and setBody(table): a round trip through JSON, escapes and nesting kept")
    func json() throws {
        let (step, _) = try run(
            """
            local t = req:body():json()
            t.added = { true, false }
            t.n = t.a[3].b .. "!"
            req:setBody(t)
            """
        ) { step in
            if case .needsBody(false) = step { return .body(Array(#"{"a": [1, 2.5, {"b": "c\u00e9\n\"q\""}], "z": null}"#.utf8)) }
            return nil
        }
        guard case .done(let request, _) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(request.body.map { String(decoding: $0, as: UTF8.self) } == #"{"a":[1,2.5,{"b":"cé\n\"q\""}],"added":[true,false],"n":"cé\n\"q\"!"}"#)
    }

    @Test("bad JSON is the script's error, naming where")
    func badJSON() throws {
        let (step, _) = try run("req:body():json()") { step in
            if case .needsBody = step { return .body(Array(#"{"a": [1, }"#.utf8)) }
            return nil
        }
        guard case .failed(let message) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(message.contains("body:json(): an unexpected '}' at byte 11"), "\(message)")
    }

    @Test("hostMatches asks the host; its answer comes back")
    func hostMatches() throws {
        let (step, log) = try run("log(req:hostMatches('*.test'))") { step in
            if case .hostMatches(let pattern) = step {
                #expect(pattern == "*.test")
                return .matches(true)
            }
            return nil
        }
        guard case .done = step else {
            Issue.record("\(step)")
            return
        }
        #expect(log == ["true"])
    }

    @Test(
        "a runaway script is stopped at the instruction limit, however it hides: a loop, pcall around it, a callback from C, its own coroutine",
        arguments: [
            "while true do end",
            "while true do pcall(function() while true do end end) end",
            "while true do pcall(string.gsub, ('a'):rep(10), 'a', function() for i = 1, 1e9 do end end) end",
            "local co = coroutine.wrap(function() while true do end end)\nwhile true do co() end",
        ])
    func runaway(_ source: String) throws {
        let (step, _) = try run(source)
        guard case .failed(let message) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(message.contains("instruction"), "\(message)")
    }

    @Test("memory past the limit fails the script, not the host")
    func memory() throws {
        let (step, _) = try run("local s = string.rep('x', 100 * 1024 * 1024)\nreq:setHeader('x', #s)")
        guard case .failed(let message) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(message.contains("memory"), "\(message)")
    }

    @Test("no io, os, package, debug, load, loadfile, dofile or require; string and table are there")
    func sandbox() throws {
        let (step, log) = try run(
            "log(io, os, package, debug, load, loadfile, dofile, require, type(string.format), type(table.concat), type(math.floor))")
        guard case .done = step else {
            Issue.record("\(step)")
            return
        }
        #expect(log == ["nil nil nil nil nil nil nil nil function function function"])
    }

    @Test("what the host sets is refused: the host, framing headers, a line break, another method")
    func refusals() throws {
        for (source, expected) in [
            ("req:setHeader('Host', 'evil.test')", "host is airlock's to set"),
            ("req:setHeader('Content-Length', '5')", "content-length is airlock's to set"),
            ("req:setHeader('X-A', 'a\\r\\nX-B: b')", "line break"),
            ("req.method = 'DELETE'", "cannot be changed"),
            ("req.path = 'http://evil.test/'", "req.path must"),
            ("req:setHeader('bad name', 'x')", "not a header name"),
            ("coroutine.yield('send')", "yielded"),
            ("req.headers[1] = 'x'", "every name must be a string"),
            ("req.headers.x = {}", "must be a string"),
            ("req.headers.x = string.rep('y', 300 * 1024)", "more than 256 KiB"),
            ("req.headers = 'none'", "must be a table"),
        ] {
            let (step, _) = try run(source)
            guard case .failed(let message) = step else {
                Issue.record("\(source): \(step)")
                continue
            }
            #expect(message.contains(expected), "\(source): \(message)")
        }
    }

    @Test("a runtime error names the middleware and the script's own line")
    func runtimeError() throws {
        let (step, _) = try run("local a = 1\nerror('boom')")
        guard case .failed(let message) = step else {
            Issue.record("\(step)")
            return
        }
        #expect(message == "test:2: boom")
    }

    @Test("a syntax error is found at load, with the script's own line")
    func syntax() {
        #expect(MiddlewareScript.syntaxError(in: "req:setHeader('a', 'b')") == nil)
        let error = MiddlewareScript.syntaxError(in: "local a = 1\nif a then\n  req:setHeader('x' 'y')\nend")
        #expect(error?.line == 3, "\(String(describing: error))")
        #expect(error?.message.contains("')' expected") == true, "\(String(describing: error))")
    }

    @Test("bytecode is never loaded, only text")
    func bytecode() throws {
        let state = try LuaState()
        #expect(state.load("\u{1B}Lua\u{54}\u{00}", name: "=chunk")?.contains("binary chunk") == true)
    }

    @Test("all middleware together holds at most MiddlewareMemory.limit: states and bodies; what a request held comes back when it ends")
    func sharedMemory() throws {
        let before = MiddlewareMemory.held
        do {
            let (step, _) = try run("local s = string.rep('x', 16 * 1024 * 1024)\nreq:setHeader('x', #s)")
            guard case .done = step else {
                Issue.record("\(step)")
                return
            }
        }
        #expect(MiddlewareMemory.held == before)
        do {
            let hold = MiddlewareHold()
            #expect(hold.reserve(MiddlewareMemory.limit - MiddlewareMemory.held - (1 << 20)))
            // With the budget nearly spent by bodies, a script cannot take much more.
            let (step, _) = try run("local s = string.rep('x', 8 * 1024 * 1024)\nreq:setHeader('x', #s)")
            guard case .failed(let message) = step else {
                Issue.record("\(step)")
                return
            }
            #expect(message.contains("memory"), "\(message)")
            #expect(!MiddlewareHold().reserve(2 << 20))
        }
        #expect(MiddlewareMemory.held == before)
    }
}
