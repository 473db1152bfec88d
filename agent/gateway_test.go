package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

const testImage = "127.0.0.1:5000/esb/worker:latest"

func wantCode(t *testing.T, what string, err error, code codes.Code, text string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), text) {
		t.Errorf("%s: %v, want %s naming %q", what, err, code, text)
	}
}

func ensure(owner, fn string, env map[string]string) *agentv1.EnsureContainerRequest {
	return &agentv1.EnsureContainerRequest{FunctionName: fn, Image: testImage, Env: env, OwnerId: owner}
}

// TestGatewayFlow is the ESB Gateway's flow, with its semantics.
func TestGatewayFlow(t *testing.T) {
	r := newRig(t, Config{})
	s := NewServer(r.a)
	ctx := context.Background()
	hits := echoWorkers(t, r)

	env := map[string]string{LambdaMemoryEnv: "512", "ESB_JAVA_CLOUDWATCH_DIAGNOSTIC": "1"}
	w1, err := s.EnsureContainer(ctx, ensure("gw", "my_fn-1", env))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := s.EnsureContainer(ctx, ensure("gw", "my_fn-1", env))
	if err != nil {
		t.Fatal(err)
	}
	if w1.Id == w2.Id || w1.Name != w1.Id || w1.Port != 8080 || w1.IpAddress == "" {
		t.Fatalf("workers %v and %v: want two, named by ID, on port 8080", w1, w2)
	}
	spec := r.spec(w1.Id)
	if spec.MemoryBytes != 512<<20 || spec.Env["ESB_JAVA_CLOUDWATCH_DIAGNOSTIC"] != "1" || spec.Env[LambdaMemoryEnv] != "512" {
		t.Errorf("spec memory %d env %v: want 512 MiB and the env passed through", spec.MemoryBytes, spec.Env)
	}

	before := checkGatewayList(t, s)

	m, err := s.GetContainerMetrics(ctx, &agentv1.GetContainerMetricsRequest{ContainerId: w1.Id, OwnerId: "gw"})
	if err != nil || m.Metrics.MemoryMax != 512<<20 || m.Metrics.State != "RUNNING" || m.Metrics.CollectedAt < before ||
		m.Metrics.FunctionName != "my_fn-1" {
		t.Errorf("metrics %v %v", m, err)
	}

	if _, err := s.PauseContainer(ctx, &agentv1.PauseContainerRequest{ContainerId: w1.Id, OwnerId: "gw"}); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "gw"})
	if st := statusOf(list, w1.Id); st != "PAUSED" {
		t.Errorf("paused worker listed as %q", st)
	}
	inv := &agentv1.InvokeWorkerRequest{ContainerId: w1.Id, OwnerId: "gw", Payload: []byte("hi"), Headers: map[string]string{"X-In": "a"}}
	_, err = s.InvokeWorker(ctx, inv)
	wantCode(t, "invoke paused", err, codes.FailedPrecondition, "paused")
	if _, err := s.ResumeContainer(ctx, &agentv1.ResumeContainerRequest{ContainerId: w1.Id, OwnerId: "gw"}); err != nil {
		t.Fatal(err)
	}
	checkGatewayInvoke(t, r, s, inv, hits)

	checkGatewayOwners(t, s, w1.Id)

	for _, id := range []string{w1.Id, w2.Id, w1.Id, w2.Id, "0123456789abcdef"} {
		d, err := s.DestroyContainer(ctx, &agentv1.DestroyContainerRequest{ContainerId: id, OwnerId: "gw", FunctionName: "my_fn-1"})
		if err != nil || !d.Success {
			t.Errorf("destroy %s: %v %v, want success", id, d, err)
		}
	}
	if list, _ := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "gw"}); len(list.Containers) != 0 {
		t.Errorf("left listed: %v", list.Containers)
	}
	r.assertEmpty(t)
}

func statusOf(l *agentv1.ListContainersResponse, id string) string {
	for _, c := range l.Containers {
		if c.ContainerId == id {
			return c.Status
		}
	}
	return ""
}

