package ipamtest

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// TestVersion: the VERSION verb lists the spec versions the design promises.
func TestVersion(t *testing.T) {
	n := newIPAMNet(t, nil)
	ctx, cancel := n.ctx()
	defer cancel()
	info, err := n.cni.GetVersionInfo(ctx, pluginTy)
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(info.SupportedVersions(), v) {
			t.Errorf("VERSION lists %v, missing %s", info.SupportedVersions(), v)
		}
	}
	if _, err := n.cni.ValidateNetwork(ctx, n.conf("1.1.0")); err != nil {
		t.Errorf("validate 1.1.0 config: %v", err)
	}
}

// TestResultVersions: ADD answers a 0.4.0, 1.0.0 and 1.1.0 config with a
// result of that version carrying the stored address, the gateway and the
// configured route; CHECK and DEL work with each version.
func TestResultVersions(t *testing.T) {
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			n := newIPAMNet(t, map[string]any{"routes": []map[string]string{{"dst": "0.0.0.0/0"}}})
			ctx, cancel := n.ctx()
			defer cancel()
			res, err := n.cni.AddNetwork(ctx, n.conf(v), n.rt("ctr-v"))
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			var ip netip.Prefix
			var gw netip.Addr
			switch r := res.(type) {
			case *types040.Result:
				if v != "0.4.0" || len(r.IPs) != 1 || len(r.Routes) != 1 {
					t.Fatalf("unexpected %s result %+v", v, r)
				}
				if r.IPs[0].Version != "4" {
					t.Errorf("0.4.0 IP version %q, want \"4\"", r.IPs[0].Version)
				}
				if r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW != nil {
					t.Errorf("route %v, want 0.0.0.0/0 via the gateway", r.Routes[0])
				}
				ip, gw, err = ipConfigAddr(r.IPs[0].Address.IP, r.IPs[0].Address.Mask, r.IPs[0].Gateway)
			case *current.Result:
				if v == "0.4.0" || len(r.IPs) != 1 || len(r.Routes) != 1 {
					t.Fatalf("unexpected %s result %+v", v, r)
				}
				if r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW != nil {
					t.Errorf("route %v, want 0.0.0.0/0 via the gateway", r.Routes[0])
				}
				ip, gw, err = ipConfigAddr(r.IPs[0].Address.IP, r.IPs[0].Address.Mask, r.IPs[0].Gateway)
			default:
				t.Fatalf("result of type %T for %s", res, v)
			}
			if err != nil {
				t.Fatal(err)
			}
			if gw.String() != testGateway {
				t.Errorf("gateway %s, want %s", gw, testGateway)
			}
			st := n.state()
			if st.allocs["ctr-v"] != ip || len(st.allocs) != 1 {
				t.Errorf("result says %s, store holds %v", ip, st.allocs)
			}
			if ip.Bits() != 24 || !netip.MustParsePrefix(testSubnet).Contains(ip.Addr()) || ip.Addr().String() == testGateway {
				t.Errorf("address %s is not a host address of %s", ip, testSubnet)
			}
			if err := n.cni.CheckNetwork(ctx, n.conf(v), n.rt("ctr-v")); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := n.cni.DelNetwork(ctx, n.conf(v), n.rt("ctr-v")); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if st := n.state(); len(st.allocs) != 0 || st.used != 0 {
				t.Errorf("after DEL the store holds %v (%d used)", st.allocs, st.used)
			}
		})
	}
}

// TestAddTwice: a repeated ADD of one attachment returns its address and
// takes no second one.
func TestAddTwice(t *testing.T) {
	n := newIPAMNet(t, nil)
	first := n.mustAdd("ctr-a")
	second := n.mustAdd("ctr-a")
	if first != second {
		t.Fatalf("second ADD returned %s, first %s", second, first)
	}
	st := n.state()
	if len(st.allocs) != 1 || st.used != 1 || st.allocs["ctr-a"] != first {
		t.Fatalf("store holds %v (%d used), want only ctr-a -> %s", st.allocs, st.used, first)
	}
}

// TestDelIdempotent: DEL of an unknown attachment and a second DEL succeed
// and touch nothing else; DEL needs no netns.
func TestDelIdempotent(t *testing.T) {
	n := newIPAMNet(t, nil)
	keep := n.mustAdd("ctr-keep")
	n.mustDel("ctr-unknown")
	n.mustAdd("ctr-a")
	n.mustDel("ctr-a")
	n.mustDel("ctr-a")
	ctx, cancel := n.ctx()
	defer cancel()
	rt := n.rt("ctr-gone")
	rt.NetNS = filepath.Join(t.TempDir(), "no-such-netns")
	if err := n.cni.DelNetwork(ctx, n.conf("1.1.0"), rt); err != nil {
		t.Errorf("DEL with a missing netns: %v", err)
	}
	st := n.state()
	if len(st.allocs) != 1 || st.allocs["ctr-keep"] != keep || st.used != 1 {
		t.Fatalf("store holds %v (%d used), want only ctr-keep -> %s", st.allocs, st.used, keep)
	}
}

