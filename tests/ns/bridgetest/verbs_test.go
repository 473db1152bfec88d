package bridgetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// TestAddResult runs ADD, CHECK and DEL through libcni with conflists of
// each supported cniVersion: the result is of that version and lists the
// bridge, the host veth and the container's eth0 (with its sandbox), and
// one address of the subnet with the gateway and the default route; the
// MACs it reports are the interfaces' own.
func TestAddResult(t *testing.T) {
	n := newNode(t, nil, nil)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			n := n.in(t)
			w := n.newWorker("result-" + v)
			raw, err := n.addVersion(n.cni, w, v)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if raw.Version() != v {
				t.Errorf("result version %s, want %s", raw.Version(), v)
			}
			res, err := current.NewResultFromResult(raw)
			if err != nil {
				t.Fatalf("convert result: %v", err)
			}
			links := n.links()
			want := []struct{ name, mac, sandbox string }{
				{bridgeName, hwAddr(links[bridgeName]), ""},
				{w.veth(), hwAddr(links[w.veth()]), ""},
				{ifName, macFor(w.ip), w.ns.Path()},
			}
			if len(res.Interfaces) != len(want) {
				t.Fatalf("result lists %d interfaces, want 3: %v", len(res.Interfaces), res)
			}
			for i, wi := range want {
				got := res.Interfaces[i]
				if got.Name != wi.name || got.Mac != wi.mac || got.Sandbox != wi.sandbox || wi.mac == "" {
					t.Errorf("interface %d: got {%s %s %q}, want {%s %s %q}", i, got.Name, got.Mac, got.Sandbox, wi.name, wi.mac, wi.sandbox)
				}
			}
			if len(res.IPs) != 1 {
				t.Fatalf("result has %d IPs, want 1: %v", len(res.IPs), res)
			}
			ip := res.IPs[0]
			ones, _ := ip.Address.Mask.Size()
			addr := netip.PrefixFrom(w.ip, ones)
			if addr.Masked() != netip.MustParsePrefix(subnet) || w.ip == gateway || !ip.Gateway.Equal(net.ParseIP(gatewayIP)) {
				t.Errorf("ip %s gateway %s, want an address of %s with gateway %s", ip.Address.String(), ip.Gateway, subnet, gatewayIP)
			}
			if ip.Interface == nil || *ip.Interface != 2 {
				t.Errorf("ip refers to interface %v, want 2 (eth0)", ip.Interface)
			}
			if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" {
				t.Errorf("routes %v, want 0.0.0.0/0", res.Routes)
			}
			inContainer := mustInNS(t, w.name, "ip", "-4", "-o", "addr", "show", "dev", ifName)
			if want := w.ip.String() + "/16"; !strings.Contains(inContainer, want) {
				t.Errorf("container eth0 lacks %s: %s", want, inContainer)
			}
			// The bridge port carries no IPv6 of its own; the worker's end
			// keeps it (its link-local address).
			if got := strings.TrimSpace(mustInNS(t, n.name, "cat", "/proc/sys/net/ipv6/conf/"+w.veth()+"/disable_ipv6")); got != "1" {
				t.Errorf("disable_ipv6 of bridge port %s is %q, want 1", w.veth(), got)
			}
			if got := mustInNS(t, n.name, "ip", "-6", "-o", "addr", "show", "dev", w.veth()); strings.TrimSpace(got) != "" {
				t.Errorf("bridge port %s has IPv6 addresses: %s", w.veth(), got)
			}
			if got := mustInNS(t, w.name, "ip", "-6", "-o", "addr", "show", "dev", ifName); !strings.Contains(got, "fe80::") {
				t.Errorf("container eth0 lost its IPv6 link-local address: %q", got)
			}

			if err := n.checkVersion(w, v); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			if err := n.delVersion(w, v); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
	n.assertClean("after DEL of every version")
}

func hwAddr(l netlink.Link) string {
	if l == nil {
		return ""
	}
	return l.Attrs().HardwareAddr.String()
}

