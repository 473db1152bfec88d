// Package runtimetest is the conformance suite of shim.Runtime: one set
// of tests of the interface's documented contract that every
// implementation runs (the containerd and Docker adapters against the
// real daemons, shimfake without root), so that the agent's unit tests
// may trust the fake. What a runtime offers beyond the common contract it
// declares in Capabilities; the suite checks what is declared.
package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Capabilities are what an implementation has beyond the contract every
// runtime keeps.
type Capabilities struct {
	// MutableLabels: SetLabels changes an existing container's labels
	// (containerd); without it SetLabels answers shim.ErrImmutable (Docker).
	MutableLabels bool
	// Confinement: workers are processes the kernel confines
	// (Instance.PID finds them): no-new-privileges, a seccomp filter,
	// shim.WorkerCapabilities, a read-only root with a writable /tmp when
	// asked. A fake has no process to confine.
	Confinement bool
	// Cgroups: Metrics reads the worker's cgroup, so memory in use, CPU
	// time and processes are counted. A fake reports fixed figures.
	Cgroups bool
}

// Instance is a runtime under test, on a scope of its own.
type Instance struct {
	shim.Runtime
	// Kill ends a worker's process behind the runtime's back (docker
	// kill, ctr tasks kill): the worker's exit event must follow.
	Kill func(ctx context.Context, id string) error
	// PID returns the host PID of a running worker's process; needed with
	// Capabilities.Confinement.
	PID func(ctx context.Context, id string) (int, error)
}

// Harness tells the suite how to make runtimes and what to run in them.
type Harness struct {
	// New returns a runtime on a fresh scope (a containerd namespace, an
	// esb.namespace label), emptied when t ends. Each call makes a new
	// scope: a runtime lists and reports only its own scope's workers.
	New func(t *testing.T) Instance
	// Unavailable are ways to a runtime whose daemon does not answer (no
	// socket, a stale one): each returns the runtime, or the error of its
	// constructor, which must then wrap shim.ErrUnavailable.
	Unavailable map[string]func(t *testing.T) (shim.Runtime, error)
	// Image is a worker image present in a registry the runtime may pull
	// from: a process that stays up and exits on SIGTERM (tests/images/worker).
	Image string
	// MissingImages are references whose registry answers but lacks them
	// (an unknown repository, an unknown tag).
	MissingImages []string
	// UnreachableImage is a reference whose registry does not answer.
	UnreachableImage string
	Capabilities
}

// RuntimeSuite runs the conformance tests of shim.Runtime against the
// runtimes h makes.
func RuntimeSuite(t *testing.T, name string, h Harness) {
	t.Run(name, func(t *testing.T) {
		if h.New == nil || h.Image == "" || len(h.MissingImages) == 0 || h.UnreachableImage == "" || len(h.Unavailable) == 0 {
			t.Fatal("the harness lacks New, Image, MissingImages, UnreachableImage or Unavailable")
		}
		for _, c := range []struct {
			name string
			test func(*testing.T, Harness)
		}{
			{"EnsureImage", testEnsureImage},
			{"Lifecycle", testLifecycle},
			{"Missing", testMissing},
			{"StopKillsAfterGrace", testStopKillsAfterGrace},
			{"ListIsScoped", testListIsScoped},
			{"Events", testEvents},
			{"Unavailable", testUnavailable},
			{"Confinement", testConfinement},
		} {
			t.Run(c.name, func(t *testing.T) { c.test(t, h) })
		}
	})
}

// testCtx is the context of one test: no call of the suite waits longer.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// randomID returns a fresh worker ID.
func randomID(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// workerLabels are the labels every worker carries, and one more.
func workerLabels() map[string]string {
	return map[string]string{conf.LabelWorker: "1", conf.LabelFunction: "hello", conf.LabelOwner: "o1"}
}

// create makes a worker of h.Image (with the image pulled) and removes it
// when t ends.
func create(ctx context.Context, t *testing.T, rt shim.Runtime, h Harness, spec shim.WorkerSpec) string {
	t.Helper()
	if err := rt.EnsureImage(ctx, h.Image); err != nil {
		t.Fatalf("EnsureImage(%s): %v", h.Image, err)
	}
	if spec.ID == "" {
		spec.ID = randomID(t)
	}
	spec.Image = h.Image
	if spec.Labels == nil {
		spec.Labels = workerLabels()
	}
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("Create(%s): %v", spec.ID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = rt.Stop(ctx, spec.ID, 0)
		_ = rt.Delete(ctx, spec.ID)
	})
	return spec.ID
}

