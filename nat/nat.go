package nat

import (
	"context"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"

	"github.com/edge-serverless-box/esbnet/conf"
)

// DNAT is table ip esb: the gateway's forwards, the input and forward
// filters and the egress policy. The agent and esbctl hold one.
type DNAT interface {
	// Apply makes table ip esb match r in one transaction and reports what
	// it did; the same r twice is Unchanged (nothing sent, counters kept).
	Apply(ctx context.Context, r *conf.NATRules) (Change, error)
	// Diff reports what Apply(r) would do now, changing nothing; exists is
	// false when the table is missing.
	Diff(ctx context.Context, r *conf.NATRules) (change Change, exists bool, err error)
	// Delete removes table ip esb and resets route_localnet on bridge; a
	// missing table is not an error (idempotent).
	Delete(ctx context.Context, bridge string) error
	// Counters returns the installed forwards with their counters in proto
	// and port order; none (and no error) when the table is missing.
	Counters(ctx context.Context) ([]ForwardCounter, error)
	// Watch applies r and keeps the table equal to it until ctx ends;
	// it returns ctx's error.
	Watch(ctx context.Context, r *conf.NATRules, interval time.Duration, report func(Event)) error
}

// AntiSpoof is table bridge esb: one guard per bridge port. esb-bridge
// holds one.
type AntiSpoof interface {
	// AddGuard installs g, making the table when missing and repairing a
	// flushed chain; adding the same guard again changes nothing. A guard
	// with a bad port name or MAC is an error naming it.
	AddGuard(ctx context.Context, g Guard) error
	// RemoveGuard deletes every element of port; a port with none, or a
	// missing table, is not an error (idempotent).
	RemoveGuard(ctx context.Context, port string) error
	// RemoveGuardKnown deletes g's elements without listing the sets (port,
	// MAC and addresses known, as on DEL), falling back to RemoveGuard
	// when one is already gone. Idempotent.
	RemoveGuardKnown(ctx context.Context, g Guard) error
	// ListGuards returns the installed guards in port order; none (and no
	// error) when the table is missing.
	ListGuards(ctx context.Context) ([]Guard, error)
	// FindGuard returns the guard of port, or an error for which
	// IsNotFound is true.
	FindGuard(ctx context.Context, port string) (Guard, error)
}

// Interface is both tables of one namespace: what *Manager and *Fake are.
type Interface interface {
	DNAT
	AntiSpoof
}

var (
	_ Interface = (*Manager)(nil)
	_ Interface = (*Fake)(nil)
)

// Manager keeps esbnet's two tables in one network namespace. Each
// operation checks its context, then opens a fresh nftables connection, so
// an error on one (the library's connections stay broken after some
// errors) never sticks. Netlink requests themselves are not cancelled: a
// context ends an operation between transactions, never inside one.
type Manager struct {
	netns ns.NetNS // nil: the caller's namespace
	t     *tables  // the stack's two tables
}

// NewManager returns a manager of the default network's tables (table ip
// esb, table bridge esb) in the namespace n, or in the caller's own
// namespace when n is nil.
func NewManager(n ns.NetNS) *Manager { return &Manager{netns: n, t: defaultTables} }

// NewManagerFor returns a manager of the tables named table (a stack's
// conf.Stack.Table) in the namespace n (nil: the caller's own). It never
// reads or changes another stack's tables.
func NewManagerFor(n ns.NetNS, table string) *Manager {
	if table == TableName {
		return NewManager(n)
	}
	return &Manager{netns: n, t: newTables(table)}
}

// Table returns the name of the manager's tables.
func (m *Manager) Table() string { return m.t.name }

// conn opens the operation's connection, after checking ctx: one socket
// for all its requests (without AsLasting the library opens one per
// request), closed by the operation with CloseLasting.
func (m *Manager) conn(ctx context.Context) (*nftables.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.netns == nil {
		return nftables.New(nftables.AsLasting())
	}
	return nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(m.netns.Fd())))
}

// inNS runs fn in the managed namespace (for /proc/sys, which follows the
// namespace of the thread that opens it).
func (m *Manager) inNS(fn func() error) error {
	if m.netns == nil {
		return fn()
	}
	return m.netns.Do(func(ns.NetNS) error { return fn() })
}
