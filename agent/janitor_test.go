package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

// TestSweepFinishesFailedCleanups: a worker container the agent does not
// know (a rollback that could not reach the runtime) and a journalled
// creation with a pin and an attachment (an agent killed mid-way) are
// removed; a live worker is left alone and stays valid in the GC.
func TestSweepFinishesFailedCleanups(t *testing.T) {
	state := t.TempDir()
	r := newRig(t, Config{StateDir: state})
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	r.rt.Put(shim.WorkerInfo{ID: "stray", State: shim.StateRunning, Labels: map[string]string{conf.LabelWorker: "1"}})
	if err := r.a.journal.begin("half"); err != nil {
		t.Fatal(err)
	}
	path, _ := r.nses.Create("half")
	if _, err := r.net.Attach(context.Background(), shim.Attachment{ContainerID: "half", NetNS: path}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.a.Sweep(context.Background())
	if err != nil || rep.Removed != 1 || rep.Interrupted != 1 {
		t.Fatalf("Sweep = %+v, %v; want 1 removed, 1 interrupted", rep, err)
	}
	if ids := r.rt.IDs(); len(ids) != 1 || ids[0] != w.ID {
		t.Errorf("containers after the sweep: %v, want just %s", ids, w.ID)
	}
	if r.nses.Exists("half") || r.net.count() != 1 {
		t.Errorf("the interrupted creation keeps its pin (%v) or attachment (%d attachments)", r.nses.Exists("half"), r.net.count())
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "creating")); len(ents) != 0 {
		t.Errorf("journal after the sweep: %d entries", len(ents))
	}
	if len(r.net.gcLive) != 1 || r.net.gcLive[0] != w.ID {
		t.Errorf("GC kept %v, want just %s", r.net.gcLive, w.ID)
	}
	if err := r.a.Release(context.Background(), w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	r.assertEmpty(t)
}

// TestSweepRetriesLeftoversOfCutOffCreation: a creation cut off by a
// runtime outage leaves a container whose removal fails on what it left
// (runc's cgroup, held by a leftover process): its journal entry stays,
// and the next sweep, with the container gone, removes the leftovers and
// only then forgets it.
func TestSweepRetriesLeftoversOfCutOffCreation(t *testing.T) {
	state := t.TempDir()
	r := newRig(t, Config{StateDir: state})
	r.rt.SetLeftovers("cut", 1)
	r.rt.Put(shim.WorkerInfo{ID: "cut", State: shim.StateCreated, Labels: map[string]string{conf.LabelWorker: "1"}})
	if err := r.a.journal.begin("cut"); err != nil {
		t.Fatal(err)
	}
	journal := func() int { ents, _ := os.ReadDir(filepath.Join(state, "creating")); return len(ents) }
	rep, err := r.a.Sweep(context.Background())
	if err == nil || rep.Removed != 1 {
		t.Fatalf("first Sweep = %+v, %v; want 1 removed and the leftover's error", rep, err)
	}
	if journal() != 1 {
		t.Fatalf("the journal forgot a creation whose leftovers are still there")
	}
	rep, err = r.a.Sweep(context.Background())
	if err != nil || rep.Interrupted != 1 {
		t.Fatalf("second Sweep = %+v, %v; want 1 interrupted creation finished", rep, err)
	}
	if journal() != 0 || r.rt.Leftovers("cut") != 0 {
		t.Errorf("after the second sweep: journal %d entries, leftovers %d", journal(), r.rt.Leftovers("cut"))
	}
	r.assertEmpty(t)
}

// TestCutOffCreateLeavesNothing: a Create that fails after the runtime
// made the container's snapshot (containerd stopping between the two) is
// undone like any later step; when the runtime is gone by then, the
// creation stays journalled and the sweep removes the snapshot once the
// runtime is back.
func TestCutOffCreateLeavesNothing(t *testing.T) {
	t.Run("runtime up", func(t *testing.T) {
		r := newRig(t, Config{})
		r.rt.CutCreate(fmt.Errorf("create container: %w", shim.ErrUnavailable), false)
		if _, err := r.a.Acquire(context.Background(), req("o1")); CodeOf(err) != Unavailable {
			t.Fatalf("Acquire = %v, want Unavailable", err)
		}
		if s := r.rt.Snapshots(); len(s) != 0 {
			t.Errorf("snapshots left by the cut-off create: %v", s)
		}
		r.assertEmpty(t)
	})
	t.Run("runtime gone", func(t *testing.T) {
		state := t.TempDir()
		r := newRig(t, Config{StateDir: state})
		// The runtime goes away as Create fails: the undo's Delete cannot
		// reach it.
		r.rt.CutCreate(fmt.Errorf("create container: %w", shim.ErrUnavailable), true)
		if _, err := r.a.Acquire(context.Background(), req("o1")); CodeOf(err) != Unavailable {
			t.Fatalf("Acquire = %v, want Unavailable", err)
		}
		if s := r.rt.Snapshots(); len(s) != 1 {
			t.Fatalf("snapshots after the cut-off create = %v, want the one it made", s)
		}
		journal := func() int { ents, _ := os.ReadDir(filepath.Join(state, "creating")); return len(ents) }
		if journal() != 1 {
			t.Fatalf("the journal forgot a creation whose snapshot is still there")
		}
		r.rt.SetDown(false)
		rep, err := r.a.Sweep(context.Background())
		if err != nil || rep.Interrupted != 1 {
			t.Fatalf("Sweep = %+v, %v; want the interrupted creation finished", rep, err)
		}
		if s := r.rt.Snapshots(); len(s) != 0 || journal() != 0 {
			t.Errorf("after the sweep: snapshots %v, journal %d entries", s, journal())
		}
		r.assertEmpty(t)
	})
}

// TestReconcileUndoesJournalledCreations: a creation the journal holds
// never reached its caller, so even a running, attached container of it
// is not adopted but undone (in the background).
func TestReconcileUndoesJournalledCreations(t *testing.T) {
	state := t.TempDir()
	r := newRig(t, Config{StateDir: state})
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.a.journal.begin(w.ID); err != nil { // as if killed before readiness
		t.Fatal(err)
	}
	b := New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: Config{StateDir: state, LogDir: t.TempDir()}})
	rep, err := b.Reconcile(context.Background())
	if err != nil || rep.Adopted != 0 || rep.Interrupted != 1 {
		t.Fatalf("Reconcile = %+v, %v; want nothing adopted, 1 interrupted", rep, err)
	}
	b.Wait()
	if len(b.List("")) != 0 {
		t.Errorf("the interrupted worker was adopted")
	}
	r.assertEmpty(t)
}

