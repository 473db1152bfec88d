package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultRouteProtocol marks the routes esb-node owns (the rtm_protocol
// field, "proto 210" in ip route). It is outside the numbers iproute2
// reserves in /etc/iproute2/rt_protos.
const DefaultRouteProtocol = 210

// Route is one route to another node's pod CIDR: Dst via Gw.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Gw.String() }

// Routes is the kernel boundary of the agent: the routing table of the
// node's network namespace, seen only through routes carrying the agent's
// protocol mark.
type Routes interface {
	// List returns the routes carrying the mark, sorted by destination; an
	// empty table gives an empty list and no error.
	List() ([]Route, error)
	// Replace adds the route or changes the gateway of the marked route to
	// the same destination. Idempotent.
	Replace(Route) error
	// Delete removes the marked route to r.Dst. Deleting a route that is
	// already gone succeeds.
	Delete(Route) error
}

// NetlinkRoutes is Routes over a netlink handle, usually bound to a
// namespace with netlink.NewHandleAt; the zero handle is the caller's own.
type NetlinkRoutes struct {
	Handle   *netlink.Handle
	Protocol netlink.RouteProtocol
}

var _ Routes = (*NetlinkRoutes)(nil)

func (n *NetlinkRoutes) handle() *netlink.Handle {
	if n.Handle == nil {
		return &netlink.Handle{}
	}
	return n.Handle
}

// List implements Routes.
func (n *NetlinkRoutes) List() ([]Route, error) {
	var out []Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := n.handle().RouteListFiltered(family, &netlink.Route{
			Protocol: n.Protocol, Table: unix.RT_TABLE_MAIN,
		}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes of protocol %d: %w", n.Protocol, err)
		}
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			dst, ok := prefixOf(r.Dst)
			if !ok {
				continue
			}
			gw, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, Route{Dst: dst, Gw: gw.Unmap()})
		}
	}
	sortRoutes(out)
	return out, nil
}

// Replace implements Routes.
func (n *NetlinkRoutes) Replace(r Route) error {
	if err := n.handle().RouteReplace(n.netlinkRoute(r)); err != nil {
		return fmt.Errorf("replace route %s: %w", r, err)
	}
	return nil
}

// Delete implements Routes.
func (n *NetlinkRoutes) Delete(r Route) error {
	err := n.handle().RouteDel(n.netlinkRoute(r))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

func (n *NetlinkRoutes) netlinkRoute(r Route) *netlink.Route {
	dst := &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}
	nr := &netlink.Route{Dst: dst, Protocol: n.Protocol, Table: unix.RT_TABLE_MAIN}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	return nr
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func sortRoutes(rs []Route) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Dst.String() < rs[j].Dst.String() })
}

// FakeRoutes is an in-memory Routes for unit tests. Foreign holds routes
// without the mark, which the agent must never touch; Err, when set, is
// returned by every call.
type FakeRoutes struct {
	mu      sync.Mutex
	marked  map[netip.Prefix]Route
	Foreign []Route
	Err     error
	Changes int
}

var _ Routes = (*FakeRoutes)(nil)

// List implements Routes.
func (f *FakeRoutes) List() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	out := make([]Route, 0, len(f.marked))
	for _, r := range f.marked {
		out = append(out, r)
	}
	sortRoutes(out)
	return out, nil
}

// Replace implements Routes.
func (f *FakeRoutes) Replace(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if f.marked == nil {
		f.marked = map[netip.Prefix]Route{}
	}
	if f.marked[r.Dst] != r {
		f.Changes++
	}
	f.marked[r.Dst] = r
	return nil
}

// Delete implements Routes.
func (f *FakeRoutes) Delete(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if _, ok := f.marked[r.Dst]; ok {
		f.Changes++
	}
	delete(f.marked, r.Dst)
	return nil
}

// Dump prints the marked routes one a line, as "ip route show proto N"
// would: "<dst> via <gw>".
func (f *FakeRoutes) Dump() string {
	rs, _ := f.List()
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
