package agent

import (
	"net/netip"
	"time"
)

// State of a worker as the agent sees it.
type State int

// Worker states.
const (
	StateIdle State = iota + 1
	StateBusy
	StatePaused
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateBusy:
		return "busy"
	case StatePaused:
		return "paused"
	}
	return "unknown"
}

// Worker is a live worker. The agent's records of its workers live in its
// worker table (table.go); a Worker returned to a caller is a copy.
type Worker struct {
	ID       string
	Function string
	Owner    string
	Image    string
	IP       netip.Addr
	Port     int
	State    State
	Warm     bool
	Created  time.Time
	// Handed is when the worker was handed to its current owner: when it
	// became ready for the owner it was made for, or when the owner took
	// it from a warm pool; zero while it is pooled and for a worker
	// adopted after a restart.
	Handed time.Time
	// LastUsed is when the owner last used the worker; it starts as Handed.
	LastUsed time.Time
	NetNS    string
	poolKey  string
	request  string
	spec     AcquireRequest
	creating bool
	// leaving marks a worker claimed for its teardown: its shim group
	// takes no new member (the shim may be ending with it).
	leaving bool
	// shimGroup names the containerd shim the worker shares ("" for one
	// of its own).
	shimGroup string
}
