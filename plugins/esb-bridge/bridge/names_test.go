package bridge

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestIsVethName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{VethName("c1", "eth0"), true}, {"esb0123456789ab", true},
		{"esb0123456789aB", false}, {"esb0123456789a", false}, {"esb0123456789abc", false},
		{"esa0123456789ab", false}, {"esb-cni0", false}, {"", false},
	} {
		if got := isVethName(tc.name); got != tc.want {
			t.Errorf("isVethName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAliasRoundTrip(t *testing.T) {
	created := time.Unix(1764200000, 0)
	ips := []netip.Addr{netip.MustParseAddr("10.88.3.4"), netip.MustParseAddr("fd00::3:4")}
	alias := vethAlias("c1", "eth0", created, ips)
	if len(alias) > 255 {
		t.Fatalf("alias %q longer than IFALIASZ", alias)
	}
	r, ok := parseAlias(alias)
	if !ok || r.containerID != "c1" || r.ifName != "eth0" || !r.created.Equal(created) || !slices.Equal(r.ips, ips) {
		t.Errorf("parseAlias(%q) = %+v, %v", alias, r, ok)
	}
	// An earlier version's alias has no addresses; it still names the
	// attachment for GC, and DEL falls back to the IPAM allocation.
	r, ok = parseAlias("esb-bridge 1764200000 c2 net1")
	if !ok || r.containerID != "c2" || r.ifName != "net1" || r.ips != nil {
		t.Errorf("old alias: %+v, %v", r, ok)
	}
	if g := guardOf("esb0", nil); g != nil {
		t.Errorf("guardOf(nil link) = %+v", g)
	}
	for _, bad := range []string{"", "esb-bridge", "esb-bridge x c1 eth0", "esb-bridge 1 c1 eth0 10.88.0.300", "esb-bridge 1 c1 eth0 10.88.0.2 extra", "other 1 c1 eth0"} {
		if _, ok := parseAlias(bad); ok {
			t.Errorf("parseAlias(%q) accepted", bad)
		}
	}
	g := knownGuard("esb0", ips)
	if g == nil || g.MAC.String() != "0a:58:0a:58:03:04" || len(g.IPs) != 2 {
		t.Errorf("knownGuard = %+v", g)
	}
	if g := knownGuard("esb0", ips[1:]); g != nil {
		t.Errorf("knownGuard without IPv4 = %+v, want nil (the MAC derives from IPv4)", g)
	}
}
