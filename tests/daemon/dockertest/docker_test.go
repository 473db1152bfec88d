// Package dockertest holds the integration tests of the shim's Docker
// adapter against the real dockerd of scripts/stack.sh. Workers here keep
// the empty network namespace dockerd makes for network mode "none" (no
// CNI): the tests change no network and send no traffic.
package dockertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/docker"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newRuntime returns an adapter on a fresh esb.namespace whose workers are
// removed when the test ends, and a plain Docker client to look at them.
func newRuntime(t *testing.T, st stacktest.Stack) (*docker.Runtime, *client.Client) {
	t.Helper()
	ns := "esbdkrtest-" + nstest.RandomHex(4)
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
	if n := imagePulls(t, dc, start, time.Now()); rmErr == nil && n == 0 {
		t.Errorf("dockerd reports no pull of %s after the image was removed", st.WorkerImage)
	}
	// Present: a second call does not pull.
	start = time.Now()
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	if n := imagePulls(t, dc, start, time.Now()); n != 0 {
		t.Errorf("EnsureImage of a present image pulled it (%d pull events)", n)
	}
}

// imagePulls counts dockerd's image pull events between since and until.
func imagePulls(t *testing.T, dc *client.Client, since, until time.Time) int {
	t.Helper()
	ctx := testCtx(t)
	ts := func(tm time.Time) string { return fmt.Sprintf("%d.%09d", tm.Unix(), tm.Nanosecond()) }
	msgs, errs := dc.Events(ctx, events.ListOptions{Since: ts(since), Until: ts(until.Add(time.Millisecond)),
		Filters: filters.NewArgs(filters.Arg("type", string(events.ImageEventType)), filters.Arg("event", "pull"))})
	n := 0
	for {
		select {
		case <-msgs:
			n++
		case err := <-errs:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("dockerd's events: %v", err)
			}
			return n
		}
	}

}

// TestWorkerSettings: what the adapter asks of dockerd (limits, network
// mode none, no-new-privileges, the json-file log, the namespace label)
// and that dockerd drops the worker's namespace with its stopped sandbox;
// the contract common to every runtime is TestConformance's.
func TestWorkerSettings(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := nstest.RandomHex(8)
	spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Env: map[string]string{"ESB_FUNCTION": "hello", "PORT": "8080"},
		Labels: map[string]string{conf.LabelWorker: "1"}, MemoryBytes: 64 << 20, CPUMillis: 500}
	start := time.Now()
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	created := time.Since(start)
	netns, err := rt.Start(ctx, id)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("create %s, create+start %s; namespace %s", created, time.Since(start), netns)
	waitLog(t, dc, id, "listening on :8080")

	info := inspect(t, dc, id)
	if h := info.HostConfig; h.Memory != 64<<20 || h.NanoCPUs != 500_000_000 || string(h.NetworkMode) != "none" || !info.Config.NetworkDisabled ||
		!slices.Contains(h.SecurityOpt, "no-new-privileges") || h.LogConfig.Type != "json-file" {
		t.Errorf("host config: memory %d, nano CPUs %d, network %q (disabled %v), security %v, log %q",
			h.Memory, h.NanoCPUs, h.NetworkMode, info.Config.NetworkDisabled, h.SecurityOpt, h.LogConfig.Type)
	}
	if !slices.Contains(info.Config.Env, "ESB_FUNCTION=hello") || info.Config.Labels[conf.LabelNamespace] == "" {
		t.Errorf("config: env %v, labels %v", info.Config.Env, info.Config.Labels)
	}
	// No libnetwork sandbox: the namespace is runc's, the process's own.
	if want := fmt.Sprintf("/proc/%d/ns/net", info.State.Pid); netns != want || info.NetworkSettings.SandboxKey != "" {
		t.Errorf("Start returned namespace %q, want %s; dockerd's sandbox key %q, want none", netns, want, info.NetworkSettings.SandboxKey)
	}

	if err := rt.Stop(ctx, id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := inspect(t, dc, id).State; st.Running || st.ExitCode != 0 {
		t.Errorf("after stop: running %v, exit code %d (want a clean exit on SIGTERM)", st.Running, st.ExitCode)
	}
	// The namespace goes with the process.
	deadline := time.Now().Add(5 * time.Second)
	for ns.IsNSorErr(netns) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := ns.IsNSorErr(netns); err == nil {
		t.Errorf("the namespace %s outlives the stopped worker", netns)
	}
}

func startWorker(t *testing.T, rt *docker.Runtime, st stacktest.Stack) string {
	t.Helper()
	ctx := testCtx(t)
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	id := nstest.RandomHex(8)
	if err := rt.Create(ctx, shim.WorkerSpec{ID: id, Image: st.WorkerImage, Labels: map[string]string{conf.LabelWorker: "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestStopKillsAfterGrace gives a worker a stop signal it ignores (the Go
// runtime catches SIGUSR1 and does nothing), so only the SIGKILL after the
// grace period ends it.
func TestStopKillsAfterGrace(t *testing.T) {
	st := stacktest.RequireDocker(t)
	ctx := testCtx(t)
	rt, dc := newRuntime(t, st)
	probe := startWorker(t, rt, st) // pulls the image
	ns := inspect(t, dc, probe).Config.Labels[conf.LabelNamespace]
	id := nstest.RandomHex(8)
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
