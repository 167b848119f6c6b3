import GuestAgent

// PID 1 of the airlock VM, and, run under the name `sudo` (the agent's way to root inside the
// VM), that: everything it does is in the GuestAgent library.
if Sudo.invoked(as: CommandLine.arguments) { Sudo.main(CommandLine.arguments) }
await GuestAgent.main()
