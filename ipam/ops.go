package ipam

import (
	"errors"
	"fmt"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
)

// The one-shot operations below each open the network's store, run one
// transaction and close it again, so the lock is held only for that
// transaction. esb-ipam's verbs and esb-bridge's in-process IPAM both use
// them, so the two keep one semantics.

// Open locks and opens the store named by cfg. Callers Close it as soon as
// their transactions are done.
func Open(cfg *conf.IPAM, bootID string) (*BoltStore, error) {
	return OpenBolt(cfg.DataDir, cfg.Network, BoltOptions{LockWait: cfg.LockWait, BootID: bootID})
}

func withStore(cfg *conf.IPAM, bootID string, fn func(Store) error) error {
	s, err := Open(cfg, bootID)
	if err != nil {
		return err
	}
	return errors.Join(fn(s), s.Close())
}

// Add allocates id's addresses. existed reports that id already held an
// allocation before this call (a repeated ADD), which a caller rolling back
// a failed ADD must then leave alone.
//
// now is read inside the transaction, under the lock: an allocation's
// creation time must not predate the wait for the lock, or GC's grace
// period would shrink by that wait.
func Add(cfg *conf.IPAM, bootID string, id AttachmentID, now func() time.Time) (a *Allocation, existed bool, err error) {
	return AddSeeded(cfg, bootID, id, now, nil)
}

// AddSeeded is Add for a caller that can tell which attachments the node
// has in use (esb-bridge reads them from its anti-spoof elements): when
// the store was created or reset since it was last seeded (its directory
// wiped while workers run), seed's allocations are adopted first, in the
// same transaction, so the new allocation cannot take an address a live
// attachment holds. seed runs only then; nil seeds nothing.
func AddSeeded(cfg *conf.IPAM, bootID string, id AttachmentID, now func() time.Time, seed func() ([]*Allocation, error)) (a *Allocation, existed bool, err error) {
	s, err := Open(cfg, bootID)
	if err != nil {
		return nil, false, err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	err = s.UpdateSeeded(cfg, seed, func(tx Txn) error {
		prev, err := tx.Allocation(id)
		if err != nil {
			return err
		}
		existed = prev != nil
		a, err = Allocate(tx, cfg, id, now())
		return err
	})
	return a, existed, err
}

// Readopt adopts allocs (see Adopt), the attachments the node has in use
// that the store lost, and marks the store seeded. It returns what it
// adopted.
func Readopt(cfg *conf.IPAM, bootID string, allocs []*Allocation) ([]*Allocation, error) {
	var out []*Allocation
	err := withStore(cfg, bootID, func(s Store) error {
		bs, ok := s.(*BoltStore)
		if !ok {
			return fmt.Errorf("readopt: unexpected store %T", s)
		}
		return bs.UpdateSeeded(cfg, func() ([]*Allocation, error) { return nil, nil }, func(tx Txn) error {
			var err error
			out, err = Adopt(tx, cfg, allocs)
			return err
		})
	})
	return out, err
}

// Del releases id's addresses; an unknown id is not an error.
func Del(cfg *conf.IPAM, bootID string, id AttachmentID) error {
	return withStore(cfg, bootID, func(s Store) error {
		return s.Update(func(tx Txn) error {
			_, err := Release(tx, id)
			return err
		})
	})
}

// Get returns id's allocation, or nil when it holds none.
func Get(cfg *conf.IPAM, bootID string, id AttachmentID) (*Allocation, error) {
	var a *Allocation
	err := withStore(cfg, bootID, func(s Store) error {
		return s.View(func(tx Txn) error {
			var err error
			a, err = Lookup(tx, id)
			return err
		})
	})
	return a, err
}

// List returns every allocation of the network.
func List(cfg *conf.IPAM, bootID string) ([]*Allocation, error) {
	var out []*Allocation
	err := withStore(cfg, bootID, func(s Store) error {
		return s.View(func(tx Txn) error {
			return tx.ForEachAllocation(func(a *Allocation) error {
				out = append(out, a)
				return nil
			})
		})
	})
	return out, err
}

// Collect releases every allocation not in valid that is older than the
// configured grace period, and returns what it released.
func Collect(cfg *conf.IPAM, bootID string, valid map[AttachmentID]bool, now func() time.Time) ([]*Allocation, error) {
	var released []*Allocation
	err := withStore(cfg, bootID, func(s Store) error {
		return s.Update(func(tx Txn) error {
			var err error
			released, err = GC(tx, valid, now().Add(-cfg.GCGrace))
			return err
		})
	})
	return released, err
}

// Ready returns nil when an ADD can allocate in every range, an error
// wrapping ErrExhausted (with the range's usage) when one is full, or the
// store's error when it cannot be opened or read.
func Ready(cfg *conf.IPAM, bootID string) error {
	return withStore(cfg, bootID, func(s Store) error {
		return s.View(func(tx Txn) error {
			for _, r := range cfg.Ranges() {
				_, err := findFree(tx, r)
				if !IsExhausted(err) {
					if err != nil {
						return err
					}
					continue
				}
				used, capacity, uerr := Usage(tx, r)
				if uerr != nil {
					return errors.Join(err, uerr)
				}
				return fmt.Errorf("%w (%d of %d in use)", err, used, capacity)
			}
			return nil
		})
	})
}
