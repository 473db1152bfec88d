package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
)

func resultWith(ips ...string) *current.Result {
	res := &current.Result{}
	for _, s := range ips {
		p := netip.MustParsePrefix(s)
		res.IPs = append(res.IPs, &current.IPConfig{Address: net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
	}
	return res
}

// TestCheckGuardDrift runs CHECK's guard step on a nat.Fake: each way the
// guard can differ from the attachment is a drift error naming it.
func TestCheckGuardDrift(t *testing.T) {
	ctx := context.Background()
	const port = "esb000000000001"
	ip := netip.MustParseAddr("10.88.0.2")
	mac := MACFor(ip)
	prev := resultWith("10.88.0.2/16")
	fake := nat.NewFake()
	p := &Plugin{Guards: fake}

	wantDrift := func(what string) {
		t.Helper()
		err := p.checkGuard(port, mac, prev)
		var e *types.Error
		if !errors.As(err, &e) || e.Code != conf.CodeDrift {
			t.Errorf("%s: checkGuard = %v, want a drift error (code %d)", what, err, conf.CodeDrift)
		}
	}
	wantDrift("no guard")
	if err := fake.AddGuard(ctx, nat.Guard{Port: port, MAC: mac, IPs: []netip.Addr{netip.MustParseAddr("10.88.0.9")}}); err != nil {
		t.Fatal(err)
	}
	wantDrift("another address")
	if err := fake.RemoveGuard(ctx, port); err != nil {
		t.Fatal(err)
	}
	if err := fake.AddGuard(ctx, nat.Guard{Port: port, MAC: MACFor(netip.MustParseAddr("10.88.0.9")), IPs: []netip.Addr{ip}}); err != nil {
		t.Fatal(err)
	}
	wantDrift("another MAC")
	if err := fake.RemoveGuard(ctx, port); err != nil {
		t.Fatal(err)
	}
	if err := fake.AddGuard(ctx, nat.Guard{Port: port, MAC: mac, IPs: []netip.Addr{ip}, Owner: "ctr/eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := p.checkGuard(port, mac, prev); err != nil {
		t.Errorf("checkGuard of a matching guard: %v", err)
	}
	if calls := fake.Calls(); !slices.Contains(calls, "FindGuard "+port) {
		t.Errorf("checkGuard did not ask for the guard: %q", calls)
	}
}

// TestGuardedAllocations reads allocations back from the guards on a
// nat.Fake: owned, active guards inside the configured range only.
func TestGuardedAllocations(t *testing.T) {
	ctx := context.Background()
	nc, err := conf.ParseIPAMNetConf([]byte(`{"cniVersion":"1.1.0","name":"esb","ipam":{"type":"esb-ipam"}}`))
	if err != nil {
		t.Fatal(err)
	}
	fake := nat.NewFake()
	for _, g := range []nat.Guard{
		{Port: "esb000000000001", IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}, Owner: "ctr1/eth0"},
		{Port: "esb000000000002", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, Owner: "ctr2/eth0"}, // outside the range
		{Port: "esb000000000003", IPs: []netip.Addr{netip.MustParseAddr("10.88.0.4")}},                     // no owner
	} {
		g.MAC = MACFor(g.IPs[0])
		if err := fake.AddGuard(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	p := &Plugin{Guards: fake}
	as, err := p.guardedAllocations(nc.IPAM, p.now(), nil)
	if err != nil || len(as) != 1 || as[0].ID != (ipam.AttachmentID{ContainerID: "ctr1", IfName: "eth0"}) ||
		len(as[0].IPs) != 1 || as[0].IPs[0] != netip.MustParsePrefix("10.88.0.2/16") {
		t.Errorf("guardedAllocations = %+v, %v; want ctr1/eth0 with 10.88.0.2/16 only", as, err)
	}
	only := map[ipam.AttachmentID]bool{{ContainerID: "other", IfName: "eth0"}: true}
	if as, err := p.guardedAllocations(nc.IPAM, p.now(), only); err != nil || len(as) != 0 {
		t.Errorf("guardedAllocations of other attachments = %+v, %v; want none", as, err)
	}
}
