package nat

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Fake is an in-memory Interface for unit tests of the packages that use
// nat: it keeps what the two tables would hold and answers as a Manager
// does (the same Change values, the same errors for bad guards, the same
// idempotent removals), without root or a kernel. Dump prints its state as
// Render does. Counters are always zero, and route_localnet and conntrack
// are not modelled. It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	rules    *conf.NATRules // table ip esb; nil: none
	guards   *guardSets     // table bridge esb; nil: none
	observed []string
	table    string // the tables' name: TableName unless NewFakeFor
}

// NewFake returns a Fake whose namespace has neither table.
func NewFake() *Fake { return &Fake{table: TableName} }

// NewFakeFor returns a Fake of the tables named table (a stack's), as
// NewManagerFor makes a Manager of them.
func NewFakeFor(table string) *Fake { return &Fake{table: table} }

// Dump prints the tables the fake holds, as Render prints them ("" when
// there are none).
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	if f.rules != nil {
		renderNAT(&b, f.table, f.rules)
	}
	if f.guards != nil {
		renderGuards(&b, f.table, f.guards)
	}
	return b.String()
}

// Calls returns the methods called so far, in order ("Apply", "AddGuard
// esb0123", ...), for tests that check what their subject asked for.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.observed)
}

// begin records a call and returns ctx's error, as a Manager checks it
// before each operation; the caller holds f.mu.
func (f *Fake) begin(ctx context.Context, call string) error {
	f.observed = append(f.observed, call)
	return ctx.Err()
}

// change is what Apply(r) does to the fake's table ip esb: the same
// decision as Manager's, on the rule set instead of the kernel's objects.
func (f *Fake) change(r *conf.NATRules) Change {
	have := f.rules
	switch {
	case have == nil || have.Bridge != r.Bridge || have.Gateway != r.Gateway || have.Egress != r.Egress ||
		(r.Egress != conf.EgressProxyOnly && have.Subnet != r.Subnet):
		return Rebuilt
	case !sameForwards(have, r):
		return ElementsUpdated
	}
	return Unchanged
}

// sameForwards reports whether a and b forward the same ports to the same
// targets, in whatever order.
func sameForwards(a, b *conf.NATRules) bool {
	ma, mb := forwardMap(a), forwardMap(b)
	if len(ma) != len(mb) {
		return false
	}
	for k, v := range ma {
		if w, ok := mb[k]; !ok || v != w {
			return false
		}
	}
	return true
}

func forwardMap(r *conf.NATRules) map[string]string {
	m := make(map[string]string, len(r.Forwards))
	for _, fw := range r.Forwards {
		m[fmt.Sprintf("%s/%d", fw.Proto, fw.Port)] = fw.To.String()
	}
	return m
}

// Apply records r as table ip esb and reports what a Manager would have
// done.
func (f *Fake) Apply(ctx context.Context, r *conf.NATRules) (Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "Apply"); err != nil {
		return Unchanged, err
	}
	c := f.change(r)
	if c != Unchanged {
		cp := *r
		cp.Forwards = slices.Clone(r.Forwards)
		f.rules = &cp
	}
	return c, nil
}

// Diff reports what Apply(r) would do, changing nothing.
func (f *Fake) Diff(ctx context.Context, r *conf.NATRules) (Change, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "Diff"); err != nil {
		return Unchanged, false, err
	}
	return f.change(r), f.rules != nil, nil
}

// Delete drops table ip esb; a missing one is not an error.
func (f *Fake) Delete(ctx context.Context, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "Delete"); err != nil {
		return err
	}
	f.rules = nil
	return nil
}

// Counters returns the forwards in proto and port order, counters at zero.
func (f *Fake) Counters(ctx context.Context) ([]ForwardCounter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "Counters"); err != nil || f.rules == nil {
		return nil, err
	}
	out := make([]ForwardCounter, 0, len(f.rules.Forwards))
	for _, fw := range f.rules.Forwards {
		out = append(out, ForwardCounter{Forward: fw})
	}
	slices.SortFunc(out, func(a, b ForwardCounter) int {
		if a.Forward.Proto != b.Forward.Proto {
			return strings.Compare(a.Forward.Proto, b.Forward.Proto)
		}
		return int(a.Forward.Port) - int(b.Forward.Port)
	})
	return out, nil
}

