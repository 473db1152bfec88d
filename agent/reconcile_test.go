package agent

import (
	"context"
	"testing"

	"github.com/edge-serverless-box/esbnet/shim"
)

// reconcileScene acquires two workers of o1 (one with a request ID, one
// paused) and two of o2, then breaks the node behind the agent's back:
// one o2 worker loses its namespace, the other its veth, an orphan
// namespace of this agent's appears, and another agent's pin.
func reconcileScene(t *testing.T, r *rig, withID AcquireRequest) (keep, paused, broken *Worker) {
	t.Helper()
	ctx := context.Background()
	keep, err := r.a.Acquire(ctx, withID)
	if err != nil {
		t.Fatal(err)
	}
	paused, err = r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Pause(ctx, paused.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	broken, err = r.a.Acquire(ctx, req("o2"))
	if err != nil {
		t.Fatal(err)
	}
	noVeth, err := r.a.Acquire(ctx, req("o2"))
	if err != nil {
		t.Fatal(err)
	}
	r.net.broken[noVeth.ID] = true // its veth was deleted behind the agent's back
	// Behind the agent's back: one worker loses its namespace, and an
	// orphan namespace appears.
	if err := r.nses.Remove(broken.ID); err != nil {
		t.Fatal(err)
	}
	orphanPath, err := r.nses.Create("orphan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.net.Attach(ctx, shim.Attachment{ContainerID: "orphan", NetNS: orphanPath}); err != nil {
		t.Fatal(err)
	}
	// Another agent's pin: no container here, no attachment of ours.
	if _, err := r.nses.Create("foreign"); err != nil {
		t.Fatal(err)
	}
	return keep, paused, broken
}

func TestReconcile(t *testing.T) {
	r := newRig(t, Config{})
	ctx := context.Background()
	withID := req("o1")
	withID.RequestID = "retry-me"
	keep, paused, broken := reconcileScene(t, r, withID)

	// A new agent (a restart) over the same runtime and network.
	b := New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: Config{LogDir: t.TempDir()},
		Probe: func(context.Context, string) error { return nil }})
	rep, err := b.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Adopted != 2 || rep.Removed != 2 || rep.OrphanNetNSes != 1 {
		t.Errorf("report %+v, want 2 adopted, 2 removed, 1 orphan", rep)
	}
	got := b.List("o1")
	if len(got) != 2 {
		t.Fatalf("adopted %v", got)
	}
	byID := map[string]Worker{}
	for _, w := range got {
		byID[w.ID] = w
	}
	if w, ok := byID[keep.ID]; !ok || w.IP != keep.IP || w.State != StateBusy || w.Function != "hello" {
		t.Errorf("adopted %+v (found: %v), was %+v", w, ok, keep)
	}
	if w, ok := byID[paused.ID]; !ok || w.State != StatePaused {
		t.Errorf("paused worker adopted as %+v (found: %v)", w, ok)
	}
	if ids := r.rt.IDs(); len(ids) != 2 {
		t.Errorf("containers after reconcile %v", ids)
	}
	if r.nses.Exists("orphan") || r.nses.Exists(broken.ID) {
		t.Error("orphan namespace kept")
	}
	if !r.nses.Exists("foreign") {
		t.Error("a pin this agent never attached was removed")
	}
	if len(r.net.gcLive) != 2 {
		t.Errorf("GC live set %v", r.net.gcLive)
	}
	// A retry of the acquire after the restart gets the same worker.
	again, err := b.Acquire(ctx, withID)
	if err != nil || again.ID != keep.ID {
		t.Errorf("retried acquire after restart: %+v %v, want %s", again, err, keep.ID)
	}
	// The adopted worker can be released by its owner.
	if err := b.Release(ctx, keep.ID, "o1"); err != nil {
		t.Error(err)
	}
}

// TestReconcilePinsTheRuntimesNamespace: a Docker-style worker whose pin
// is gone (made by an agent that did not pin, or unpinned behind the
// agent's back) is adopted by pinning the namespace the runtime lists for
// it; its release then removes that pin.
func TestReconcilePinsTheRuntimesNamespace(t *testing.T) {
	r := newRig(t, Config{}, func(r *rig) { r.rt.SetOwnsNetNS(true) })
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.nses.Remove(w.ID); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: Config{LogDir: t.TempDir()},
		Probe: func(context.Context, string) error { return nil }})
	rep, err := b.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Adopted != 1 || rep.Removed != 0 {
		t.Fatalf("report %+v, want the worker adopted", rep)
	}
	if from := r.nses.from(w.ID); from == "" || from == r.nses.Path(w.ID) {
		t.Errorf("adoption pinned %q, want the runtime's namespace", from)
	}
	got := b.List("o1")
	if len(got) != 1 || got[0].NetNS != r.nses.Path(w.ID) {
		t.Fatalf("adopted %+v, want the worker on its new pin", got)
	}
	if err := b.Release(ctx, w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	r.assertEmpty(t)
}
