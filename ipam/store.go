package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// AttachmentID names one attachment of a container to the network: the
// container ID and the interface name inside it, as CNI defines it.
type AttachmentID struct {
	ContainerID string
	IfName      string
}

func (id AttachmentID) String() string { return id.ContainerID + "/" + id.IfName }

// Allocation is what an attachment holds: one address per configured range,
// each with its subnet's prefix length.
type Allocation struct {
	ID      AttachmentID
	IPs     []netip.Prefix
	Created time.Time
}

// Txn is one transaction on the store. Every mutation the allocator makes
// for one CNI call happens inside a single Txn, so a process killed at any
// point leaves either all of it or none of it.
type Txn interface {
	// Allocation returns the attachment's allocation, or nil when it holds none.
	Allocation(id AttachmentID) (*Allocation, error)
	// PutAllocation stores (or replaces) an allocation.
	PutAllocation(a *Allocation) error
	// DeleteAllocation removes an allocation; removing a missing one is not an error.
	DeleteAllocation(id AttachmentID) error
	// ForEachAllocation calls fn for every allocation; fn must not mutate the store.
	ForEachAllocation(fn func(*Allocation) error) error

	// NextChunk returns the first stored chunk of from's family whose base
	// is >= from; ok is false when there is none.
	NextChunk(from netip.Addr) (base netip.Addr, bm *Bitmap, ok bool, err error)
	// PutChunk stores a chunk; an empty chunk is deleted instead.
	PutChunk(base netip.Addr, bm *Bitmap) error

	// Cursor returns the last address handed out in the named range, or the
	// zero Addr when none was.
	Cursor(rangeKey string) (netip.Addr, error)
	// SetCursor records the last address handed out in the named range.
	SetCursor(rangeKey string, a netip.Addr) error
}

// Store is the persistent home of a network's allocations.
type Store interface {
	// Update runs fn in an exclusive read-write transaction; when fn returns
	// an error nothing it did is kept.
	Update(fn func(Txn) error) error
	// View runs fn in a read-only transaction.
	View(fn func(Txn) error) error
	// Close releases the store and its lock. It is safe to call twice.
	Close() error
}

// Errors callers act on.
var (
	// ErrExhausted: no free address is left in a range.
	ErrExhausted = errors.New("address range exhausted")
	// ErrLockTimeout: the store's lock was not obtained within the wait;
	// the caller should try again later (CNI error 11).
	ErrLockTimeout = errors.New("timed out waiting for the IPAM store lock")
	// ErrCorrupt: the store holds data this version cannot read.
	ErrCorrupt = errors.New("IPAM store is corrupt")
)

// IsExhausted reports whether err means a range has no free address.
func IsExhausted(err error) bool { return errors.Is(err, ErrExhausted) }

// IsTryAgain reports whether err is transient (the store was locked).
func IsTryAgain(err error) bool { return errors.Is(err, ErrLockTimeout) }

func errCorrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
