import AirlockSystem
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Registry credentials from the user's Docker configuration: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`, its `auths` map of `base64(user:password)` entries (what
/// `docker login` writes without a credential helper). Helpers (`credsStore`) are not run:
/// airlock never executes programs named by a config file; such hosts are reported as having
/// no stored credentials.
public struct Credentials: Sendable, Equatable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// `Authorization: Basic …`.
    var basicHeader: String {
        "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }

    /// The path airlock reads, for messages.
    public static func configPath(environment: [String: String]) -> String? {
        if let directory = environment["DOCKER_CONFIG"], !directory.isEmpty { return directory + "/config.json" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.docker/config.json" }
        return nil
    }

    /// The credentials stored for `registry` (as written in the reference), or nil.
    public static func lookup(registry: String, environment: [String: String]) throws(OCIError) -> Credentials? {
        guard let path = configPath(environment: environment), let bytes = ((try? FileSystem.read(path, limit: 1 << 20)) ?? nil) else { return nil }
        struct Config: Decodable {
            struct Entry: Decodable {
                var auth: String?
                var username: String?
                var password: String?
            }
            var auths: [String: Entry]?
        }
        let config: Config
        do { config = try JSONDecoder().decode(Config.self, from: Data(bytes)) } catch {
            throw OCIError(.authentication, "\(path) is not valid JSON", cause: error, hint: "fix or remove the file")
        }
        // Docker Hub's entry is keyed by its v1 index URL.
        let keys =
            registry == ImageReference.dockerHub
            ? ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
            : [registry, "https://" + registry, "http://" + registry, "https://" + registry + "/v1/", "https://" + registry + "/v2/"]
        for key in keys {
            guard let entry = config.auths?[key] else { continue }
            if let auth = entry.auth, !auth.isEmpty {
                guard let decoded = Data(base64Encoded: auth), let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
                else {
                    throw OCIError(
                        .authentication, "\(path): the `auth` entry for \(key) is not base64 of user:password",
                        hint: "run `docker login \(registry)` again")
                }
                return Credentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            }
            if let username = entry.username, let password = entry.password { return Credentials(username: username, password: password) }
        }
        return nil
    }
}
