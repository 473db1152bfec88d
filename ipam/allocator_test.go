package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
)

var t0 = time.Unix(1_700_000_000, 0)

func mustConf(t testing.TB, ipam string) *conf.IPAM {
	t.Helper()
	nc, err := conf.ParseIPAMNetConf([]byte(`{"cniVersion":"1.1.0","name":"esbt","ipam":` + ipam + `}`))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return nc.IPAM
}

func id(i int) AttachmentID { return AttachmentID{fmt.Sprintf("c%d", i), "eth0"} }

// storeKinds runs a test against the fake and the real store, so the two
// keep the same semantics.
func storeKinds(t *testing.T, fn func(t *testing.T, s Store)) {
	t.Run("fake", func(t *testing.T) { fn(t, NewFakeStore()) })
	t.Run("bolt", func(t *testing.T) {
		s, err := OpenBolt(t.TempDir(), "esbt", BoltOptions{BootID: "boot-1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		fn(t, s)
	})
}

func allocate(t testing.TB, s Store, cfg *conf.IPAM, aid AttachmentID) (*Allocation, error) {
	t.Helper()
	var a *Allocation
	err := s.Update(func(tx Txn) error {
		var err error
		a, err = Allocate(tx, cfg, aid, t0)
		return err
	})
	return a, err
}

func release(t testing.TB, s Store, aid AttachmentID) *Allocation {
	t.Helper()
	var a *Allocation
	if err := s.Update(func(tx Txn) error {
		var err error
		a, err = Release(tx, aid)
		return err
	}); err != nil {
		t.Fatalf("release %s: %v", aid, err)
	}
	return a
}

func mustAddr(t testing.TB, s Store, cfg *conf.IPAM, aid AttachmentID) string {
	t.Helper()
	a, err := allocate(t, s, cfg, aid)
	return addrOf(t, a, err)
}

func addrOf(t testing.TB, a *Allocation, err error) string {
	t.Helper()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if len(a.IPs) != 1 {
		t.Fatalf("want one address, got %v", a.IPs)
	}
	return a.IPs[0].String()
}

func TestAllocateSequenceSkipsReserved(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/29","gateway":"10.0.0.3"}`)
		var got []string
		for i := 0; i < 5; i++ {
			a, err := allocate(t, s, cfg, id(i))
			got = append(got, addrOf(t, a, err))
		}
		want := []string{"10.0.0.1/29", "10.0.0.2/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got %v, want %v", got, want)
		}
		_, err := allocate(t, s, cfg, id(99))
		if !IsExhausted(err) {
			t.Fatalf("want ErrExhausted, got %v", err)
		}
		// A failed ADD changes nothing.
		var n int
		if err := s.View(func(tx Txn) error {
			return tx.ForEachAllocation(func(*Allocation) error { n++; return nil })
		}); err != nil || n != 5 {
			t.Errorf("allocations after failed ADD: %d (%v)", n, err)
		}
	})
}

func TestAllocateIsIdempotent(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam"}`)
		first := mustAddr(t, s, cfg, id(1))
		again := mustAddr(t, s, cfg, id(1))
		if first != again {
			t.Errorf("repeated ADD got %s, first %s", again, first)
		}
		other := mustAddr(t, s, cfg, AttachmentID{"c1", "eth1"})
		if other == first {
			t.Errorf("second interface of the same container got the same address %s", other)
		}
	})
}

func TestRotationDoesNotReuseAtOnce(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/24"}`)
		a := mustAddr(t, s, cfg, id(1))
		if got := release(t, s, id(1)); got == nil || got.IPs[0].String() != a {
			t.Fatalf("release returned %v", got)
		}
		b := mustAddr(t, s, cfg, id(2))
		if a == b {
			t.Errorf("just-released %s handed out again at once", a)
		}
	})
}

func TestWrapAroundReusesFreedAddresses(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/29"}`) // .2-.6 usable
		for i := 0; i < 5; i++ {
			mustAddr(t, s, cfg, id(i))
		}
		release(t, s, id(1)) // frees 10.0.0.3
		if got := mustAddr(t, s, cfg, id(10)); got != "10.0.0.3/29" {
			t.Errorf("after wrap got %s, want 10.0.0.3/29", got)
		}
	})
}

func TestReleaseUnknownIsNoop(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		if a := release(t, s, id(404)); a != nil {
			t.Errorf("release of unknown attachment returned %v", a)
		}
	})
}

func TestChunkBoundaries(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		// 10.0.15.250-10.0.16.5 straddles the chunk boundary at 10.0.16.0.
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/16","rangeStart":"10.0.15.250","rangeEnd":"10.0.16.5"}`)
		seen := map[string]bool{}
		for i := 0; i < 12; i++ {
			a := mustAddr(t, s, cfg, id(i))
			if seen[a] {
				t.Fatalf("duplicate %s", a)
			}
			seen[a] = true
		}
		if _, err := allocate(t, s, cfg, id(12)); !IsExhausted(err) {
			t.Fatalf("want exhausted after 12, got %v", err)
		}
		var used, capacity uint64
		if err := s.View(func(tx Txn) error {
			var err error
			used, capacity, err = Usage(tx, cfg.V4)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if used != 12 || capacity != 12 {
			t.Errorf("usage %d/%d, want 12/12", used, capacity)
		}
	})
}

