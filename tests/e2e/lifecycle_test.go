package e2e

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// TestAcquireInvokeRelease is the Gateway's path end to end: an acquired
// worker is busy on the esb subnet with its container, pin, veth, address
// and libcni cache entry; it answers an invoke from the node; its call to
// the gateway 10.88.0.1:9000 goes through the agent's NAT rules to HAProxy
// and the data service behind it; release removes every trace.
func TestAcquireInvokeRelease(t *testing.T) { forRuntimes(t, testAcquireInvokeRelease) }

func testAcquireInvokeRelease(t *testing.T, e *env) {
	rules := e.startProxy()
	e.startAgent("-nat-rules", rules)

	start := time.Now()
	w := e.mustAcquire(e.acquireReq("gateway-1", "hello"))
	cold := time.Since(start)
	t.Logf("cold acquire: %v (worker %s at %s)", cold, w.GetId(), w.GetIp())
	if w.GetWarm() {
		t.Errorf("the first worker of a function is warm")
	}
	if w.GetPort() != 8080 {
		t.Errorf("worker port %d, want the default 8080", w.GetPort())
	}
	e.expectTraces(w)
	labels := e.containerLabels(w.GetId())
	if labels["esb.worker"] != "1" || labels["esb.function"] != "hello" || labels["esb.owner"] != "gateway-1" {
		t.Errorf("container labels %v, want esb.worker=1, esb.function=hello, esb.owner=gateway-1", labels)
	}
	if got := e.taskStatus(w.GetId()); got != "RUNNING" {
		t.Errorf("task of %s is %q, want RUNNING", w.GetId(), got)
	}
	if ws := e.list("gateway-1"); len(ws) != 1 || ws[0].GetId() != w.GetId() || ws[0].GetIp() != w.GetIp() {
		t.Errorf("ListWorkers(gateway-1) = %v, want just %s", ws, w.GetId())
	}

	// The answer is the function's: it says so with its environment.
	a := e.mustInvoke(w, `{"hello":"world","n":[1,2,3]}`)
	t.Logf("worker answered from host %q", a.Hostname)

	// The worker's call to a data service, through the gateway.
	a = e.mustInvoke(w, `{"fetch":"`+fetchURL+`"}`)
	if a.Fetch == nil || a.Fetch.Status != 200 || a.Fetch.Body != backendBody(frontendName) {
		t.Errorf("worker's GET %s = %+v, want 200 %q", fetchURL, a.Fetch, backendBody(frontendName))
	}

	// The agent's metrics count the acquire and the busy worker.
	m := e.metrics()
	if v, ok := metricValue(m, `esb_agent_workers{state="busy"}`); !ok || v != "1" {
		t.Errorf(`esb_agent_workers{state="busy"} = %q (present %v), want 1`, v, ok)
	}
	if v, ok := metricValue(m, `esb_agent_acquire_seconds_count{warm="false"}`); !ok || v != "1" {
		t.Errorf(`esb_agent_acquire_seconds_count{warm="false"} = %q (present %v), want 1`, v, ok)
	}

	e.mustRelease(w)
	e.expectNoTraces("after release")
	if ws := e.list(""); len(ws) != 0 {
		t.Errorf("workers after release: %v", ws)
	}
	// The address is gone from the node too: nothing answers there.
	if _, err := e.invoke(w, "{}", 2*time.Second); err == nil {
		t.Errorf("the released worker's address %s still answers", w.GetIp())
	}
	wantCode(t, "second release", e.release(w), codes.NotFound, w.GetId())
}

// TestPauseResume freezes a worker: it stops answering (its port still
// completes the handshake, but no answer comes) until it is resumed;
// metrics report its cgroup's figures; a paused worker can be released.
func TestPauseResume(t *testing.T) { forRuntimes(t, testPauseResume) }

func testPauseResume(t *testing.T, e *env) {
	e.startAgent()
	w := e.mustAcquire(e.acquireReq("owner-p", "freezer"))
	e.mustInvoke(w, `{"before":"pause"}`)

	id, owner := w.GetId(), w.GetOwnerId()
	p, err := e.api().PauseWorker(rpcCtx(t), &agentv1.PauseWorkerRequest{WorkerId: id, OwnerId: owner})
	if err != nil {
		t.Fatalf("pause: %v", err)
	}
	if p.GetWorker().GetState() != agentv1.WorkerState_WORKER_STATE_PAUSED {
		t.Errorf("pause answered state %s, want paused", p.GetWorker().GetState())
	}
	if got := e.taskStatus(id); got != "PAUSED" {
		t.Errorf("task of %s is %q after pause, want PAUSED", id, got)
	}
	if ws := e.list(owner); len(ws) != 1 || ws[0].GetState() != agentv1.WorkerState_WORKER_STATE_PAUSED {
		t.Errorf("ListWorkers after pause = %v, want one paused worker", ws)
	}
	if body, err := e.invoke(w, `{"while":"paused"}`, time.Second); err == nil {
		t.Errorf("the paused worker answered: %s", body)
	} else {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("invoke of the paused worker: %v, want a timeout", err)
		}
	}

	r, err := e.api().ResumeWorker(rpcCtx(t), &agentv1.ResumeWorkerRequest{WorkerId: id, OwnerId: owner})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if r.GetWorker().GetState() != agentv1.WorkerState_WORKER_STATE_BUSY {
		t.Errorf("resume answered state %s, want busy", r.GetWorker().GetState())
	}
	e.mustInvoke(w, `{"after":"resume"}`)

	m, err := e.api().WorkerMetrics(rpcCtx(t), &agentv1.WorkerMetricsRequest{WorkerId: id, OwnerId: owner})
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	t.Logf("worker metrics: memory %d of %d bytes, cpu %v, pids %d, oom %d", m.GetMemoryUsageBytes(),
		m.GetMemoryLimitBytes(), time.Duration(m.GetCpuUsageNanos()), m.GetPids(), m.GetOomEvents())
	if m.GetWorkerId() != id || m.GetMemoryUsageBytes() == 0 || m.GetCpuUsageNanos() == 0 || m.GetPids() == 0 {
		t.Errorf("metrics %+v: want the worker's ID and memory, CPU and pids above 0", m)
	}
	if lim := m.GetMemoryLimitBytes(); lim != 256<<20 {
		t.Errorf("memory limit %d, want the agent's default %d", lim, 256<<20)
	}

	// Released while paused: the agent thaws it to stop it.
	if _, err := e.api().PauseWorker(rpcCtx(t), &agentv1.PauseWorkerRequest{WorkerId: id, OwnerId: owner}); err != nil {
		t.Fatalf("second pause: %v", err)
	}
	e.mustRelease(w)
	e.expectNoTraces("after releasing a paused worker")
}