// start makes and starts a worker; it returns its ID and namespace.
func start(ctx context.Context, t *testing.T, rt shim.Runtime, h Harness, spec shim.WorkerSpec) (string, string) {
	t.Helper()
	id := create(ctx, t, rt, h, spec)
	netns, err := rt.Start(ctx, id)
	if err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
	return id, netns
}

// only returns the one worker List reports, failing the test otherwise.
func only(ctx context.Context, t *testing.T, rt shim.Runtime, id string) shim.WorkerInfo {
	t.Helper()
	list, err := rt.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %+v, want only %s", list, id)
	}
	return list[0]
}

func testEnsureImage(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rt := h.New(t)
	for i := range 2 { // present: the second call has nothing to pull
		if err := rt.EnsureImage(ctx, h.Image); err != nil {
			t.Fatalf("EnsureImage(%s) #%d: %v", h.Image, i+1, err)
		}
	}
	// A wrong image or a registry that does not answer is not the
	// runtime's unavailability: the daemon answered.
	want := map[string]error{h.UnreachableImage: shim.ErrRegistryUnavailable}
	for _, ref := range h.MissingImages {
		want[ref] = shim.ErrImageNotFound
	}
	for ref, w := range want {
		err := rt.EnsureImage(ctx, ref)
		if !errors.Is(err, w) || errors.Is(err, shim.ErrUnavailable) {
			t.Errorf("EnsureImage(%s) = %v, want %v and not ErrUnavailable", ref, err, w)
		}
	}
	// Create of an image the store lacks says so (the agent, which skips
	// the check of an image it saw, then ensures it and creates again) and
	// leaves no container.
	spec := shim.WorkerSpec{ID: randomID(t), Image: h.MissingImages[0], Labels: workerLabels()}
	if err := rt.Create(ctx, spec); !errors.Is(err, shim.ErrImageAbsent) {
		_ = rt.Delete(ctx, spec.ID)
		t.Errorf("Create of %s, which the store lacks = %v, want ErrImageAbsent", spec.Image, err)
	}
	if list, err := rt.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after a Create of an absent image = %+v, %v; want nothing", list, err)
	}
}

