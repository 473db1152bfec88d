package bridge

import (
	"net/netip"
	"testing"
)

func TestGuardOf(t *testing.T) {
	ips := []netip.Addr{netip.MustParseAddr("10.88.3.4"), netip.MustParseAddr("fd00::3:4")}
	if g := guardOf("esb0", nil); g != nil {
		t.Errorf("guardOf(nil link) = %+v", g)
	}
	g := knownGuard("esb0", ips)
	if g == nil || g.MAC.String() != "0a:58:0a:58:03:04" || len(g.IPs) != 2 {
		t.Errorf("knownGuard = %+v", g)
	}
	if g := knownGuard("esb0", ips[1:]); g != nil {
		t.Errorf("knownGuard without IPv4 = %+v, want nil (the MAC derives from IPv4)", g)
	}
}
