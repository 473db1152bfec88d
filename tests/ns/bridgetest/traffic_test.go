package bridgetest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestTraffic attaches two workers and checks what may talk to what: each
// worker reaches the gateway, the node reaches a worker's TCP port, and
// workers reach each other only when isolation is off.
func TestTraffic(t *testing.T) {
	for _, tc := range []struct {
		name      string
		plugin    map[string]any
		isolation bool
	}{
		{"isolation default", nil, true},
		{"isolation false", map[string]any{"isolation": false}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.plugin, nil)
			a, b := n.newWorker("traffic-a"), n.newWorker("traffic-b")
			n.mustAdd(a)
			n.mustAdd(b)
			if a.ip == b.ip {
				t.Fatalf("both workers got %s", a.ip)
			}

			for _, w := range []*worker{a, b} {
				if !pingWorks(w.name, netip.Addr{}, gateway) {
					t.Errorf("%s (%s) cannot ping the gateway %s", w.id, w.ip, gateway)
				}
			}

			portB := serveTCP(t, b)
			got, err := dialFrom(n.ns, netip.AddrPortFrom(b.ip, uint16(portB)))
			if err != nil || !strings.Contains(got, "hello from "+b.id) {
				t.Errorf("node -> %s:%d: got %q, %v; want the greeting", b.ip, portB, got, err)
			}

			got, err = dialFrom(a.ns, netip.AddrPortFrom(b.ip, uint16(portB)))
			tcpOK := err == nil && strings.Contains(got, "hello from "+b.id)
			if tc.isolation {
				if tcpOK {
					t.Errorf("isolation on, yet %s reached %s:%d over TCP", a.id, b.ip, portB)
				}
				if !pingBlocked(a.name, netip.Addr{}, b.ip) {
					t.Errorf("isolation on, yet %s pinged %s", a.id, b.ip)
				}
			} else {
				if !tcpOK {
					t.Errorf("isolation off, %s -> %s:%d: got %q, %v; want the greeting", a.id, b.ip, portB, got, err)
				}
				if !pingWorks(a.name, netip.Addr{}, b.ip) {
					t.Errorf("isolation off, %s cannot ping %s", a.id, b.ip)
				}
			}
			// The other direction too.
			if tc.isolation && pingOnce(b.name, netip.Addr{}, a.ip) {
				t.Errorf("isolation on, yet %s pinged %s", b.id, a.ip)
			}
			if !tc.isolation && !pingWorks(b.name, netip.Addr{}, a.ip) {
				t.Errorf("isolation off, %s cannot ping %s", b.id, a.ip)
			}

			n.mustDel(a)
			n.mustDel(b)
			n.assertClean("after DEL")
		})
	}
}

// TestAntiSpoof checks that a worker can send only from its own address
// and MAC: a foreign source address or a changed MAC gets nothing through,
// and after restoring them traffic flows again. The same spoofing with
// "antiSpoof": false does get through, so the test can tell the guard's
// drops from anything else. The guard's elements exist after ADD and are
// gone after DEL.
func TestAntiSpoof(t *testing.T) {
	t.Run("guarded", func(t *testing.T) {
		n := newNode(t, nil, nil)
		w := n.newWorker("spoof")
		n.mustAdd(w)

		g, ok := n.guards()[w.veth()]
		if !ok {
			t.Fatalf("no anti-spoof guard for %s after ADD; guards: %v", w.veth(), n.guards())
		}
		wantMAC := macFor(w.ip)
		if g.MAC.String() != wantMAC || len(g.IPs) != 1 || g.IPs[0] != w.ip || g.Owner != w.id+"/"+ifName {
			t.Errorf("guard %+v, want port %s MAC %s IP %s owner %s/%s", g, w.veth(), wantMAC, w.ip, w.id, ifName)
		}
		listing := mustInNS(t, n.name, "nft", "list", "table", "bridge", "esb")
		for _, s := range []string{w.veth(), wantMAC, w.ip.String()} {
			if !strings.Contains(listing, s) {
				t.Errorf("nft list table bridge esb does not mention %s:\n%s", s, listing)
			}
		}

		foreign, changedMAC := spoof(t, n, w)
		if foreign {
			t.Errorf("ping from a foreign source address got through")
		}
		if changedMAC {
			t.Errorf("ping from a changed MAC got through")
		}

		n.mustDel(w)
		if gs := n.guards(); len(gs) != 0 {
			t.Errorf("anti-spoof guards after DEL: %v", gs)
		}
		listing = mustInNS(t, n.name, "nft", "list", "table", "bridge", "esb")
		for _, s := range []string{w.veth(), w.ip.String()} {
			if strings.Contains(listing, s) {
				t.Errorf("after DEL, nft list table bridge esb still mentions %s:\n%s", s, listing)
			}
		}
	})
	t.Run("control antiSpoof false", func(t *testing.T) {
		n := newNode(t, map[string]any{"antiSpoof": false}, nil)
		w := n.newWorker("nospoof")
		n.mustAdd(w)
		if gs := n.guards(); len(gs) != 0 {
			t.Errorf("antiSpoof false, yet guards are installed: %v", gs)
		}
		foreign, changedMAC := spoof(t, n, w)
		if !foreign {
			t.Errorf("without anti-spoofing, ping from a foreign source address does not get through: the test cannot tell")
		}
		if !changedMAC {
			t.Errorf("without anti-spoofing, ping from a changed MAC does not get through: the test cannot tell")
		}
		n.mustDel(w)
	})
}

// spoof pings the gateway from w first from the foreign address 10.88.0.77,
// then with the MAC 0a:58:0a:58:99:99, and reports whether each got a
// reply. Before, between and after, a ping from w's own address and MAC
// must work.
func spoof(t *testing.T, n *node, w *worker) (foreignThrough, macThrough bool) {
	t.Helper()
	if !pingWorks(w.name, netip.Addr{}, gateway) {
		t.Fatalf("worker %s cannot ping the gateway before any spoofing", w.ip)
	}

	foreign := netip.MustParseAddr("10.88.0.77")
	mustInNS(t, w.name, "ip", "addr", "add", foreign.String()+"/16", "dev", ifName)
	foreignThrough = !pingBlocked(w.name, foreign, gateway)
	mustInNS(t, w.name, "ip", "addr", "del", foreign.String()+"/16", "dev", ifName)
	if !pingWorks(w.name, w.ip, gateway) {
		t.Fatalf("ping from the worker's own %s fails after removing the foreign address", w.ip)
	}

	orig := strings.TrimSpace(mustInNS(t, w.name, "cat", "/sys/class/net/"+ifName+"/address"))
	if orig != macFor(w.ip) {
		t.Fatalf("worker MAC %s, want %s", orig, macFor(w.ip))
	}
	setMAC := func(mac string) {
		t.Helper()
		mustInNS(t, w.name, "ip", "link", "set", ifName, "address", mac)
		mustInNS(t, w.name, "ip", "neigh", "flush", "all")
		mustInNS(t, n.name, "ip", "neigh", "flush", "all")
	}
	setMAC("0a:58:0a:58:99:99")
	macThrough = !pingBlocked(w.name, netip.Addr{}, gateway)
	setMAC(orig)
	if !pingWorks(w.name, netip.Addr{}, gateway) {
		t.Fatalf("ping fails after restoring MAC %s", orig)
	}
	return foreignThrough, macThrough
}

// macFor is the MAC the design derives from a worker's IPv4 address:
// 0a:58 followed by the address's four bytes.
func macFor(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}
