/// The middleware API (the Rust airlock's), written in Lua and run in each state before the
/// script: `req`, `res` and bodies are plain tables with methods, so the script can change
/// them freely and the driver reads them back without calling any script code. What needs
/// the host (a body, `send()`, `hostMatches`, `log`, `deny()`) is a yield carrying `token`
/// (a table only this code and the driver hold), answered by `MiddlewareRun`; a stray
/// `coroutine.yield` in a script is not taken for one. Each answer is `ok, value`: not ok raises `value`
/// in the script.
///
/// JSON is here too (`body:json()`, `setBody(table)`): in Lua it runs under the script's
/// instruction and memory limits.
enum Prelude {
    static let chunkName = "=airlock"
    /// `source` compiled once per process: loading it is ten times faster than compiling the
    /// text (40 µs against 390 per request, measured). Empty if it did not compile (a state
    /// then compiles the text, and reports why).
    static let bytecode: [UInt8] = {
        guard let state = try? LuaState(), state.load(source, name: chunkName) == nil else { return [] }
        return state.dump()
    }()
    static let source = #"""
        local token = ...
        local yield, type, tostring, tonumber, setmetatable, getmetatable, error, pairs, select =
            coroutine.yield, type, tostring, tonumber, setmetatable, getmetatable, error, pairs, select
        local pack, unpack = table.pack, table.unpack
        local lower, format, byte, sub, find, concat, sort = string.lower, string.format, string.byte, string.sub, string.find, table.concat, table.sort
        local huge, mtype, utf8char = math.huge, math.type, utf8.char

        local function ask(...)
          local answer = pack(yield(token, ...))
          if not answer[1] then error(answer[2], 3) end
          return unpack(answer, 2, answer.n)
        end

        local json = {}
        do
          local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
          local function encodeString(s)
            return '"' .. (s:gsub('[%c"\\]', function(c) return escapes[c] or format('\\u%04x', byte(c)) end)) .. '"'
          end
          local function encode(v, depth)
            if depth > 100 then error("setBody: the table nests deeper than 100 levels", 0) end
            local t = type(v)
            if t == "boolean" then return tostring(v) end
            if t == "number" then
              if v ~= v or v == huge or v == -huge then error("setBody: JSON has no NaN or infinity", 0) end
              return mtype(v) == "integer" and tostring(v) or format("%.17g", v)
            end
            if t == "string" then return encodeString(v) end
            if t ~= "table" then error("setBody: a " .. t .. " has no JSON form", 0) end
            local n, keys = 0, {}
            for k in pairs(v) do
              n = n + 1
              keys[n] = k
            end
            local parts = {}
            if n > 0 and v[n] ~= nil and #v == n then
              for i = 1, n do parts[i] = encode(v[i], depth + 1) end
              return "[" .. concat(parts, ",") .. "]"
            end
            for i = 1, n do
              if type(keys[i]) ~= "string" then error("setBody: a JSON object's keys are strings, not " .. type(keys[i]) .. "s", 0) end
            end
            sort(keys)
            for i = 1, n do parts[i] = encodeString(keys[i]) .. ":" .. encode(v[keys[i]], depth + 1) end
            return "{" .. concat(parts, ",") .. "}"
          end
          json.encode = function(v) return encode(v, 0) end

