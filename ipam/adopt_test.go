package ipam

import (
	"net/netip"
	"testing"
	"time"
)

// TestAddSeededAfterWipe: a store made anew takes in the attachments in
// use before its first allocation (and only then), so a wiped store never
// hands out a live attachment's address; a clashing seed is skipped.
func TestAddSeededAfterWipe(t *testing.T) {
	cfg := mustConf(t, `{"type":"esb-ipam","dataDir":"`+t.TempDir()+`","rangeStart":"10.88.0.2","rangeEnd":"10.88.0.4"}`)
	now := func() time.Time { return time.Unix(1000, 0) }
	live := []*Allocation{
		{ID: id(1), IPs: []netip.Prefix{netip.MustParsePrefix("10.88.0.2/16")}},
		{ID: id(2), IPs: []netip.Prefix{netip.MustParsePrefix("10.88.0.2/16")}}, // clashes with c1: skipped
		{ID: id(3), IPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")}}, // outside the range: skipped
	}
	seeds := 0
	seed := func() ([]*Allocation, error) { seeds++; return live, nil }
	a, existed, err := AddSeeded(cfg, "boot", id(9), now, seed)
	if err != nil || existed {
		t.Fatalf("AddSeeded = %v, %v, %v", a, existed, err)
	}
	if got := a.IPs[0].Addr().String(); got == "10.88.0.2" {
		t.Errorf("the new attachment got %s, which live attachment c1 holds", got)
	}
	b, _, err := AddSeeded(cfg, "boot", id(10), now, seed)
	if err != nil {
		t.Fatal(err)
	}
	if seeds != 1 {
		t.Errorf("seed ran %d times, want once (only on the new store)", seeds)
	}
	all, err := List(cfg, "boot")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, x := range all {
		got[x.ID.String()] = x.IPs[0].Addr().String()
	}
	want := map[string]string{"c1/eth0": "10.88.0.2", "c9/eth0": a.IPs[0].Addr().String(), "c10/eth0": b.IPs[0].Addr().String()}
	if len(got) != len(want) || got["c1/eth0"] != "10.88.0.2" || got["c9/eth0"] == got["c10/eth0"] {
		t.Errorf("allocations %v, want %v", got, want)
	}
	// The range is now full: c1's seeded address really is taken.
	if _, _, err := AddSeeded(cfg, "boot", id(11), now, seed); !IsExhausted(err) {
		t.Errorf("a fourth allocation in a 3-address range: %v, want exhausted", err)
	}
	// Readopt gives a lost allocation back, and never a taken address.
	if err := Del(cfg, "boot", id(10)); err != nil {
		t.Fatal(err)
	}
	back, err := Readopt(cfg, "boot", []*Allocation{
		{ID: id(10), IPs: b.IPs},
		{ID: id(12), IPs: []netip.Prefix{netip.MustParsePrefix("10.88.0.2/16")}},
	})
	if err != nil || len(back) != 1 || back[0].ID != id(10) {
		t.Errorf("Readopt = %v, %v; want c10 back only", back, err)
	}
}