func TestEnsureContainerValidation(t *testing.T) {
	r := newRig(t, Config{})
	s := NewServer(r.a)
	ctx := context.Background()
	big := map[string]string{"BIG": strings.Repeat("x", MaxEnvBytes)}
	for _, tc := range []struct {
		name  string
		req   *agentv1.EnsureContainerRequest
		field string
	}{
		{"empty function_name", ensure("gw", "", nil), "function_name"},
		{"function_name too long", ensure("gw", strings.Repeat("a", 65), nil), "function_name"},
		{"function_name with a dot", ensure("gw", "a.b", nil), "function_name"},
		{"bad image", &agentv1.EnsureContainerRequest{FunctionName: "f", Image: "Bad Image", OwnerId: "gw"}, "image"},
		{"no image", &agentv1.EnsureContainerRequest{FunctionName: "f", OwnerId: "gw"}, "image"},
		{"oversized env", ensure("gw", "f", big), "env"},
		{"reserved env", ensure("gw", "f", map[string]string{"PORT": "1"}), "env: key PORT"},
		{"no owner", ensure("", "f", nil), "owner_id"},
		{"memory not a number", ensure("gw", "f", map[string]string{LambdaMemoryEnv: "1g"}), "env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE"},
		{"memory too small", ensure("gw", "f", map[string]string{LambdaMemoryEnv: "127"}), "env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE"},
		{"memory too large", ensure("gw", "f", map[string]string{LambdaMemoryEnv: "10241"}), "env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE"},
	} {
		_, err := s.EnsureContainer(ctx, tc.req)
		wantCode(t, tc.name, err, codes.InvalidArgument, "invalid "+tc.field)
	}
	// Lambda's names (a leading '_', 64 characters) are good; no memory
	// in env means the agent's default.
	for _, fn := range []string{"_x", strings.Repeat("f", 64)} {
		w, err := s.EnsureContainer(ctx, ensure("gw", fn, map[string]string{LambdaMemoryEnv: "10240"}))
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		if got := r.spec(w.Id).MemoryBytes; got != 10240<<20 {
			t.Errorf("memory %d, want 10240 MiB", got)
		}
	}
	w, err := s.EnsureContainer(ctx, ensure("gw", "f", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.spec(w.Id).MemoryBytes; got != DefaultConfig().DefaultMemoryBytes {
		t.Errorf("memory %d without %s, want the default", got, LambdaMemoryEnv)
	}
}

// TestListCreatedAtIsHandOver: a pooled worker made long before it is
// handed out lists its hand-over time, or the Gateway's orphan reconcile
// would destroy it.
func TestListCreatedAtIsHandOver(t *testing.T) {
	r := newRig(t, Config{PoolMinIdle: 1})
	s := NewServer(r.a)
	ctx := context.Background()
	if _, err := s.EnsureContainer(ctx, ensure("gw", "f", nil)); err != nil {
		t.Fatal(err)
	}
	r.a.Wait() // the pool refilled
	r.a.table.mu.Lock()
	var pooled *Worker
	for _, w := range r.a.table.workers {
		if w.State == StateIdle {
			pooled = w
			w.Created = w.Created.Add(-10 * time.Minute) // made long ago
		}
	}
	r.a.table.mu.Unlock()
	if pooled == nil {
		t.Fatal("no pooled worker")
	}
	got, err := s.EnsureContainer(ctx, ensure("gw", "f", nil))
	if err != nil || got.Id != pooled.ID {
		t.Fatalf("second ensure %v %v, want the pooled worker %s", got, err, pooled.ID)
	}
	list, err := s.ListContainers(ctx, &agentv1.ListContainersRequest{OwnerId: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.Containers, func(c *agentv1.ContainerState) bool { return c.ContainerId == pooled.ID })
	if i < 0 {
		t.Fatalf("ListContainers(gw) = %v, without the handed-over worker %s", list.Containers, pooled.ID)
	}
	if c := list.Containers[i]; time.Now().Unix()-c.CreatedAt > 60 {
		t.Errorf("pooled worker lists created_at %d, %d s ago", c.CreatedAt, time.Now().Unix()-c.CreatedAt)
	}
}