          local function fail(i, what) error(format("body:json(): %s at byte %d", what, i), 0) end
          local function skip(s, i)
            local _, e = find(s, "^[ \t\r\n]*", i)
            return e + 1
          end
          local simple = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }
          local function decodeString(s, i)
            local parts, j = {}, i + 1
            while true do
              local c = byte(s, j)
              if c == nil then fail(i, "an unterminated string") end
              if c == 34 then return concat(parts), j + 1 end
              if c == 92 then
                local e = sub(s, j + 1, j + 1)
                if simple[e] then
                  parts[#parts + 1] = simple[e]
                  j = j + 2
                elseif e == "u" and find(s, "^%x%x%x%x", j + 2) then
                  local code = tonumber(sub(s, j + 2, j + 5), 16)
                  j = j + 6
                  if code >= 0xD800 and code <= 0xDBFF and find(s, "^\\u[dD][c-fC-F]%x%x", j) then
                    code = 0x10000 + (code - 0xD800) * 0x400 + (tonumber(sub(s, j + 2, j + 5), 16) - 0xDC00)
                    j = j + 6
                  end
                  parts[#parts + 1] = utf8char(code)
                else
                  fail(j, "a bad escape")
                end
              elseif c < 32 then
                fail(j, "a control character in a string")
              else
                local _, e = find(s, '^[^"\\%c]+', j)
                parts[#parts + 1] = sub(s, j, e)
                j = e + 1
              end
            end
          end
          local decode
          decode = function(s, i, depth)
            if depth > 200 then fail(i, "nesting deeper than 200 levels") end
            i = skip(s, i)
            local c = sub(s, i, i)
            if c == "{" then
              local object = {}
              i = skip(s, i + 1)
              if sub(s, i, i) == "}" then return object, i + 1 end
              while true do
                if sub(s, i, i) ~= '"' then fail(i, "a key that is not a string") end
                local key
                key, i = decodeString(s, i)
                i = skip(s, i)
                if sub(s, i, i) ~= ":" then fail(i, "a missing ':'") end
                object[key], i = decode(s, i + 1, depth + 1)
                i = skip(s, i)
                local d = sub(s, i, i)
                if d == "}" then return object, i + 1 end
                if d ~= "," then fail(i, "a missing ',' or '}'") end
                i = skip(s, i + 1)
              end
            elseif c == "[" then
              local array, n = {}, 0
              i = skip(s, i + 1)
              if sub(s, i, i) == "]" then return array, i + 1 end
              while true do
                n = n + 1
                array[n], i = decode(s, i, depth + 1)
                i = skip(s, i)
                local d = sub(s, i, i)
                if d == "]" then return array, i + 1 end
                if d ~= "," then fail(i, "a missing ',' or ']'") end
                i = i + 1
              end
            elseif c == '"' then
              return decodeString(s, i)
            elseif c == "-" or find(c, "^%d") then
              local text = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
              local number = text and tonumber(text)
              if not number then fail(i, "a bad number") end
              return number, i + #text
            elseif sub(s, i, i + 3) == "true" then
              return true, i + 4
            elseif sub(s, i, i + 4) == "false" then
              return false, i + 5
            elseif sub(s, i, i + 3) == "null" then
              return nil, i + 4
            end
            fail(i, c == "" and "the text ended early" or "an unexpected '" .. c .. "'")
          end
          json.decode = function(s)
            local value, i = decode(s, 1, 0)
            if skip(s, i) <= #s then fail(skip(s, i), "text after the value") end
            return value
          end
        end

        local Body = {}
        Body.__index = Body
        Body.__len = function(body) return #body.bytes end
        function Body:text() return self.bytes end
        function Body:len() return #self.bytes end
        function Body:json() return json.decode(self.bytes) end

        local function bodyBytes(value)
          if value == nil then return "" end
          local t = type(value)
          if t == "string" then return value end
          if getmetatable(value) == Body then return value.bytes end
          if t == "table" then return json.encode(value) end
          error("setBody takes a string, a table (sent as JSON), a body or nil, not a " .. t, 3)
        end

        local function messageMethods(kind)
          local methods = {}
          methods.__index = methods
          function methods:header(name)
            if type(name) ~= "string" then error("header(name): name must be a string", 2) end
            name = lower(name)
            for k, v in pairs(self.headers) do
              if type(k) == "string" and lower(k) == name then return v end
            end
            return nil
          end
          function methods:setHeader(name, value)
            if type(name) ~= "string" then error("setHeader(name, value): name must be a string", 2) end
            local key = lower(name)
            for k in pairs(self.headers) do
              if type(k) == "string" and lower(k) == key then self.headers[k] = nil end
            end
            if value ~= nil then self.headers[key] = tostring(value) end
          end
          function methods:body()
            if self._body == nil then self._body = ask("body", kind) end
            return setmetatable({ bytes = self._body }, Body)
          end
          function methods:setBody(value)
            self._body = bodyBytes(value)
            self._bodySet = true
          end
          return methods
        end
        local Request, Response = messageMethods("request"), messageMethods("response")
        function Request:hostMatches(pattern)
          if type(pattern) ~= "string" then error("hostMatches(pattern): pattern must be a string", 2) end
          return ask("hostMatches", pattern)
        end
        function Request:deny() ask("deny") end
        function Request:send()
          if self._response then error("send() was already called", 2) end
          local status, headers = ask("send", self)
          self._response = setmetatable({ status = status, headers = headers }, Response)
          return self._response
        end

        local function log(...)
          local parts = { ... }
          for i = 1, select("#", ...) do parts[i] = tostring(parts[i]) end
          ask("log", concat(parts, " "))
        end
        -- No files, no code from text or bytecode: only what this API offers.
        _G.log, _G.print = log, log
        _G.load, _G.loadfile, _G.dofile, _G.require = nil, nil, nil, nil

        return function(handler, method, path, host, headers)
          local req = setmetatable({ method = method, path = path, host = host, headers = headers }, Request)
          handler(req)
          return req
        end
        """#
}
