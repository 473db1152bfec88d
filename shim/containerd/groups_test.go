package containerd

import (
	"runtime"
	"testing"
)

// users is how many holders and waiters group has.
func (s *groupLocks) users(group string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.locks[group]; l != nil {
		return l.users
	}
	return 0
}

// A group's second holder waits for the first; another group and the
// group "" do not; nothing stays in the map once all have unlocked.
func TestGroupLocks(t *testing.T) {
	var s groupLocks
	unlockFirst := s.lock("g")
	got := make(chan func())
	go func() { got <- s.lock("g") }()
	for s.users("g") < 2 { // the second caller is in, waiting
		runtime.Gosched()
	}
	s.lock("h")()      // another group goes by
	own1 := s.lock("") // and shims of their own, two held at once
	own2 := s.lock("")
	own1()
	own2()
	select {
	case <-got:
		t.Fatal("a second creation or deletion of group g ran beside the first")
	default:
	}
	unlockFirst()
	(<-got)()
	if len(s.locks) != 0 {
		t.Errorf("locks left after every unlock: %v", s.locks)
	}
}
