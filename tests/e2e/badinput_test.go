package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// TestBadRequests sends the real agent a list of malformed requests on
// every RPC: each gets InvalidArgument naming the field (and quoting the
// bad value where it is printable), and afterwards the node holds no
// container, netns, veth, address or libcni cache entry, and the agent
// lists no worker.
func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	e.startAgent()
	api := e.api()
	ctx := rpcCtx(t)

	long := func(n int) string { return strings.Repeat("x", n) }
	acquires := []struct {
		name  string
		edit  func(*agentv1.AcquireWorkerRequest)
		field string
		value string // a part of the message
	}{
		{"function ../../etc", func(r *agentv1.AcquireWorkerRequest) { r.Function = "../../etc" }, "function", "../../etc"},
		{"function a/b", func(r *agentv1.AcquireWorkerRequest) { r.Function = "a/b" }, "function", "a/b"},
		{"function with NUL", func(r *agentv1.AcquireWorkerRequest) { r.Function = "f\x00" }, "function", `\x00`},
		{"function of 64", func(r *agentv1.AcquireWorkerRequest) { r.Function = long(64) }, "function", "63"},
		{"empty function", func(r *agentv1.AcquireWorkerRequest) { r.Function = "" }, "function", ""},
		{"empty image", func(r *agentv1.AcquireWorkerRequest) { r.Image = "" }, "image", "required"},
		{"image with a scheme", func(r *agentv1.AcquireWorkerRequest) { r.Image = "http://127.0.0.1:5000/esb/worker" }, "image", "http://"},
		{"image path", func(r *agentv1.AcquireWorkerRequest) { r.Image = "/var/lib/image.tar" }, "image", "/var/lib/image.tar"},
		{"image upper case", func(r *agentv1.AcquireWorkerRequest) { r.Image = "Esb/Worker" }, "image", "Esb/Worker"},
		{"image bad digest", func(r *agentv1.AcquireWorkerRequest) { r.Image = "esb/worker@sha256:1" }, "image", "sha256:1"},
		{"image of 600", func(r *agentv1.AcquireWorkerRequest) { r.Image = long(600) }, "image", "..."},
		{"env key A=B", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"A=B": "1"} }, "env", "A=B"},
		{"env key with NUL", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"A\x00": "1"} }, "env", `\x00`},
		{"empty env key", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"": "1"} }, "env", `""`},
		{"env value with NUL", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"A": "1\x002"} }, "env", "NUL"},
		{"env ESB_WORKER_ID", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"ESB_WORKER_ID": "x"} }, "env", "reserved"},
		{"env of 65 KiB", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"A": long(65 << 10)} }, "env", "bytes"},
		{"memory 1 byte", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{MemoryBytes: 1} }, "limits.memory_bytes", "1"},
		{"memory negative", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{MemoryBytes: -1} }, "limits.memory_bytes", "-1"},
		{"memory 1 TiB", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{MemoryBytes: 1 << 40} }, "limits.memory_bytes", "1099511627776"},
		{"cpu 1 milli", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{CpuMillis: 1} }, "limits.cpu_millis", "1"},
		{"cpu negative", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{CpuMillis: -5} }, "limits.cpu_millis", "-5"},
		{"cpu 1000 cores", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{CpuMillis: 1_000_000} }, "limits.cpu_millis", "1000000"},
		{"empty owner", func(r *agentv1.AcquireWorkerRequest) { r.OwnerId = "" }, "owner_id", "required"},
		{"owner ../x", func(r *agentv1.AcquireWorkerRequest) { r.OwnerId = "../x" }, "owner_id", "../x"},
		{"owner with newline", func(r *agentv1.AcquireWorkerRequest) { r.OwnerId = "a\nb" }, "owner_id", `\n`},
		{"owner of 129", func(r *agentv1.AcquireWorkerRequest) { r.OwnerId = long(129) }, "owner_id", "128"},
		{"request ID with space", func(r *agentv1.AcquireWorkerRequest) { r.RequestId = "a b" }, "request_id", "a b"},
	}
	n := 0
	for _, b := range acquires {
		r := e.acquireReq("alice", "fn")
		b.edit(r)
		_, err := api.AcquireWorker(ctx, r)
		wantCode(t, "acquire with "+b.name, err, codes.InvalidArgument, "invalid "+b.field, b.value)
		n++
	}

	ids := []struct{ worker, owner, field string }{
		{"", "alice", "worker_id"},
		{"../../etc/passwd", "alice", "worker_id"},
		{"a\x00b", "alice", "worker_id"},
		{long(129), "alice", "worker_id"},
		{"0123456789abcdef", "", "owner_id"},
		{"0123456789abcdef", "a/b", "owner_id"},
		{"0123456789abcdef", "a\tb", "owner_id"},
	}
	for _, id := range ids {
		calls := map[string]error{}
		_, calls["release"] = api.ReleaseWorker(ctx, &agentv1.ReleaseWorkerRequest{WorkerId: id.worker, OwnerId: id.owner})
		_, calls["pause"] = api.PauseWorker(ctx, &agentv1.PauseWorkerRequest{WorkerId: id.worker, OwnerId: id.owner})
		_, calls["resume"] = api.ResumeWorker(ctx, &agentv1.ResumeWorkerRequest{WorkerId: id.worker, OwnerId: id.owner})
		_, calls["metrics"] = api.WorkerMetrics(ctx, &agentv1.WorkerMetricsRequest{WorkerId: id.worker, OwnerId: id.owner})
		for name, err := range calls {
			wantCode(t, name+" of worker "+truncateQ(id.worker)+" by "+truncateQ(id.owner), err, codes.InvalidArgument, "invalid "+id.field)
			n++
		}
	}
	for _, owner := range []string{"a b", "x/y", long(200), "\x7f"} {
		_, err := api.ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: owner})
		wantCode(t, "list of owner "+truncateQ(owner), err, codes.InvalidArgument, "invalid owner_id")
		n++
	}
	t.Logf("%d bad requests refused", n)

	if ws := e.list(""); len(ws) != 0 {
		t.Errorf("the agent lists workers after bad requests only: %v", ws)
	}
	e.expectNoTraces("after bad requests")
	if _, err := os.Stat(e.LogDir()); err == nil {
		if logs, _ := os.ReadDir(e.LogDir()); len(logs) != 0 {
			t.Errorf("bad requests left worker logs: %v", logs)
		}
	}
}

