// Package ipam is esb-ipam's allocator and its store. The allocator is pure:
// it works on a Txn and never touches disk, so the same code runs against
// the bbolt store in production and the in-memory FakeStore in tests.
//
// Free addresses are found through a chunked bitmap and a per-range cursor:
// the search starts after the address handed out last (so a just-released
// address is not reused at once) and skips whole chunks that are full or
// absent, so an allocation costs the same with 0 or 60,000 addresses in use.
package ipam

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
)

// rangeKey names a range's cursor. It follows the subnet, so narrowing
// rangeStart/rangeEnd keeps the rotation going.
func rangeKey(r conf.Range) string { return r.Subnet.String() }

// Allocate gives id one address from every configured range, in one
// transaction. An attachment that already holds addresses gets them back
// (with any range added to the config since filled in), so a repeated ADD
// is harmless. It fails with ErrExhausted, naming the range, when a range
// has no free address; nothing is then changed.
func Allocate(tx Txn, cfg *conf.IPAM, id AttachmentID, now time.Time) (*Allocation, error) {
	a, err := tx.Allocation(id)
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = &Allocation{ID: id, Created: now}
	}
	changed := false
	for _, r := range cfg.Ranges() {
		if holdsIn(a, r.Subnet) {
			continue
		}
		ip, err := take(tx, r)
		if err != nil {
			return nil, err
		}
		a.IPs = append(a.IPs, netip.PrefixFrom(ip, r.Subnet.Bits()))
		changed = true
	}
	if changed {
		if err := tx.PutAllocation(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func holdsIn(a *Allocation, subnet netip.Prefix) bool {
	for _, p := range a.IPs {
		if subnet.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// take finds, marks and returns the next free address of r.
func take(tx Txn, r conf.Range) (netip.Addr, error) {
	ip, err := findFree(tx, r)
	if err != nil {
		return ip, err
	}
	if err := mark(tx, ip, true); err != nil {
		return ip, err
	}
	return ip, tx.SetCursor(rangeKey(r), ip)
}

// findFree returns the first free, unreserved address after the range's
// cursor, wrapping around to the range's start.
func findFree(tx Txn, r conf.Range) (netip.Addr, error) {
	start, end := toU(r.Start), toU(r.End)
	from := start
	cur, err := tx.Cursor(rangeKey(r))
	if err != nil {
		return netip.Addr{}, err
	}
	if cur.IsValid() && r.Contains(cur) && cur != r.End {
		from, _ = toU(cur).add(1)
	}
	if ip, ok, err := scan(tx, r, from, end); err != nil || ok {
		return ip, err
	}
	if from != start {
		// Wrap around: from > start here, so from-1 does not underflow.
		prev := toU(from.addr(r.Start.Is4()).Prev())
		if ip, ok, err := scan(tx, r, start, prev); err != nil || ok {
			return ip, err
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: no free address in %s (subnet %s)", ErrExhausted, r, r.Subnet)
}

// scan looks for a free address in [lo, hi], walking the stored chunks in
// order; a chunk that is not stored is entirely free.
func scan(tx Txn, r conf.Range, lo, hi u128) (netip.Addr, bool, error) {
	v4 := r.Start.Is4()
	expected := lo.chunkBase()
	for expected.cmp(hi) <= 0 {
		base, bm, ok, err := tx.NextChunk(expected.addr(v4))
		if err != nil {
			return netip.Addr{}, false, err
		}
		if !ok || toU(base).cmp(expected) > 0 {
			bm = &Bitmap{} // expected chunk is absent: all free
		}
		first, last := uint(0), uint(chunkSize-1)
		if expected.cmp(lo.chunkBase()) == 0 {
			first = lo.offset()
		}
		if expected.cmp(hi.chunkBase()) == 0 {
			last = hi.offset()
		}
		for first <= last {
			i, found := bm.firstZero(first, last)
			if !found {
				break
			}
			cand, _ := expected.add(uint64(i))
			ip := cand.addr(v4)
			if !r.Reserved(ip) {
				return ip, true, nil
			}
			first = i + 1
		}
		next, overflow := expected.add(chunkSize)
		if overflow {
			break
		}
		expected = next
	}
	return netip.Addr{}, false, nil
}

// mark sets or clears ip's bit. Setting a bit that is already set means the
// store is inconsistent and is refused, so no address is handed out twice.
func mark(tx Txn, ip netip.Addr, used bool) error {
	base := ChunkBase(ip)
	bm := &Bitmap{}
	got, stored, ok, err := tx.NextChunk(base)
	if err != nil {
		return err
	}
	if ok && got == base {
		bm = stored
	}
	off := toU(ip).offset()
	if used {
		if bm.get(off) {
			return errCorrupt("address %s is marked in use but was chosen as free", ip)
		}
		bm.set(off)
	} else {
		bm.clear(off)
	}
	return tx.PutChunk(base, bm)
}

// Lookup returns the attachment's allocation, or nil when it holds none.
func Lookup(tx Txn, id AttachmentID) (*Allocation, error) { return tx.Allocation(id) }

// Release frees everything id holds and returns what it held, or nil when
// it held nothing (which is not an error: DEL is idempotent).
func Release(tx Txn, id AttachmentID) (*Allocation, error) {
	a, err := tx.Allocation(id)
	if err != nil || a == nil {
		return nil, err
	}
	for _, p := range a.IPs {
		if err := mark(tx, p.Addr(), false); err != nil {
			return nil, err
		}
	}
	return a, tx.DeleteAllocation(id)
}

// GC releases every allocation whose attachment is not in valid and that
// was created before cutoff, and returns what it released. The cutoff keeps
// an ADD that finished after the caller listed its valid attachments.
func GC(tx Txn, valid map[AttachmentID]bool, cutoff time.Time) ([]*Allocation, error) {
	var stale []AttachmentID
	err := tx.ForEachAllocation(func(a *Allocation) error {
		if !valid[a.ID] && a.Created.Before(cutoff) {
			stale = append(stale, a.ID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	released := make([]*Allocation, 0, len(stale))
	for _, id := range stale {
		a, err := Release(tx, id)
		if err != nil {
			return nil, err
		}
		released = append(released, a)
	}
	return released, nil
}

// Usage reports how many addresses of r are in use and how many r can hand
// out (its size less the reserved addresses inside it; saturated at the
// largest uint64 for huge IPv6 ranges).
func Usage(tx Txn, r conf.Range) (used, capacity uint64, err error) {
	v4 := r.Start.Is4()
	lo, hi := toU(r.Start), toU(r.End)
	capacity = r.Size()
	from := lo.chunkBase()
	for {
		base, bm, ok, err := tx.NextChunk(from.addr(v4))
		if err != nil {
			return 0, 0, err
		}
		b := toU(base)
		if !ok || b.cmp(hi) > 0 {
			break
		}
		first, last := uint(0), uint(chunkSize-1)
		if b.cmp(lo.chunkBase()) == 0 {
			first = lo.offset()
		}
		if b.cmp(hi.chunkBase()) == 0 {
			last = hi.offset()
		}
		used += bm.count(first, last)
		next, overflow := b.add(chunkSize)
		if overflow {
			break
		}
		from = next
	}
	return used, capacity, nil
}
