package e2e

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// TestGatewayContract is the ESB Gateway's flow through a client generated
// from our definitions of its contract: EnsureContainer, an HTTP invoke
// from the node, a second EnsureContainer (another worker), ListContainers,
// GetContainerMetrics (memory from the env), Pause/Resume, InvokeWorker,
// DestroyContainer twice; owner checks on each call, bad input named by
// field; nothing left.
func TestGatewayContract(t *testing.T) { forRuntimes(t, testGatewayContract) }

func testGatewayContract(t *testing.T, e *env) {
	e.startAgent()
	api := e.api()
	const owner, fn = "esb-gateway-1", "gw_fn-1"
	env := map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "ESB_JAVA_CLOUDWATCH_DIAGNOSTIC": "1"}
	ensure := func() *agentv1.WorkerInfo {
		t.Helper()
		w, err := api.EnsureContainer(rpcCtx(t), &agentv1.EnsureContainerRequest{FunctionName: fn, Image: e.image, Env: env, OwnerId: owner})
		if err != nil {
			t.Fatalf("EnsureContainer: %v", err)
		}
		e.seen.add(w.GetId())
		return w
	}
	asWorker := func(w *agentv1.WorkerInfo) *agentv1.Worker {
		return &agentv1.Worker{Id: w.GetId(), Function: fn, OwnerId: owner, Ip: w.GetIpAddress(), Port: w.GetPort()}
	}

	w1 := ensure()
	a := e.mustInvoke(asWorker(w1), `{"n":1}`) // the Gateway's own POST to the Lambda path
	if a.Env["ESB_JAVA_CLOUDWATCH_DIAGNOSTIC"] != "1" {
		t.Errorf("the worker's env %v lacks ESB_JAVA_CLOUDWATCH_DIAGNOSTIC", a.Env)
	}
	w2 := ensure()
	if w2.GetId() == w1.GetId() || w1.GetName() != w1.GetId() {
		t.Fatalf("second EnsureContainer gave %v after %v: want another worker, named by its ID", w2, w1)
	}

	now := time.Now().Unix()
	l, err := api.ListContainers(rpcCtx(t), &agentv1.ListContainersRequest{OwnerId: owner})
	if err != nil || len(l.GetContainers()) != 2 {
		t.Fatalf("ListContainers = %v, %v: want two", l, err)
	}
	for _, c := range l.GetContainers() {
		if c.GetStatus() != "RUNNING" || c.GetFunctionName() != fn || c.GetOwnerId() != owner || c.GetContainerName() != c.GetContainerId() ||
			c.GetCreatedAt() > now || now-c.GetCreatedAt() > 60 || c.GetLastUsedAt() != c.GetCreatedAt() {
			t.Errorf("listed %v: want RUNNING, Unix seconds, last_used_at = created_at", c)
		}
	}
	m, err := api.GetContainerMetrics(rpcCtx(t), &agentv1.GetContainerMetricsRequest{ContainerId: w1.GetId(), OwnerId: owner})
	if err != nil || m.GetMetrics().GetMemoryMax() != 512<<20 || m.GetMetrics().GetState() != "RUNNING" || m.GetMetrics().GetMemoryCurrent() == 0 {
		t.Errorf("GetContainerMetrics = %v, %v: want memory_max 512 MiB, RUNNING", m, err)
	}

	if _, err := api.PauseContainer(rpcCtx(t), &agentv1.PauseContainerRequest{ContainerId: w1.GetId(), OwnerId: owner}); err != nil {
		t.Fatalf("PauseContainer: %v", err)
	}
	l, err = api.ListContainers(rpcCtx(t), &agentv1.ListContainersRequest{OwnerId: owner})
	if err != nil {
		t.Fatalf("ListContainers after the pause: %v", err)
	}
	if i := slices.IndexFunc(l.GetContainers(), func(c *agentv1.ContainerState) bool { return c.GetContainerId() == w1.GetId() }); i < 0 {
		t.Errorf("ListContainers after the pause = %v, without worker %s", l.GetContainers(), w1.GetId())
	} else if got := l.GetContainers()[i].GetStatus(); got != "PAUSED" {
		t.Errorf("paused worker listed %q", got)
	}
	inv := &agentv1.InvokeWorkerRequest{ContainerId: w1.GetId(), OwnerId: owner, Payload: []byte(`{"via":"agent"}`),
		Headers: map[string]string{"Content-Type": "application/json"}, TimeoutMs: 10000}
	_, err = api.InvokeWorker(rpcCtx(t), inv)
	wantCode(t, "InvokeWorker of a paused worker", err, codes.FailedPrecondition, "paused")
	if _, err := api.ResumeContainer(rpcCtx(t), &agentv1.ResumeContainerRequest{ContainerId: w1.GetId(), OwnerId: owner}); err != nil {
		t.Fatalf("ResumeContainer: %v", err)
	}
	resp, err := api.InvokeWorker(rpcCtx(t), inv)
	if err != nil || resp.GetStatusCode() != 200 {
		t.Fatalf("InvokeWorker = %v, %v", resp, err)
	}
	var got nodetest.Answer
	if err := json.Unmarshal(resp.GetBody(), &got); err != nil || !jsonEqual(got.Echo, inv.Payload) || got.Env["ESB_WORKER_ID"] != w1.GetId() {
		t.Errorf("InvokeWorker answered %s (%v), want the echo of worker %s", resp.GetBody(), err, w1.GetId())
	}

	// Lambda's 6 MB payload: the agent takes requests up to 8 MiB; the
	// echo that answers it is over gRPC's default 4 MiB, which the client
	// must raise (the README's note on the Gateway's channel).
	big := &agentv1.InvokeWorkerRequest{ContainerId: w1.GetId(), OwnerId: owner, TimeoutMs: 30000,
		Payload: []byte(`{"p":"` + strings.Repeat("x", 6_000_000-8) + `"}`)}
	_, err = api.InvokeWorker(rpcCtx(t), big)
	wantCode(t, "InvokeWorker of 6 MB under gRPC's default receive limit", err, codes.ResourceExhausted, "larger than max")
	resp, err = api.InvokeWorker(rpcCtx(t), big, grpc.MaxCallRecvMsgSize(16<<20))
	if err != nil || resp.GetStatusCode() != 200 || !bytes.Contains(resp.GetBody(), big.GetPayload()) {
		t.Errorf("InvokeWorker of 6 MB with a 16 MiB receive limit = status %d, %d bytes, %v: want the echo", resp.GetStatusCode(), len(resp.GetBody()), err)
	}
	over := &agentv1.InvokeWorkerRequest{ContainerId: w1.GetId(), OwnerId: owner, Payload: make([]byte, 9<<20)}
	_, err = api.InvokeWorker(rpcCtx(t), over)
	wantCode(t, "InvokeWorker of 9 MiB", err, codes.ResourceExhausted, "larger than max")

	// Owner checks on each call.
	other := "someone-else"
	_, err = api.PauseContainer(rpcCtx(t), &agentv1.PauseContainerRequest{ContainerId: w1.GetId(), OwnerId: other})
	wantCode(t, "PauseContainer by another owner", err, codes.PermissionDenied)
	_, err = api.ResumeContainer(rpcCtx(t), &agentv1.ResumeContainerRequest{ContainerId: w1.GetId(), OwnerId: other})
	wantCode(t, "ResumeContainer by another owner", err, codes.PermissionDenied)
	_, err = api.GetContainerMetrics(rpcCtx(t), &agentv1.GetContainerMetricsRequest{ContainerId: w1.GetId(), OwnerId: other})
	wantCode(t, "GetContainerMetrics by another owner", err, codes.PermissionDenied)
	_, err = api.InvokeWorker(rpcCtx(t), &agentv1.InvokeWorkerRequest{ContainerId: w1.GetId(), OwnerId: other})
	wantCode(t, "InvokeWorker by another owner", err, codes.PermissionDenied)
	_, err = api.DestroyContainer(rpcCtx(t), &agentv1.DestroyContainerRequest{ContainerId: w1.GetId(), OwnerId: other})
	wantCode(t, "DestroyContainer by another owner", err, codes.PermissionDenied)
	if l, err := api.ListContainers(rpcCtx(t), &agentv1.ListContainersRequest{OwnerId: other}); err != nil || len(l.GetContainers()) != 0 {
		t.Errorf("ListContainers of another owner = %v, %v", l, err)
	}

	// Bad input, named by field.
	for _, bad := range []struct {
		name  string
		req   *agentv1.EnsureContainerRequest
		field string
	}{
		{"empty function name", &agentv1.EnsureContainerRequest{Image: e.image, OwnerId: owner}, "function_name"},
		{"bad image", &agentv1.EnsureContainerRequest{FunctionName: fn, Image: "Not An Image", OwnerId: owner}, "image"},
		{"oversized env", &agentv1.EnsureContainerRequest{FunctionName: fn, Image: e.image, OwnerId: owner,
			Env: map[string]string{"BIG": strings.Repeat("x", 64<<10)}}, "env"},
		{"bad memory", &agentv1.EnsureContainerRequest{FunctionName: fn, Image: e.image, OwnerId: owner,
			Env: map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "64"}}, "env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE"},
	} {
		_, err := api.EnsureContainer(rpcCtx(t), bad.req)
		wantCode(t, bad.name, err, codes.InvalidArgument, "invalid "+bad.field)
	}
	// An image the registry lacks is NotFound naming it (dockerd reaches
	// the registry); the containerd agent pulls from inside the test's
	// node, where no registry answers: Unavailable, not Internal.
	missing := e.image[:strings.LastIndex(e.image, ":")] + ":missing-" + nstest.RandomHex(4)
	code, text := codes.NotFound, "image "+missing+" not found"
	if !e.ownsNetNS() {
		code, text = codes.Unavailable, "image "+missing+": its registry does not answer"
	}
	_, err = api.EnsureContainer(rpcCtx(t), &agentv1.EnsureContainerRequest{FunctionName: fn, Image: missing, OwnerId: owner})
	wantCode(t, "EnsureContainer of a missing tag", err, code, text)
	_, err = api.AcquireWorker(rpcCtx(t), &agentv1.AcquireWorkerRequest{Function: fn, Image: missing, OwnerId: owner})
	wantCode(t, "AcquireWorker of a missing tag", err, code, text)

	for _, w := range []*agentv1.WorkerInfo{w1, w2, w1, w2} {
		d, err := api.DestroyContainer(rpcCtx(t), &agentv1.DestroyContainerRequest{FunctionName: fn, ContainerId: w.GetId(), OwnerId: owner})
		if err != nil || !d.GetSuccess() {
			t.Errorf("DestroyContainer(%s) = %v, %v: want success, also the second time", w.GetId(), d, err)
		}
	}
	if l, err := api.ListContainers(rpcCtx(t), &agentv1.ListContainersRequest{OwnerId: owner}); err != nil || len(l.GetContainers()) != 0 {
		t.Errorf("ListContainers after destroy = %v, %v", l, err)
	}
	e.expectNoTraces("after DestroyContainer")
}
