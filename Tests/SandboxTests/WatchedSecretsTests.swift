import Config
import NetworkPolicy
import Testing

@testable import Sandbox

/// What interception watches for in requests and answers: masked values, and the vault's values
/// the VM does not hold in the clear.
@Suite("Watched secrets")
struct WatchedSecretsTests {
    @Test("masked values and the vault's values the VM does not hold; not one a plain [env] or a daemon hands it, not a short one")
    func watched() {
        var config = AirlockConfig()
        let token = MaskedSecret(name: "TOKEN", value: "sk-live-0123456789abcdef")
        config.maskedEnv = ["TOKEN": token]
        config.env = ["TOKEN": token.surrogate, "PLAIN": "Bearer given-to-the-vm-123"]
        config.daemons = ["db": .init(command: ["db"], env: ["PASSWORD": "daemon-password-456"])]
        let watched = SandboxBoot.watchedSecrets(
            config,
            vaultValues: [
                "GIVEN": "given-to-the-vm-123", "DAEMON": "daemon-password-456", "KEPT": "kept-on-the-host-789", "SHORT": "abc",
                "MASKED_SOURCE": "sk-live-0123456789abcdef",
            ])
        #expect(watched.map(\.name) == ["TOKEN", "KEPT (from the vault)", "MASKED_SOURCE (from the vault)"])
    }
}
