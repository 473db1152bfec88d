package agent

import (
	"sync"
	"testing"
)

// TestInFlightWaitWhileAdding: waits run while operations start from zero
// again and again (what the race detector forbids for a sync.WaitGroup),
// and each returns only when none runs.
func TestInFlightWaitWhileAdding(t *testing.T) {
	var f inFlight
	var running sync.Mutex
	live := 0
	var waiters sync.WaitGroup
	for range 4 {
		waiters.Go(func() {
			for range 200 {
				f.wait()
			}
		})
	}
	for range 200 {
		f.add()
		running.Lock()
		live++
		running.Unlock()
		go func() {
			running.Lock()
			live--
			running.Unlock()
			f.done()
		}()
		f.wait()
		running.Lock()
		if live != 0 {
			t.Fatalf("wait returned with %d operations running", live)
		}
		running.Unlock()
	}
	waiters.Wait()
}
