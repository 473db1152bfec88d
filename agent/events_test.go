package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// watch runs the agent's event watch until the test ends.
func (r *rig) watch(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.a.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the first subscription", func() bool { return r.rt.Subscriptions() >= 1 })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether the agent no longer lists id.
func (r *rig) gone(id string) bool {
	return !slices.ContainsFunc(r.a.List(""), func(w Worker) bool { return w.ID == id })
}

func TestWatchDropsKilledWorker(t *testing.T) {
	for _, owns := range []bool{false, true} {
		name := map[bool]string{false: "containerd-style", true: "docker-style"}[owns]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, Config{}, func(r *rig) { r.rt.SetOwnsNetNS(owns) })
			r.watch(t)
			ctx := context.Background()
			q := req("o1")
			q.RequestID = "r1"
			w, err := r.a.Acquire(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			other, err := r.a.Acquire(ctx, req("o1"))
			if err != nil {
				t.Fatal(err)
			}
			r.rt.Kill(w.ID)
			r.rt.Emit(shim.Event{ID: w.ID, Kind: shim.EventExit})
			waitFor(t, "the killed worker to leave the list", func() bool { return r.gone(w.ID) })
			waitFor(t, "its container to go", func() bool { return !slices.Contains(r.rt.IDs(), w.ID) })
			r.a.drops.wait()
			if r.net.attached[w.ID] != nil || r.nses.Exists(w.ID) {
				t.Errorf("the killed worker's network or namespace is left")
			}
			if r.gone(other.ID) || r.net.count() != 1 {
				t.Errorf("the other worker was touched: list %v", r.a.List(""))
			}
			// A retry of the killed worker's request gets a new worker.
			again, err := r.a.Acquire(ctx, q)
			if err != nil || again.ID == w.ID {
				t.Errorf("retry after the loss: %+v, %v", again, err)
			}
			// Its owner's release now says it is gone.
			if err := r.a.Release(ctx, w.ID, "o1"); CodeOf(err) != NotFound {
				t.Errorf("release of the lost worker: %v", err)
			}
			// Events for unknown workers and for the agent's own release
			// change nothing more.
			r.rt.Emit(shim.Event{ID: "not-ours", Kind: shim.EventDelete})
			if err := r.a.Release(ctx, other.ID, "o1"); err != nil {
				t.Fatal(err)
			}
			r.rt.Emit(shim.Event{ID: other.ID, Kind: shim.EventDelete})
			if err := r.a.Release(ctx, again.ID, "o1"); err != nil {
				t.Fatal(err)
			}
			r.a.drops.wait()
			r.assertEmpty(t)
		})
	}
}

// TestWatchCatchesUpAfterBrokenStream: a worker that dies while the
// stream is down is found by the List that follows the resubscription.
func TestWatchCatchesUpAfterBrokenStream(t *testing.T) {
	r := newRig(t, Config{})
	r.watch(t)
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	paused, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Pause(ctx, paused.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	r.rt.Kill(w.ID) // no event: the stream is about to break
	r.rt.BreakEvents()
	waitFor(t, "a resubscription", func() bool { return r.rt.Subscriptions() >= 2 })
	waitFor(t, "the dead worker to leave the list", func() bool { return r.gone(w.ID) })
	r.a.drops.wait()
	if r.gone(paused.ID) {
		t.Error("the catch-up dropped a paused worker")
	}
	if slices.Contains(r.rt.IDs(), w.ID) || r.nses.Exists(w.ID) {
		t.Error("the dead worker's container or namespace is left")
	}
	// Events flow again on the new stream.
	r.rt.Kill(paused.ID)
	r.rt.Emit(shim.Event{ID: paused.ID, Kind: shim.EventDelete})
	waitFor(t, "the second worker to leave the list", func() bool { return r.gone(paused.ID) })
	r.a.drops.wait()
	r.assertEmpty(t)
}

// TestTeardownOrder: CNI DEL runs after the stop, whichever made the
// namespace, since the agent's pin keeps it; the pin goes last.
func TestTeardownOrder(t *testing.T) {
	for _, c := range []struct {
		owns bool
		want string
	}{{false, "stop,detach,delete"}, {true, "stop,detach,delete"}} {
		r := newRig(t, Config{}, func(r *rig) { r.rt.SetOwnsNetNS(c.owns) })
		w, err := r.a.Acquire(context.Background(), req("o1"))
		if err != nil {
			t.Fatal(err)
		}
		n := len(r.rt.Calls())
		if err := r.a.Release(context.Background(), w.ID, "o1"); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, call := range r.rt.Calls()[n:] {
			got = append(got, strings.Fields(call)[0])
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("owns netns %v: teardown %v, want %s", c.owns, got, c.want)
		}
		if r.nses.Exists(w.ID) {
			t.Errorf("owns netns %v: the pin outlived the teardown", c.owns)
		}
	}
}
