package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

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
	if allocs, err := e.allocations(); err != nil || len(allocs) != 1 {
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
