package agent

import (
	"context"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// Bounds of the event watch.
const (
	watchRetryFirst = 100 * time.Millisecond // first wait before resubscribing
	watchRetryMax   = 5 * time.Second        // longest wait between attempts
	dropTimeout     = 30 * time.Second       // one lost worker's teardown
)

// Watch follows the runtime's events until ctx ends: a worker whose
// container exits or is removed behind the agent's back is detached from
// the network, torn down and dropped from the agent's list. Workers the
// agent is making or removing itself are left to that operation. Each
// time it subscribes (the first time, and after the stream broke) it
// catches up with a List, so an event lost while no stream ran is not a
// worker lost forever. Watch returns when ctx ends, after the teardowns it
// started have finished.
func (a *Agent) Watch(ctx context.Context) {
	defer a.drops.wait()
	retry := watchRetryFirst
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		evs, errc := a.rt.Events(sctx)
		// After subscribing: what died before is in the list, what dies
		// after is in the stream.
		caught := a.catchUp(ctx)
		n := 0
		for ev := range evs {
			n++
			a.onEvent(ev)
		}
		err := <-errc
		cancel()
		if ctx.Err() != nil {
			return
		}
		if n > 0 || caught {
			retry = watchRetryFirst
		}
		a.log.Warn("runtime event stream broke; resubscribing", "runtime", a.rt.Name(), "err", err, "in", retry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(retry*2, watchRetryMax)
	}
}

// onEvent starts the teardown of a worker the event says is lost.
func (a *Agent) onEvent(ev shim.Event) {
	if a.claim(ev.ID) {
		a.drop(ev.ID, "container "+ev.Kind.String())
	}
}

// claim hides a live, settled worker from every lookup so that only the
// caller tears it down; false when the worker is unknown or another
// operation (creation, release, an earlier event) holds it.
func (a *Agent) claim(id string) bool { return a.table.claim(id) }

// drop tears a claimed worker down in the background and forgets it.
func (a *Agent) drop(id, why string) {
	a.drops.add()
	go func() {
		defer a.drops.done()
		ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
		defer cancel()
		a.log.Warn("worker lost behind the agent's back; removing it", "worker", id, "why", why)
		if err := a.remove(ctx, id); err != nil {
			a.log.Error("remove lost worker", "worker", id, "err", err)
		}
		a.metrics.lost()
	}()
}

// catchUp drops the settled workers that the runtime no longer runs. It
// reports whether the runtime answered.
func (a *Agent) catchUp(ctx context.Context) bool {
	// Only workers settled before the listing can be judged by it.
	settled := a.table.settledIDs()
	infos, err := a.rt.List(ctx)
	if err != nil {
		a.log.Warn("catch up with the runtime's workers", "err", err)
		return false
	}
	alive := map[string]bool{}
	for _, info := range infos {
		if info.State == shim.StateRunning || info.State == shim.StatePaused {
			alive[info.ID] = true
		}
	}
	for _, id := range settled {
		if !alive[id] && a.claim(id) {
			a.drop(id, "not running at catch-up")
		}
	}
	return true
}
