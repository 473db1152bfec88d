package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// sameWorkers fails the test unless got lists exactly want, with the same
// IPs, owners, functions, ports and state busy.
func sameWorkers(t *testing.T, got, want []*agentv1.Worker) {
	t.Helper()
	key := func(w *agentv1.Worker) string {
		return fmt.Sprintf("%s %s owner=%s function=%s port=%d %s", w.GetId(), w.GetIp(), w.GetOwnerId(), w.GetFunction(), w.GetPort(), w.GetState())
	}
	var g, w []string
	for _, x := range got {
		g = append(g, key(x))
	}
	for _, x := range want {
		w = append(w, key(x))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("workers after restart:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
	}
}

// TestRestartAdoptsWorkers stops the agent gracefully with three live
// workers: they keep serving while it is down, and the restarted agent
// adopts them (same IDs, IPs and owners) without running a plugin; they
// answer and can be released.
func TestRestartAdoptsWorkers(t *testing.T) { forRuntimes(t, testRestartAdoptsWorkers) }

func testRestartAdoptsWorkers(t *testing.T, e *env) {
	e.startAgent()
	workers := make([]*agentv1.Worker, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			workers[i], errs[i] = e.acquire(e.acquireReq(fmt.Sprintf("owner-%d", i), "survivor"))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	ips := map[string]bool{}
	for _, w := range workers {
		ips[w.GetIp()] = true
	}
	if len(ips) != 3 {
		t.Fatalf("three parallel acquires got addresses %v, want three different", ips)
	}

	e.stopAgent(syscall.SIGTERM)
	// The data plane does not need the agent.
	for _, w := range workers {
		if got := e.taskStatus(w.GetId()); got != "RUNNING" {
			t.Errorf("worker %s is %q after the agent stopped, want RUNNING", w.GetId(), got)
		}
		e.mustInvoke(w, `{"agent":"down"}`)
	}

	p := e.startAgent()
	t.Logf("restart with 3 live workers: socket answers %v after start", p.ready)
	if recs := p.LogRecords("reconciled"); len(recs) == 1 {
		took, _ := recs[0]["took"].(float64)
		t.Logf("reconcile: adopted %v, removed %v, took %v", recs[0]["adopted"], recs[0]["removed"], time.Duration(took))
		if recs[0]["adopted"] != float64(3) || recs[0]["removed"] != float64(0) {
			t.Errorf("reconcile reported %v, want 3 adopted and none removed", recs[0])
		}
	} else {
		t.Errorf("the agent logged %d reconcile reports, want 1", len(recs))
	}
	sameWorkers(t, e.list(""), workers)
	for _, w := range workers {
		if got := e.list(w.GetOwnerId()); len(got) != 1 || got[0].GetId() != w.GetId() {
			t.Errorf("ListWorkers(%s) = %v, want just %s", w.GetOwnerId(), got, w.GetId())
		}
		e.mustInvoke(w, `{"agent":"back"}`)
		e.expectTraces(w)
	}
	for _, w := range workers {
		e.mustRelease(w)
	}
	e.expectNoTraces("after releasing the adopted workers")
}

// TestRestartAfterKill kills the agent with SIGKILL (no graceful stop, a
// stale socket file left) while a worker lives: the restarted agent serves
// again and adopts the worker.
func TestRestartAfterKill(t *testing.T) {
	e := newEnv(t)
	e.startAgent()
	w := e.mustAcquire(e.acquireReq("owner-k", "killed"))
	e.stopAgent(syscall.SIGKILL)
	e.mustInvoke(w, `{"agent":"killed"}`)

	p := e.startAgent()
	t.Logf("restart after SIGKILL with 1 live worker: socket answers %v after start", p.ready)
	sameWorkers(t, e.list(""), []*agentv1.Worker{w})
	e.mustInvoke(w, `{"agent":"back"}`)
	e.expectTraces(w)
	e.mustRelease(w)
	e.expectNoTraces("after releasing the adopted worker")
}

// TestRestartKeepsRequestIDs retries an acquire after the agent restarted
// between the acquire and the retry (the Gateway's retry after an agent
// crash): the API promises that a retried request_id returns the same
// worker, so the retry must not make a second one.
func TestRestartKeepsRequestIDs(t *testing.T) {
	e := newEnv(t)
	e.startAgent()
	req := e.acquireReq("owner-q", "retried")
	req.RequestId = "req-restart"
	w := e.mustAcquire(req)
	e.stopAgent(syscall.SIGKILL)
	e.startAgent()
	again, err := e.acquire(req)
	if err != nil {
		t.Fatalf("retried acquire: %v", err)
	}
	if again.GetId() != w.GetId() {
		t.Errorf("the retry after a restart got worker %s, want %s", again.GetId(), w.GetId())
		if again.GetId() != "" {
			e.mustRelease(again)
		}
	}
	e.mustRelease(w)
	e.expectNoTraces("after release")
}
