import GuestAgent

// PID 1 of the airlock VM: everything it does is in the GuestAgent library.
await GuestAgent.main()
