package nodeagent

import (
	"net"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// nodeNS makes a namespace that plays a node on a 192.168.50.0/24 segment
// (a veth) with one route of another owner, and returns a handle in it.
func nodeNS(t *testing.T) (*netlink.Handle, *netlink.Route) {
	t.Helper()
	n := nstest.NewNS(t)
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	t.Cleanup(h.Close)
	// A veth pair: the dummy driver is not loaded on every machine.
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplink-peer"}
	if err := h.LinkAdd(link); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	peer, err := h.LinkByName("uplink-peer")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{192, 168, 50, 1}, Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	foreign := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP{10, 99, 0, 0}, Mask: net.CIDRMask(16, 32)},
		Gw:       net.IP{192, 168, 50, 9},
		Protocol: netlink.RouteProtocol(4), // static, as "ip route add" makes
	}
	if err := h.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	return h, foreign
}

func foreignPresent(t *testing.T, h *netlink.Handle, foreign *netlink.Route) {
	t.Helper()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign.Dst}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 || !rs[0].Gw.Equal(foreign.Gw) || rs[0].Protocol != foreign.Protocol {
		t.Fatalf("the route of another owner changed: %v (%v)", rs, err)
	}
}

func TestNetlinkRoutes(t *testing.T) {
	h, foreign := nodeNS(t)
	r := &NetlinkRoutes{Handle: h, Protocol: DefaultRouteProtocol}
	a := Route{Dst: netip.MustParsePrefix("10.88.2.0/24"), Gw: netip.MustParseAddr("192.168.50.2")}
	b := Route{Dst: netip.MustParsePrefix("10.88.3.0/24"), Gw: netip.MustParseAddr("192.168.50.3")}
	list := func() []Route {
		t.Helper()
		rs, err := r.List()
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("fresh namespace lists %v, want none (the foreign route is not ours)", got)
	}
	for range 2 { // the second time changes nothing
		for _, x := range []Route{a, b} {
			if err := r.Replace(x); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := list(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("List = %v, want [%v %v]", got, a, b)
	}
	moved := Route{Dst: a.Dst, Gw: netip.MustParseAddr("192.168.50.22")}
	if err := r.Replace(moved); err != nil {
		t.Fatal(err)
	}
	for range 2 { // deleting a route that is gone succeeds
		if err := r.Delete(b); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(); len(got) != 1 || got[0] != moved {
		t.Fatalf("List = %v, want [%v]", got, moved)
	}
	// The kernel's own view: the route carries the mark.
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: DefaultRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil || len(rs) != 1 || rs[0].Dst.String() != "10.88.2.0/24" {
		t.Fatalf("kernel routes of protocol %d: %v (%v)", DefaultRouteProtocol, rs, err)
	}
	foreignPresent(t, h, foreign)
}

// The agent's pass with the real routing table of a node namespace.
func TestAgentSyncProgramsKernelRoutes(t *testing.T) {
	h, foreign := nodeNS(t)
	routes := &NetlinkRoutes{Handle: h, Protocol: DefaultRouteProtocol}
	n1 := node("n1", "10.88.1.0/24", "192.168.50.1")
	n2 := node("n2", "10.88.2.0/24", "192.168.50.2")
	n3 := node("n3", "10.88.3.0/24", "192.168.50.3")
	client := fake.NewClientset(n1, n2, n3)
	a, _ := newAgent(t, client, routes)
	for _, nodes := range [][]*corev1.Node{{n1, n2, n3}, {n1, n2, n3}, {n1, n2}} {
		if err := a.Sync(t.Context(), nodes); err != nil {
			t.Fatal(err)
		}
	}
	got, err := routes.List()
	want := Route{Dst: netip.MustParsePrefix("10.88.2.0/24"), Gw: netip.MustParseAddr("192.168.50.2")}
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("routes after n3 left: %v (%v), want [%v]", got, err, want)
	}
	if !networkAvailable(t, client, "n1") {
		t.Fatal("n1 not marked NetworkUnavailable=False")
	}
	foreignPresent(t, h, foreign)
}