func truncateQ(s string) string {
	if len(s) > 20 {
		s = s[:20] + "..."
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\x00", `\x00`), "\n", `\n`)
}

// TestBadDaemonConfig starts esb-agent with bad settings, by flag,
// environment and file: it exits non-zero at once with a message naming
// the setting, and creates no socket.
func TestBadDaemonConfig(t *testing.T) {
	agentBin, _ := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte("port: 8080\nport: 8081\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"-port", "70000"}, "", "invalid port 70000"},
		{[]string{"-ready-timeout", "-1s"}, "", "invalid ready-timeout"},
		{[]string{"-stop-grace", "1h"}, "", "invalid stop-grace"},
		{[]string{"-tcp-listen", "0.0.0.0:7443"}, "", "mutual TLS"},
		{[]string{"-network", "../../etc"}, "", "invalid network"},
		{[]string{"-default-memory", "1"}, "", "invalid default-memory"},
		{nil, "ESB_AGENT_MAX_WORKERS=0", "invalid max-workers"},
		{nil, "ESB_AGENT_LOG_LEVEL=chatty", "invalid log-level"},
		{[]string{"-config", file}, "", "already set"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		cmd := exec.CommandContext(ctx, agentBin, append([]string{"-socket", sock}, tc.args...)...)
		cmd.Env = os.Environ()
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), tc.want) {
			t.Errorf("esb-agent %v %s: %v\n%s\nwant a non-zero exit naming %q", tc.args, tc.env, err, out, tc.want)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("esb-agent %v %s left a socket", tc.args, tc.env)
			_ = os.Remove(sock)
		}
	}
}

// TestOwnerChecks proves the API's guards against a real agent: another
// owner's release, pause, resume and metrics are PermissionDenied and
// leave the worker alone; an unknown worker is NotFound; a missing or
// malformed owner and bad acquire fields are InvalidArgument naming the
// field, and create nothing.
func TestOwnerChecks(t *testing.T) { forRuntimes(t, testOwnerChecks) }

