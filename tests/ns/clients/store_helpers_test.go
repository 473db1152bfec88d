package clients

// The esb-ipam store, read through its own API: what it holds for an
// attachment, and whether an address is one the plugins may hand out.

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/ipam"
)

// allocations reads every allocation in the esb-ipam store under dataDir,
// through the store's own API (which takes the store's lock).
func allocations(t *testing.T, dataDir string) map[ipam.AttachmentID]*ipam.Allocation {
	t.Helper()
	s, err := ipam.OpenBolt(dataDir, netName, ipam.BoltOptions{LockWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("open IPAM store in %s: %v", dataDir, err)
	}
	out := map[ipam.AttachmentID]*ipam.Allocation{}
	err = s.View(func(tx ipam.Txn) error {
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			out[a.ID] = a
			return nil
		})
	})
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		t.Fatalf("read IPAM store in %s: %v", dataDir, err)
	}
	return out
}

// wantAllocation fails unless the store holds exactly addr for the
// attachment (containerID, eth0).
func wantAllocation(t *testing.T, dataDir, containerID string, addr netip.Prefix) {
	t.Helper()
	id := ipam.AttachmentID{ContainerID: containerID, IfName: ifName}
	a := allocations(t, dataDir)[id]
	if a == nil {
		t.Fatalf("IPAM store holds no address for %s, want %s", id, addr)
	}
	if len(a.IPs) != 1 || a.IPs[0] != addr {
		t.Fatalf("IPAM store holds %v for %s, want [%s]", a.IPs, id, addr)
	}
}

// wantReleased fails when the store still holds an address for the
// attachment (containerID, eth0).
func wantReleased(t *testing.T, dataDir, containerID string) {
	t.Helper()
	id := ipam.AttachmentID{ContainerID: containerID, IfName: ifName}
	if a := allocations(t, dataDir)[id]; a != nil {
		t.Fatalf("IPAM store still holds %v for %s", a.IPs, id)
	}
}

// wantInSubnet parses an address with prefix length and checks it is a
// host address of the esb subnet.
func wantInSubnet(t *testing.T, what, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%s: parse %q: %v", what, s, err)
	}
	if p.Bits() != subnet.Bits() || !subnet.Contains(p.Addr()) || p.Addr() == netip.MustParseAddr(gateway) {
		t.Fatalf("%s: %s is not a host address of %s", what, p, subnet)
	}
	return p
}
