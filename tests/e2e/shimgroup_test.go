package e2e

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// TestShimGroups runs esb-agent with -shim-group-size 3 on containerd:
// three workers of one function, acquired at once, share one runc shim
// process; a fourth of that function and a worker of another function get
// shims of their own. Killing the shared shim loses its three workers:
// the agent drops them and every trace of them goes; the others go on
// serving.
func TestShimGroups(t *testing.T) {
	e := newEnvFor(t, stacktest.Containerd)
	e.startAgent("-shim-group-size", "3")

	grouped := make([]*agentv1.Worker, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range grouped {
		wg.Go(func() { grouped[i], errs[i] = e.acquire(e.acquireReq("owner-g", "grouped")) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent acquire %d of a shim group: %v", i, err)
		}
	}
	fourth := e.mustAcquire(e.acquireReq("owner-g", "grouped"))
	apart := e.mustAcquire(e.acquireReq("owner-g", "apart"))

	shim := e.shimOf(grouped[0].GetId())
	for _, w := range grouped[1:] {
		if s := e.shimOf(w.GetId()); s != shim {
			t.Fatalf("workers of one group run under shims %d and %d, want one", shim, s)
		}
	}
	for _, w := range []*agentv1.Worker{fourth, apart} {
		if s := e.shimOf(w.GetId()); s == shim {
			t.Fatalf("worker %s (function %s) joined the full group's shim %d", w.GetId(), w.GetFunction(), shim)
		}
	}
	for i, w := range append(slices.Clone(grouped), fourth, apart) {
		e.mustInvoke(w, fmt.Sprintf(`{"grouped":%d}`, i))
	}

	start := time.Now()
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill shim %d: %v", shim, err)
	}
	lost := []string{grouped[0].GetId(), grouped[1].GetId(), grouped[2].GetId()}
	e.waitList("the killed shim's workers leave the agent's list", settleTimeout, func(ws []*agentv1.Worker) bool {
		return !slices.ContainsFunc(ws, func(x *agentv1.Worker) bool { return slices.Contains(lost, x.GetId()) })
	})
	t.Logf("the 3 workers of the killed shim left the list %v after the kill", time.Since(start))
	e.expectNoTraces("after the shim's kill", lost...)
	t.Logf("every trace of them was gone %v after the kill", time.Since(start))
	if v, ok := metricValue(e.metrics(), "esb_agent_workers_lost_total"); !ok || v != "3" {
		t.Errorf("esb_agent_workers_lost_total = %q (present %v), want 3", v, ok)
	}
	e.mustInvoke(fourth, `{"after":"kill"}`)
	e.mustInvoke(apart, `{"after":"kill"}`)
	e.mustRelease(fourth)
	e.mustRelease(apart)
	e.expectNoTraces("after release")
}

// shimOf returns the PID of the shim that serves worker id.
func (e *env) shimOf(id string) int {
	e.t.Helper()
	shim, err := agenttest.ShimOf(e.workerPID(id))
	if err != nil {
		e.t.Fatalf("worker %s: %v", id, err)
	}
	return shim
}