// TestCheck: CHECK passes for a live attachment, fails with code 3 for one
// that holds no address, and with code 102 when the cached result names
// another address than the store holds.
func TestCheck(t *testing.T) {
	n := newIPAMNet(t, nil)
	_ = wantCode(t, n.check(n.cni, "ctr-none"), types.ErrUnknownContainer, "CHECK without address")

	old := n.mustAdd("ctr-a")
	if err := n.check(n.cni, "ctr-a"); err != nil {
		t.Fatalf("CHECK of a live attachment: %v", err)
	}
	// A second runtime releases and re-adds ctr-a, which moves it to the
	// next address; the first runtime's cached result is now stale.
	other := n.runtime()
	if err := n.del(other, "ctr-a"); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	moved, err := n.add(other, "ctr-a")
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if moved == old {
		t.Fatalf("re-ADD got the released address %s again", old)
	}
	_ = wantCode(t, n.check(n.cni, "ctr-a"), conf.CodeDrift, "CHECK with a stale prevResult")
	if err := n.check(other, "ctr-a"); err != nil {
		t.Errorf("CHECK with the current prevResult: %v", err)
	}
	n.mustDel("ctr-a")
	_ = wantCode(t, n.check(other, "ctr-a"), types.ErrUnknownContainer, "CHECK after DEL")
}

// TestRotation: an address just released is not handed out next.
func TestRotation(t *testing.T) {
	n := newIPAMNet(t, nil)
	a := n.mustAdd("ctr-a")
	n.mustDel("ctr-a")
	b := n.mustAdd("ctr-b")
	if a == b {
		t.Fatalf("ctr-b got %s, the address ctr-a just released", b)
	}
}

// TestGC: GC releases every allocation not in the valid list (the runtime
// here has no cached results, so only the plugin's GC verb can release
// them), and the grace period keeps young allocations.
func TestGC(t *testing.T) {
	t.Run("releases", func(t *testing.T) {
		n := newIPAMNet(t, map[string]any{"gcGrace": "0s"})
		keep := n.mustAdd("ctr-a")
		n.mustAdd("ctr-b")
		n.mustAdd("ctr-c")
		fresh := n.runtime()
		if err := n.gc(fresh, nil, "ctr-a"); err != nil {
			t.Fatalf("GC: %v", err)
		}
		st := n.state()
		if len(st.allocs) != 1 || st.allocs["ctr-a"] != keep || st.used != 1 {
			t.Fatalf("after GC the store holds %v (%d used), want only ctr-a -> %s", st.allocs, st.used, keep)
		}
		if err := n.gc(fresh, nil, "ctr-a"); err != nil {
			t.Fatalf("second GC: %v", err)
		}
		if err := n.gc(fresh, nil); err != nil {
			t.Fatalf("GC with no valid attachment: %v", err)
		}
		if st := n.state(); len(st.allocs) != 0 || st.used != 0 {
			t.Fatalf("after GC with an empty list the store holds %v (%d used)", st.allocs, st.used)
		}
	})
	t.Run("grace", func(t *testing.T) {
		n := newIPAMNet(t, nil) // default grace: 30s
		young := n.mustAdd("ctr-young")
		if err := n.gc(n.runtime(), nil); err != nil {
			t.Fatalf("GC: %v", err)
		}
		if st := n.state(); st.allocs["ctr-young"] != young || st.used != 1 {
			t.Fatalf("GC released an allocation younger than the grace: store holds %v", st.allocs)
		}
	})
}

// TestStatusExhausted: STATUS passes while an address is free and fails
// with code 50 when the range is used up, and ADD then fails with code 100;
// a DEL makes both work again.
func TestStatusExhausted(t *testing.T) {
	n := newIPAMNet(t, map[string]any{"rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.11"})
	if err := n.status(nil); err != nil {
		t.Fatalf("STATUS of an empty range: %v", err)
	}
	a := n.mustAdd("ctr-a")
	b := n.mustAdd("ctr-b")
	if got := []string{a.Addr().String(), b.Addr().String()}; !slices.Equal(slices.Sorted(slices.Values(got)), []string{"10.77.0.10", "10.77.0.11"}) {
		t.Fatalf("the two ADDs got %v, want 10.77.0.10 and 10.77.0.11", got)
	}
	_ = wantCode(t, n.status(nil), types.ErrPluginNotAvailable, "STATUS of a full range")
	_, err := n.add(n.cni, "ctr-c")
	_ = wantCode(t, err, conf.CodeExhausted, "ADD to a full range")
	if st := n.state(); len(st.allocs) != 2 || st.used != 2 || st.capacity != 2 {
		t.Fatalf("failed ADD changed the store: %v (%d of %d used)", st.allocs, st.used, st.capacity)
	}
	n.mustDel("ctr-a")
	if err := n.status(nil); err != nil {
		t.Fatalf("STATUS after a DEL: %v", err)
	}
	if c := n.mustAdd("ctr-c"); c != a {
		t.Fatalf("ctr-c got %s, want the only free address %s", c, a)
	}
}

