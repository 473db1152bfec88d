package ipam

import (
	"net/netip"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Adopt records allocations the store does not know but the node shows in
// use (after the store was wiped with workers still running): each one
// whose attachment holds nothing here and whose addresses lie in the
// configured ranges and are free is stored as it is, addresses marked in
// use. An allocation that clashes with what the store holds is skipped,
// never stored twice. It returns what it adopted.
func Adopt(tx Txn, cfg *conf.IPAM, allocs []*Allocation) ([]*Allocation, error) {
	var out []*Allocation
	for _, a := range allocs {
		prev, err := tx.Allocation(a.ID)
		if err != nil {
			return out, err
		}
		if prev != nil || len(a.IPs) == 0 {
			continue
		}
		ok := true
		for _, p := range a.IPs {
			used, err := inUse(tx, p.Addr())
			if err != nil {
				return out, err
			}
			if used || !inRanges(cfg, p.Addr()) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		for _, p := range a.IPs {
			if err := mark(tx, p.Addr(), true); err != nil {
				return out, err
			}
		}
		if err := tx.PutAllocation(a); err != nil {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}

func inRanges(cfg *conf.IPAM, ip netip.Addr) bool {
	for _, r := range cfg.Ranges() {
		if r.Contains(ip) && !r.Reserved(ip) {
			return true
		}
	}
	return false
}

// inUse reports whether ip's bit is set.
func inUse(tx Txn, ip netip.Addr) (bool, error) {
	base := ChunkBase(ip)
	got, bm, ok, err := tx.NextChunk(base)
	if err != nil || !ok || got != base {
		return false, err
	}
	return bm.get(toU(ip).offset()), nil
}
