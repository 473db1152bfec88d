package nattest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// nftList renders a table of a namespace the way the kernel and nft see it.
func nftList(t *testing.T, nsPath string, family, table string) string {
	t.Helper()
	out, err := nodetest.Run(cmdTimeout, nil, "ip", "netns", "exec", filepath.Base(nsPath), "nft", "list", "table", family, table)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// golden compares got with nat/testdata/name: the goldens nat's unit
// tests compare Render with, so the kernel's listing, Render and a
// Manager are held to one text.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "..", "..", "nat", "testdata", name)
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

// TestAntiSpoofTableGolden installs and removes guards through a Manager
// in a fresh namespace and compares the kernel's listing with the golden
// texts; a nat.Fake given the same calls must answer alike and dump the
// same text, so unit tests elsewhere can trust it.
func TestAntiSpoofTableGolden(t *testing.T) {
	node := nstest.NewNS(t)
	ctx := t.Context()
	m, fake := nat.NewManager(node), nat.NewFake()
	both := func(what string, call func(nat.AntiSpoof) error) {
		t.Helper()
		if err := call(m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := call(fake); err != nil {
			t.Fatalf("%s on the fake: %v", what, err)
		}
	}
	sameAsFake := func(listing string) {
		t.Helper()
		if dump := fake.Dump(); dump != listing {
			t.Errorf("the fake's dump differs from the kernel's listing:\n--- fake\n%s\n--- kernel\n%s", dump, listing)
		}
	}
	mac1, _ := net.ParseMAC("0a:58:0a:58:00:02")
	mac2, _ := net.ParseMAC("0a:58:0a:58:00:03")
	g1 := nat.Guard{Port: "esb000000000001", MAC: mac1, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"}
	g2 := nat.Guard{Port: "esb000000000002", MAC: mac2, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")}, Owner: "ctr2/eth0"}
	for _, g := range []nat.Guard{g1, g2} {
		both("add "+g.Port, func(a nat.AntiSpoof) error { return a.AddGuard(ctx, g) })
	}
	first := nftList(t, node.Path(), "bridge", "esb")
	golden(t, "antispoof-two-guards.nft", first)
	sameAsFake(first)

	// Adding the same guard again changes nothing: one copy of the rules,
	// one element each.
	both("add again", func(a nat.AntiSpoof) error { return a.AddGuard(ctx, g1) })
	if again := nftList(t, node.Path(), "bridge", "esb"); again != first {
		t.Errorf("re-adding a guard changed the table:\n%s", again)
	}
	// A flushed chain leaves the ports unguarded; the next ADD's guard
	// rebuilds it.
	if _, err := nodetest.Run(cmdTimeout, nil, "ip", "netns", "exec", filepath.Base(node.Path()), "nft", "flush", "chain", "bridge", "esb", "prerouting"); err != nil {
		t.Fatal(err)
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
	if fgs, err := fake.ListGuards(ctx); err != nil || fmt.Sprint(fgs) != fmt.Sprint(gs) {
		t.Errorf("the fake lists %+v, %v; the kernel %+v", fgs, err, gs)
	}

	// Removing one guard touches only its elements; removing it twice is
	// fine, by listing or by known elements.
	for i := 0; i < 2; i++ {
		both(fmt.Sprint("remove ", i), func(a nat.AntiSpoof) error { return a.RemoveGuard(ctx, g2.Port) })
		both(fmt.Sprint("remove known ", i), func(a nat.AntiSpoof) error { return a.RemoveGuardKnown(ctx, g2) })
	}
	one := nftList(t, node.Path(), "bridge", "esb")
	golden(t, "antispoof-one-guard.nft", one)
	sameAsFake(one)
	for _, a := range []nat.AntiSpoof{m, fake} {
		if _, err := a.FindGuard(ctx, g2.Port); !nat.IsNotFound(err) {
			t.Errorf("FindGuard after remove (%T): %v", a, err)
		}
	}
	if strings.Contains(one, "ctr2") {
		t.Error("elements of the removed guard remain")
	}
	both("remove the last by known elements", func(a nat.AntiSpoof) error { return a.RemoveGuardKnown(ctx, g1) })
	sameAsFake(nftList(t, node.Path(), "bridge", "esb"))
}

func TestRemoveGuardWithoutTable(t *testing.T) {
	m := nat.NewManager(nstest.NewNS(t))
	if err := m.RemoveGuard(t.Context(), "esb000000000009"); err != nil {
		t.Errorf("RemoveGuard with no table: %v", err)
	}
	if gs, err := m.ListGuards(t.Context()); err != nil || len(gs) != 0 {
		t.Errorf("ListGuards with no table = %v, %v", gs, err)
	}
}