// TestCheck breaks an attachment in each way CHECK must notice: CHECK
// passes after ADD, and after the break fails with code 102 and a message
// naming what drifted. DEL then still cleans up.
func TestCheck(t *testing.T) {
	n := newNode(t, nil, nil)
	for _, tc := range []struct {
		name  string
		brk   func(t *testing.T, w *worker)
		names func(w *worker) []string // what the error must mention
	}{
		{
			name: "container address removed",
			brk: func(t *testing.T, w *worker) {
				mustInNS(t, w.name, "ip", "addr", "del", w.ip.String()+"/16", "dev", ifName)
			},
			names: func(w *worker) []string { return []string{ifName, "lacks address", w.ip.String() + "/16"} },
		},
		{
			name: "veth off the bridge",
			brk: func(t *testing.T, w *worker) {
				mustInNS(t, n.name, "ip", "link", "set", w.veth(), "nomaster")
			},
			names: func(w *worker) []string { return []string{w.veth(), "not a port of bridge", bridgeName} },
		},
		{
			name: "anti-spoof element removed",
			brk: func(t *testing.T, w *worker) {
				elem := fmt.Sprintf("{ %q . %s . %s }", w.veth(), macFor(w.ip), w.ip)
				mustInNS(t, n.name, "nft", "delete", "element", "bridge", "esb", "ipv4", elem)
			},
			names: func(w *worker) []string { return []string{"anti-spoof guard", w.veth(), w.ip.String()} },
		},
		{
			// Without its "ports" element the port is not guarded at all:
			// the chain's first rule returns for unguarded ports.
			name: "anti-spoof port element removed",
			brk: func(t *testing.T, w *worker) {
				mustInNS(t, n.name, "nft", "delete", "element", "bridge", "esb", "ports", fmt.Sprintf("{ %q }", w.veth()))
			},
			names: func(w *worker) []string { return []string{"anti-spoof guard", w.veth()} },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := n.in(t)
			w := n.newWorker("check-" + strings.ReplaceAll(tc.name, " ", "-"))
			n.mustAdd(w)
			t.Cleanup(func() { _ = n.del(w) }) // when an assertion stops the subtest early
			if err := n.check(w); err != nil {
				t.Fatalf("CHECK right after ADD: %v", err)
			}
			tc.brk(t, w)
			_ = wantCNIError(t, n.check(w), conf.CodeDrift, "CHECK after the break", tc.names(w)...)
			n.mustDel(w)
			n.assertClean("after DEL")
		})
	}
}

// TestDel checks that DEL is idempotent and works when the worker's
// namespace is already gone.
func TestDel(t *testing.T) {
	n := newNode(t, nil, nil)

	t.Run("twice", func(t *testing.T) {
		n := n.in(t)
		w := n.newWorker("del-twice")
		n.mustAdd(w)
		n.mustDel(w)
		n.assertClean("after the first DEL")
		if err := n.del(w); err != nil {
			t.Errorf("second DEL: %v", err)
		}
		n.assertClean("after the second DEL")
	})

	t.Run("never added", func(t *testing.T) {
		n := n.in(t)
		w := n.newWorker("del-never")
		if err := n.del(w); err != nil {
			t.Errorf("DEL of an attachment that never was: %v", err)
		}
		n.assertClean("after DEL")
	})

	t.Run("netns gone", func(t *testing.T) {
		n := n.in(t)
		nstest.RequirePrivileged(t)
		wns, err := testutils.NewNS()
		if err != nil {
			t.Fatalf("create netns: %v", err)
		}
		gone := false
		removeNS := func() error {
			if gone {
				return nil
			}
			gone = true
			return errors.Join(wns.Close(), testutils.UnmountNS(wns))
		}
		t.Cleanup(func() {
			if err := removeNS(); err != nil {
				t.Errorf("remove netns: %v", err)
			}
		})
		w := &worker{ns: wns, name: filepath.Base(wns.Path()), path: wns.Path(), id: "del-gone"}
		n.mustAdd(w)
		if a := nodetest.Allocs(n.t, n.dataDir, netName)[w.attachment()]; len(a) != 1 {
			t.Fatalf("after ADD the store holds %v for %s", a, w.id)
		}
		path := wns.Path()
		if err := removeNS(); err != nil {
			t.Fatalf("remove netns: %v", err)
		}
		if err := n.del(w); err != nil {
			t.Fatalf("DEL with netns %s gone: %v", path, err)
		}
		n.assertClean("after DEL with the netns gone")
		if err := n.del(w); err != nil {
			t.Errorf("second DEL with the netns gone: %v", err)
		}
	})
}

