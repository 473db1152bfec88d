package nattest

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

// nftList renders a table of a namespace the way the kernel and nft see it.
func nftList(t *testing.T, nsPath string, family, table string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), "nft", "list", "table", family, table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table %s %s: %v\n%s", family, table, err, out)
	}
	return string(out)
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s (UPDATE_GOLDEN=1 writes it): %v", path, err)
	}
	if got != string(want) {
		t.Errorf("nft listing differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestAntiSpoofTableGolden(t *testing.T) {
	node := nstest.NewNS(t)
	m, ctx := nat.NewManager(node), t.Context()
	mac1, _ := net.ParseMAC("0a:58:0a:58:00:02")
	mac2, _ := net.ParseMAC("0a:58:0a:58:00:03")
	g1 := nat.Guard{Port: "esb000000000001", MAC: mac1, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"}
	g2 := nat.Guard{Port: "esb000000000002", MAC: mac2, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")}, Owner: "ctr2/eth0"}
	for _, g := range []nat.Guard{g1, g2} {
		if err := m.AddGuard(ctx, g); err != nil {
			t.Fatalf("add %s: %v", g.Port, err)
		}
	}
	first := nftList(t, node.Path(), "bridge", "esb")
	golden(t, "antispoof-two-guards.nft", first)

	// Adding the same guard again changes nothing: one copy of the rules,
	// one element each.
	if err := m.AddGuard(ctx, g1); err != nil {
		t.Fatal(err)
	}
	if again := nftList(t, node.Path(), "bridge", "esb"); again != first {
		t.Errorf("re-adding a guard changed the table:\n%s", again)
	}
	// A flushed chain leaves the ports unguarded; the next ADD's guard
	// rebuilds it.
	if out, err := exec.Command("ip", "netns", "exec", filepath.Base(node.Path()), "nft", "flush", "chain", "bridge", "esb", "prerouting").CombinedOutput(); err != nil {
		t.Fatalf("flush chain: %v\n%s", err, out)
	}
	if err := m.AddGuard(ctx, g1); err != nil {
		t.Fatal(err)
	}
	if again := nftList(t, node.Path(), "bridge", "esb"); again != first {
		t.Errorf("a guard added after the chain was flushed did not restore it:\n%s", again)
	}
	gs, err := m.ListGuards(ctx)
	if err != nil || len(gs) != 2 || gs[1].Owner != "ctr2/eth0" || len(gs[1].IPs) != 2 {
		t.Fatalf("ListGuards = %+v, %v", gs, err)
	}

	// Removing one guard touches only its elements; removing it twice is fine.
	for i := 0; i < 2; i++ {
		if err := m.RemoveGuard(ctx, g2.Port); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	golden(t, "antispoof-one-guard.nft", nftList(t, node.Path(), "bridge", "esb"))
	if _, err := m.FindGuard(ctx, g2.Port); !nat.IsNotFound(err) {
		t.Errorf("FindGuard after remove: %v", err)
	}
	if strings.Contains(nftList(t, node.Path(), "bridge", "esb"), "ctr2") {
		t.Error("elements of the removed guard remain")
	}
}

func TestRemoveGuardWithoutTable(t *testing.T) {
	node := nstest.NewNS(t)
	m, ctx := nat.NewManager(node), t.Context()
	if err := m.RemoveGuard(ctx, "esb000000000009"); err != nil {
		t.Errorf("RemoveGuard with no table: %v", err)
	}
	if gs, err := m.ListGuards(ctx); err != nil || len(gs) != 0 {
		t.Errorf("ListGuards with no table = %v, %v", gs, err)
	}
}
