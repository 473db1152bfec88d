package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// echoWorkers serves the rig's workers with an echo of the request and
// returns the count of requests.
func echoWorkers(t *testing.T, r *rig) *atomic.Int32 {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(q.Body)
		w.Header().Add("X-Echo", q.Header.Get("X-In"))
		w.Header().Add("X-Echo", "second")
		w.Header().Set("X-Path", q.URL.Path)
		_, _ = w.Write(append([]byte("echo:"), body...))
	}))
	t.Cleanup(srv.Close)
	r.toServer(srv, nil)
	return &hits
}

// checkGatewayOwners checks that every call names the right owner and
// the fields it needs.
func checkGatewayOwners(t *testing.T, s *Server, id string) {
	t.Helper()
	ctx := context.Background()
	var err error
	_, err = s.PauseContainer(ctx, &agentv1.PauseContainerRequest{ContainerId: id, OwnerId: "other"})
	wantCode(t, "pause by another owner", err, codes.PermissionDenied, "owner")
	_, err = s.ResumeContainer(ctx, &agentv1.ResumeContainerRequest{ContainerId: id, OwnerId: "other"})
	wantCode(t, "resume by another owner", err, codes.PermissionDenied, "owner")
	_, err = s.GetContainerMetrics(ctx, &agentv1.GetContainerMetricsRequest{ContainerId: id, OwnerId: "other"})
	wantCode(t, "metrics by another owner", err, codes.PermissionDenied, "owner")
	_, err = s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "other"})
	wantCode(t, "invoke by another owner", err, codes.PermissionDenied, "owner")
	_, err = s.DestroyContainer(ctx, &agentv1.DestroyContainerRequest{ContainerId: id, OwnerId: "other"})
	wantCode(t, "destroy by another owner", err, codes.PermissionDenied, "owner")
	_, err = s.PauseContainer(ctx, &agentv1.PauseContainerRequest{OwnerId: "gw"})
	wantCode(t, "pause without container_id", err, codes.InvalidArgument, "container_id")
	_, err = s.ListContainers(ctx, &agentv1.ListContainersRequest{})
	wantCode(t, "list without owner over TCP", err, codes.InvalidArgument, "owner_id")
}

// checkGatewayList checks the two fresh workers of owner gw as listed,
// and that no other owner sees them; it returns the time before listing.
func checkGatewayList(t *testing.T, s *Server) int64 {
	t.Helper()
	ctx := context.Background()
	before := time.Now().Unix()
	list, err := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "gw"})
	if err != nil || len(list.Containers) != 2 {
		t.Fatalf("list %v %v", list, err)
	}
	for _, c := range list.Containers {
		if c.Status != "RUNNING" || c.FunctionName != "my_fn-1" || c.OwnerId != "gw" || c.ContainerName != c.ContainerId ||
			c.CreatedAt > before || c.CreatedAt < before-60 || c.LastUsedAt != c.CreatedAt {
			t.Errorf("listed %v: want RUNNING, seconds, last_used_at = created_at", c)
		}
	}
	if other, err := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "other"}); err != nil || len(other.Containers) != 0 {
		t.Errorf("another owner lists %v %v", other, err)
	}
	return before
}

// checkGatewayInvoke invokes the worker of inv once and checks the answer
// and its last_used_at.
func checkGatewayInvoke(t *testing.T, r *rig, s *Server, inv *agentv1.InvokeWorkerRequest, hits *atomic.Int32) {
	t.Helper()
	ctx := context.Background()
	id := inv.ContainerId
	resp, err := s.InvokeWorker(ctx, inv)
	if err != nil || resp.StatusCode != 200 || string(resp.Body) != "echo:hi" || resp.Headers["X-Echo"] != "a" ||
		resp.Headers["X-Path"] != DefaultInvokePath {
		t.Fatalf("invoke %v %v", resp, err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the worker got %d requests, want 1", n)
	}
	var used time.Time
	for _, w := range r.a.List("gw") {
		if w.ID == id {
			used = w.LastUsed
		}
	}
	list, err := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.Containers, func(c *agentv1.ContainerState) bool { return c.ContainerId == id })
	if i < 0 {
		t.Fatalf("ListContainers(gw) = %v, without the invoked worker %s", list.Containers, id)
	}
	if c := list.Containers[i]; used.IsZero() || c.LastUsedAt != used.Unix() {
		t.Errorf("last_used_at %d after an invoke at %v", c.LastUsedAt, used)
	}
}
