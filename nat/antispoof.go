package nat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of both tables of the default network's stack
// (conf.DefaultStack().Table); a Manager made by NewManagerFor keeps
// another stack's.
const TableName = "esb"

// ifNameSize is the kernel's IFNAMSIZ, the width of an ifname set key.
const ifNameSize = 16

// Guard is the anti-spoofing entry of one attachment: frames entering the
// bridge through Port must come from MAC and, for IP and ARP, from one of
// the attachment's addresses. Owner ("containerID/ifname") is stored as the
// elements' comment so a listing can tell whose they are.
type Guard struct {
	Port  string
	MAC   net.HardwareAddr
	IPs   []netip.Addr
	Owner string
	// Active is set by ListGuards when the port is in the ports set, which
	// is what switches the checks on for it; a guard whose address
	// elements remain without it guards nothing.
	Active bool
}

// ErrNotFound reports that a guard, table or element does not exist.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err means something was not there.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// AddGuard installs g in one transaction, creating the table, sets and
// chain when missing (the chain's rules are rebuilt whole each time, so
// concurrent callers converge on one copy). Adding the same guard again
// changes nothing.
func (m *Manager) AddGuard(ctx context.Context, g Guard) error {
	if err := validGuard(g); err != nil {
		return err
	}
	c, err := m.conn(ctx)
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	return m.t.addGuard(c, g)
}

// validGuard checks what the sets' key types need of g.
func validGuard(g Guard) error {
	if len(g.MAC) != 6 {
		return fmt.Errorf("guard %s: MAC %q is not an Ethernet address", g.Port, g.MAC)
	}
	if g.Port == "" || len(g.Port) >= ifNameSize {
		return fmt.Errorf("guard: port name %q must have 1 to %d characters", g.Port, ifNameSize-1)
	}
	return nil
}

func (t *tables) addGuard(c *nftables.Conn, g Guard) error {
	// Fast path: when the chain holds its rules, one batch of elements is
	// all an ADD needs. Otherwise (no table yet, a flushed chain, a set
	// deleted: the elements batch then fails) the table, sets and chain are
	// made or rebuilt whole with the elements, in one transaction, so an ADD
	// also repairs a flushed chain.
	if rules, err := c.GetRules(t.guard, t.guardChain); err == nil && len(rules) == len(t.guardRules()) {
		if err := t.queueGuardElements(c, g); err != nil {
			return err
		}
		if err := c.Flush(); err == nil {
			return nil
		}
	}
	t.ensureGuardTable(c)
	if err := t.queueGuardElements(c, g); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add anti-spoof guard for %s: %w", g.Port, err)
	}
	return nil
}

