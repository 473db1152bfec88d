package ipamtest

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// TestConcurrentAdds: 64 plugin processes run ADD at once, each for its own
// container; every one gets an address, no two the same, and the store
// holds exactly those 64 allocations and marks exactly 64 addresses used.
func TestConcurrentAdds(t *testing.T) {
	const n = 64
	net := newIPAMNet(t, map[string]any{"lockWait": "30s"})
	var (
		wg   sync.WaitGroup
		ips  [n]netip.Prefix
		errs [n]error
	)
	for i := range n {
		wg.Go(func() {
			ips[i], errs[i] = net.add(net.cni, fmt.Sprintf("ctr-%02d", i))
		})
	}
	wg.Wait()

	want := map[string]netip.Prefix{}
	owner := map[netip.Prefix]string{}
	for i := range n {
		cid := fmt.Sprintf("ctr-%02d", i)
		if errs[i] != nil {
			t.Errorf("ADD %s: %v", cid, errs[i])
			continue
		}
		if other, dup := owner[ips[i]]; dup {
			t.Errorf("%s and %s both got %s", other, cid, ips[i])
		}
		owner[ips[i]] = cid
		want[cid] = ips[i]
	}
	if t.Failed() {
		t.FailNow()
	}
	st := net.state()
	if err := st.consistent(net.parsed()); err != nil {
		t.Error(err)
	}
	if len(st.allocs) != n || st.used != n {
		t.Errorf("store holds %d allocations, marks %d used; want %d", len(st.allocs), st.used, n)
	}
	for cid, ip := range want {
		if got, ok := st.allocs[cid]; !ok || got != ip {
			t.Errorf("%s: ADD returned %s, store holds %v", cid, ip, got)
		}
	}
}
