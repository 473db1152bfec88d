package nat

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

var update = flag.Bool("update", false, "rewrite the render goldens in testdata/")

// goldenForwards are the forwards of tests/ns/nattest's kernel goldens.
const goldenForwards = `forwards:
  - {proto: tcp, port: 9000, to: "127.0.0.1:9000"}
  - {proto: udp, port: 9053, to: "192.0.2.10:53"}
`

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// goldenGuards are the guards of tests/ns/nattest's kernel goldens.
func goldenGuards(t *testing.T) (g1, g2 Guard) {
	g1 = Guard{Port: "esb000000000001", MAC: mustMAC(t, "0a:58:0a:58:00:02"), IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"}
	g2 = Guard{Port: "esb000000000002", MAC: mustMAC(t, "0a:58:0a:58:00:03"),
		IPs: []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")}, Owner: "ctr2/eth0"}
	return g1, g2
}

// checkGolden compares got with testdata/name; -update rewrites the file.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s (go test ./nat -update writes it): %v", path, err)
	}
	if got != string(want) {
		t.Errorf("Render differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestRenderGolden compares Render with the checked-in render goldens. The
// namespace tier (tests/ns/nattest) loads the same renders with nft -f and
// checks the kernel's listing against its own goldens.
func TestRenderGolden(t *testing.T) {
	g1, g2 := goldenGuards(t)
	for _, tc := range []struct {
		name   string
		rules  string // "" for no table ip esb
		guards []Guard
	}{
		{"nat-proxy-only.nft", goldenForwards, nil},
		{"nat-open.nft", "egress: open\n" + goldenForwards, nil},
		{"nat-no-forwards.nft", "{}", nil},
		{"antispoof-two-guards.nft", "", []Guard{g1, g2}},
		{"antispoof-one-guard.nft", "", []Guard{g1}},
		{"antispoof-empty.nft", "", []Guard{}},
		{"ruleset.nft", goldenForwards, []Guard{g1, g2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *conf.NATRules
			if tc.rules != "" {
				r = rules(t, tc.rules)
			}
			checkGolden(t, tc.name, Render(r, tc.guards))
		})
	}
	if got := Render(nil, nil); got != "" {
		t.Errorf("Render(nil, nil) = %q, want nothing", got)
	}
}

// ruleComments returns the rule comments of each chain of a render.
func ruleComments(text string) map[string][]string {
	out := map[string][]string{}
	chain := ""
	re := regexp.MustCompile(`comment "(esb: [^"]*)"$`)
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "chain "); ok {
			chain = strings.TrimSuffix(name, " {")
			out[chain] = []string{}
		}
		if m := re.FindStringSubmatch(line); m != nil {
			out[chain] = append(out[chain], m[1])
		}
	}
	return out
}

// TestRenderMatchesBuild checks that Render and what Apply sends (build)
// have the same chains and, in each, the same rules in the same order;
// the namespace tier checks the expressions against the kernel.
func TestRenderMatchesBuild(t *testing.T) {
	for _, text := range []string{goldenForwards, "egress: open\n" + goldenForwards, "{}"} {
		r := rules(t, text)
		d := build(r)
		want := map[string][]string{}
		for _, c := range d.chains {
			want[c.Name] = []string{}
		}
		for _, rule := range d.rules {
			want[rule.Chain.Name] = append(want[rule.Chain.Name], comment(rule))
		}
		got := ruleComments(Render(r, nil))
		for name, w := range want {
			if !slices.Equal(got[name], w) {
				t.Errorf("%q: chain %s renders rules %q, Apply sends %q", text, name, got[name], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%q: Render has %d chains, Apply sends %d", text, len(got), len(want))
		}
	}
}

func TestFakeApply(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	r := rules(t, goldenForwards)
	if c, exists, err := f.Diff(ctx, r); c != Rebuilt || exists || err != nil {
		t.Errorf("Diff on no table = %v, %v, %v; want rebuilt, false", c, exists, err)
	}
	for i, step := range []struct {
		rules string
		want  Change
	}{
		{goldenForwards, Rebuilt},
		{goldenForwards, Unchanged},
		{"forwards: [{proto: udp, port: 9053, to: \"192.0.2.10:53\"}, {proto: tcp, port: 9000, to: \"127.0.0.1:9000\"}]", Unchanged},
		{"forwards: [{proto: tcp, port: 9000, to: \"127.0.0.1:9001\"}]", ElementsUpdated},
		{"egress: open\nforwards: [{proto: tcp, port: 9000, to: \"127.0.0.1:9001\"}]", Rebuilt},
		{"egress: open\nsubnet: 10.89.0.0/16\ngateway: 10.89.0.1\nforwards: [{proto: tcp, port: 9000, to: \"127.0.0.1:9001\"}]", Rebuilt},
		{goldenForwards, Rebuilt},
	} {
		if c, err := f.Apply(ctx, rules(t, step.rules)); c != step.want || err != nil {
			t.Errorf("step %d: Apply = %v, %v; want %v", i, c, err, step.want)
		}
	}
	if got, want := f.Dump(), Render(r, nil); got != want {
		t.Errorf("Dump after Apply:\n%s\nwant Render's\n%s", got, want)
	}
	cs, err := f.Counters(ctx)
	if err != nil || len(cs) != 2 || cs[0].Forward.Proto != "tcp" || cs[1].Forward.Port != 9053 {
		t.Errorf("Counters = %+v, %v", cs, err)
	}
	for i := 0; i < 2; i++ {
		if err := f.Delete(ctx, "esb-cni0"); err != nil {
			t.Errorf("Delete %d: %v", i, err)
		}
	}
	if cs, err := f.Counters(ctx); len(cs) != 0 || err != nil || f.Dump() != "" {
		t.Errorf("after Delete: Counters %v, %v; Dump %q", cs, err, f.Dump())
	}
}

func TestFakeWatch(t *testing.T) {
	f := NewFake()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 1)
	done := make(chan error)
	go func() { done <- f.Watch(ctx, rules(t, goldenForwards), 0, func(e Event) { events <- e }) }()
	if e := <-events; e.Trigger != "start" || e.Change != Rebuilt || e.Err != nil {
		t.Errorf("first event %+v, want the start pass rebuilding the table", e)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	if got, want := f.Dump(), Render(rules(t, goldenForwards), nil); got != want {
		t.Errorf("Dump after Watch:\n%s\nwant\n%s", got, want)
	}
}

func TestFakeGuards(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	g1, g2 := goldenGuards(t)
	if err := f.RemoveGuard(ctx, g2.Port); err != nil {
		t.Errorf("RemoveGuard with no table: %v", err)
	}
	if gs, err := f.ListGuards(ctx); gs != nil || err != nil {
		t.Errorf("ListGuards with no table = %v, %v", gs, err)
	}
	for _, g := range []Guard{g1, g2, g1} {
		if err := f.AddGuard(ctx, g); err != nil {
			t.Fatalf("AddGuard %s: %v", g.Port, err)
		}
	}
	if got, want := f.Dump(), Render(nil, []Guard{g1, g2}); got != want {
		t.Errorf("Dump:\n%s\nwant\n%s", got, want)
	}
	gs, err := f.ListGuards(ctx)
	if err != nil || len(gs) != 2 || gs[1].Owner != "ctr2/eth0" || len(gs[1].IPs) != 2 || !gs[1].Active || gs[1].MAC.String() != g2.MAC.String() {
		t.Fatalf("ListGuards = %+v, %v", gs, err)
	}
	for i := 0; i < 2; i++ {
		if err := f.RemoveGuardKnown(ctx, g2); err != nil {
			t.Fatalf("RemoveGuardKnown %d: %v", i, err)
		}
	}
	if got, want := f.Dump(), Render(nil, []Guard{g1}); got != want {
		t.Errorf("Dump after removing %s:\n%s\nwant\n%s", g2.Port, got, want)
	}
	if _, err := f.FindGuard(ctx, g2.Port); !IsNotFound(err) {
		t.Errorf("FindGuard of a removed guard: %v", err)
	}
	// Known elements that are not all there: the port's are removed.
	stale := g1
	stale.IPs = []netip.Addr{netip.MustParseAddr("10.88.0.99")}
	if err := f.RemoveGuardKnown(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Dump(), Render(nil, []Guard{}); got != want {
		t.Errorf("Dump after removing the last guard:\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []Guard{{Port: "esb1", MAC: g1.MAC[:4]}, {Port: "", MAC: g1.MAC}, {Port: "esb0123456789abcd", MAC: g1.MAC}} {
		if err := f.AddGuard(ctx, bad); err == nil {
			t.Errorf("AddGuard(%+v) took a bad guard", bad)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.AddGuard(cancelled, g1); !errors.Is(err, context.Canceled) {
		t.Errorf("AddGuard with an ended context: %v", err)
	}
}