// guardElements returns the elements of g, per set.
func guardElements(g Guard) (ports, v4, v6 []nftables.SetElement) {
	ports = []nftables.SetElement{{Key: ifKey(g.Port), Comment: g.Owner}}
	for _, ip := range g.IPs {
		e := nftables.SetElement{Key: guardKey(g.Port, g.MAC, ip), Comment: g.Owner}
		if ip.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	// The kernel's EUI-64 link-local address must pass too, for neighbour
	// discovery, when the attachment has IPv6 at all.
	if len(v6) > 0 {
		v6 = append(v6, nftables.SetElement{Key: guardKey(g.Port, g.MAC, linkLocal(g.MAC)), Comment: g.Owner})
	}
	return ports, v4, v6
}

// queueGuardElements queues the addition of g's elements into the batch.
func (t *tables) queueGuardElements(c *nftables.Conn, g Guard) error {
	return t.eachGuardSet(g, c.SetAddElements)
}

// eachGuardSet calls queue with each set and g's elements in it, skipping
// sets where g has none.
func (t *tables) eachGuardSet(g Guard, queue func(*nftables.Set, []nftables.SetElement) error) error {
	ports, v4, v6 := guardElements(g)
	for _, op := range []struct {
		s  *nftables.Set
		es []nftables.SetElement
	}{{t.ports, ports}, {t.ipv4, v4}, {t.ipv6, v6}} {
		if len(op.es) > 0 {
			if err := queue(op.s, op.es); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveGuardKnown removes the guard g describes (port, MAC and addresses
// known, as on DEL) in one batch without listing the sets; when that fails
// (an element was already gone, or the table), it falls back to
// RemoveGuard. A g without a MAC is removed by listing, as RemoveGuard.
func (m *Manager) RemoveGuardKnown(ctx context.Context, g Guard) error {
	c, err := m.conn(ctx)
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	if len(g.MAC) == 6 {
		if err := m.t.eachGuardSet(g, c.SetDeleteElements); err != nil {
			return err
		}
		if err := c.Flush(); err == nil {
			return nil
		}
	}
	return m.t.removeGuard(ctx, c, g.Port)
}

// ensureGuardTable queues the table, sets and chain (rules rebuilt) into
// the current batch.
func (t *tables) ensureGuardTable(c *nftables.Conn) {
	c.AddTable(t.guard)
	for _, s := range []*nftables.Set{t.ports, t.ipv4, t.ipv6} {
		_ = c.AddSet(s, nil) // only queues a message; errors surface at Flush
	}
	c.AddChain(t.guardChain)
	c.FlushChain(t.guardChain)
	for _, r := range t.guardRules() {
		c.AddRule(r)
	}
}

// Registers: a 16-byte ifname fills the 32-bit registers 8-11, a MAC 12-13,
// an address the next ones; a concatenated lookup reads from register 8.
const (
	regIf   = 8  // NFT_REG32_00
	regMAC  = 12 // NFT_REG32_04
	regAddr = 14 // NFT_REG32_06
)

func (t *tables) guardRules() []*nftables.Rule {
	iif := &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regIf}
	etherType := func(t uint16) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(t >> 8), byte(t)}},
		}
	}
	etherSrc := &expr.Payload{DestRegister: regMAC, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}
	netField := func(off, n, reg uint32) *expr.Payload {
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	}
	lookup := func(s *nftables.Set) *expr.Lookup { return &expr.Lookup{SourceRegister: regIf, SetName: s.Name} }
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	rule := func(exprs ...any) *nftables.Rule {
		var out []expr.Any
		for _, e := range exprs {
			switch v := e.(type) {
			case expr.Any:
				out = append(out, v)
			case []expr.Any:
				out = append(out, v...)
			}
		}
		return &nftables.Rule{Table: t.guard, Chain: t.guardChain, Exprs: out}
	}
	return []*nftables.Rule{
		// Frames from ports that are not guarded are none of our business.
		rule(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: t.ports.Name, Invert: true},
			&expr.Verdict{Kind: expr.VerdictReturn}),
		// IPv4: port . ether saddr . ip saddr must be the attachment's.
		rule(etherType(unix.ETH_P_IP), iif, etherSrc, netField(12, 4, regAddr), lookup(t.ipv4), accept),
		// ARP: the Ethernet source and the ARP sender (MAC and IP) both.
		rule(etherType(unix.ETH_P_ARP), iif, etherSrc, netField(14, 4, regAddr), lookup(t.ipv4),
			netField(8, 6, regMAC), lookup(t.ipv4), accept),
		// IPv6: the attachment's addresses and its link-local address.
		rule(etherType(unix.ETH_P_IPV6), iif, etherSrc, netField(8, 16, regAddr), lookup(t.ipv6), accept),
		// Anything else from a guarded port is dropped.
		rule(&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}),
	}
}

func ifKey(name string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return b
}

func guardKey(port string, mac net.HardwareAddr, ip netip.Addr) []byte {
	k := ifKey(port)
	k = append(k, mac...)
	k = append(k, 0, 0) // a MAC is padded to the 4-byte register size
	return append(k, ip.AsSlice()...)
}

// linkLocal returns the EUI-64 IPv6 link-local address the kernel derives
// from mac.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// RemoveGuard deletes every element of port. A port that has none, or a
// missing table, is not an error (DEL is idempotent).
//
// The elements are found by listing the sets, and a listing taken while
// other processes delete elements can show one twice or miss one: the keys
// are deduplicated, and the sets are listed again until none of the port's
// elements is left (a few rounds at most).
func (m *Manager) RemoveGuard(ctx context.Context, port string) error {
	c, err := m.conn(ctx)
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	return m.t.removeGuard(ctx, c, port)
}

