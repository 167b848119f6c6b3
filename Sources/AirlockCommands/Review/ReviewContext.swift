import Sandbox

/// What fetch, diff, log, review and merge start from: the project and the sandbox's work.
func loadWork(_ sandbox: SandboxNameOption, quiet: Bool) throws -> (context: ProjectContext, work: SandboxWork) {
    let context = try ProjectContext.load()
    return (context, try context.manager(quiet: quiet).work(sandbox.name))
}
