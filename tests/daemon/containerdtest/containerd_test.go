// Package containerdtest holds the integration tests of the shim's
// containerd adapter against the real daemon of scripts/stack.sh. Workers
// here get their own empty network namespace (no CNI): the tests change no
// network and send no traffic.
package containerdtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// newRuntime returns an adapter with options o on the stack's containerd
// and a fresh namespace that is removed (with its containers and images)
// when the test ends.
func newRuntime(t *testing.T, st stacktest.Stack, o containerd.Options) (*containerd.Runtime, string) {
	t.Helper()
	ns := "esbctdtest-" + nstest.RandomHex(4)
	o.Address, o.Namespace, o.Snapshotter = st.ContainerdSock, ns, st.Snapshotter
	rt, err := containerd.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if list, err := rt.List(ctx); err == nil {
			for _, w := range list {
				_ = rt.Stop(ctx, w.ID, 0)
				_ = rt.Delete(ctx, w.ID)
			}
		}
		// --sync waits for containerd's GC to drop the image's snapshots:
		// a namespace that still holds any cannot be removed.
		_ = st.Ctr(ctx, ns, "images", "rm", "--sync", st.WorkerImage).Run()
		if out, err := st.Ctr(ctx, "", "namespaces", "rm", ns).CombinedOutput(); err != nil {
			t.Errorf("remove containerd namespace %s: %v: %s", ns, err, strings.TrimSpace(string(out)))
		}
		// runc leaves the namespace's parent cgroup under each v1 controller.
		if err := stacktest.RemoveNamespaceCgroups(ns); err != nil {
			t.Error(err)
		}
		_ = rt.Close()
	})
	return rt, ns
}

// workerRuntime is newRuntime with the stack's registry allowed and the
// worker image present.
func workerRuntime(t *testing.T) (stacktest.Stack, *containerd.Runtime, string) {
	t.Helper()
	st := stacktest.Require(t)
	rt, ns := newRuntime(t, st, containerd.Options{PlainHTTP: []string{st.Registry}})
	if err := rt.EnsureImage(context.Background(), st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	return st, rt, ns
}

func TestPullNeedsPlainHTTPOptIn(t *testing.T) {
	st := stacktest.Require(t)
	ctx := context.Background()
	strict, _ := newRuntime(t, st, containerd.Options{})
	err := strict.EnsureImage(ctx, st.WorkerImage)
	if err == nil {
		t.Fatal("pulled over plain HTTP from a registry not named in PlainHTTP")
	}
	allowed, ns := newRuntime(t, st, containerd.Options{PlainHTTP: []string{st.Registry}})
	if err := allowed.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatalf("pull with the registry named: %v", err)
	}
	// Present and unpacked: a second call does not pull. A runtime on the
	// same namespace that may not pull from the registry (its pull fails,
	// as above) still has the image.
	noPull, err := containerd.New(containerd.Options{Address: st.ContainerdSock, Namespace: ns, Snapshotter: st.Snapshotter})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = noPull.Close() }()
	if err := noPull.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Errorf("EnsureImage of a present image tried to pull: %v", err)
	}

}

// TestWorkerSpec: what the adapter writes into the container's OCI spec
// (limits, no-new-privileges, env) and that Start sends the worker's
// output to spec.LogPath; the contract common to every runtime is
// TestConformance's.
func TestWorkerSpec(t *testing.T) {
	st, rt, ns := workerRuntime(t)
	ctx := context.Background()
	id := nstest.RandomHex(8)
	logPath := filepath.Join(t.TempDir(), id+".log")
	spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Env: map[string]string{"ESB_FUNCTION": "hello", "PORT": "8080"},
		Labels: map[string]string{conf.LabelWorker: "1"}, MemoryBytes: 64 << 20, CPUMillis: 500, LogPath: logPath}
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = rt.Stop(ctx, id, 0); _ = rt.Delete(ctx, id) })
	if _, err := rt.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	// The worker logs to its file once it listens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "listening on :8080") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker log %s never said it listens: %q", logPath, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := st.Ctr(ctx, ns, "containers", "info", id).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"limit": 67108864`, `"quota": 50000`, `"noNewPrivileges": true`, `"ESB_FUNCTION=hello"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("container spec lacks %s", want)
		}
	}
}

