// Package dockertest holds the integration tests of the shim's Docker
// adapter against the real dockerd of scripts/stack.sh. Workers here keep
// the empty network namespace dockerd makes for network mode "none" (no
// CNI): the tests change no network and send no traffic.
package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/docker"
	"github.com/edge-serverless-box/esbnet/tests/nstest"
	"github.com/edge-serverless-box/esbnet/tests/stacktest"
)

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newRuntime returns an adapter on a fresh esb.namespace whose workers are
// removed when the test ends, and a plain Docker client to look at them.
func newRuntime(t *testing.T, st stacktest.Stack) (*docker.Runtime, *client.Client) {
	t.Helper()
	ns := "esbdkrtest-" + randomHex(t, 4)
	rt, err := docker.New(docker.Options{Host: st.DockerHost(), Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := client.NewClientWithOpts(client.WithHost(st.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, err := rt.List(ctx)
		if err != nil {
			t.Errorf("cleanup: list: %v", err)
		}
		for _, w := range list {
			if err := rt.Delete(ctx, w.ID); err != nil {
				t.Errorf("cleanup: delete %s: %v", w.ID, err)
			}
		}
		_ = rt.Close()
		_ = dc.Close()
	})
	return rt, dc
}

func inspect(t *testing.T, dc *client.Client, id string) container.InspectResponse {
	t.Helper()
	info, err := dc.ContainerInspect(testCtx(t), docker.ContainerName(id))
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return info
}

// waitLog waits until the worker's Docker log contains want.
func waitLog(t *testing.T, dc *client.Client, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc, err := dc.ContainerLogs(testCtx(t), docker.ContainerName(id), container.LogsOptions{ShowStdout: true, ShowStderr: true})
		var b []byte
		if err == nil {
			b, err = io.ReadAll(rc)
			_ = rc.Close()
		}
		if err == nil && strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of %s never said %q: %q, %v", id, want, b, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNetNS checks that path is a network namespace other than the host's
// that holds only lo.
func checkNetNS(t *testing.T, path string) {
	t.Helper()
	if err := ns.IsNSorErr(path); err != nil {
		t.Fatalf("Start returned %q: %v", path, err)
	}
	theirs, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(theirs, ours) {
		t.Fatalf("the worker's namespace %s is the host's", path)
	}
	var names []string
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("interfaces in %s: %v", path, err)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Errorf("the worker's namespace holds %v, want only lo", names)
	}
}

// TestDaemonKeepsOffTheHostNetwork checks the settings scripts/stack.sh
// gives dockerd: its own data root, and no network of its own beyond
// "none" and "host" (no default bridge, so no docker0 and no rules for it).
func TestDaemonKeepsOffTheHostNetwork(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	_, dc := newRuntime(t, st)
	info, err := dc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Docker %s (API %s), storage %s, cgroup driver %s, root %s", info.ServerVersion, dc.ClientVersion(), info.Driver, info.CgroupDriver, info.DockerRootDir)
	if info.DockerRootDir == "/var/lib/docker" {
		t.Errorf("dockerd uses the system data root %s", info.DockerRootDir)
	}
	nets, err := dc.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.Name != "none" && n.Name != "host" {
			t.Errorf("dockerd has network %s (driver %s): the stack's dockerd must run with bridge none", n.Name, n.Driver)
		}
	}
	if _, err := net.InterfaceByName("docker0"); err == nil {
		t.Error("the host has a docker0 interface")
	}
}

func TestEnsureImage(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	// Remove the image when no container uses it, to time a real pull.
	_, rmErr := dc.ImageRemove(ctx, st.WorkerImage, image.RemoveOptions{})
	start := time.Now()
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatalf("pull over plain HTTP from %s: %v", st.Registry, err)
	}
	if rmErr == nil {
		t.Logf("EnsureImage pulled %s in %s", st.WorkerImage, time.Since(start))
	} else {
		t.Logf("image in use, not removed (%v); EnsureImage took %s", rmErr, time.Since(start))
	}
	if _, err := dc.ImageInspect(ctx, st.WorkerImage); err != nil {
		t.Fatalf("after EnsureImage: %v", err)
	}
	start = time.Now()
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	t.Logf("EnsureImage of a present image took %s", time.Since(start))

	// A registry that refuses, or an image it lacks, is not "runtime
	// unavailable": dockerd answered.
	// The image missing is ErrImageNotFound; the registry refusing is
	// ErrRegistryUnavailable.
	for ref, want := range map[string]error{st.Registry + "/esb/missing-" + randomHex(t, 4) + ":latest": shim.ErrImageNotFound,
		st.Registry + "/esb/worker:missing-" + randomHex(t, 4): shim.ErrImageNotFound, "127.0.0.1:1/esb/worker:latest": shim.ErrRegistryUnavailable} {
		err := rt.EnsureImage(ctx, ref)
		if err == nil || errors.Is(err, shim.ErrUnavailable) || !errors.Is(err, want) {
			t.Errorf("EnsureImage(%s) = %v, want %v and not ErrUnavailable", ref, err, want)
		} else {
			t.Logf("EnsureImage(%s): %v", ref, err)
		}
	}
}

