package shimfake

import (
	"context"
	"fmt"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// SetExit makes every later WaitExit report e at once: a process that
// ended (by itself, or Stopped by the runtime) or a wait the runtime broke
// (Err). nil: WaitExit reports nothing until its context ends.
func (f *Runtime) SetExit(e *shim.Exit) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exit = e
}

// WaitsEnded receives the ID of each WaitExit whose context ended
// (buffered, 64; a test that cares reads it).
func (f *Runtime) WaitsEnded() <-chan string { return f.waitEnded }

// WaitExit implements shim.Runtime: it records "wait <id>" and reports
// what SetExit set, or Exit.Err at once while the runtime is down;
// otherwise nothing until ctx ends.
func (f *Runtime) WaitExit(ctx context.Context, id string, _ time.Time) <-chan shim.Exit {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("wait " + id)
	out := make(chan shim.Exit, 1)
	switch {
	case f.down:
		out <- shim.Exit{Err: fmt.Errorf("wait for %s: %w", id, shim.ErrUnavailable)}
	case f.exit != nil:
		out <- *f.exit
	}
	go func() {
		<-ctx.Done()
		select {
		case f.waitEnded <- id:
		default:
		}
	}()
	return out
}