// TestBadConfig: an invalid "ipam" object fails ADD and STATUS with code 7
// and a message naming the field.
func TestBadConfig(t *testing.T) {
	n := newIPAMNet(t, nil)
	for _, tc := range []struct {
		field string
		over  map[string]any
	}{
		{"ipam.subnet", map[string]any{"subnet": "10.77.0.0/33"}},
		{"ipam.subnet", map[string]any{"subnet": "not-a-cidr"}},
		{"ipam.subnet", map[string]any{"subnet": "10.77.0.1/24"}},
		{"ipam.gateway", map[string]any{"gateway": "10.78.0.1"}},
		{"ipam.rangeStart", map[string]any{"rangeStart": "10.1.0.5"}},
		{"ipam.rangeEnd", map[string]any{"rangeStart": "10.77.0.20", "rangeEnd": "10.77.0.10"}},
		{"ipam.dataDir", map[string]any{"dataDir": "relative/dir"}},
		{"ipam.lockWait", map[string]any{"lockWait": "forever"}},
		{"ipam.gcGrace", map[string]any{"gcGrace": "-1s"}},
		{"ipam.lockWait", map[string]any{"lockWait": 5}},
	} {
		ctx, cancel := n.ctx()
		_, err := n.cni.AddNetwork(ctx, n.confWith("1.1.0", tc.over), n.rt("ctr-bad"))
		cancel()
		te := wantCode(t, err, types.ErrInvalidNetworkConfig, "ADD with "+tc.field+" bad")
		if !strings.Contains(te.Msg, tc.field) {
			t.Errorf("ADD with %v: message %q does not name %s", tc.over, te.Msg, tc.field)
		}
		te = wantCode(t, n.status(tc.over), types.ErrInvalidNetworkConfig, "STATUS with "+tc.field+" bad")
		if !strings.Contains(te.Msg, tc.field) {
			t.Errorf("STATUS with %v: message %q does not name %s", tc.over, te.Msg, tc.field)
		}
	}
	if st := n.state(); len(st.allocs) != 0 {
		t.Fatalf("bad configs allocated %v", st.allocs)
	}
}

// TestMalformedJSON: input that is not JSON fails every verb with code 6.
// libcni cannot send it, so the plugin is executed through invoke, the
// layer under libcni.
func TestMalformedJSON(t *testing.T) {
	n := newIPAMNet(t, nil)
	exec := nodetest.PluginExec()
	path := filepath.Join(n.plugins, pluginTy)
	bad := []byte(`{"cniVersion":"1.1.0","name":"esbt","type":"esb-ipam","ipam":{"type":"esb-ipam",`)
	for _, cmd := range []string{"ADD", "DEL", "CHECK", "GC", "STATUS"} {
		ctx, cancel := n.ctx()
		args := &invoke.Args{Command: cmd, ContainerID: "ctr-bad", NetNS: n.netns, IfName: ifName, Path: n.plugins}
		var err error
		if cmd == "ADD" {
			_, err = invoke.ExecPluginWithResult(ctx, path, bad, args, exec)
		} else {
			err = invoke.ExecPluginWithoutResult(ctx, path, bad, args, exec)
		}
		cancel()
		_ = wantCode(t, err, types.ErrDecodingFailure, cmd+" with malformed JSON")
	}
}

// TestLockHeld: while another process holds the store's lock, ADD and
// STATUS give up after lockWait with code 11 (try again later); once the
// lock is free ADD works.
func TestLockHeld(t *testing.T) {
	n := newIPAMNet(t, map[string]any{"lockWait": "200ms"})
	n.mustAdd("ctr-warm") // the store exists
	s, err := ipam.OpenBolt(n.dataDir, netName, ipam.BoltOptions{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()
	start := time.Now()
	_, err = n.add(n.cni, "ctr-a")
	took := time.Since(start)
	_ = wantCode(t, err, types.ErrTryAgainLater, "ADD while the store is locked")
	if took < 200*time.Millisecond || took > 10*time.Second {
		t.Errorf("ADD gave up after %s, want about the 200ms lockWait", took)
	}
	_ = wantCode(t, n.status(nil), types.ErrTryAgainLater, "STATUS while the store is locked")
	closed = true
	if err := s.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	n.mustAdd("ctr-a")
	if st := n.state(); len(st.allocs) != 2 {
		t.Fatalf("store holds %v, want ctr-warm and ctr-a", st.allocs)
	}
}
