package shimfake

import (
	"context"
	"fmt"
	"sync"

	"github.com/edge-serverless-box/esbnet/shim"
)

// stream is one Events subscription: what the fake reported and the
// subscriber has not taken yet.
type stream struct {
	mu    sync.Mutex
	queue []shim.Event
	wake  chan struct{} // a report came
	brk   chan struct{} // closed by BreakEvents
}

func (s *stream) push(ev shim.Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) pop() (shim.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return shim.Event{}, false
	}
	ev := s.queue[0]
	s.queue = s.queue[1:]
	return ev, true
}

// report queues ev on every stream, under f.mu, unless ManualEvents. It
// never blocks: a change made while no stream runs is not replayed.
func (f *Runtime) report(ev shim.Event) {
	if f.opts.ManualEvents {
		return
	}
	for s := range f.streams {
		s.push(ev)
	}
}

// Events implements shim.Runtime: the exits and removals the fake's own
// calls and Kill make (unless ManualEvents), and what Emit sends, until
// ctx ends (nil error) or BreakEvents breaks the stream (ErrUnavailable).
func (f *Runtime) Events(ctx context.Context) (<-chan shim.Event, <-chan error) {
	out, errc := make(chan shim.Event), make(chan error, 1)
	s := &stream{wake: make(chan struct{}, 1), brk: make(chan struct{})}
	f.mu.Lock()
	f.subs++
	down := f.down
	if !down {
		f.streams[s] = struct{}{}
	}
	f.mu.Unlock()
	if down {
		close(out)
		errc <- fmt.Errorf("subscribe to events: %w", shim.ErrUnavailable)
		return out, errc
	}
	go func() {
		defer close(out)
		defer func() {
			f.mu.Lock()
			delete(f.streams, s)
			f.mu.Unlock()
		}()
		errc <- f.serve(ctx, s, out)
	}()
	return out, errc
}

// serve hands the stream's events to out until ctx ends or it breaks.
func (f *Runtime) serve(ctx context.Context, s *stream, out chan<- shim.Event) error {
	broke := fmt.Errorf("event stream broke: %w", shim.ErrUnavailable)
	for {
		var next shim.Event
		if ev, ok := s.pop(); ok {
			next = ev
		} else {
			select {
			case <-s.wake:
				continue
			case next = <-f.hand:
			case <-s.brk:
				return broke
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case out <- next:
		case <-s.brk:
			return broke
		case <-ctx.Done():
			return nil
		}
	}
}

// Emit hands ev to a subscriber, blocking until one takes it.
func (f *Runtime) Emit(ev shim.Event) { f.hand <- ev }

// BreakEvents ends the running subscriptions with an error wrapping
// shim.ErrUnavailable, as a daemon that restarts does.
func (f *Runtime) BreakEvents() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.streams {
		select {
		case <-s.brk:
		default:
			close(s.brk)
		}
		delete(f.streams, s)
	}
}

// Subscriptions counts the Events calls so far.
func (f *Runtime) Subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs
}
