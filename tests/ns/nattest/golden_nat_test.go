package nattest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
)

const goldenForwards = `forwards:
  - {proto: tcp, port: 9000, to: "127.0.0.1:9000"}
  - {proto: udp, port: 9053, to: "192.0.2.10:53"}
`

// TestNATTableGolden compares table ip esb, as the kernel renders it, with
// the checked-in text for each egress policy, and checks that Apply is
// idempotent and Delete complete.
func TestNATTableGolden(t *testing.T) {
	for _, tc := range []struct{ name, rules, golden string }{
		{"proxy-only", goldenForwards, "nat-proxy-only.nft"},
		{"open", "egress: open\n" + goldenForwards, "nat-open.nft"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			r := rules(t, tc.rules)
			n.mustApply(r, nat.Rebuilt)
			first := n.list("ip", nat.TableName)
			golden(t, tc.golden, first)

			// A fake given the same rules answers alike and dumps the
			// kernel's text.
			fake := nat.NewFake()
			for _, want := range []nat.Change{nat.Rebuilt, nat.Unchanged} {
				if c, err := fake.Apply(t.Context(), r); c != want || err != nil {
					t.Errorf("fake Apply = %v, %v; want %v", c, err, want)
				}
			}
			if dump := fake.Dump(); dump != first {
				t.Errorf("the fake's dump differs from the kernel's listing:\n--- fake\n%s\n--- kernel\n%s", dump, first)
			}

			// The same rules again: nothing sent, the same text.
			n.mustApply(r, nat.Unchanged)
			if again := n.list("ip", nat.TableName); again != first {
				t.Errorf("re-applying changed the table:\n--- before\n%s\n--- after\n%s", first, again)
			}

			if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if n.hasESBTable() {
				t.Errorf("table ip esb remains after Delete:\n%s", n.inNS("nft", "list", "ruleset"))
			}
			if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
				t.Errorf("Delete with no table: %v", err)
			}
			if cs, err := n.mgr.Counters(context.Background()); err != nil || len(cs) != 0 {
				t.Errorf("Counters with no table = %v, %v; want none", cs, err)
			}
		})
	}
}

// forwardsOf renders Counters as "proto/port->to=packets" lines.
func forwardsOf(t *testing.T, n *node) string {
	t.Helper()
	cs, err := n.mgr.Counters(context.Background())
	if err != nil {
		t.Fatalf("counters: %v", err)
	}
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s/%d->%s=%d\n", c.Forward.Proto, c.Forward.Port, c.Forward.To, c.Packets)
	}
	return b.String()
}

// TestApplyKeepsCounters checks that re-applying the same rules keeps the
// forwards' counters (nothing is sent), and that changing one forward's
// target updates elements in place, keeping the other forwards' counters.
func TestApplyKeepsCounters(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	const target, moved = nodeAddr + ":19000", nodeAddr + ":19002"
	listenTCP(t, n.NS, target)
	listenTCP(t, n.NS, moved)
	text := func(tcpTo, udpTo string) string {
		return fmt.Sprintf("forwards:\n  - {proto: tcp, port: 9000, to: %q}\n  - {proto: udp, port: 9053, to: %q}\n", tcpTo, udpTo)
	}
	r := rules(t, text(target, nodeAddr+":53"))
	n.mustApply(r, nat.Rebuilt)

	// One connection: the DNAT chain sees its first packet only.
	w.expectReach("through the forward", gatewayIP+":9000", w.IP)
	want := fmt.Sprintf("tcp/9000->%s=1\nudp/9053->%s:53=0\n", target, nodeAddr)
	if got := forwardsOf(t, n); got != want {
		t.Fatalf("counters after one connection:\n%s\nwant\n%s", got, want)
	}
	before := n.list("ip", nat.TableName)
	n.mustApply(r, nat.Unchanged)
	if got := forwardsOf(t, n); got != want {
		t.Errorf("counters after re-applying the same rules:\n%s\nwant\n%s", got, want)
	}
	if after := n.list("ip", nat.TableName); after != before {
		t.Errorf("re-applying changed the table:\n--- before\n%s\n--- after\n%s", before, after)
	}

	// One forward's target changes: elements updated in place; the other
	// forward keeps its counter.
	n.mustApply(rules(t, text(target, nodeAddr+":5353")), nat.ElementsUpdated)
	want = fmt.Sprintf("tcp/9000->%s=1\nudp/9053->%s:5353=0\n", target, nodeAddr)
	if got := forwardsOf(t, n); got != want {
		t.Errorf("counters after moving the udp forward:\n%s\nwant\n%s", got, want)
	}

	// The counted forward itself moves: it starts again from zero and its
	// connections go to the new target.
	r = rules(t, text(moved, nodeAddr+":5353"))
	n.mustApply(r, nat.ElementsUpdated)
	n.mustApply(r, nat.Unchanged)
	if g, err := w.greeting(gatewayIP+":9000", dialTimeout); err != nil || g != "from "+w.IP.String()+" to "+moved {
		t.Errorf("through the moved forward: greeting %q, %v; want one from %s", g, err, moved)
	}
	want = fmt.Sprintf("tcp/9000->%s=1\nudp/9053->%s:5353=0\n", moved, nodeAddr)
	if got := forwardsOf(t, n); got != want {
		t.Errorf("counters after moving the tcp forward:\n%s\nwant\n%s", got, want)
	}
	cs, err := n.mgr.Counters(context.Background())
	if err != nil || len(cs) != 2 || cs[0].Forward != (conf.Forward{Proto: "tcp", Port: 9000, To: netip.MustParseAddrPort(moved)}) {
		t.Errorf("Counters = %+v, %v", cs, err)
	}
}

// guardToAccept turns the loopback guard into an accept, keeping its
// comment, as an nft command.
func guardToAccept(n *node) []string {
	h := n.esbRule("input", "loopback guard").Handle
	return []string{"replace", "rule", "ip", nat.TableName, "input", "handle", fmt.Sprint(h),
		"ip", "daddr", "127.0.0.0/8", "accept", "comment", `"esb: loopback guard: 127.0.0.0/8 only through a forward"`}
}

// TestApplyRestoresEditedTable edits table ip esb in ways that keep every
// rule's comment and checks that Apply restores the table (the nat
// contract of docs/architecture.md: Watch restores a flushed or edited
// table).
func TestApplyRestoresEditedTable(t *testing.T) {
	for _, edit := range []struct {
		what string
		nft  func(n *node) []string
	}{
		{"loopback guard turned into accept", guardToAccept},
		{"proxy-only drop turned into accept", func(n *node) []string {
			h := n.esbRule("forward", "egress proxy-only").Handle
			return []string{"replace", "rule", "ip", nat.TableName, "forward", "handle", fmt.Sprint(h),
				"accept", "comment", `"esb: egress proxy-only"`}
		}},
		{"input policy drop", func(*node) []string {
			return []string{"add", "chain", "ip", nat.TableName, "input", "{ type filter hook input priority filter - 5; policy drop; }"}
		}},
	} {
		t.Run(edit.what, func(t *testing.T) {
			n := newNode(t)
			r := rules(t, goldenForwards)
			n.mustApply(r, nat.Rebuilt)
			want := n.list("ip", nat.TableName)
			n.inNS(append([]string{"nft"}, edit.nft(n)...)...)
			if n.list("ip", nat.TableName) == want {
				t.Fatal("the edit changed nothing")
			}
			n.mustApply(r, nat.Rebuilt)
			if got := n.list("ip", nat.TableName); got != want {
				t.Errorf("Apply left the edit in place:\n%s", got)
			}
		})
	}
}
