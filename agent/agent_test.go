package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

type rig struct {
	a    *Agent
	rt   *shimfake.Runtime
	net  *fakeNetwork
	nses *fakeNetNSes
}

func newRig(t *testing.T, cfg Config, mutate ...func(*rig)) *rig {
	t.Helper()
	r := &rig{rt: shimfake.New(shimfake.Options{ManualEvents: true}), net: newFakeNetwork(), nses: newFakeNetNSes()}
	r.net.note = r.rt.Note
	for _, m := range mutate {
		m(r)
	}
	cfg.LogDir = t.TempDir()
	r.a = New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: cfg,
		Probe: func(context.Context, string) error { return nil }})
	t.Cleanup(r.a.Wait)
	return r
}

// spec returns the spec worker id was created with.
func (r *rig) spec(id string) shim.WorkerSpec {
	s, _ := r.rt.Spec(id)
	return s
}

func req(owner string) AcquireRequest {
	return AcquireRequest{Function: "hello", Image: "127.0.0.1:5000/esb/worker:latest", Owner: owner, Env: map[string]string{"A": "1"}}
}

// assertEmpty checks nothing of any worker is left.
func (r *rig) assertEmpty(t *testing.T) {
	t.Helper()
	if ids := r.rt.IDs(); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
	if n := r.net.count(); n != 0 {
		t.Errorf("%d attachments left", n)
	}
	if n := r.nses.count(); n != 0 {
		t.Errorf("%d namespaces left", n)
	}
}

func TestAcquireValidation(t *testing.T) {
	r := newRig(t, Config{})
	tests := []struct {
		mutate func(*AcquireRequest)
		field  string
	}{
		{func(q *AcquireRequest) { q.Function = "" }, "function"},
		{func(q *AcquireRequest) { q.Function = "../etc" }, "function"},
		{func(q *AcquireRequest) { q.Function = strings.Repeat("f", 64) }, "function"},
		{func(q *AcquireRequest) { q.Image = "" }, "image"},
		{func(q *AcquireRequest) { q.Image = "UPPER/Case:tag" }, "image"},
		{func(q *AcquireRequest) { q.Image = "a\x00b" }, "image"},
		{func(q *AcquireRequest) { q.Owner = "" }, "owner_id"},
		{func(q *AcquireRequest) { q.Owner = "a b" }, "owner_id"},
		{func(q *AcquireRequest) { q.Owner = strings.Repeat("o", 129) }, "owner_id"},
		{func(q *AcquireRequest) { q.Env = map[string]string{"A=B": "x"} }, "env"},
		{func(q *AcquireRequest) { q.Env = map[string]string{"A": "x\x00y"} }, "env"},
		{func(q *AcquireRequest) { q.Env = map[string]string{"ESB_WORKER_ID": "1"} }, "env"},
		{func(q *AcquireRequest) { q.Env = map[string]string{"A": strings.Repeat("v", MaxEnvBytes)} }, "env"},
		{func(q *AcquireRequest) { q.MemoryBytes = 1 }, "limits.memory_bytes"},
		{func(q *AcquireRequest) { q.CPUMillis = 1 << 40 }, "limits.cpu_millis"},
		{func(q *AcquireRequest) { q.RequestID = "x/y" }, "request_id"},
	}
	for _, tc := range tests {
		q := req("o1")
		tc.mutate(&q)
		_, err := r.a.Acquire(context.Background(), q)
		var e *Error
		if !errors.As(err, &e) || e.Code != Invalid || e.Field != tc.field {
			t.Errorf("%+v: got %v, want Invalid naming %s", q, err, tc.field)
		}
	}
	if len(r.rt.Calls()) != 0 {
		t.Errorf("bad requests reached the runtime: %v", r.rt.Calls())
	}
}

