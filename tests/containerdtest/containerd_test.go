// Package containerdtest holds the integration tests of the shim's
// containerd adapter against the real daemon of scripts/stack.sh. Workers
// here get their own empty network namespace (no CNI): the tests change no
// network and send no traffic.
package containerdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/tests/nstest"
	"github.com/edge-serverless-box/esbnet/tests/stacktest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nstest.CleanupBuilt()
	os.Exit(code)
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newRuntime returns an adapter on a fresh containerd namespace that is
// removed (with its containers and images) when the test ends.
func newRuntime(t *testing.T, st stacktest.Stack, plain []string) (*containerd.Runtime, string) {
	t.Helper()
	ns := "esbctdtest-" + randomHex(t, 4)
	rt, err := containerd.New(containerd.Options{Address: st.ContainerdSock, Namespace: ns, PlainHTTP: plain, Snapshotter: st.Snapshotter})
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

func TestPullNeedsPlainHTTPOptIn(t *testing.T) {
	st := stacktest.Require(t)
	ctx := context.Background()
	strict, _ := newRuntime(t, st, nil)
	err := strict.EnsureImage(ctx, st.WorkerImage)
	if err == nil {
		t.Fatal("pulled over plain HTTP from a registry not named in PlainHTTP")
	}
	allowed, _ := newRuntime(t, st, []string{st.Registry})
	if err := allowed.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatalf("pull with the registry named: %v", err)
	}
	// Present and unpacked: a second call does not pull.
	start := time.Now()
	if err := allowed.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	t.Logf("EnsureImage of a present image took %s", time.Since(start))

	// The image or tag missing is ErrImageNotFound; a registry that
	// refuses is ErrRegistryUnavailable; neither is containerd's
	// unavailability.
	for ref, want := range map[string]error{st.Registry + "/esb/missing-" + randomHex(t, 4) + ":latest": shim.ErrImageNotFound,
		st.Registry + "/esb/worker:missing-" + randomHex(t, 4): shim.ErrImageNotFound, "127.0.0.1:1/esb/worker:latest": shim.ErrRegistryUnavailable} {
		err := allowed.EnsureImage(ctx, ref)
		if err == nil || errors.Is(err, shim.ErrUnavailable) || !errors.Is(err, want) {
			t.Errorf("EnsureImage(%s) = %v, want %v and not ErrUnavailable", ref, err, want)
		} else {
			t.Logf("EnsureImage(%s): %v", ref, err)
		}
	}
}

func TestWorkerLifecycle(t *testing.T) {
	st := stacktest.Require(t)
	ctx := context.Background()
	rt, ns := newRuntime(t, st, []string{st.Registry})
	if err := rt.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := randomHex(t, 8)
	logPath := filepath.Join(t.TempDir(), id+".log")
	labels := map[string]string{conf.LabelWorker: "1", conf.LabelFunction: "hello", conf.LabelOwner: "o1"}
	spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Env: map[string]string{"ESB_FUNCTION": "hello", "PORT": "8080"},
		Labels: labels, MemoryBytes: 64 << 20, CPUMillis: 500, LogPath: logPath}
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
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
	list, err := rt.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].State != shim.StateRunning || list[0].Labels[conf.LabelOwner] != "o1" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	// The limits reached the OCI spec.
	out, err := st.Ctr(ctx, ns, "containers", "info", id).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"limit": 67108864`, `"quota": 50000`, `"noNewPrivileges": true`, `"ESB_FUNCTION=hello"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("container spec lacks %s", want)
		}
	}
	if err := rt.SetLabels(ctx, id, map[string]string{conf.LabelOwner: "o2"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := rt.List(ctx); list[0].Labels[conf.LabelOwner] != "o2" || list[0].Labels[conf.LabelFunction] != "hello" {
		t.Errorf("labels after SetLabels: %v", list[0].Labels)
	}
	m, err := rt.Metrics(ctx, id)
	if err != nil || m.MemoryUsageBytes == 0 || m.MemoryLimitBytes != 64<<20 || m.Pids == 0 {
		t.Errorf("metrics %+v, %v", m, err)
	}
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if list, _ := rt.List(ctx); list[0].State != shim.StatePaused {
		t.Errorf("state after pause %s", list[0].State)
	}
	if err := rt.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	// The worker exits on SIGTERM well within the grace period.
	start := time.Now()
	if err := rt.Stop(ctx, id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop took %s: SIGTERM was not honoured", took)
	}
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := rt.Delete(ctx, id); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if list, _ := rt.List(ctx); len(list) != 0 {
		t.Errorf("List after delete: %+v", list)
	}
	if err := rt.Pause(ctx, id); !errors.Is(err, shim.ErrNotFound) {
		t.Errorf("pause of a deleted worker: %v, want ErrNotFound", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	st := stacktest.Require(t)
	ctx := context.Background()
	rt, _ := newRuntime(t, st, []string{st.Registry})
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := randomHex(t, 8)
	if err := rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage, Labels: map[string]string{conf.LabelWorker: "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rt.Pause(ctx, id); err != nil { // a frozen process cannot honour SIGTERM
		t.Fatal(err)
	}
	start := time.Now()
	if err := rt.Stop(ctx, id, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stop of a paused worker took %s", took)
	}
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableDaemon(t *testing.T) {
	nstest.RequirePrivileged(t)
	rt, err := containerd.New(containerd.Options{Address: filepath.Join(t.TempDir(), "nothing.sock")})
	if err != nil {
		if !errors.Is(err, shim.ErrUnavailable) {
			t.Fatalf("New: %v, want ErrUnavailable", err)
		}
		return
	}
	defer func() { _ = rt.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); !errors.Is(err, shim.ErrUnavailable) {
		t.Errorf("Ping of a missing daemon: %v, want ErrUnavailable", err)
	}
	if _, err := rt.List(ctx); !errors.Is(err, shim.ErrUnavailable) {
		t.Errorf("List of a missing daemon: %v, want ErrUnavailable", err)
	}
}

// TestEvents: ctr task kill of a worker is an exit event, deleting its
// container a delete event; another namespace's workers are not reported;
// the stream ends without error when its context does.
func TestEvents(t *testing.T) {
	st := stacktest.Require(t)
	ctx := context.Background()
	rt, ns := newRuntime(t, st, []string{st.Registry})
	other, otherNS := newRuntime(t, st, []string{st.Registry})
	start := func(rt *containerd.Runtime) string {
		if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
			t.Fatal(err)
		}
		id := randomHex(t, 8)
		if err := rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage, Labels: map[string]string{conf.LabelWorker: "1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id, foreign := start(rt), start(other)
	sctx, cancel := context.WithCancel(ctx)
	evs, errc := rt.Events(sctx)
	if out, err := st.Ctr(ctx, otherNS, "tasks", "kill", "--signal", "SIGKILL", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill (other namespace): %v: %s", err, out)
	}
	killed := time.Now()
	if out, err := st.Ctr(ctx, ns, "tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill: %v: %s", err, out)
	}
	if ev := stacktest.NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventExit}) {
		t.Errorf("after ctr tasks kill: %+v, want the exit of %s", ev, id)
	}
	t.Logf("exit event %s after the kill", time.Since(killed))
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ev := stacktest.NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventDelete}) {
		t.Errorf("after delete: %+v, want the delete of %s", ev, id)
	}
	cancel()
	for range evs {
	}
	if err := <-errc; err != nil {
		t.Errorf("stream ended by its context with %v, want nil", err)
	}
}
