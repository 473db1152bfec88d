package nat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Change says what Apply did.
type Change int

// What Apply did.
const (
	Unchanged       Change = iota // the table already matched: nothing sent, counters kept
	ElementsUpdated               // only forwards changed: map and set elements updated in place
	Rebuilt                       // the table was missing or differed: replaced whole
)

func (c Change) String() string {
	return [...]string{"unchanged", "elements updated", "rebuilt"}[c]
}

// current is what table ip esb holds now.
type current struct {
	exists   bool
	chains   map[string]*nftables.Chain
	rules    map[string][]*nftables.Rule
	forwards map[string][]byte
	targets  map[string]bool
}

func (m *Manager) read(c *nftables.Conn) (*current, error) {
	cur := &current{chains: map[string]*nftables.Chain{}, rules: map[string][]*nftables.Rule{},
		forwards: map[string][]byte{}, targets: map[string]bool{}}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		cur.exists = cur.exists || t.Name == m.t.name
	}
	if !cur.exists {
		return cur, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != m.t.name {
			continue
		}
		cur.chains[ch.Name] = ch
		rules, err := c.GetRules(m.t.nat, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		cur.rules[ch.Name] = rules
	}
	sets, err := c.GetSets(m.t.nat)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		switch s.Name {
		case m.t.forwards.Name:
			elems, err := c.GetSetElements(m.t.forwards)
			if err != nil {
				return nil, fmt.Errorf("list forwards: %w", err)
			}
			for _, e := range elems {
				cur.forwards[string(e.Key)] = e.Val
			}
		case m.t.targets.Name:
			elems, err := c.GetSetElements(m.t.targets)
			if err != nil {
				return nil, fmt.Errorf("list targets: %w", err)
			}
			for _, e := range elems {
				cur.targets[string(e.Key)] = true
			}
		}
	}
	if len(sets) != 2 {
		cur.forwards = nil // marks the sets as not what we made
	}
	return cur, nil
}

// sameStructure reports whether the chains and rules match d: the same
// chains with the same hooks and priorities, and in each the same rules, in
// order, expression by expression (counter values aside), so an edited
// rule is noticed even when it kept its comment.
func (cur *current) sameStructure(d *desired) bool {
	if !cur.exists || cur.forwards == nil || len(cur.chains) != len(d.chains) {
		return false
	}
	want := map[string][]*nftables.Rule{}
	for _, r := range d.rules {
		want[r.Chain.Name] = append(want[r.Chain.Name], r)
	}
	for _, dc := range d.chains {
		cc := cur.chains[dc.Name]
		if cc == nil || cc.Type != dc.Type || cc.Hooknum == nil || *cc.Hooknum != *dc.Hooknum ||
			cc.Priority == nil || *cc.Priority != *dc.Priority || cc.Policy == nil || *cc.Policy != *dc.Policy {
			return false
		}
		have := cur.rules[dc.Name]
		if len(have) != len(want[dc.Name]) {
			return false
		}
		for i, r := range want[dc.Name] {
			if comment(have[i]) != comment(r) || !sameExprs(have[i].Exprs, r.Exprs) {
				return false
			}
		}
	}
	return true
}

// sameExprs compares rule expressions as the kernel reports them with the
// ones we build, ignoring counter values.
func sameExprs(have, want []expr.Any) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if _, ok := want[i].(*expr.Counter); ok {
			if _, ok := have[i].(*expr.Counter); !ok {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(have[i], want[i]) {
			return false
		}
	}
	return true
}

// Apply makes table ip esb match r, in one netlink transaction, and sets
// route_localnet on the bridge when a forward targets 127.0.0.0/8. A table
// that already matches is left alone (its counters keep counting); when
// only the forwards differ, the elements are updated in place; otherwise
// the table is replaced whole. UDP flows of a forward whose target changed
// or went away are cleared from conntrack so they move. A failed
// transaction leaves the previous table whole.
func (m *Manager) Apply(ctx context.Context, r *conf.NATRules) (Change, error) {
	c, err := m.conn(ctx)
	if err != nil {
		return Unchanged, fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	cur, err := m.read(c)
	if err != nil {
		return Unchanged, err
	}
	d := m.t.build(r)
	change := Unchanged
	switch {
	case !cur.sameStructure(d):
		change = Rebuilt
		c.AddTable(m.t.nat) // so the delete below cannot fail on a missing table
		c.DelTable(m.t.nat)
		c.AddTable(m.t.nat)
		if err := c.AddSet(m.t.forwards, d.forwards); err != nil {
			return Unchanged, err
		}
		if err := c.AddSet(m.t.targets, d.targets); err != nil {
			return Unchanged, err
		}
		for _, ch := range d.chains {
			c.AddChain(ch)
		}
		for _, rule := range d.rules {
			c.AddRule(rule)
		}
	default:
		delF, addF := diff(cur.forwards, d.forwards)
		delT, addT := diff(boolMap(cur.targets), d.targets)
		if len(delF)+len(addF)+len(delT)+len(addT) == 0 {
			break
		}
		change = ElementsUpdated
		for _, op := range []struct {
			s   *nftables.Set
			els []nftables.SetElement
			fn  func(*nftables.Set, []nftables.SetElement) error
		}{{m.t.forwards, delF, c.SetDeleteElements}, {m.t.targets, delT, c.SetDeleteElements},
			{m.t.forwards, addF, c.SetAddElements}, {m.t.targets, addT, c.SetAddElements}} {
			if len(op.els) > 0 {
				if err := op.fn(op.s, op.els); err != nil {
					return Unchanged, err
				}
			}
		}
	}
	if change != Unchanged {
		if err := c.Flush(); err != nil {
			return Unchanged, fmt.Errorf("apply table ip %s: %w", m.t.name, err)
		}
	}
	if err := m.syncLocalnet(r.Bridge, r.Loopback()); err != nil {
		return change, err
	}
	if change != Unchanged {
		if err := m.clearMovedUDP(r, cur); err != nil {
			return change, err
		}
	}
	return change, nil
}

func boolMap(m map[string]bool) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k := range m {
		out[k] = nil
	}
	return out
}

