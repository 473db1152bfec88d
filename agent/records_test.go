package agent

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openRecords(t *testing.T, path string) *BoltRecords {
	t.Helper()
	r, err := OpenRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBoltRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	r := openRecords(t, path)
	if _, err := OpenRecords(path); err == nil || !strings.Contains(err.Error(), "another agent holds it") {
		t.Errorf("second open of a held file: %v", err)
	}
	if err := r.Put("w1", Record{Owner: "o1", Request: "r1", PoolKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("w2", Record{PoolKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("w2", Record{Owner: "o2", PoolKey: "k"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "nothing"} {
		if err := r.Delete(id); err != nil {
			t.Errorf("delete %s: %v", id, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openRecords(t, path)
	defer func() { _ = r.Close() }()
	all, err := r.All()
	if err != nil || len(all) != 1 || all["w2"] != (Record{Owner: "o2", PoolKey: "k"}) {
		t.Errorf("after reopen: %v, %v", all, err)
	}
}

// TestRecordsKeepPooledOwnersAcrossRestart: with a runtime whose labels
// cannot change (Docker), a pooled worker handed to an owner keeps the
// label of its creation (no owner); after a restart the agent's records,
// not the label, say whose it is. Without records the restart would put
// the busy worker back in the pool, for anyone.
func TestRecordsKeepPooledOwnersAcrossRestart(t *testing.T) {
	for _, withRecords := range []bool{true, false} {
		r := newRig(t, Config{PoolMinIdle: 1}, func(r *rig) { r.rt.SetOwnsNetNS(true); r.rt.SetImmutableLabels(true) })
		path := filepath.Join(t.TempDir(), "state.db")
		var recs Records
		if withRecords {
			br := openRecords(t, path)
			recs = br
			r.a.recs = br
		}
		ctx := context.Background()
		first, err := r.a.Acquire(ctx, req("o1"))
		if err != nil {
			t.Fatal(err)
		}
		r.a.Wait() // the pool is refilled
		q := req("o2")
		q.RequestID = "r2"
		warm, err := r.a.Acquire(ctx, q)
		if err != nil || !warm.Warm {
			t.Fatalf("second acquire: %+v, %v (want a pooled worker)", warm, err)
		}
		r.a.Wait()
		if l := r.rt.Labels(warm.ID); l["esb.owner"] != "" {
			t.Fatalf("the immutable runtime changed a label: %v", l)
		}
		// Restart: a new agent over the same runtime, network and file.
		if br, ok := recs.(*BoltRecords); ok {
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}
			recs = openRecords(t, path)
			defer func() { _ = recs.(*BoltRecords).Close() }()
		}
		b := restarted(t, r, recs)
		o2 := b.List("o2")
		if !withRecords {
			if len(o2) != 0 {
				t.Errorf("without records the stale label still said o2: %v", o2)
			}
			continue
		}
		checkAdoptedOwners(t, b, first.ID, warm.ID)
		again, err := b.Acquire(ctx, q)
		if err != nil || again.ID != warm.ID {
			t.Errorf("retry of r2 after restart: %+v, %v; want %s", again, err, warm.ID)
		}
		if err := b.Release(ctx, warm.ID, "o2"); err != nil {
			t.Fatal(err)
		}
		all, err := recs.All()
		if err != nil || len(all) != 2 {
			t.Errorf("records after release: %v, %v (want the 2 live workers)", all, err)
		}
		// A worker gone while no agent ran loses its record at reconcile.
		r.rt.Kill(first.ID)
		restarted(t, r, recs)
		if all, _ := recs.All(); len(all) != 1 {
			t.Errorf("records after reconcile: %v, want only the idle worker's", all)
		}
	}
}

// restarted is a new agent over r's runtime, network and namespaces with
// recs, reconciled.
func restarted(t *testing.T, r *rig, recs Records) *Agent {
	t.Helper()
	a := New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: Config{LogDir: t.TempDir()}, Records: recs,
		Probe: func(context.Context, string) error { return nil }})
	if _, err := a.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// checkAdoptedOwners checks that b adopted o1's worker first, o2's pooled
// worker warm (busy) and the pool's idle one.
func checkAdoptedOwners(t *testing.T, b *Agent, first, warm string) {
	t.Helper()
	if o2 := b.List("o2"); len(o2) != 1 || o2[0].ID != warm || o2[0].State != StateBusy {
		t.Errorf("after restart List(o2) = %+v, want the pooled worker %s busy", o2, warm)
	}
	if o1 := b.List("o1"); len(o1) != 1 || o1[0].ID != first {
		t.Errorf("after restart List(o1) = %+v", o1)
	}
	if idle := b.List(""); len(idle) != 3 {
		t.Errorf("after restart %d workers, want 3 (2 busy, 1 idle)", len(idle))
	}
}

// failingRecords cannot write.
type failingRecords struct{ noRecords }

func (failingRecords) Put(string, Record) error { return errors.New("disk full") }

// TestUnrecordedPoolHandOut: when the owner of a pooled worker cannot be
// recorded, the worker stays in the pool (a restart could not tell whose
// it is) and the caller gets a new worker, labelled with its owner.
func TestUnrecordedPoolHandOut(t *testing.T) {
	r := newRig(t, Config{PoolMinIdle: 1}, func(r *rig) { r.rt.SetOwnsNetNS(true); r.rt.SetImmutableLabels(true) })
	r.a.recs = failingRecords{}
	ctx := context.Background()
	if _, err := r.a.Acquire(ctx, req("o1")); err != nil {
		t.Fatal(err)
	}
	r.a.Wait()
	idle := r.a.List("")
	w, err := r.a.Acquire(ctx, req("o2"))
	if err != nil {
		t.Fatal(err)
	}
	r.a.Wait()
	if w.Warm || slices.ContainsFunc(idle, func(x Worker) bool { return x.ID == w.ID }) {
		t.Errorf("an unrecorded pooled worker was handed out: %+v", w)
	}
	if l := r.rt.Labels(w.ID); l["esb.owner"] != "o2" {
		t.Errorf("the new worker's labels %v, want esb.owner=o2", l)
	}
	n := 0
	for _, x := range r.a.List("") {
		if x.State == StateIdle && x.Owner == "" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d idle workers, want the pooled one back in the pool", n)
	}
}
