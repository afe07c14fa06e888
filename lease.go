package konstruct

// AppLease is what a gateway asks, at each beat, about one Slack app's
// sockets: the gateways of an install share the apps (bot) through leases
// kept in Redis (queue), so that an app never has more sockets than Slack
// allows.
type AppLease struct {
	// App names the app without its token.
	App string
	// Acquire renews the gateway's lease, or takes it if fewer gateways
	// than the limit hold the app; otherwise a lease the gateway does not
	// hold is left alone.
	Acquire bool
	// Ready says one of the gateway's sockets for the app is up.
	Ready bool
	// Release gives the lease up (the gateway's sockets for it are closed).
	Release bool
}

// AppHeld is the answer to an AppLease.
type AppHeld struct {
	// Held reports whether the gateway holds the app's lease now.
	Held bool
	// ReadyOthers counts the other gateways holding it with a socket up.
	ReadyOthers int
}