// Watch applies r, reports the pass when it changed something, and waits
// for ctx to end (nothing edits a fake's tables behind its back); it
// returns ctx's error.
func (f *Fake) Watch(ctx context.Context, r *conf.NATRules, _ time.Duration, report func(Event)) error {
	start := time.Now()
	change, err := f.Apply(ctx, r)
	if report != nil && ctx.Err() == nil && (change != Unchanged || err != nil) {
		report(Event{Trigger: "start", Change: change, Took: time.Since(start), Err: err})
	}
	<-ctx.Done()
	return ctx.Err()
}

// AddGuard adds g's elements, making table bridge esb when missing.
func (f *Fake) AddGuard(ctx context.Context, g Guard) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "AddGuard "+g.Port); err != nil {
		return err
	}
	if err := validGuard(g); err != nil {
		return err
	}
	if f.guards == nil {
		f.guards = &guardSets{}
	}
	f.guards.add(g)
	return nil
}

// RemoveGuard deletes every element of port; none, or no table, is not an
// error.
func (f *Fake) RemoveGuard(ctx context.Context, port string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RemoveGuard "+port); err != nil {
		return err
	}
	f.removePort(port)
	return nil
}

func (f *Fake) removePort(port string) {
	if f.guards == nil {
		return
	}
	of := func(e guardElement) bool { return e.port == port }
	f.guards.ports = slices.DeleteFunc(f.guards.ports, of)
	f.guards.ipv4 = slices.DeleteFunc(f.guards.ipv4, of)
	f.guards.ipv6 = slices.DeleteFunc(f.guards.ipv6, of)
}

// RemoveGuardKnown deletes g's elements when all are there (one batch, as
// a Manager sends it), else every element of g's port.
func (f *Fake) RemoveGuardKnown(ctx context.Context, g Guard) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "RemoveGuardKnown "+g.Port); err != nil {
		return err
	}
	if f.guards == nil {
		return nil
	}
	ports, v4, v6 := elementsOf(g)
	sets := []*[]guardElement{&f.guards.ports, &f.guards.ipv4, &f.guards.ipv6}
	all := len(g.MAC) == 6
	for i, els := range [][]guardElement{ports, v4, v6} {
		for _, e := range els {
			all = all && slices.ContainsFunc(*sets[i], func(have guardElement) bool { return sameKey(have, e) })
		}
	}
	if !all {
		f.removePort(g.Port)
		return nil
	}
	for i, els := range [][]guardElement{ports, v4, v6} {
		*sets[i] = slices.DeleteFunc(*sets[i], func(have guardElement) bool {
			return slices.ContainsFunc(els, func(e guardElement) bool { return sameKey(have, e) })
		})
	}
	return nil
}

// ListGuards returns the guards as a Manager reads them back: one per
// port in port order, the owner of its first element, addresses without
// the link-local one.
func (f *Fake) ListGuards(ctx context.Context) ([]Guard, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListGuards"); err != nil {
		return nil, err
	}
	return f.list(), nil
}

func (f *Fake) list() []Guard {
	if f.guards == nil {
		return nil
	}
	byPort := map[string]*Guard{}
	get := func(e guardElement) *Guard {
		g := byPort[e.port]
		if g == nil {
			g = &Guard{Port: e.port, Owner: e.owner}
			byPort[e.port] = g
		}
		return g
	}
	for _, e := range f.guards.ports {
		get(e).Active = true
	}
	for _, e := range slices.Concat(f.guards.ipv4, f.guards.ipv6) {
		g := get(e)
		g.MAC, _ = net.ParseMAC(e.mac)
		if !e.ip.IsLinkLocalUnicast() {
			g.IPs = append(g.IPs, e.ip)
		}
	}
	out := make([]Guard, 0, len(byPort))
	for _, g := range byPort {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Guard) int { return strings.Compare(a.Port, b.Port) })
	return out
}

// FindGuard returns the guard of port, or an error for which IsNotFound
// is true.
func (f *Fake) FindGuard(ctx context.Context, port string) (Guard, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "FindGuard "+port); err != nil {
		return Guard{}, err
	}
	return findGuard(f.list(), port)
}
