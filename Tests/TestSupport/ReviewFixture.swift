import Foundation

/// A project with a sandbox clone made by the test itself (no VM): the test plays the agent by
/// running git in the clone, and then checks what airlock's fetch/diff/review/merge do.
public struct ReviewFixture {
    public let project: URL
    public var clone: URL { project.appendingPathComponent(".airlock/default/workspace") }

    /// A project with `files` committed on main, and a clone of it as sandbox `default`.
    public init(files: [String: String] = ReviewFixture.standardFiles) throws {
        project = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-review-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: project, withIntermediateDirectories: true)
        try sh("git init -q -b main .", in: project)
        for (path, text) in files { try write(text, to: path) }
        try sh("git add -A && git commit -q -m initial", in: project)
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".airlock/default"), withIntermediateDirectories: true)
        try sh("git clone -q --no-hardlinks . .airlock/default/workspace && git rev-parse HEAD > .airlock/default/base", in: project)
        try sh("printf '/.airlock/\\n' >> .git/info/exclude", in: project)
    }

    public static let standardFiles: [String: String] = [
        "a.txt": (1...20).map { "line \($0)\n" }.joined(),
        "b.txt": (1...20).map { "b \($0)\n" }.joined(),
        "c.txt": "c\n",
        "d.txt": "to be deleted\n",
    ]

    public func write(_ text: String, to path: String, inClone: Bool = false) throws {
        let url = (inClone ? clone : project).appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }

    /// Runs a shell script (the test's own git use; airlock never runs git) and returns stdout.
    @discardableResult
    public func sh(_ script: String, in directory: URL) throws -> String {
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in [
            "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com", "GIT_COMMITTER_NAME": "Agent",
            "GIT_COMMITTER_EMAIL": "agent@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": project.path,
        ] {
            environment[key] = value
        }
        let result = try Spawned.run(["/bin/sh", "-c", script], directory: directory.path, environment: environment, stdin: nil)
        let output = String(decoding: result.stdout, as: UTF8.self)
        guard result.status == 0 else {
            throw Spawned.Failure(description: "`\(script)` failed (\(result.status)): \(String(decoding: result.stderr, as: UTF8.self))")
        }
        return output
    }

    public func agent(_ script: String) throws { try sh(script, in: clone) }

    /// The state of the user's repository that only merge/review may change: refs outside
    /// refs/remotes/airlock, HEAD, the index and every file of the working tree.
    public func userState() throws -> String {
        try sh(
            """
            git for-each-ref --format='%(refname) %(objectname)' | grep -v '^refs/remotes/airlock/' || true
            git symbolic-ref HEAD; git rev-parse HEAD; sha1sum .git/index
            find . -path ./.git -prune -o -path ./.airlock -prune -o -type f -print0 | sort -z | xargs -0 sha1sum
            """, in: project)
    }

    public func airlock(_ arguments: [String], environment: [String: String] = [:]) throws -> CLI.Run {
        var extra = environment
        extra["HOME"] = project.path
        extra["GIT_CONFIG_NOSYSTEM"] = "1"
        return try CLI.run(arguments, in: project, environment: extra)
    }

    public func cleanUp() {
        try? FileManager.default.removeItem(at: project)
    }
}