// TestRuncBinary: with Options.RuncBinary, containerd's shim runs that
// runc for the worker (the runc v2 shim's BinaryName). A wrapper that
// notes its arguments and then runs the stack's runc sees the worker's
// create, start, kill and delete, and the worker serves in between.
func TestRuncBinary(t *testing.T) {
	st := stacktest.Require(t)
	runc := stacktest.NewRecordingRunc(t) // before newRuntime: its cleanup may still run it
	rt, _ := newRuntime(t, st, containerd.Options{PlainHTTP: []string{st.Registry}, RuncBinary: runc.Path})
	ctx := context.Background()
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := nstest.RandomHex(8)
	if err := rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage, Labels: map[string]string{conf.LabelWorker: "1"}}); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := rt.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := errors.Join(rt.Stop(ctx, id, 0), rt.Delete(ctx, id)); err != nil {
		t.Fatalf("stop and delete: %v", err)
	}
	missing, calls, err := runc.Missing(id, "create", "start", "kill", "delete")
	if err != nil {
		t.Fatalf("the shim never ran runc-binary: %v", err)
	}
	if len(missing) > 0 {
		t.Errorf("runc-binary never ran %q for worker %s; its calls:\n%s", missing, id, calls)
	}
}

var pauseBuilt stacktest.ScriptImage