func TestDualStackAllocatesBoth(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/24","ipv6":{"subnet":"fd00:88::/64"}}`)
		a, err := allocate(t, s, cfg, id(1))
		if err != nil {
			t.Fatal(err)
		}
		if len(a.IPs) != 2 || a.IPs[0].String() != "10.0.0.2/24" || a.IPs[1].String() != "fd00:88::2/64" {
			t.Fatalf("got %v", a.IPs)
		}
		// An IPv6 range that cannot allocate rolls back the IPv4 address too.
		small := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/24","ipv6":{"subnet":"fd00:99::/126","rangeStart":"fd00:99::2","rangeEnd":"fd00:99::2"}}`)
		if _, err := allocate(t, s, small, id(2)); err != nil {
			t.Fatal(err)
		}
		if _, err := allocate(t, s, small, id(3)); !IsExhausted(err) {
			t.Fatalf("want exhausted, got %v", err)
		}
		var used uint64
		if err := s.View(func(tx Txn) error {
			var err error
			used, _, err = Usage(tx, small.V4)
			return err
		}); err != nil || used != 2 {
			t.Errorf("IPv4 in use after rolled-back dual-stack ADD: %d (%v), want 2", used, err)
		}
	})
}

func TestGCHonoursValidListAndGrace(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam"}`)
		for i := 0; i < 4; i++ {
			mustAddr(t, s, cfg, id(i))
		}
		var young *Allocation
		if err := s.Update(func(tx Txn) error {
			var err error
			young, err = Allocate(tx, cfg, id(9), t0.Add(time.Minute))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var released []*Allocation
		valid := map[AttachmentID]bool{id(0): true, id(2): true}
		if err := s.Update(func(tx Txn) error {
			var err error
			released, err = GC(tx, valid, t0.Add(time.Second))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range released {
			got = append(got, a.ID.String())
		}
		if fmt.Sprint(got) != "[c1/eth0 c3/eth0]" {
			t.Errorf("released %v, want c1 and c3 (c9 is younger than the cutoff)", got)
		}
		if err := s.View(func(tx Txn) error {
			a, err := tx.Allocation(id(9))
			if a == nil || a.IPs[0] != young.IPs[0] {
				return errors.New("young allocation lost")
			}
			return err
		}); err != nil {
			t.Error(err)
		}
	})
}

func TestRangeChangeKeepsCursorSane(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		wide := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/24"}`)
		for i := 0; i < 50; i++ {
			mustAddr(t, s, wide, id(i))
		}
		narrow := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.20"}`)
		if _, err := allocate(t, s, narrow, id(100)); !IsExhausted(err) {
			t.Fatalf("narrowed range is fully used, want exhausted, got %v", err)
		}
		release(t, s, id(14)) // 10.0.0.16
		if got := mustAddr(t, s, narrow, id(101)); got != "10.0.0.16/24" {
			t.Errorf("got %s, want the one free address 10.0.0.16/24", got)
		}
	})
}

// TestAllocatorMatchesModel drives random ADD/DEL against a small range and
// compares with a trivially correct model: no address is ever held twice and
// ADD fails exactly when the model has no free address.
func TestAllocatorMatchesModel(t *testing.T) {
	storeKinds(t, func(t *testing.T, s Store) {
		cfg := mustConf(t, `{"type":"esb-ipam","subnet":"10.0.0.0/27"}`) // 29 usable
		held := map[AttachmentID]netip.Addr{}
		owner := map[netip.Addr]AttachmentID{}
		seed := uint64(42)
		next := func(n int) int { seed = seed*6364136223846793005 + 1442695040888963407; return int(seed>>33) % n }
		for step := 0; step < 3000; step++ {
			aid := id(next(40))
			if _, ok := held[aid]; ok && next(2) == 0 {
				release(t, s, aid)
				delete(owner, held[aid])
				delete(held, aid)
				continue
			}
			a, err := allocate(t, s, cfg, aid)
			if prev, ok := held[aid]; ok {
				if err != nil || a.IPs[0].Addr() != prev {
					t.Fatalf("step %d: repeated ADD of %s got %v %v, want %s", step, aid, a, err, prev)
				}
				continue
			}
			if len(owner) == 29 {
				if !IsExhausted(err) {
					t.Fatalf("step %d: model is full, want exhausted, got %v %v", step, a, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("step %d: %v with %d held", step, err, len(owner))
			}
			ip := a.IPs[0].Addr()
			if o, dup := owner[ip]; dup {
				t.Fatalf("step %d: %s handed to %s while %s holds it", step, ip, aid, o)
			}
			if cfg.V4.Reserved(ip) || !cfg.V4.Contains(ip) {
				t.Fatalf("step %d: handed out %s", step, ip)
			}
			owner[ip], held[aid] = aid, ip
		}
	})
}
