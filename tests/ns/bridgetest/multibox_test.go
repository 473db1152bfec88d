package bridgetest

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// TestBoxesBehindGateway checks the addressing of docs/kubernetes.md's
// design note (option 1): two ESB boxes, each with the same bridge and
// gateway 10.88.0.1/16 and esb-ipam handing out only its own slice
// (rangeStart/rangeEnd 10.88.N.1-10.88.N.254), behind a "Gateway"
// namespace that routes each slice to its box. The Gateway reaches a
// worker on each box at its own address, and a worker reaches the Gateway
// with its own address as the source (no NAT on the path).
func TestBoxesBehindGateway(t *testing.T) {
	gw := nstest.NewNS(t)
	gwAddrs := map[int]netip.Addr{}
	for _, box := range []int{1, 2} {
		n := newNode(t, nil, map[string]any{
			"rangeStart": fmt.Sprintf("10.88.%d.1", box),
			"rangeEnd":   fmt.Sprintf("10.88.%d.254", box),
		})
		// The uplink: 198.51.100.4N+1 on the Gateway, .4N+2 on the box.
		gwSide := netip.AddrFrom4([4]byte{198, 51, 100, byte(4*box + 1)})
		boxSide := netip.AddrFrom4([4]byte{198, 51, 100, byte(4*box + 2)})
		gwAddrs[box] = gwSide
		link(t, gw, n.ns, fmt.Sprintf("box%d", box), "uplink", gwSide, boxSide)
		if err := doIn(n.ns, func() error {
			return netlink.RouteAdd(&netlink.Route{Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.IP(gwSide.AsSlice())})
		}); err != nil {
			t.Fatalf("box %d: default route: %v", box, err)
		}
		slice := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 88, byte(box), 0}), 24)
		if err := doIn(gw, func() error {
			return netlink.RouteAdd(&netlink.Route{Dst: prefixNet(slice), Gw: net.IP(boxSide.AsSlice())})
		}); err != nil {
			t.Fatalf("gateway: route to box %d: %v", box, err)
		}

		w := n.newWorker(fmt.Sprintf("box%d-worker", box))
		n.mustAdd(w)
		if !slice.Contains(w.ip) {
			t.Fatalf("box %d gave %s, want an address in its slice %s", box, w.ip, slice)
		}
		port := serveTCP(t, w)
		// A few attempts (1 s each to connect): the first crossing waits
		// for two ARP resolutions, slow on a loaded machine.
		var got string
		var err error
		for try := range 5 {
			if got, err = dialFrom(gw, netip.AddrPortFrom(w.ip, uint16(port))); err == nil {
				break
			}
			t.Logf("gateway → box %d worker, attempt %d: %v", box, try+1, err)
		}
		if err != nil || got != "hello from "+w.id+"\n" {
			t.Errorf("gateway → box %d worker %s: %q, %v", box, w.ip, got, err)
		}
		if src, err := sourceSeenBy(gw, w, gwSide); err != nil || src != w.ip {
			t.Errorf("box %d worker → gateway: the gateway saw %s (%v), want the worker's %s", box, src, err, w.ip)
		}
		n.mustDel(w)
	}
}

// link makes a veth pair between namespaces a (named aName, address aAddr)
// and b (bName, bAddr), on a /30, both up.
func link(t *testing.T, a, b ns.NetNS, aName, bName string, aAddr, bAddr netip.Addr) {
	t.Helper()
	err := doIn(a, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(int(b.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return upWithAddr(aName, aAddr)
	})
	if err == nil {
		err = doIn(b, func() error { return upWithAddr(bName, bAddr) })
	}
	if err != nil {
		t.Fatalf("veth %s-%s: %v", aName, bName, err)
	}
}

func upWithAddr(name string, a netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, 30))}); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func doIn(n ns.NetNS, fn func() error) error { return n.Do(func(ns.NetNS) error { return fn() }) }

// sourceSeenBy listens on addr in the gateway namespace, connects from the
// worker and returns the source address the gateway saw.
func sourceSeenBy(gw ns.NetNS, w *worker, addr netip.Addr) (netip.Addr, error) {
	l, err := nodetest.Listen(gw, "tcp4", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer func() { _ = l.Close() }()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(seen)
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		_ = c.Close()
	}()
	target := netip.AddrPortFrom(addr, uint16(l.Addr().(*net.TCPAddr).Port))
	if _, err := dialFrom(w.ns, target); err != nil {
		return netip.Addr{}, err
	}
	select {
	case a := <-seen:
		return a, nil
	case <-time.After(5 * time.Second):
		return netip.Addr{}, fmt.Errorf("no connection from the worker reached %s", target)
	}
}