func TestAcquireAndRelease(t *testing.T) {
	r := newRig(t, Config{})
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if w.IP.String() != "10.88.0.2" || w.Port != 8080 || w.State != StateBusy || w.Warm || w.Owner != "o1" {
		t.Errorf("worker %+v", w)
	}
	// containerd order: the container and its task are made beside the
	// network, and the process starts after the network is up.
	calls := r.rt.Calls()
	created := slices.DeleteFunc(slices.Clone(calls), func(c string) bool { return strings.HasPrefix(c, "attach ") })
	want := []string{"pull 127.0.0.1:5000/esb/worker:latest", "create " + w.ID, "create-task " + w.ID, "start " + w.ID, "wait " + w.ID}
	if strings.Join(created, ",") != strings.Join(want, ",") {
		t.Errorf("runtime calls %v, want %v", created, want)
	}
	if at, st := slices.Index(calls, "attach "+w.ID), slices.Index(calls, "start "+w.ID); at < 0 || at > st {
		t.Errorf("the process started before the network was up: %v", calls)
	}
	if !r.nses.Exists(w.ID) {
		t.Error("no pinned namespace")
	}
	labels := r.rt.Labels(w.ID)
	if labels[conf.LabelWorker] != "1" || labels[conf.LabelFunction] != "hello" || labels[conf.LabelOwner] != "o1" {
		t.Errorf("labels %v", labels)
	}
	if got := r.a.List("o1"); len(got) != 1 || got[0].ID != w.ID {
		t.Errorf("List(o1) = %v", got)
	}
	if got := r.a.List("o2"); len(got) != 0 {
		t.Errorf("List(o2) = %v", got)
	}
	if got := r.a.table.hostnameAt(w.IP); got != shim.WorkerHostname(w.ID) {
		t.Errorf("host name at %s = %q, want %q (the resolver's answer)", w.IP, got, shim.WorkerHostname(w.ID))
	}
	if err := r.a.Release(ctx, w.ID, "o2"); CodeOf(err) != Permission {
		t.Errorf("release by another owner: %v", err)
	}
	if err := r.a.Release(ctx, "nope", "o1"); CodeOf(err) != NotFound {
		t.Errorf("release of unknown: %v", err)
	}
	logPath := filepath.Join(r.a.cfg.LogDir, w.ID+".log") // what the runtime writes
	if err := os.WriteFile(logPath, []byte("listening\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Release(ctx, w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(logPath); !os.IsNotExist(err) {
		t.Errorf("the worker's log outlived it: %v", err)
	}
	if err := r.a.Release(ctx, w.ID, "o1"); CodeOf(err) != NotFound {
		t.Errorf("second release: %v", err)
	}
	if got := r.a.table.hostnameAt(w.IP); got != "" {
		t.Errorf("host name at %s after release = %q, want none", w.IP, got)
	}
	r.assertEmpty(t)
}

func TestAcquireNotReadyRollsBack(t *testing.T) {
	r := newRig(t, Config{ReadyTimeout: 50 * time.Millisecond})
	r.a.probe = func(context.Context, string) error { return errors.New("connection refused") }
	_, err := r.a.Acquire(context.Background(), req("o1"))
	if CodeOf(err) != NotReady {
		t.Fatalf("got %v, want NotReady", err)
	}
	r.assertEmpty(t)
	if len(r.a.List("")) != 0 {
		t.Error("a failed worker is listed")
	}
}

func TestAcquireErrorsAreClassified(t *testing.T) {
	t.Run("exhausted", func(t *testing.T) {
		r := newRig(t, Config{})
		r.net.attachErr = exhaustedErr()
		_, err := r.a.Acquire(context.Background(), req("o1"))
		if CodeOf(err) != Exhausted {
			t.Fatalf("got %v, want Exhausted", err)
		}
		r.assertEmpty(t)
	})
	t.Run("bridge full", func(t *testing.T) {
		r := newRig(t, Config{})
		r.net.attachErr = bridgeFullErr()
		_, err := r.a.Acquire(context.Background(), req("o1"))
		if CodeOf(err) != Exhausted {
			t.Fatalf("got %v, want Exhausted", err)
		}
		wantCode(t, "bridge full", toStatus(err), codes.ResourceExhausted, "a Linux bridge holds at most 1023 ports")
		r.assertEmpty(t)
	})
	t.Run("runtime down", func(t *testing.T) {
		r := newRig(t, Config{})
		r.rt.SetDown(true)
		_, err := r.a.Acquire(context.Background(), req("o1"))
		if CodeOf(err) != Unavailable {
			t.Fatalf("got %v, want Unavailable", err)
		}
		r.assertEmpty(t)
	})
	t.Run("create fails", func(t *testing.T) {
		r := newRig(t, Config{})
		r.rt.FailCreate(errors.New("no space"))
		if _, err := r.a.Acquire(context.Background(), req("o1")); err == nil {
			t.Fatal("want an error")
		}
		r.assertEmpty(t)
	})
	t.Run("max workers", func(t *testing.T) {
		r := newRig(t, Config{MaxWorkers: 1})
		if _, err := r.a.Acquire(context.Background(), req("o1")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.a.Acquire(context.Background(), req("o1")); CodeOf(err) != Exhausted {
			t.Fatalf("got %v, want Exhausted", err)
		}
	})
}

// A creation that fails oddly while the runtime is going away (dockerd
// stops its containers before it closes its API) answers Unavailable; the
// same failure with the runtime up stays Internal. In a synctest bubble,
// so the runtime goes down 300 ms into the agent's watch on fake time,
// whatever the machine's load.
func TestCreateFailureWhileRuntimeGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{})
		r.rt.FailCreate(errors.New("container exited: it has no network namespace"))
		if _, err := r.a.Acquire(context.Background(), req("o1")); CodeOf(err) != Internal {
			t.Fatalf("runtime up: got %v (%v), want Internal", CodeOf(err), err)
		}
		go func() {
			time.Sleep(300 * time.Millisecond)
			r.rt.SetDown(true)
		}()
		if _, err := r.a.Acquire(context.Background(), req("o1")); CodeOf(err) != Unavailable {
			t.Fatalf("runtime going away: got %v (%v), want Unavailable", CodeOf(err), err)
		}
		r.assertEmpty(t)
	})
}