// TestWorkerPort runs the agent with -port 9999: the worker serves that
// port (the agent passes it as PORT) and the API reports it.
func TestWorkerPort(t *testing.T) {
	e := newEnv(t)
	e.startAgent("-port", "9999")
	w := e.mustAcquire(e.acquireReq("owner-port", "port"))
	if w.GetPort() != 9999 {
		t.Errorf("worker port %d, want 9999", w.GetPort())
	}
	e.mustInvoke(w, `{"port":`+strconv.Itoa(int(w.GetPort()))+`}`)
	e.mustRelease(w)
	e.expectNoTraces("after release")
}

// TestRequestIDIdempotent retries an acquire with the same request_id, in
// parallel and after it completed: one worker, returned to every retry of
// its owner; another owner's equal request_id is another request.
func TestRequestIDIdempotent(t *testing.T) {
	e := newEnv(t)
	e.startAgent()
	req := e.acquireReq("owner-i", "retried")
	req.RequestId = "req-1"
	ids := make([]string, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			w, err := e.acquire(req)
			ids[i], errs[i] = w.GetId(), err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("parallel acquires with one request_id got workers %v, want one", ids)
	}
	again := e.mustAcquire(req)
	if again.GetId() != ids[0] {
		t.Errorf("a retried acquire got worker %s, want %s", again.GetId(), ids[0])
	}
	if cs, err := e.containers(); err != nil || len(cs) != 1 {
		t.Errorf("containers = %v, %v; want one", cs, err)
	}
	other := e.acquireReq("owner-j", "retried")
	other.RequestId = "req-1"
	w2 := e.mustAcquire(other)
	if w2.GetId() == again.GetId() {
		t.Errorf("another owner's request_id req-1 got owner-i's worker")
	}
	e.mustRelease(again)
	e.mustRelease(w2)
	e.expectNoTraces("after release")
}

// TestLimits checks that the request's limits reach the worker's cgroup
// and that -max-workers bounds the live workers (ResourceExhausted, and
// nothing made).
func TestLimits(t *testing.T) {
	e := newEnv(t)
	e.startAgent("-max-workers", "1")
	req := e.acquireReq("owner-l", "limited")
	req.Limits = &agentv1.Limits{MemoryBytes: 64 << 20, CpuMillis: 500}
	w := e.mustAcquire(req)
	m, err := e.api().WorkerMetrics(rpcCtx(t), &agentv1.WorkerMetricsRequest{WorkerId: w.GetId(), OwnerId: w.GetOwnerId()})
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if m.GetMemoryLimitBytes() != 64<<20 {
		t.Errorf("memory limit %d, want the requested %d", m.GetMemoryLimitBytes(), 64<<20)
	}
	var spec struct {
		Linux struct {
			Resources struct {
				CPU struct {
					Quota  int64 `json:"quota"`
					Period int64 `json:"period"`
				} `json:"cpu"`
			} `json:"resources"`
		} `json:"linux"`
	}
	if err := json.Unmarshal([]byte(e.ctr("containers", "info", "--spec", w.GetId())), &spec); err != nil {
		t.Fatalf("decode the spec of %s: %v", w.GetId(), err)
	}
	if c := spec.Linux.Resources.CPU; c.Period == 0 || c.Quota*1000/c.Period != 500 {
		t.Errorf("CPU quota %d per period %d, want 500 millis", c.Quota, c.Period)
	}

	_, err = e.acquire(e.acquireReq("owner-l", "second"))
	wantCode(t, "acquire beyond -max-workers 1", err, codes.ResourceExhausted, "1")
	if cs, err := e.containers(); err != nil || len(cs) != 1 {
		t.Errorf("containers after the refused acquire = %v, %v; want one", cs, err)
	}
	e.mustRelease(w)
	e.expectNoTraces("after release")
	w = e.mustAcquire(e.acquireReq("owner-l", "second"))
	e.mustRelease(w)
	e.expectNoTraces("after the second release")
}
