package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// antiSpoofed reports whether the node's bridge anti-spoof set holds an
// element for ip.
func (e *env) antiSpoofed(ip string) bool {
	e.t.Helper()
	out, err := e.nodeCmd(nil, "nft", "list", "set", "bridge", "esb", "ipv4")
	if err != nil {
		e.t.Fatalf("nft list set bridge esb ipv4 in the node: %v", err)
	}
	return strings.Contains(out, " "+ip+" ") || strings.Contains(out, " "+ip+",") || strings.Contains(out, " "+ip+"\n")
}

// TestKilledWorkerIsCleanedUp kills a worker behind the agent's back
// (docker kill, ctr task kill): the agent's event watch drops it from the
// list and removes its veth, address, anti-spoof element and libcni cache
// entry (and, for containerd, its container and pin); the other worker
// goes on serving.
func TestKilledWorkerIsCleanedUp(t *testing.T) { forRuntimes(t, testKilledWorkerIsCleanedUp) }

func testKilledWorkerIsCleanedUp(t *testing.T, e *env) {
	e.startAgent()
	w := e.mustAcquire(e.acquireReq("owner-k", "doomed"))
	other := e.mustAcquire(e.acquireReq("owner-k", "doomed"))
	e.expectTraces(w)
	if !e.antiSpoofed(w.GetIp()) {
		t.Fatalf("no anti-spoof element for %s before the kill", w.GetIp())
	}
	start := time.Now()
	e.killWorker(w.GetId())
	e.waitList("the killed worker leaves the agent's list", settleTimeout, func(ws []*agentv1.Worker) bool {
		return !slices.ContainsFunc(ws, func(x *agentv1.Worker) bool { return x.GetId() == w.GetId() })
	})
	t.Logf("the killed worker left the list %v after the kill", time.Since(start))
	e.expectNoTraces("after the kill", w.GetId())
	t.Logf("every trace of it was gone %v after the kill", time.Since(start))
	if e.antiSpoofed(w.GetIp()) {
		t.Errorf("the anti-spoof element of %s outlives the killed worker", w.GetIp())
	}
	if v, ok := metricValue(e.metrics(), "esb_agent_workers_lost_total"); !ok || v != "1" {
		t.Errorf("esb_agent_workers_lost_total = %q (present %v), want 1", v, ok)
	}
	if recs := e.agent.LogRecords("worker lost behind the agent's back; removing it"); len(recs) != 1 {
		t.Errorf("the agent logged %d losses, want 1", len(recs))
	}
	e.mustInvoke(other, `{"neighbour":"killed"}`)
	e.mustRelease(other)
	e.expectNoTraces("after release")
}