func TestWorkerLifecycle(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	if err := rt.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := randomHex(t, 8)
	labels := map[string]string{conf.LabelWorker: "1", conf.LabelFunction: "hello", conf.LabelOwner: "o1"}
	spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Env: map[string]string{"ESB_FUNCTION": "hello", "PORT": "8080"},
		Labels: labels, MemoryBytes: 64 << 20, CPUMillis: 500, LogPath: filepath.Join(t.TempDir(), id+".log")}
	start := time.Now()
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	created := time.Since(start)
	if err := rt.Create(ctx, spec); err == nil {
		t.Error("a second Create of the same ID succeeded")
	}
	netns, err := rt.Start(ctx, id)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("create %s, create+start %s; namespace %s", created, time.Since(start), netns)
	checkNetNS(t, netns)
	waitLog(t, dc, id, "listening on :8080")

	list, err := rt.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	w := list[0]
	if w.ID != id || w.State != shim.StateRunning || w.Labels[conf.LabelOwner] != "o1" || w.Labels[conf.LabelFunction] != "hello" ||
		w.NetNS != netns || w.Image != st.WorkerImage || time.Since(w.Created) > time.Minute {
		t.Errorf("List = %+v", w)
	}

	// The limits and settings reached the container.
	info := inspect(t, dc, id)
	if h := info.HostConfig; h.Memory != 64<<20 || h.NanoCPUs != 500_000_000 || string(h.NetworkMode) != "none" ||
		!slices.Contains(h.SecurityOpt, "no-new-privileges") || h.LogConfig.Type != "json-file" {
		t.Errorf("host config: memory %d, nano CPUs %d, network %q, security %v, log %q", h.Memory, h.NanoCPUs, h.NetworkMode, h.SecurityOpt, h.LogConfig.Type)
	}
	if !slices.Contains(info.Config.Env, "ESB_FUNCTION=hello") || info.Config.Labels[conf.LabelNamespace] == "" {
		t.Errorf("config: env %v, labels %v", info.Config.Env, info.Config.Labels)
	}
	if info.NetworkSettings.SandboxKey != netns {
		t.Errorf("sandbox key %q, Start returned %q", info.NetworkSettings.SandboxKey, netns)
	}

	if err := rt.SetLabels(ctx, id, map[string]string{conf.LabelOwner: "o2"}); !errors.Is(err, shim.ErrImmutable) {
		t.Errorf("SetLabels: %v, want ErrImmutable", err)
	}
	if err := rt.SetLabels(ctx, "nothing-"+randomHex(t, 4), nil); !errors.Is(err, shim.ErrNotFound) {
		t.Errorf("SetLabels of a missing worker: %v, want ErrNotFound", err)
	}

	m, err := rt.Metrics(ctx, id)
	if err != nil || m.MemoryUsageBytes == 0 || m.MemoryLimitBytes != 64<<20 || m.Pids == 0 || m.CPUUsageNanos == 0 || m.OOMEvents != 0 {
		t.Errorf("metrics %+v, %v", m, err)
	}
	t.Logf("metrics %+v", m)

	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if list, _ := rt.List(ctx); len(list) != 1 || list[0].State != shim.StatePaused || list[0].NetNS != netns {
		t.Errorf("after pause: %+v", list)
	}
	if err := rt.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	if list, _ := rt.List(ctx); len(list) != 1 || list[0].State != shim.StateRunning {
		t.Errorf("after resume: %+v", list)
	}

	// The worker exits on SIGTERM well within the grace period.
	start = time.Now()
	if err := rt.Stop(ctx, id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop took %s: SIGTERM was not honoured", took)
	} else {
		t.Logf("stop took %s", took)
	}
	if st := inspect(t, dc, id).State; st.Running || st.ExitCode != 0 {
		t.Errorf("after stop: running %v, exit code %d (want a clean exit on SIGTERM)", st.Running, st.ExitCode)
	}
	// dockerd drops the namespace's bind mount with the stopped sandbox.
	deadline := time.Now().Add(5 * time.Second)
	for ns.IsNSorErr(netns) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := ns.IsNSorErr(netns); err == nil {
		t.Errorf("the namespace %s outlives the stopped worker", netns)
	}
	if list, _ := rt.List(ctx); len(list) != 1 || list[0].State != shim.StateStopped || list[0].NetNS != "" {
		t.Errorf("after stop: %+v", list)
	}
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := rt.Stop(ctx, "nothing-"+randomHex(t, 4), time.Second); err != nil {
		t.Errorf("stop of a missing worker: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := rt.Delete(ctx, id); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if list, err := rt.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after delete: %+v, %v", list, err)
	}
	if err := rt.Pause(ctx, id); !errors.Is(err, shim.ErrNotFound) {
		t.Errorf("pause of a deleted worker: %v, want ErrNotFound", err)
	}
	if _, err := rt.Metrics(ctx, id); !errors.Is(err, shim.ErrNotFound) {
		t.Errorf("metrics of a deleted worker: %v, want ErrNotFound", err)
	}
	if _, err := rt.Start(ctx, id); !errors.Is(err, shim.ErrNotFound) {
		t.Errorf("start of a deleted worker: %v, want ErrNotFound", err)
	}
}