func testLifecycle(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rt := h.New(t)
	if err := rt.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	spec := shim.WorkerSpec{ID: randomID(t), Env: map[string]string{"ESB_FUNCTION": "hello", "PORT": "8080"},
		MemoryBytes: 64 << 20, CPUMillis: 500}
	id := create(ctx, t, rt, h, spec)
	if w := only(ctx, t, rt, id); w.State != shim.StateCreated {
		t.Errorf("state after Create: %s, want created", w.State)
	}
	spec.Image, spec.Labels = h.Image, workerLabels()
	if err := rt.Create(ctx, spec); err == nil {
		t.Error("a second Create of the same ID succeeded")
	}
	netns, err := rt.Start(ctx, id)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if rt.OwnsNetNS() && netns == "" {
		t.Error("Start returned no namespace, though the runtime makes it")
	}
	if h.Confinement && rt.OwnsNetNS() {
		checkNetNS(t, netns)
	}
	w := only(ctx, t, rt, id)
	if w.State != shim.StateRunning || w.Image != h.Image || w.NetNS != netns || w.Created.IsZero() ||
		w.Labels[conf.LabelOwner] != "o1" || w.Labels[conf.LabelFunction] != "hello" {
		t.Errorf("List after Start = %+v, want running, image %s, namespace %q, a creation time and the labels given", w, h.Image, netns)
	}

	err = rt.SetLabels(ctx, id, map[string]string{conf.LabelOwner: "o2"})
	switch {
	case h.MutableLabels && err != nil:
		t.Errorf("SetLabels: %v", err)
	case h.MutableLabels:
		if l := only(ctx, t, rt, id).Labels; l[conf.LabelOwner] != "o2" || l[conf.LabelFunction] != "hello" {
			t.Errorf("labels after SetLabels: %v, want owner o2 and the others kept", l)
		}
	case !errors.Is(err, shim.ErrImmutable):
		t.Errorf("SetLabels: %v, want ErrImmutable", err)
	}

	m, err := rt.Metrics(ctx, id)
	if err != nil || m.MemoryLimitBytes != 64<<20 || m.OOMEvents != 0 {
		t.Errorf("Metrics = %+v, %v; want the 64 MiB limit, no OOM", m, err)
	}
	if h.Cgroups && (m.MemoryUsageBytes == 0 || m.Pids == 0 || m.CPUUsageNanos == 0) {
		t.Errorf("Metrics = %+v; want memory, processes and CPU time counted", m)
	}

	if err := rt.Pause(ctx, id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if w := only(ctx, t, rt, id); w.State != shim.StatePaused || w.NetNS != netns {
		t.Errorf("after Pause: %+v", w)
	}
	if err := rt.Resume(ctx, id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if w := only(ctx, t, rt, id); w.State != shim.StateRunning {
		t.Errorf("after Resume: state %s", w.State)
	}

	// The worker honours SIGTERM: with a grace longer than the call may
	// wait, Stop returns only because the process ended on its signal.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = rt.Stop(sctx, id, time.Hour)
	cancel()
	if err != nil {
		t.Fatalf("Stop: %v (SIGTERM not honoured?)", err)
	}
	stopped(ctx, t, rt, id)
	for i := range 2 { // idempotent
		if err := rt.Stop(ctx, id, time.Second); err != nil {
			t.Errorf("Stop of a stopped worker #%d: %v", i+1, err)
		}
	}
	for i := range 2 {
		if err := rt.Delete(ctx, id); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if list, err := rt.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after Delete = %+v, %v; want none", list, err)
	}
	checkMissing(ctx, t, rt, id)
}

// stopped checks that List reports worker id as neither running nor
// paused (Docker says stopped; containerd, whose task Stop deletes,
// created).
func stopped(ctx context.Context, t *testing.T, rt shim.Runtime, id string) {
	t.Helper()
	w := only(ctx, t, rt, id)
	if w.State != shim.StateStopped && w.State != shim.StateCreated {
		t.Errorf("after Stop: state %s, want stopped (or created: no task)", w.State)
	}
	if rt.OwnsNetNS() && w.NetNS != "" {
		t.Errorf("after Stop: namespace %q, want none (the runtime drops it with the process)", w.NetNS)
	}
}

// checkMissing: every call about a worker that is not there answers
// ErrNotFound, but Stop and Delete, which succeed.
func checkMissing(ctx context.Context, t *testing.T, rt shim.Runtime, id string) {
	t.Helper()
	errs := map[string]error{"Pause": rt.Pause(ctx, id), "Resume": rt.Resume(ctx, id),
		"SetLabels": rt.SetLabels(ctx, id, map[string]string{conf.LabelOwner: "o3"})}
	_, errs["Start"] = rt.Start(ctx, id)
	_, errs["Metrics"] = rt.Metrics(ctx, id)
	for call, err := range errs {
		if !errors.Is(err, shim.ErrNotFound) {
			t.Errorf("%s of missing worker %s: %v, want ErrNotFound", call, id, err)
		}
	}
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("Stop of missing worker %s: %v, want nil", id, err)
	}
	if err := rt.Delete(ctx, id); err != nil {
		t.Errorf("Delete of missing worker %s: %v, want nil", id, err)
	}
}

func testMissing(t *testing.T, h Harness) {
	ctx := testCtx(t)
	checkMissing(ctx, t, h.New(t), "missing-"+randomID(t))
}

// testStopKillsAfterGrace: a paused (frozen) worker cannot honour
// SIGTERM, so Stop must kill it once the grace has passed.
func testStopKillsAfterGrace(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rt := h.New(t)
	id, _ := start(ctx, t, rt, h, shim.WorkerSpec{})
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rt.Stop(sctx, id, 300*time.Millisecond); err != nil {
		t.Fatalf("Stop of a paused worker: %v", err)
	}
	stopped(ctx, t, rt, id)
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func testListIsScoped(t *testing.T, h Harness) {
	ctx := testCtx(t)
	a, b := h.New(t), h.New(t)
	ida, _ := start(ctx, t, a, h, shim.WorkerSpec{})
	idb := create(ctx, t, b, h, shim.WorkerSpec{})
	only(ctx, t, a, ida)
	only(ctx, t, b, idb)
}

// NextEvent returns the next event of a runtime's event stream, failing
// the test when the stream ends or nothing comes within 10 s.
func NextEvent(t testing.TB, evs <-chan shim.Event, errc <-chan error) shim.Event {
	t.Helper()
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatalf("event stream ended: %v", <-errc)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return shim.Event{}
}

// testEvents: a worker killed behind the runtime's back is an exit event,
// its deletion a delete event; another scope's workers are not reported;
// the stream ends without error when its context does.
func testEvents(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rt, other := h.New(t), h.New(t)
	id, _ := start(ctx, t, rt, h, shim.WorkerSpec{})
	foreign, _ := start(ctx, t, other, h, shim.WorkerSpec{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errc := rt.Events(sctx)
	if err := other.Kill(ctx, foreign); err != nil {
		t.Fatalf("kill the other scope's worker: %v", err)
	}
	if err := rt.Kill(ctx, id); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if ev := NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventExit}) {
		t.Errorf("after the kill: %+v, want the exit of %s", ev, id)
	}
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ev := NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventDelete}) {
		t.Errorf("after Delete: %+v, want the delete of %s", ev, id)
	}
	cancel()
	for range evs { // drain until the stream closes
	}
	if err := <-errc; err != nil {
		t.Errorf("stream ended by its context with %v, want nil", err)
	}
}

