package conf

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidateNetworkName(t *testing.T) {
	for _, ok := range []string{"esb", "a", "esb-2", "Net_1.x", "0", strings.Repeat("n", 128)} {
		if err := ValidateNetworkName("name", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-esb", ".esb", "_esb", "../etc", "a/b", "es b", "é", "a\x00", strings.Repeat("n", 129)} {
		err := ValidateNetworkName("name", bad)
		if err == nil || !IsFieldError(err) || !strings.HasPrefix(err.Error(), "invalid name") {
			t.Errorf("%q: got %v, want a field error naming \"name\"", bad, err)
		}
	}
}

func TestIsVethName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{VethName("c1", "eth0"), true}, {"esb0123456789ab", true},
		{"esb0123456789aB", false}, {"esb0123456789a", false}, {"esb0123456789abc", false},
		{"esa0123456789ab", false}, {"esb-cni0", false}, {"", false},
	} {
		if got := IsVethName(tc.name); got != tc.want {
			t.Errorf("IsVethName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The name is part of the contract: DEL and GC of a newer plugin must
	// find the veth an older one made.
	if got := VethName("c1", "eth0"); got != "esbd72e032fedd9" {
		t.Errorf("VethName = %q", got)
	}
}

func TestVethAliasRoundTrip(t *testing.T) {
	created := time.Unix(1764200000, 0)
	ips := []netip.Addr{netip.MustParseAddr("10.88.3.4"), netip.MustParseAddr("fd00::3:4")}
	alias := VethAlias{ContainerID: "c1", IfName: "eth0", Created: created, IPs: ips}.String()
	if alias != "esb-bridge 1764200000 c1 eth0 10.88.3.4,fd00::3:4" {
		t.Errorf("alias %q", alias)
	}
	if len(alias) > 255 {
		t.Fatalf("alias %q longer than IFALIASZ", alias)
	}
	r, ok := ParseVethAlias(alias)
	if !ok || r.ContainerID != "c1" || r.IfName != "eth0" || !r.Created.Equal(created) || !slices.Equal(r.IPs, ips) {
		t.Errorf("ParseVethAlias(%q) = %+v, %v", alias, r, ok)
	}
	// An earlier version's alias has no addresses; it still names the
	// attachment for GC, and DEL falls back to the IPAM allocation.
	r, ok = ParseVethAlias("esb-bridge 1764200000 c2 net1")
	if !ok || r.ContainerID != "c2" || r.IfName != "net1" || r.IPs != nil {
		t.Errorf("old alias: %+v, %v", r, ok)
	}
	for _, bad := range []string{"", "esb-bridge", "esb-bridge x c1 eth0", "esb-bridge 1 c1 eth0 10.88.0.300", "esb-bridge 1 c1 eth0 10.88.0.2 extra", "other 1 c1 eth0"} {
		if _, ok := ParseVethAlias(bad); ok {
			t.Errorf("ParseVethAlias(%q) accepted", bad)
		}
	}
}
