package ipam

import (
	"net/netip"
	"sort"
	"sync"
)

// FakeStore is an in-memory Store for tests of code built on the allocator.
// Update is transactional: fn works on a copy that replaces the state only
// when fn succeeds.
type FakeStore struct {
	mu    sync.Mutex
	state fakeState
}

var (
	_ Store = (*FakeStore)(nil)
	_ Store = (*BoltStore)(nil)
	_ Txn   = (*fakeState)(nil)
)

type fakeState struct {
	allocs  map[AttachmentID]Allocation
	chunks  map[netip.Addr]Bitmap
	cursors map[string]netip.Addr
}

// NewFakeStore returns an empty FakeStore.
func NewFakeStore() *FakeStore {
	return &FakeStore{state: fakeState{
		allocs:  map[AttachmentID]Allocation{},
		chunks:  map[netip.Addr]Bitmap{},
		cursors: map[string]netip.Addr{},
	}}
}

func (s *fakeState) clone() fakeState {
	c := fakeState{
		allocs:  make(map[AttachmentID]Allocation, len(s.allocs)),
		chunks:  make(map[netip.Addr]Bitmap, len(s.chunks)),
		cursors: make(map[string]netip.Addr, len(s.cursors)),
	}
	for k, v := range s.allocs {
		v.IPs = append([]netip.Prefix(nil), v.IPs...)
		c.allocs[k] = v
	}
	for k, v := range s.chunks {
		c.chunks[k] = v
	}
	for k, v := range s.cursors {
		c.cursors[k] = v
	}
	return c
}

// Update implements Store.
func (f *FakeStore) Update(fn func(Txn) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.state.clone()
	if err := fn(&c); err != nil {
		return err
	}
	f.state = c
	return nil
}

// View implements Store.
func (f *FakeStore) View(fn func(Txn) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.state.clone()
	return fn(&c)
}

// Close implements Store.
func (f *FakeStore) Close() error { return nil }

func (s *fakeState) Allocation(id AttachmentID) (*Allocation, error) {
	a, ok := s.allocs[id]
	if !ok {
		return nil, nil
	}
	a.IPs = append([]netip.Prefix(nil), a.IPs...)
	return &a, nil
}

func (s *fakeState) PutAllocation(a *Allocation) error {
	c := *a
	c.IPs = append([]netip.Prefix(nil), a.IPs...)
	s.allocs[a.ID] = c
	return nil
}

func (s *fakeState) DeleteAllocation(id AttachmentID) error {
	delete(s.allocs, id)
	return nil
}

func (s *fakeState) ForEachAllocation(fn func(*Allocation) error) error {
	ids := make([]AttachmentID, 0, len(s.allocs))
	for id := range s.allocs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	for _, id := range ids {
		a, _ := s.Allocation(id)
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeState) NextChunk(from netip.Addr) (netip.Addr, *Bitmap, bool, error) {
	var best netip.Addr
	for base := range s.chunks {
		if base.Is4() == from.Is4() && base.Compare(from) >= 0 && (!best.IsValid() || base.Compare(best) < 0) {
			best = base
		}
	}
	if !best.IsValid() {
		return best, nil, false, nil
	}
	bm := s.chunks[best]
	return best, &bm, true, nil
}

func (s *fakeState) PutChunk(base netip.Addr, bm *Bitmap) error {
	if bm.Empty() {
		delete(s.chunks, base)
		return nil
	}
	s.chunks[base] = *bm
	return nil
}

func (s *fakeState) Cursor(key string) (netip.Addr, error) { return s.cursors[key], nil }

func (s *fakeState) SetCursor(key string, a netip.Addr) error {
	s.cursors[key] = a
	return nil
}