// diff returns the elements to delete (gone or with another value) and to
// add (new or with another value) to turn have into want.
func diff(have map[string][]byte, want []nftables.SetElement) (del, add []nftables.SetElement) {
	wantM := map[string][]byte{}
	for _, e := range want {
		wantM[string(e.Key)] = e.Val
		if v, ok := have[string(e.Key)]; !ok || !bytes.Equal(v, e.Val) {
			add = append(add, e)
		}
	}
	for k, v := range have {
		if w, ok := wantM[k]; !ok || !bytes.Equal(v, w) {
			del = append(del, nftables.SetElement{Key: []byte(k)})
		}
	}
	return del, add
}

func localnetPath(bridge string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", bridge, "route_localnet")
}

// syncLocalnet sets route_localnet on the bridge when loopback targets
// exist and resets it otherwise. The bridge is esbnet's own, so a 1 there
// is ours even when the table that needed it was lost (a flush, a crash).
// A bridge that does not exist yet is skipped; Watch sets it once the
// bridge appears.
func (m *Manager) syncLocalnet(bridge string, want bool) error {
	return m.inNS(func() error {
		path := localnetPath(bridge)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		val := "0"
		if want {
			val = "1"
		}
		if strings.TrimSpace(string(b)) == val {
			return nil
		}
		if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", path, err)
		}
		return nil
	})
}

// clearMovedUDP deletes the conntrack entries of UDP forwards whose target
// changed or that were removed: a UDP "connection" lives on as long as
// packets flow and would keep going to the old target.
func (m *Manager) clearMovedUDP(r *conf.NATRules, cur *current) error {
	wantVal := map[string][]byte{}
	for _, f := range r.Forwards {
		wantVal[string(forwardKey(f))] = forwardVal(f)
	}
	var filters []netlink.CustomConntrackFilter
	for k, v := range cur.forwards {
		if len(k) < 6 || k[0] != unix.IPPROTO_UDP || bytes.Equal(wantVal[k], v) {
			continue
		}
		f := &netlink.ConntrackFilter{}
		if err := errors.Join(
			f.AddProtocol(unix.IPPROTO_UDP),
			f.AddIP(netlink.ConntrackOrigDstIP, net.IP(r.Gateway.AsSlice())),
			f.AddPort(netlink.ConntrackOrigDstPort, uint16(k[4])<<8|uint16(k[5])),
		); err != nil {
			return err
		}
		filters = append(filters, f)
	}
	if len(filters) == 0 {
		return nil
	}
	h, err := m.netlinkHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("clear UDP conntrack entries of moved forwards: %w", err)
	}
	return nil
}

func (m *Manager) netlinkHandle() (*netlink.Handle, error) {
	if m.netns == nil {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(vnetns.NsHandle(int(m.netns.Fd())))
}

// Delete removes table ip esb and resets route_localnet on bridge. A
// missing table is not an error.
func (m *Manager) Delete(ctx context.Context, bridge string) error {
	c, err := m.conn(ctx)
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	cur, err := m.read(c)
	if err != nil {
		return err
	}
	if cur.exists {
		c.DelTable(m.t.nat)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("delete table ip %s: %w", m.t.name, err)
		}
	}
	return m.syncLocalnet(bridge, false)
}

// ForwardCounter is one forward with its counter. The DNAT chain sees only
// the first packet of each connection (conntrack handles the rest), so
// Packets counts connections (UDP: flows), and Bytes their first packets.
type ForwardCounter struct {
	Forward conf.Forward
	Packets uint64
	Bytes   uint64
}

// Counters returns the forwards installed now, with their counters, in
// proto and port order; none when the table does not exist.
func (m *Manager) Counters(ctx context.Context) ([]ForwardCounter, error) {
	c, err := m.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	cur, err := m.read(c)
	if err != nil || !cur.exists || cur.forwards == nil {
		return nil, err
	}
	elems, err := c.GetSetElements(m.t.forwards)
	if err != nil {
		return nil, fmt.Errorf("list forwards: %w", err)
	}
	out := make([]ForwardCounter, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) < 6 || len(e.Val) < 6 {
			continue
		}
		proto := "tcp"
		if e.Key[0] == unix.IPPROTO_UDP {
			proto = "udp"
		}
		to := netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Val[:4])), uint16(e.Val[4])<<8|uint16(e.Val[5]))
		fc := ForwardCounter{Forward: conf.Forward{Proto: proto, Port: uint16(e.Key[4])<<8 | uint16(e.Key[5]), To: to}}
		if e.Counter != nil {
			fc.Packets, fc.Bytes = e.Counter.Packets, e.Counter.Bytes
		}
		out = append(out, fc)
	}
	slices.SortFunc(out, func(a, b ForwardCounter) int {
		if a.Forward.Proto != b.Forward.Proto {
			return strings.Compare(a.Forward.Proto, b.Forward.Proto)
		}
		return int(a.Forward.Port) - int(b.Forward.Port)
	})
	return out, nil
}
