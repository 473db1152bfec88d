package nattest

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// addOutside puts another network behind the node: a namespace reached
// through the node's ext0, with a route back to the workers' subnet (so
// only our rules, not routing, decide whether workers reach it) and a
// greeting listener on addr.
func (n *node) addOutside(addr string) {
	n.t.Helper()
	ext := nstest.NewNS(n.t)
	h := n.Handle()
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ext0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ext.Fd()))}
	if err := errors.Join(h.LinkAdd(veth),
		h.AddrAdd(veth, &netlink.Addr{IPNet: netlinkNet(extNodeAddr + "/24")}),
		h.LinkSetUp(veth)); err != nil {
		n.t.Fatalf("add ext0: %v", err)
	}
	eh, err := netlink.NewHandleAt(vnetns.NsHandle(int(ext.Fd())))
	if err != nil {
		n.t.Fatalf("netlink handle in outside namespace: %v", err)
	}
	defer eh.Close()
	eth, err := eh.LinkByName("eth0")
	if err != nil {
		n.t.Fatalf("find eth0 outside: %v", err)
	}
	lo, err := eh.LinkByName("lo")
	if err != nil {
		n.t.Fatalf("find lo outside: %v", err)
	}
	if err := errors.Join(eh.AddrAdd(eth, &netlink.Addr{IPNet: netlinkNet(extAddr + "/24")}),
		eh.LinkSetUp(eth), eh.LinkSetUp(lo),
		eh.RouteAdd(&netlink.Route{Dst: netlinkNet("10.88.0.0/16"), Gw: netip.MustParseAddr(extNodeAddr).AsSlice(), LinkIndex: eth.Attrs().Index})); err != nil {
		n.t.Fatalf("set up outside namespace: %v", err)
	}
	listenTCP(n.t, ext, addr)
}

// routeLoopbackOut makes the worker send 127.0.0.0/8 to the gateway, as a
// worker with CAP_NET_ADMIN in its own namespace could: the worker's lo is
// down, so its local table has no 127/8 route to shadow ours, and
// route_localnet on its eth0 lets the replies (source 127.0.0.1) in.
func (w *worker) routeLoopbackOut() {
	w.t.Helper()
	for _, args := range [][]string{
		{"ip", "-n", w.Name, "route", "add", "127.0.0.0/8", "via", gatewayIP, "dev", "eth0"},
		{"ip", "netns", "exec", w.Name, "sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1"},
	} {
		if out, err := run(args[0], args[1:]...); err != nil {
			w.t.Fatalf("route loopback out of the worker: %v\n%s", err, out)
		}
	}
}

