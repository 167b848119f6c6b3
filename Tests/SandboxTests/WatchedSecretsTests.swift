import Config
import NetworkPolicy
import Testing

@testable import Sandbox

/// What interception watches for in requests and answers: masked values, and the vault's values
/// the VM does not hold in the clear.
@Suite("Watched secrets")
struct WatchedSecretsTests {
    @Test(
        "masked values, service tokens and the vault's values the VM does not hold (each once); not one a plain [env] or a daemon hands it, not a short one"
    )
    func watched() {
        var config = AirlockConfig()
        let token = MaskedSecret(name: "TOKEN", value: "sk-live-0123456789abcdef")
        let service = MaskedSecret(name: "OPENAI_API_KEY", value: "sk-proj-service-token-42")
        config.maskedEnv = ["TOKEN": token]
        config.network.services = [ServiceCredentials(service: .openai, tokens: [service])]
        config.env = ["TOKEN": token.surrogate, "OPENAI_API_KEY": service.surrogate, "PLAIN": "Bearer given-to-the-vm-123"]
        config.daemons = ["db": .init(command: ["db"], env: ["PASSWORD": "daemon-password-456"])]
        let watched = SandboxBoot.watchedSecrets(
            config,
            vaultValues: [
                "GIVEN": "given-to-the-vm-123", "DAEMON": "daemon-password-456", "KEPT": "kept-on-the-host-789", "SHORT": "abc",
                "MASKED_SOURCE": "sk-live-0123456789abcdef", "OPENAI_API_KEY": "sk-proj-service-token-42",
            ])
        #expect(watched.map(\.name) == ["TOKEN", "OPENAI_API_KEY", "KEPT (from the vault)"])
    }
}