// testUnavailable: with its daemon gone, every call of the runtime
// answers ErrUnavailable, and its event stream ends with it.
func testUnavailable(t *testing.T, h Harness) {
	for name, newRT := range h.Unavailable {
		t.Run(name, func(t *testing.T) {
			rt, err := newRT(t)
			if err != nil {
				if !errors.Is(err, shim.ErrUnavailable) {
					t.Fatalf("constructor: %v, want ErrUnavailable", err)
				}
				t.Logf("the constructor refused: %v", err)
				return
			}
			checkUnavailable(t, rt, h.Image)
		})
	}
}

// checkUnavailable: every call of rt answers ErrUnavailable.
func checkUnavailable(t *testing.T, rt shim.Runtime, image string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := randomID(t)
	errs := map[string]error{"Ping": rt.Ping(ctx), "EnsureImage": rt.EnsureImage(ctx, image),
		"Create": rt.Create(ctx, shim.WorkerSpec{ID: id, Image: image, Labels: workerLabels()}),
		"Stop":   rt.Stop(ctx, id, time.Second), "Delete": rt.Delete(ctx, id), "Pause": rt.Pause(ctx, id),
		"Resume": rt.Resume(ctx, id)}
	_, errs["List"] = rt.List(ctx)
	_, errs["Start"] = rt.Start(ctx, id)
	_, errs["Metrics"] = rt.Metrics(ctx, id)
	evs, errc := rt.Events(ctx)
	for range evs { // drain until the stream closes
	}
	errs["Events"] = <-errc
	for call, err := range errs {
		if !errors.Is(err, shim.ErrUnavailable) {
			t.Errorf("%s with the daemon gone: %v, want ErrUnavailable", call, err)
		}
	}
}

// testConfinement starts a worker with a writable and with a read-only
// root file system and reads the kernel's view of each worker process.
func testConfinement(t *testing.T, h Harness) {
	if !h.Confinement {
		t.Log("not a capability of this runtime: it has no processes to confine")
		return
	}
	ctx := testCtx(t)
	rt := h.New(t)
	if rt.PID == nil {
		t.Fatal("the harness declares Confinement but its instances have no PID")
	}
	for _, readOnly := range []bool{false, true} {
		id, _ := start(ctx, t, rt, h, shim.WorkerSpec{ReadOnlyRootfs: readOnly})
		pid, err := rt.PID(ctx, id)
		if err != nil {
			t.Fatalf("PID of %s: %v", id, err)
		}
		CheckWorkerConfinement(t, pid, readOnly)
	}
}
