package agent

import "sync"

// inFlight counts background operations (the teardowns of lost workers)
// and lets any goroutine wait until none runs. Unlike a sync.WaitGroup,
// whose Add from zero must happen before a concurrent Wait, it allows a
// wait while new operations start: the event watch starts teardowns
// whenever the runtime reports a loss, whoever waits meanwhile. The zero
// value is ready to use.
type inFlight struct {
	mu   sync.Mutex
	n    int
	zero *sync.Cond
}

func (f *inFlight) cond() *sync.Cond {
	if f.zero == nil {
		f.zero = sync.NewCond(&f.mu)
	}
	return f.zero
}

// add records one more operation.
func (f *inFlight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

// done records the end of one operation.
func (f *inFlight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		f.cond().Broadcast()
	}
}

// wait returns once no operation runs.
func (f *inFlight) wait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.n > 0 {
		f.cond().Wait()
	}
}
