package docker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/edge-serverless-box/esbnet/shim"
)

func TestReadPull(t *testing.T) {
	for _, tc := range []struct {
		name, stream, wantErr string
	}{
		{"done", `{"status":"Pulling from esb/worker","id":"latest"}
{"status":"Digest: sha256:abc"}
{"status":"Status: Downloaded newer image for 127.0.0.1:5000/esb/worker:latest"}
`, ""},
		{"empty", "", ""},
		{"error detail", `{"status":"Pulling from esb/worker"}
{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}
`, "manifest unknown"},
		{"error only", `{"error":"connection refused"}`, "connection refused"},
		{"garbage", `{"status":`, "read pull progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := readPull(strings.NewReader(tc.stream))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("readPull: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("readPull: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeStats(t *testing.T) {
	// Trimmed from a dockerd 20.10 one-shot answer on cgroup v1.
	const body = `{"read":"2026-11-27T15:40:00Z","pids_stats":{"current":5},
"cpu_stats":{"cpu_usage":{"total_usage":12345678,"usage_in_kernelmode":100,"usage_in_usermode":200},"system_cpu_usage":9,"online_cpus":2},
"memory_stats":{"usage":2097152,"max_usage":3000000,"stats":{"cache":0},"limit":67108864}}`
	m, err := decodeStats(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	want := shim.Metrics{MemoryUsageBytes: 2097152, MemoryLimitBytes: 67108864, CPUUsageNanos: 12345678, Pids: 5}
	if m != want {
		t.Errorf("decodeStats = %+v, want %+v", m, want)
	}
	if _, err := decodeStats(strings.NewReader("not json")); err == nil {
		t.Error("decodeStats of garbage: no error")
	}
}

func TestGraceSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want int
	}{{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {300 * time.Millisecond, 1}, {time.Second, 1},
		{1500 * time.Millisecond, 2}, {10 * time.Second, 10}, {1 << 62, 1<<31 - 1}} {
		if got := graceSeconds(tc.in); got != tc.want {
			t.Errorf("graceSeconds(%s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestStateOf(t *testing.T) {
	for in, want := range map[container.ContainerState]shim.State{
		container.StateCreated: shim.StateCreated, container.StateRunning: shim.StateRunning,
		container.StatePaused: shim.StatePaused, container.StateExited: shim.StateStopped,
		container.StateDead: shim.StateStopped, container.StateRemoving: shim.StateStopped,
		container.StateRestarting: shim.StateUnknown, "": shim.StateUnknown,
	} {
		if got := stateOf(in); got != want {
			t.Errorf("stateOf(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNetNSOf(t *testing.T) {
	info := func(st *container.State) container.InspectResponse {
		return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{State: st}}
	}
	for _, tc := range []struct {
		name string
		in   container.InspectResponse
		want string
	}{
		{"running", info(&container.State{Running: true, Pid: 4242}), "/proc/4242/ns/net"},
		{"paused", info(&container.State{Running: true, Paused: true, Pid: 7}), "/proc/7/ns/net"},
		{"exited", info(&container.State{Pid: 0, ExitCode: 3}), ""},
		{"running without a pid", info(&container.State{Running: true}), ""},
		{"no state", info(nil), ""},
		{"nothing", container.InspectResponse{}, ""},
	} {
		if got := netnsOf(tc.in); got != tc.want {
			t.Errorf("%s: netnsOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestWorkerID(t *testing.T) {
	for _, tc := range []struct {
		names []string
		id    string
		ok    bool
	}{
		{[]string{"/esb-0123abcd"}, "0123abcd", true},
		{[]string{"/other/alias", "/esb-42"}, "42", true},
		{[]string{"/esb-"}, "", false},
		{[]string{"/web"}, "", false},
		{nil, "", false},
	} {
		id, ok := workerID(tc.names)
		if id != tc.id || ok != tc.ok {
			t.Errorf("workerID(%q) = %q, %v, want %q, %v", tc.names, id, ok, tc.id, tc.ok)
		}
	}
	if got := ContainerName("0123abcd"); got != "esb-0123abcd" {
		t.Errorf("ContainerName = %q", got)
	}
}

func TestNewNeedsHost(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a host: no error")
	}
	r, err := New(Options{Host: "unix:///nonexistent/docker.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	if r.opts.Namespace != "esb" || r.Name() != "docker" || !r.OwnsNetNS() {
		t.Errorf("defaults: namespace %q, name %q, owns netns %v", r.opts.Namespace, r.Name(), r.OwnsNetNS())
	}
	if err := r.SetLabels(t.Context(), "x", nil); !errors.Is(err, shim.ErrUnavailable) {
		t.Errorf("SetLabels on a missing daemon: %v, want ErrUnavailable", err)
	}
}