// TestEgress checks what a worker may reach besides the forwards. The
// listeners: a gateway port that is not forwarded, a port of the node's
// other address, a loopback service that no forward targets, the proxy's
// own address (reached directly, not through the gateway) and a host on
// another network behind the node. Each is shown reachable without our
// table first, so a failure later is our rules' doing.
func TestEgress(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	const (
		gwOther   = gatewayIP + ":7000"
		nodeOther = nodeAddr + ":7001"
		loOther   = "127.0.0.1:7002"
		outside   = extAddr + ":7003"
		proxyNode = nodeAddr + ":19000" // target of gateway port 9000
		proxyLo   = "127.0.0.1:19001"   // target of gateway port 9001
		viaGW9000 = gatewayIP + ":9000"
		viaGW9001 = gatewayIP + ":9001"
	)
	for _, a := range []string{gwOther, nodeOther, loOther, proxyNode, proxyLo} {
		listenTCP(t, n.NS, a)
	}
	n.addOutside(outside)
	w.routeLoopbackOut()
	fwds := "forwards:\n  - {proto: tcp, port: 9000, to: \"" + proxyNode + "\"}\n  - {proto: tcp, port: 9001, to: \"" + proxyLo + "\"}\n"
	extGW := netip.MustParseAddr(extNodeAddr)

	// Without table ip esb everything but loopback (a martian destination
	// while route_localnet is off) is reachable.
	for _, a := range []string{gwOther, nodeOther, proxyNode, outside} {
		w.expectReach("without table ip esb", a, w.IP)
	}

	// --- proxy-only
	n.mustApply(rules(t, fwds), nat.Rebuilt)
	w.expectReach("forward to the node address", viaGW9000, w.IP)
	w.expectReach("forward to loopback", viaGW9001, w.IP)
	guard0 := n.ruleCounter("input", "loopback guard")
	input0 := n.ruleCounter("input", "egress proxy-only")
	forward0 := n.ruleCounter("forward", "egress proxy-only")
	w.expectBlocked("proxy-only", gwOther, nodeOther, loOther, proxyNode, outside)
	// Each was dropped by the rule meant for it: loopback by the guard
	// (ahead of the catch-all), node ports by the input catch-all,
	// the outside by the forward catch-all.
	if d := n.ruleCounter("input", "loopback guard") - guard0; d == 0 {
		t.Error("the loopback guard dropped nothing")
	}
	if d := n.ruleCounter("input", "egress proxy-only") - input0; d < 3 {
		t.Errorf("input proxy-only drops = %d, want at least 3 (gateway port, node address, proxy address)", d)
	}
	if d := n.ruleCounter("forward", "egress proxy-only") - forward0; d == 0 {
		t.Error("the forward proxy-only rule dropped nothing")
	}
	if err := w.ping(gatewayIP); err != nil {
		t.Errorf("ping the gateway under proxy-only: %v", err)
	}
	w.expectReach("forward after the drops", viaGW9000, w.IP)

	// --- open
	n.mustApply(rules(t, "egress: open\n"+fwds), nat.Rebuilt)
	w.expectReach("open: node address", nodeOther, w.IP)
	w.expectReach("open: gateway port", gwOther, w.IP)
	w.expectReach("open: forward", viaGW9000, w.IP)
	w.expectReach("open: forward to loopback", viaGW9001, w.IP)
	// Masqueraded: the outside host sees the node's address.
	w.expectReach("open: outside network", outside, extGW)
	// The loopback guard still stands.
	w.expectBlocked("open: loopback", loOther)
	if err := w.ping(gatewayIP); err != nil {
		t.Errorf("ping the gateway under open: %v", err)
	}

	// --- loopback guard
	// route_localnet is on (a forward targets loopback) and egress is
	// open: only the guard stands between workers and the node's
	// loopback services. Remove it and the service answers.
	if got := n.localnet(); got != "1" {
		t.Fatalf("route_localnet = %s, want 1", got)
	}
	guard := n.esbRule("input", "loopback guard")
	n.inNS("nft", "delete", "rule", "ip", nat.TableName, "input", "handle", strconv.FormatUint(guard.Handle, 10))
	w.expectReach("without the guard", loOther, w.IP)
	// Apply puts it back (the table differs: rebuilt whole).
	n.mustApply(rules(t, "egress: open\n"+fwds), nat.Rebuilt)
	w.expectBlocked("with the guard back", loOther)
}

// TestLocalnetOffAfterTableLost: route_localnet on the bridge is safe only
// while the loopback guard stands. When table ip esb is lost (a host
// firewall reload runs `nft flush ruleset`) and the operator then deletes
// the NAT set-up, or applies rules without a loopback forward,
// route_localnet must go off; otherwise nothing stops workers from
// reaching the node's loopback services.
func TestLocalnetOffAfterTableLost(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	const loOther, proxyLo = "127.0.0.1:7002", "127.0.0.1:19001"
	listenTCP(t, n.NS, loOther)
	listenTCP(t, n.NS, proxyLo)
	w.routeLoopbackOut()
	withLo := rules(t, "forwards:\n  - {proto: tcp, port: 9001, to: \""+proxyLo+"\"}\n")
	withoutLo := rules(t, "forwards:\n  - {proto: tcp, port: 9000, to: \""+nodeAddr+":19000\"}\n")

	for _, step := range []struct {
		what string
		fn   func() error
	}{
		{"Delete", func() error { return n.mgr.Delete(context.Background(), bridgeName) }},
		{"Apply without a loopback forward", func() error { _, err := n.mgr.Apply(context.Background(), withoutLo); return err }},
	} {
		n.mustApply(withLo, nat.Rebuilt)
		if got := n.localnet(); got != "1" {
			t.Fatalf("route_localnet with a loopback forward = %s, want 1", got)
		}
		w.expectBlocked("with the guard", loOther)
		n.inNS("nft", "delete", "table", "ip", nat.TableName)
		if err := step.fn(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		if got := n.localnet(); got != "0" {
			t.Errorf("route_localnet after the table was lost and %s = %s, want 0", step.what, got)
		}
		if step.what == "Delete" {
			w.expectBlocked("after the table was lost and "+step.what, loOther)
		}
		if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
}