func TestRequestIDReturnsSameWorker(t *testing.T) {
	r := newRig(t, Config{})
	q := req("o1")
	q.RequestID = "req-1"
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := r.a.Acquire(context.Background(), q)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = w.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("retried acquires got different workers: %v", ids)
		}
	}
	if n := len(r.rt.IDs()); n != 1 {
		t.Errorf("%d containers for one request ID", n)
	}
	// Another owner's identical request ID is its own request.
	q.Owner = "o2"
	w2, err := r.a.Acquire(context.Background(), q)
	if err != nil || w2.ID == ids[0] {
		t.Errorf("other owner got %v, %v", w2, err)
	}
}

func TestWarmPool(t *testing.T) {
	r := newRig(t, Config{PoolMinIdle: 1})
	ctx := context.Background()
	first, err := r.a.Acquire(ctx, req("o1"))
	if err != nil || first.Warm {
		t.Fatalf("first acquire %+v %v, want a cold worker", first, err)
	}
	r.a.Wait() // the refill
	if n := len(r.a.List("")); n != 2 {
		t.Fatalf("%d workers after refill, want 2 (one idle)", n)
	}
	second, err := r.a.Acquire(ctx, req("o2"))
	if err != nil || !second.Warm || second.Owner != "o2" {
		t.Fatalf("second acquire %+v %v, want a warm one for o2", second, err)
	}
	r.a.Wait() // the owner's label follows the answer
	if r.rt.Labels(second.ID)[conf.LabelOwner] != "o2" {
		t.Error("pooled worker's owner label not updated")
	}
	// Other env: another pool, so a cold start.
	q := req("o3")
	q.Env = map[string]string{"B": "2"}
	third, err := r.a.Acquire(ctx, q)
	if err != nil || third.Warm {
		t.Fatalf("third acquire %+v %v, want cold", third, err)
	}
}

func TestPauseResumeMetrics(t *testing.T) {
	r := newRig(t, Config{})
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Pause(ctx, w.ID, "o2"); CodeOf(err) != Permission {
		t.Errorf("pause by another owner: %v", err)
	}
	p, err := r.a.Pause(ctx, w.ID, "o1")
	if err != nil || p.State != StatePaused {
		t.Fatalf("pause: %+v %v", p, err)
	}
	q, err := r.a.Resume(ctx, w.ID, "o1")
	if err != nil || q.State != StateBusy {
		t.Fatalf("resume: %+v %v", q, err)
	}
	m, err := r.a.WorkerMetrics(ctx, w.ID, "o1")
	if err != nil || m.MemoryUsageBytes == 0 {
		t.Errorf("metrics %+v %v", m, err)
	}
	if _, err := r.a.WorkerMetrics(ctx, w.ID, ""); CodeOf(err) != Invalid {
		t.Errorf("metrics without owner: %v", err)
	}
}
