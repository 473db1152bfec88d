package benchipam

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// These tests are quick and need no privileges: they check the fill
// helpers and the summary arithmetic the benchmarks rely on.

func testIPAM(t *testing.T, dir string) *conf.IPAM {
	t.Helper()
	nc, err := conf.ParseIPAMNetConf(netConf(conf.IPAMType, dir))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return nc.IPAM
}

func TestFillOrderSkipsReserved(t *testing.T) {
	r := testIPAM(t, "/x").V4
	got, err := FillOrder(r, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.88.0.2"), netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("10.88.0.4")}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("FillOrder = %v, want %v", got, want)
		}
	}
	all, err := FillOrder(r, 65533)
	if err != nil {
		t.Fatalf("the /16 should hold 65,533 addresses: %v", err)
	}
	if last := all[len(all)-1]; last != netip.MustParseAddr("10.88.255.254") {
		t.Fatalf("last usable address %s, want 10.88.255.254", last)
	}
	if _, err := FillOrder(r, 65534); err == nil {
		t.Fatal("FillOrder past the range's end did not fail")
	}
}

func TestFillESBMatchesFillOrder(t *testing.T) {
	cfg := testIPAM(t, t.TempDir())
	ids := FillIDs(300, ifName)
	got, err := FillESB(cfg, ids)
	if err != nil {
		t.Fatal(err)
	}
	want, err := FillOrder(cfg.V4, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("esb-ipam allocation %d is %s, want %s", i, got[i], want[i])
		}
	}
	used, err := ESBUsage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if used != uint64(len(ids)) {
		t.Fatalf("usage %d after filling %d", used, len(ids))
	}
}

// TestFillHostLocalLayout pins the layout of host-local v1.10.0's disk
// backend (backend/disk/backend.go: Reserve, LastReservedIP, lock.go).
func TestFillHostLocalLayout(t *testing.T) {
	dataDir := t.TempDir()
	ids := FillIDs(3, ifName)
	addrs, err := FillOrder(testIPAM(t, dataDir).V4, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if err := FillHostLocal(dataDir, network, ids, addrs); err != nil {
		t.Fatal(err)
	}
	dir := HostLocalDir(dataDir, network)
	for i, a := range addrs {
		b, err := os.ReadFile(filepath.Join(dir, a.String()))
		if err != nil {
			t.Fatal(err)
		}
		if want := ids[i].ContainerID + "\r\n" + ifName; string(b) != want {
			t.Errorf("reservation %s holds %q, want %q", a, b, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "last_reserved_ip.0"))
	if err != nil || string(b) != "10.88.0.4" {
		t.Errorf("last_reserved_ip.0 = %q, %v; want 10.88.0.4", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		t.Errorf("lock file: %v", err)
	}
	if n, err := HostLocalUsage(dataDir, network); err != nil || n != len(ids) {
		t.Errorf("HostLocalUsage = %d, %v; want %d", n, err, len(ids))
	}
	if len(ids[0].ContainerID) != 64 {
		t.Errorf("container ID %q is not 64 hex digits like a runtime's", ids[0].ContainerID)
	}
}

func TestNetConfDiffersOnlyInTypeAndDir(t *testing.T) {
	esb, hl := string(netConf("esb-ipam", "/d")), string(netConf("host-local", "/d"))
	if strings.Replace(esb, `"type":"esb-ipam"`, `"type":"host-local"`, 1) != hl {
		t.Fatalf("configurations differ beyond the IPAM type:\n%s\n%s", esb, hl)
	}
}

func TestTargets(t *testing.T) {
	sum := &Summary{Title: "t"}
	add := func(plugin string, fill int, addDel ...int) {
		c := &Cell{Plugin: plugin, Fill: fill}
		for _, d := range benchstat.FromMs(addDel...) {
			c.Record(d/2, d-d/2)
		}
		sum.Cells = append(sum.Cells, c)
	}
	add("esb", 0, 30, 31, 29)
	add("esb", 60000, 33, 35, 34)
	add("hl", 60000, 4000, 4100)
	ts := sum.Targets("esb", "hl", 60000)
	if !ts[0].Met() || !ts[1].Met() {
		t.Fatalf("targets %+v should be met", ts)
	}
	if ts[0].Measured < 1.13 || ts[0].Measured > 1.14 {
		t.Fatalf("growth ratio %v, want 34/30", ts[0].Measured)
	}
	missing := sum.Targets("esb", "nope", 60000)
	if missing[1].Known || missing[1].Met() {
		t.Fatalf("a target with a missing cell must be unknown and not met: %+v", missing[1])
	}
	var out bytes.Buffer
	if err := sum.Print(&out, ts); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| esb | 60000 | 3 | 34.000 |", "| met |", "| 1/"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