// TestGC attaches three workers and runs GC with only the first valid,
// through a runtime whose cache is empty so that the plugin's own GC does
// the work: within the grace period nothing goes; with "gcGrace": "0s"
// the others' addresses, veths and anti-spoof elements go, and the valid
// worker is untouched (CHECK passes, it still reaches the gateway).
func TestGC(t *testing.T) {
	n := newNode(t, nil, nil)
	a, b, c := n.newWorker("gc-a"), n.newWorker("gc-b"), n.newWorker("gc-c")
	for _, w := range []*worker{a, b, c} {
		n.mustAdd(w)
	}
	fresh := n.runtime()

	if err := n.gc(fresh, a); err != nil {
		t.Fatalf("GC with the default grace: %v", err)
	}
	n.assertClean("after GC within the grace period", a, b, c)

	n.ipam["gcGrace"] = "0s"
	if err := n.gc(fresh, a); err != nil {
		t.Fatalf("GC with gcGrace 0s: %v", err)
	}
	n.assertClean("after GC with gcGrace 0s", a)
	for _, w := range []*worker{b, c} {
		if out, err := inNS(w.name, "ip", "link", "show", ifName); err == nil {
			t.Errorf("%s still has %s after GC: %s", w.id, ifName, out)
		}
	}
	if err := n.check(a); err != nil {
		t.Errorf("CHECK of the valid worker after GC: %v", err)
	}
	if !pingWorks(a.name, netip.Addr{}, gateway) {
		t.Errorf("the valid worker cannot ping the gateway after GC")
	}

	if err := n.gc(fresh, a); err != nil {
		t.Errorf("GC again: %v", err)
	}
	n.assertClean("after a second GC", a)
	n.mustDel(a)
	n.assertClean("after DEL")
}

// TestStatus checks STATUS: it passes on a fresh node and with room left,
// and fails with code 50 when the range is exhausted or another interface
// owns the subnet; ADD then fails with code 110 naming that interface.
func TestStatus(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		n := newNode(t, nil, nil)
		if err := n.status(); err != nil {
			t.Errorf("STATUS on a fresh node: %v", err)
		}
		w := n.newWorker("status-ok")
		n.mustAdd(w)
		if err := n.status(); err != nil {
			t.Errorf("STATUS after an ADD: %v", err)
		}
		n.mustDel(w)
	})

	t.Run("range exhausted", func(t *testing.T) {
		n := newNode(t, nil, map[string]any{"rangeStart": "10.88.0.2", "rangeEnd": "10.88.0.3"})
		for _, id := range []string{"status-1", "status-2"} {
			if err := n.status(); err != nil {
				t.Fatalf("STATUS with room left: %v", err)
			}
			n.mustAdd(n.newWorker(id))
		}
		_ = wantCNIError(t, n.status(), types.ErrPluginNotAvailable, "STATUS with the range full", "exhausted")
	})

	t.Run("subnet owned by podman0", func(t *testing.T) {
		n := newNode(t, nil, nil)
		// A bridge, as Podman makes it (this kernel may lack the dummy type).
		mustInNS(t, n.name, "ip", "link", "add", "podman0", "type", "bridge")
		mustInNS(t, n.name, "ip", "addr", "add", "10.88.0.1/16", "dev", "podman0")
		mustInNS(t, n.name, "ip", "link", "set", "podman0", "up")
		_ = wantCNIError(t, n.status(), types.ErrPluginNotAvailable, "STATUS", "podman0", subnet)
		w := n.newWorker("status-podman")
		_ = wantCNIError(t, n.add(w), conf.CodeSubnetConflict, "ADD", "podman0", subnet)
		if n.hasLink(bridgeName) {
			t.Errorf("a failed ADD created bridge %s", bridgeName)
		}
		n.assertClean("after the failed ADD")
	})
}