// hangingRuntime is a daemon that accepts calls and never answers.
type hangingRuntime struct{ *shimfake.Runtime }

func (h hangingRuntime) Ping(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
func (h hangingRuntime) Create(ctx context.Context, _ shim.WorkerSpec) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestHungRuntimeAnswersUnavailable: with a hung daemon an acquire whose
// caller set no deadline answers Unavailable after the runtime timeout.
func TestHungRuntimeAnswersUnavailable(t *testing.T) {
	rt := hangingRuntime{shimfake.New(shimfake.Options{ManualEvents: true})}
	a := New(Options{Runtime: rt, Network: newFakeNetwork(), NetNSes: newFakeNetNSes(),
		Config: Config{RuntimeTimeout: 50 * time.Millisecond, LogDir: t.TempDir()}})
	start := time.Now()
	_, err := a.Acquire(context.Background(), req("o1"))
	if CodeOf(err) != Unavailable {
		t.Errorf("acquire with a hung runtime: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("acquire with a hung runtime took %s", took)
	}
}

// TestSweepDuringRelease: a worker released while a sweep lists the
// containers (the listing taken before the release) is not taken for a
// container the agent does not know: no second teardown, no warning.
func TestSweepDuringRelease(t *testing.T) {
	r := newRig(t, Config{})
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	listed, gate := make(chan struct{}), make(chan struct{})
	r.rt.GateList(listed, gate)
	type result struct {
		rep SweepReport
		err error
	}
	swept := make(chan result, 1)
	go func() {
		rep, err := r.a.Sweep(ctx)
		swept <- result{rep, err}
	}()
	<-listed
	if err := r.a.Release(ctx, w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	res := <-swept
	if res.err != nil || res.rep.Removed != 0 {
		t.Errorf("Sweep = %+v, %v; want nothing removed", res.rep, res.err)
	}
	deletes := 0
	for _, c := range r.rt.Calls() {
		if c == "delete "+w.ID {
			deletes++
		}
	}
	if deletes != 1 {
		t.Errorf("the released worker's container was deleted %d times, want once", deletes)
	}
	r.assertEmpty(t)
}

// TestSweepRemovesOldLogs: the sweep removes the log of a worker that is
// gone once it was last written over OrphanLogAge ago, and keeps a younger
// one (an operator may still read why), a live worker's (however long it
// was quiet) and files that are not a worker's log.
func TestSweepRemovesOldLogs(t *testing.T) {
	r := newRig(t, Config{})
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	dir := r.a.cfg.LogDir
	old := time.Now().Add(-OrphanLogAge - time.Hour)
	files := map[string]bool{ // name: kept
		w.ID + ".log":          true,
		"0123456789abcdef.log": false,
		"fedcba9876543210.log": true,
		"notes.log":            true,
	}
	for name := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("x\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if name != "fedcba9876543210.log" {
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep, err := r.a.Sweep(context.Background())
	if err != nil || rep.OldLogs != 1 {
		t.Fatalf("Sweep = %+v, %v; want 1 old log removed", rep, err)
	}
	for name, kept := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", name, err == nil, kept)
		}
	}
	if err := r.a.Release(context.Background(), w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	r.assertEmpty(t)
}