func (t *tables) removeGuard(ctx context.Context, c *nftables.Conn, port string) error {
	for round := 0; ; round++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		left, err := t.removeGuardOnce(c, port)
		if err != nil && round < 4 {
			continue // a concurrent change may have made the batch stale
		}
		if err != nil || left == 0 {
			return err
		}
		if round >= 4 {
			return fmt.Errorf("remove anti-spoof guard for %s: %d elements remain", port, left)
		}
	}
}

// removeGuardOnce deletes the port's elements it finds and returns how
// many it found.
func (t *tables) removeGuardOnce(c *nftables.Conn, port string) (int, error) {
	if ok, err := t.guardTableExists(c); err != nil || !ok {
		return 0, err
	}
	found := 0
	for _, s := range []*nftables.Set{t.ports, t.ipv4, t.ipv6} {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return 0, fmt.Errorf("list anti-spoof set %s: %w", s.Name, err)
		}
		seen := map[string]bool{}
		var del []nftables.SetElement
		for _, e := range elems {
			if portOf(e.Key) == port && !seen[string(e.Key)] {
				seen[string(e.Key)] = true
				del = append(del, nftables.SetElement{Key: e.Key})
			}
		}
		if len(del) > 0 {
			found += len(del)
			if err := c.SetDeleteElements(s, del); err != nil {
				return 0, err
			}
		}
	}
	if found == 0 {
		return 0, nil
	}
	if err := c.Flush(); err != nil {
		return found, fmt.Errorf("remove anti-spoof guard for %s: %w", port, err)
	}
	return found, nil
}

// ListGuards returns the installed guards, one per port in port order, or
// none when the table does not exist.
func (m *Manager) ListGuards(ctx context.Context) ([]Guard, error) {
	c, err := m.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	return m.t.listGuards(c)
}

func (t *tables) listGuards(c *nftables.Conn) ([]Guard, error) {
	if ok, err := t.guardTableExists(c); err != nil || !ok {
		return nil, err
	}
	byPort := map[string]*Guard{}
	var order []string
	get := func(port, owner string) *Guard {
		g := byPort[port]
		if g == nil {
			g = &Guard{Port: port, Owner: owner}
			byPort[port] = g
			order = append(order, port)
		}
		return g
	}
	for _, s := range []*nftables.Set{t.ports, t.ipv4, t.ipv6} {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list anti-spoof set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			g := get(portOf(e.Key), e.Comment)
			if s == t.ports {
				g.Active = true
				continue
			}
			if len(e.Key) < ifNameSize+8 {
				continue
			}
			g.MAC = net.HardwareAddr(bytes.Clone(e.Key[ifNameSize : ifNameSize+6]))
			if ip, ok := netip.AddrFromSlice(e.Key[ifNameSize+8:]); ok && !ip.IsLinkLocalUnicast() {
				g.IPs = append(g.IPs, ip)
			}
		}
	}
	sort.Strings(order)
	out := make([]Guard, 0, len(order))
	for _, p := range order {
		out = append(out, *byPort[p])
	}
	return out, nil
}

// FindGuard returns the guard of port, or ErrNotFound.
func (m *Manager) FindGuard(ctx context.Context, port string) (Guard, error) {
	gs, err := m.ListGuards(ctx)
	if err != nil {
		return Guard{}, err
	}
	return findGuard(gs, port)
}

func findGuard(gs []Guard, port string) (Guard, error) {
	for _, g := range gs {
		if g.Port == port {
			return g, nil
		}
	}
	return Guard{}, fmt.Errorf("anti-spoof guard for port %s: %w", port, ErrNotFound)
}

func portOf(key []byte) string {
	if len(key) > ifNameSize {
		key = key[:ifNameSize]
	}
	return string(bytes.TrimRight(key, "\x00"))
}

// guardTableExists reports whether the stack's bridge table is there. (The
// library flattens netlink errors to text, so a missing table cannot be
// told from other failures by errno; a table dump can.)
func (t *tables) guardTableExists(c *nftables.Conn) (bool, error) {
	tbls, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return false, fmt.Errorf("list bridge tables: %w", err)
	}
	for _, tb := range tbls {
		if tb.Name == t.name {
			return true, nil
		}
	}
	return false, nil
}
