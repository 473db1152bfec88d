package nattest

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// Two stacks of one node: esb on 10.88.0.0/16 and esb2 on 10.89.0.0/16,
// each keeping the other's subnet out.
const esb2Rules = "bridge: esb2-cni0\nsubnet: 10.89.0.0/16\ngateway: 10.89.0.1\n" + goldenForwards

func stackRules(t *testing.T, text, other string) *conf.NATRules {
	t.Helper()
	r := rules(t, text)
	r.Others = []netip.Prefix{netip.MustParsePrefix(other)}
	return r
}

// esb2Node is n's second stack: the same namespace, a manager of table
// ip/bridge esb2.
func esb2Node(n *node) *node {
	return &node{Node: n.Node, t: n.t, mgr: nat.NewManagerFor(n.NS, "esb2")}
}

// TestTwoStacksSideBySide applies both stacks' tables in one namespace:
// the kernel holds each as its render says, neither apply disturbs the
// other (both stay Unchanged), guards go to each stack's own table, and
// `esbctl nat delete -network esb` leaves esb2 whole.
func TestTwoStacksSideBySide(t *testing.T) {
	a := newNode(t)
	b := esb2Node(a)
	ra := stackRules(t, goldenForwards, "10.89.0.0/16")
	rb := stackRules(t, esb2Rules, "10.88.0.0/16")
	a.mustApply(ra, nat.Rebuilt)
	b.mustApply(rb, nat.Rebuilt)
	a.mustApply(ra, nat.Unchanged)
	b.mustApply(rb, nat.Unchanged)

	mac, _ := net.ParseMAC("0a:58:0a:59:00:02")
	g := nat.Guard{Port: "esb000000000009", MAC: mac, IPs: []netip.Addr{netip.MustParseAddr("10.89.0.2")}, Owner: "ctr9/eth0"}
	if err := b.mgr.AddGuard(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if gs, err := a.mgr.ListGuards(t.Context()); err != nil || len(gs) != 0 {
		t.Errorf("esb's guards = %v, %v; want none (the guard is esb2's)", gs, err)
	}

	// The kernel's listing of each table is what its render loads as.
	for _, tc := range []struct {
		table string
		r     *conf.NATRules
	}{{"esb", ra}, {"esb2", rb}} {
		fresh := nstest.NewNS(t)
		loadNFT(t, fresh.Path(), nat.RenderTable(tc.table, tc.r, nil))
		if got, want := nftList(t, a.NS.Path(), "ip", tc.table), nftList(t, fresh.Path(), "ip", tc.table); got != want {
			t.Errorf("table ip %s:\n%s\nwant (its render)\n%s", tc.table, got, want)
		}
	}

	bin := buildEsbctl(t)
	if out, errOut, code := a.esbctl(bin, "nat", "delete", "-network", "esb"); code != 0 || out != "table ip esb deleted\n" {
		t.Fatalf("esbctl nat delete -network esb: %d %q %q", code, out, errOut)
	}
	if a.hasESBTable() {
		t.Error("table ip esb is still there")
	}
	if c, exists, err := b.mgr.Diff(t.Context(), rb); c != nat.Unchanged || !exists || err != nil {
		t.Errorf("esb2 after deleting esb: %v, %v, %v; want unchanged", c, exists, err)
	}
	if _, err := b.mgr.FindGuard(t.Context(), g.Port); err != nil {
		t.Errorf("esb2's guard after deleting esb: %v", err)
	}
	if out, errOut, code := a.esbctl(bin, "nat", "show", "-network", "esb2", "-o", "json"); code != 0 || !strings.Contains(out, "9053") {
		t.Errorf("esbctl nat show -network esb2: %d %q %q", code, out, errOut)
	}
}

// TestFlushRulesetRepairedByBothStacks: `nft flush ruleset` takes both
// stacks' tables; each stack's Watch restores its own.
func TestFlushRulesetRepairedByBothStacks(t *testing.T) {
	a := newNode(t)
	b := esb2Node(a)
	ra := stackRules(t, goldenForwards, "10.89.0.0/16")
	rb := stackRules(t, esb2Rules, "10.88.0.0/16")
	evA, _ := a.watch(ra, time.Minute)
	evB, _ := b.watch(rb, time.Minute)
	if out, err := exec.Command("ip", "netns", "exec", a.Name, "nft", "flush", "ruleset").CombinedOutput(); err != nil {
		t.Fatalf("nft flush ruleset: %v\n%s", err, out)
	}
	for _, w := range []struct {
		name   string
		events <-chan nat.Event
		n      *node
		r      *conf.NATRules
	}{{"esb", evA, a, ra}, {"esb2", evB, b, rb}} {
		select {
		case e := <-w.events:
			if e.Err != nil || e.Change != nat.Rebuilt {
				t.Errorf("%s: repair = %+v, want a rebuild", w.name, e)
			}
			t.Logf("table ip %s rebuilt %s after the flush's notification", w.name, e.Took)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no repair within 10s of the flush", w.name)
		}
		if c, exists, err := w.n.mgr.Diff(t.Context(), w.r); c != nat.Unchanged || !exists || err != nil {
			t.Errorf("%s after the repair: %v, %v, %v", w.name, c, exists, err)
		}
	}
}