func testOwnerChecks(t *testing.T, e *env) {
	e.startAgent()
	w := e.mustAcquire(e.acquireReq("alice", "owned"))
	id := w.GetId()
	api := e.api()
	ctx := rpcCtx(t)

	type call struct {
		name string
		do   func(ctx context.Context, worker, owner string) error
	}
	calls := []call{
		{"release", func(ctx context.Context, worker, owner string) error {
			_, err := api.ReleaseWorker(ctx, &agentv1.ReleaseWorkerRequest{WorkerId: worker, OwnerId: owner})
			return err
		}},
		{"pause", func(ctx context.Context, worker, owner string) error {
			_, err := api.PauseWorker(ctx, &agentv1.PauseWorkerRequest{WorkerId: worker, OwnerId: owner})
			return err
		}},
		{"resume", func(ctx context.Context, worker, owner string) error {
			_, err := api.ResumeWorker(ctx, &agentv1.ResumeWorkerRequest{WorkerId: worker, OwnerId: owner})
			return err
		}},
		{"metrics", func(ctx context.Context, worker, owner string) error {
			_, err := api.WorkerMetrics(ctx, &agentv1.WorkerMetricsRequest{WorkerId: worker, OwnerId: owner})
			return err
		}},
	}
	const unknown = "0123456789abcdef"
	for _, c := range calls {
		wantCode(t, c.name+" by another owner", c.do(ctx, id, "mallory"), codes.PermissionDenied, id)
		wantCode(t, c.name+" of an unknown worker", c.do(ctx, unknown, "alice"), codes.NotFound, unknown)
		wantCode(t, c.name+" without owner", c.do(ctx, id, ""), codes.InvalidArgument, "owner_id")
		wantCode(t, c.name+" with owner a/b", c.do(ctx, id, "a/b"), codes.InvalidArgument, "owner_id")
		wantCode(t, c.name+" without worker", c.do(ctx, "", "alice"), codes.InvalidArgument, "worker_id")
	}
	if ws := e.list("mallory"); len(ws) != 0 {
		t.Errorf("ListWorkers(mallory) = %v, want none", ws)
	}
	_, err := api.ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: "a b"})
	wantCode(t, "list with owner 'a b'", err, codes.InvalidArgument, "owner_id")

	bad := []struct {
		name  string
		edit  func(*agentv1.AcquireWorkerRequest)
		field string
	}{
		{"no owner", func(r *agentv1.AcquireWorkerRequest) { r.OwnerId = "" }, "owner_id"},
		{"function ../x", func(r *agentv1.AcquireWorkerRequest) { r.Function = "../x" }, "function"},
		{"no function", func(r *agentv1.AcquireWorkerRequest) { r.Function = "" }, "function"},
		{"no image", func(r *agentv1.AcquireWorkerRequest) { r.Image = "" }, "image"},
		{"image with spaces", func(r *agentv1.AcquireWorkerRequest) { r.Image = "not an image" }, "image"},
		{"env key A=B", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"A=B": "1"} }, "env"},
		{"env key ESB_WORKER_ID", func(r *agentv1.AcquireWorkerRequest) { r.Env = map[string]string{"ESB_WORKER_ID": "x"} }, "env"},
		{"memory 1", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{MemoryBytes: 1} }, "limits.memory_bytes"},
		{"cpu 1", func(r *agentv1.AcquireWorkerRequest) { r.Limits = &agentv1.Limits{CpuMillis: 1} }, "limits.cpu_millis"},
		{"request_id a b", func(r *agentv1.AcquireWorkerRequest) { r.RequestId = "a b" }, "request_id"},
	}
	for _, b := range bad {
		r := e.acquireReq("alice", "owned")
		b.edit(r)
		_, err := e.acquire(r)
		wantCode(t, "acquire with "+b.name, err, codes.InvalidArgument, b.field)
	}

	// Nothing was created, and the worker is as it was: running, owned by
	// alice, answering.
	if ids, err := e.containers(); err != nil || !slices.Equal(ids, []string{id}) {
		t.Errorf("containers = %v, %v; want just %s", ids, err, id)
	}
	left := e.traces()
	for _, l := range left {
		if !strings.Contains(l, id) {
			t.Errorf("a refused call left %s", l)
		}
	}
	if allocs, err := e.Allocations(netName); err != nil || len(allocs) != 1 {
		t.Errorf("IPAM allocations = %v, %v; want only the worker's", allocs, err)
	}
	if got := e.taskStatus(id); got != "RUNNING" {
		t.Errorf("task of %s is %q after the refused calls, want RUNNING", id, got)
	}
	if ws := e.list("alice"); len(ws) != 1 || ws[0].GetOwnerId() != "alice" || ws[0].GetState() != agentv1.WorkerState_WORKER_STATE_BUSY {
		t.Errorf("ListWorkers(alice) = %v, want the busy worker", ws)
	}
	e.mustInvoke(w, `{"still":"alice's"}`)

	e.mustRelease(w)
	e.expectNoTraces("after release")
}