func startWorker(t *testing.T, rt *docker.Runtime, st stacktest.Stack) string {
	t.Helper()
	ctx := testCtx(t)
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

func TestStopOfPausedWorker(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	id := startWorker(t, rt, st)
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := rt.Stop(ctx, id, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > 10*time.Second {
		t.Errorf("stop of a paused worker took %s", took)
	}
	s := inspect(t, dc, id).State
	if s.Running || s.Paused {
		t.Errorf("after stop: running %v, paused %v", s.Running, s.Paused)
	}
	t.Logf("stop of a paused worker took %s, exit code %d", took, s.ExitCode)
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestStopKillsAfterGrace gives a worker a stop signal it ignores (the Go
// runtime catches SIGUSR1 and does nothing), so only the SIGKILL after the
// grace period ends it.
func TestStopKillsAfterGrace(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	probe := startWorker(t, rt, st)
	ns := inspect(t, dc, probe).Config.Labels[conf.LabelNamespace]
	id := randomHex(t, 8)
	_, err := dc.ContainerCreate(ctx, &container.Config{Image: st.WorkerImage, StopSignal: "SIGUSR1",
		Labels: map[string]string{conf.LabelWorker: "1", conf.LabelNamespace: ns}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitLog(t, dc, id, "listening on :8080")
	start := time.Now()
	if err := rt.Stop(ctx, id, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	s := inspect(t, dc, id).State
	// 1.5 s is rounded up to Docker's whole seconds: 2 s.
	if took < 2*time.Second || took > 10*time.Second || s.Running || s.ExitCode != 137 {
		t.Errorf("stop took %s, running %v, exit code %d; want 2s to 10s and 137 (SIGKILL)", took, s.Running, s.ExitCode)
	}
	t.Logf("stop of a worker that ignores its stop signal took %s", took)
}

func TestListIsScopedByNamespace(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	a, _ := newRuntime(t, st)
	b, _ := newRuntime(t, st)
	ida, idb := startWorker(t, a, st), startWorker(t, b, st)
	for _, c := range []struct {
		rt   *docker.Runtime
		want string
	}{{a, ida}, {b, idb}} {
		list, err := c.rt.List(ctx)
		if err != nil || len(list) != 1 || list[0].ID != c.want {
			t.Errorf("List = %+v, %v; want only %s", list, err, c.want)
		}
	}
}

func TestUnavailableDaemon(t *testing.T) {
	nstest.RequirePrivileged(t)
	dir := t.TempDir()
	// A stale socket: the file is there, nothing listens.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"unix://" + filepath.Join(dir, "nothing.sock"), "unix://" + stale} {
		rt, err := docker.New(docker.Options{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		checks := map[string]error{"Ping": rt.Ping(ctx), "EnsureImage": rt.EnsureImage(ctx, "127.0.0.1:5000/esb/worker:latest"),
			"Create": rt.Create(ctx, shim.WorkerSpec{ID: "x", Image: "img"}), "Stop": rt.Stop(ctx, "x", time.Second),
			"Delete": rt.Delete(ctx, "x"), "Pause": rt.Pause(ctx, "x")}
		_, checks["List"] = rt.List(ctx)
		_, checks["Start"] = rt.Start(ctx, "x")
		_, checks["Metrics"] = rt.Metrics(ctx, "x")
		for name, err := range checks {
			if !errors.Is(err, shim.ErrUnavailable) {
				t.Errorf("%s on %s: %v, want ErrUnavailable", name, host, err)
			}
		}
		cancel()
		_ = rt.Close()
	}
}

// TestEvents: docker kill of a worker is an exit event, docker rm a
// delete event; another namespace's workers are not reported; the stream
// ends without error when its context does.
func TestEvents(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	other, _ := newRuntime(t, st)
	id, foreign := startWorker(t, rt, st), startWorker(t, other, st)
	sctx, cancel := context.WithCancel(ctx)
	evs, errc := rt.Events(sctx)
	if err := dc.ContainerKill(ctx, docker.ContainerName(foreign), "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := dc.ContainerKill(ctx, docker.ContainerName(id), "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	if ev := stacktest.NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventExit}) {
		t.Errorf("after docker kill: %+v, want the exit of %s", ev, id)
	}
	t.Logf("exit event %s after the kill", time.Since(killed))
	if err := dc.ContainerRemove(ctx, docker.ContainerName(id), container.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := stacktest.NextEvent(t, evs, errc); ev != (shim.Event{ID: id, Kind: shim.EventDelete}) {
		t.Errorf("after docker rm: %+v, want the delete of %s", ev, id)
	}
	cancel()
	for range evs {
	}
	if err := <-errc; err != nil {
		t.Errorf("stream ended by its context with %v, want nil", err)
	}
}