// TestImageConfigFollowsTheName: the adapter keeps what it read of an
// image's configuration per name and content. A second worker of the same
// image gets the very process containerd's own path made for the first
// (entrypoint, environment, working directory, user and groups), and a
// name moved to other content gets that content's configuration, not the
// remembered one.
func TestImageConfigFollowsTheName(t *testing.T) {
	st, rt, ns := workerRuntime(t)
	ctx := context.Background()
	pause := pauseBuilt.Ref(t, 5*time.Minute, "scripts/pause-image.sh", "ESB_REGISTRY="+st.Registry)
	if err := rt.EnsureImage(ctx, pause); err != nil {
		t.Fatal(err)
	}
	name := st.Registry + "/esb/moved-" + nstest.RandomHex(4) + ":latest"
	tag := func(src string) {
		t.Helper()
		if out, err := st.Ctr(ctx, ns, "images", "tag", "--force", src, name).CombinedOutput(); err != nil {
			t.Fatalf("ctr images tag %s %s: %v: %s", src, name, err, out)
		}
	}
	t.Cleanup(func() {
		// Before newRuntime's cleanup, which removes the namespace.
		_ = st.Ctr(context.Background(), ns, "images", "rm", "--sync", name, pause).Run()
	})
	c, err := client.New(st.ContainerdSock, client.WithDefaultNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	process := func(image string) *specs.Process {
		t.Helper()
		id := nstest.RandomHex(8)
		spec := shim.WorkerSpec{ID: id, Image: image, Env: map[string]string{"ESB_FUNCTION": "moved"}}
		if err := rt.Create(ctx, spec); err != nil {
			t.Fatalf("create a worker of %s: %v", image, err)
		}
		t.Cleanup(func() { _ = rt.Delete(context.Background(), id) })
		ctr, err := c.LoadContainer(namespaces.WithNamespace(ctx, ns), id)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ctr.Spec(namespaces.WithNamespace(ctx, ns))
		if err != nil {
			t.Fatal(err)
		}
		return s.Process
	}

	tag(st.WorkerImage)
	first := process(name)
	if want := []string{"/esb-worker"}; !slices.Equal(first.Args, want) {
		t.Fatalf("worker image's process args %q, want %q", first.Args, want)
	}
	if !slices.Contains(first.Env, "ESB_FUNCTION=moved") {
		t.Errorf("worker's env %q lacks the caller's ESB_FUNCTION", first.Env)
	}
	if second := process(name); !reflect.DeepEqual(second, first) {
		t.Errorf("a second worker of the same image got another process:\n got %+v\nwant %+v", second, first)
	}

	tag(pause)
	if moved := process(name); !slices.Equal(moved.Args, []string{"/pause"}) {
		t.Errorf("after %s moved to the pause image, a worker's args are %q, want [/pause]", name, moved.Args)
	}
}

// TestCreateLeavesNoLease: Create makes its lease beside the image lookup
// and deletes it after it returns; once the adapter is closed (Close waits
// for those deletes), the namespace holds no lease, whether the create
// succeeded or failed.
func TestCreateLeavesNoLease(t *testing.T) {
	st, rt, ns := workerRuntime(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		id := nstest.RandomHex(8)
		if err := rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage}); err != nil {
			t.Fatalf("create: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rt.Create(ctx, shim.WorkerSpec{ID: nstest.RandomHex(8), Image: st.Registry + "/esb/absent:latest"}); !errors.Is(err, shim.ErrImageAbsent) {
		t.Errorf("create of an absent image: %v, want shim.ErrImageAbsent", err)
	}
	for _, id := range ids {
		if err := rt.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := st.Ctr(ctx, ns, "leases", "ls", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr leases ls: %v: %s", err, out)
	}
	if left := strings.TrimSpace(string(out)); left != "" {
		t.Errorf("leases left in %s after Create and Close: %s", ns, left)
	}
}

// TestExitKeepsTheLastLines: a worker that writes a line to stdout, one to
// stderr and exits at once has both in its log, and in WaitExit's report,
// every time. Given one path for both streams (cio.LogFile), containerd's
// shim let the stdout copy close the shared file first: the stderr line
// was lost in about one exit in five here.
func TestExitKeepsTheLastLines(t *testing.T) {
	st, rt, _ := workerRuntime(t)
	ctx := context.Background()
	const exits = 20
	for i := range exits {
		id := nstest.RandomHex(8)
		logPath := filepath.Join(t.TempDir(), id+".log")
		spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Env: map[string]string{"ESB_FUNCTION": "exits", "ESB_WORKER_EXIT": "3"},
			Labels: map[string]string{conf.LabelWorker: "1"}, MemoryBytes: 64 << 20, LogPath: logPath}
		if err := rt.Create(ctx, spec); err != nil {
			t.Fatalf("create: %v", err)
		}
		since := time.Now().Add(-time.Second)
		if _, err := rt.Start(ctx, id); err != nil {
			t.Fatalf("start: %v", err)
		}
		ex := <-rt.WaitExit(ctx, id, since)
		if ex.Err != nil || ex.Code != 3 || !strings.Contains(ex.Log, "esb-worker: starting") ||
			!strings.Contains(ex.Log, "exiting with status 3 before listening") {
			t.Errorf("exit %d of %d: %+v, want status 3 and both lines in the log", i+1, exits, ex)
		}
		if err := errors.Join(rt.Stop(ctx, id, 0), rt.Delete(ctx, id)); err != nil {
			t.Fatalf("remove the exited worker: %v", err)
		}
	}
}

// TestShimGroupChurn creates, starts, stops and deletes the workers of two
// shim groups all at once, in rounds: every call succeeds (a task's
// delete beside another member's must not lose its answer to the shim's
// exit), every shim serves a running task while they run (a second shim
// started for a group must not be left without one), and no shim of the
// namespace outlives the round's deletes.
func TestShimGroupChurn(t *testing.T) {
	st, rt, ns := workerRuntime(t)
	ctx := context.Background()
	const groups, perGroup, rounds = 2, 4, 3
	for round := range rounds {
		group := map[string]string{} // worker ID -> its group, named after its first
		var ids []string
		for range groups {
			first := nstest.RandomHex(8)
			for i := range perGroup {
				id := first
				if i > 0 {
					id = nstest.RandomHex(8)
				}
				group[id] = first
				ids = append(ids, id)
			}
		}
		each := func(what string, f func(id string) error) {
			t.Helper()
			errs := make([]error, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() { errs[i] = f(id) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("round %d: %s: %v", round, what, err)
			}
		}
		each("create", func(id string) error {
			return rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage, ShimGroup: group[id], Labels: map[string]string{conf.LabelWorker: "1"}})
		})
		each("start", func(id string) error { _, err := rt.Start(ctx, id); return err })
		shims, err := leakcheck.Shims(ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range shims {
			if len(s.Children) == 0 {
				t.Errorf("round %d: shim %d (started for %s) serves no task while all %d workers run", round, s.PID, s.ID, len(ids))
			}
		}
		if len(shims) < groups {
			t.Errorf("round %d: %d shims for %d groups", round, len(shims), groups)
		}
		each("stop and delete", func(id string) error { return errors.Join(rt.Stop(ctx, id, 0), rt.Delete(ctx, id)) })
		// A shim exits a moment after its last task's delete.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			left, err := leakcheck.Shims(ns)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d shims of the namespace left a minute after every worker was deleted: %+v", round, len(left), left)
			}
		}
	}
}
