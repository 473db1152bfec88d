package nattest

import (
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// loadNFT loads text with nft -f into the namespace at nsPath.
func loadNFT(t *testing.T, nsPath, text string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f of the render: %v\n%s\n--- render\n%s", err, out, text)
	}
}

// TestRenderLoadsAsGolden loads nat.Render's output with nft -f into a
// fresh namespace and compares the kernel's listing with the goldens that
// Apply and AddGuard produce: the render goldens the unit tests of package
// nat compare without root hold what the kernel holds.
func TestRenderLoadsAsGolden(t *testing.T) {
	mac1, _ := net.ParseMAC("0a:58:0a:58:00:02")
	mac2, _ := net.ParseMAC("0a:58:0a:58:00:03")
	g1 := nat.Guard{Port: "esb000000000001", MAC: mac1, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"}
	g2 := nat.Guard{Port: "esb000000000002", MAC: mac2, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")}, Owner: "ctr2/eth0"}
	for _, tc := range []struct {
		golden string
		rules  string // "" for no table ip esb
		guards []nat.Guard
	}{
		{"nat-proxy-only.nft", goldenForwards, nil},
		{"nat-open.nft", "egress: open\n" + goldenForwards, nil},
		{"antispoof-two-guards.nft", "", []nat.Guard{g1, g2}},
		{"antispoof-one-guard.nft", "", []nat.Guard{g1}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			node := nstest.NewNS(t)
			var r *conf.NATRules
			family := "bridge"
			if tc.rules != "" {
				r, family = rules(t, tc.rules), "ip"
			}
			loadNFT(t, node.Path(), nat.Render(r, tc.guards))
			golden(t, tc.golden, nftList(t, node.Path(), family, nat.TableName))
		})
	}
}

// TestRenderWholeRuleset loads both tables at once and checks that the
// namespace then holds exactly those two: what a Manager and the rendered
// text make are the same ruleset.
func TestRenderWholeRuleset(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:58:00:02")
	g := nat.Guard{Port: "esb000000000001", MAC: mac, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"}
	r := rules(t, goldenForwards)

	rendered := nstest.NewNS(t)
	loadNFT(t, rendered.Path(), nat.Render(r, []nat.Guard{g}))

	applied := nstest.NewNS(t)
	m := nat.NewManager(applied)
	if _, err := m.Apply(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := m.AddGuard(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	ruleset := func(ns string) string {
		out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns), "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
		return string(out)
	}
	if got, want := ruleset(rendered.Path()), ruleset(applied.Path()); got != want {
		t.Errorf("the rendered ruleset differs from the applied one:\n--- rendered\n%s\n--- applied\n%s", got, want)
	}
	tables := 0
	for _, line := range strings.Split(ruleset(rendered.Path()), "\n") {
		if strings.HasPrefix(line, "table ") {
			tables++
		}
	}
	if tables != 2 {
		t.Errorf("want the two tables esb only, got:\n%s", ruleset(rendered.Path()))
	}
}
