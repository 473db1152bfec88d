package e2e

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// reconcileAfter acquires a broken and an intact worker, stops the agent,
// breaks the first one's network with breakIt, restarts the agent and
// checks the design's promise: the broken worker is torn down (container
// gone, address released, not listed) and the intact one is adopted and
// answers.
func reconcileAfter(t *testing.T, breakIt func(e *env, w *agentv1.Worker)) {
	e := newEnv(t)
	e.startAgent()
	broken := e.mustAcquire(e.acquireReq("owner-r", "reconciled"))
	intact := e.mustAcquire(e.acquireReq("owner-r", "reconciled"))
	e.stopAgent(syscall.SIGTERM)
	breakIt(e, broken)

	p := e.startAgent()
	if recs := p.LogRecords("reconciled"); len(recs) != 1 || recs[0]["adopted"] != float64(1) || recs[0]["removed"] != float64(1) {
		t.Errorf("reconcile reported %v, want 1 adopted and 1 removed", recs)
	}
	sameWorkers(t, e.list(""), []*agentv1.Worker{intact})
	e.expectNoTraces("the broken worker after reconcile", broken.GetId())
	if ids, err := e.containers(); err != nil || len(ids) != 1 || ids[0] != intact.GetId() {
		t.Errorf("containers after reconcile = %v, %v; want just %s", ids, err, intact.GetId())
	}
	e.expectTraces(intact)
	e.mustInvoke(intact, `{"survived":"reconcile"}`)
	e.mustRelease(intact)
	e.expectNoTraces("after release")
}

// TestReconcileWorkerWithoutNetns removes a worker's netns pin behind the
// stopped agent's back (as "ip netns del" would).
func TestReconcileWorkerWithoutNetns(t *testing.T) {
	reconcileAfter(t, func(e *env, w *agentv1.Worker) {
		pin := e.pinPath(w.GetId())
		if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
			e.t.Fatalf("unpin %s: %v", pin, err)
		}
		if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			e.t.Fatal(err)
		}
	})
}

// TestReconcileWorkerWithoutVeth deletes a worker's veth in the node
// behind the stopped agent's back: the worker is cut off the bridge.
func TestReconcileWorkerWithoutVeth(t *testing.T) {
	reconcileAfter(t, func(e *env, w *agentv1.Worker) {
		name, ok := e.vethOf(w.GetId())
		if !ok {
			e.t.Fatalf("worker %s has no veth", w.GetId())
		}
		h, err := e.handle()
		if err != nil {
			e.t.Fatal(err)
		}
		defer h.Close()
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkDel(l)
		}
		if err != nil {
			e.t.Fatalf("delete veth %s: %v", name, err)
		}
		if _, err := e.invoke(w, "{}", 1e9); err == nil {
			e.t.Fatalf("worker %s answers without its veth", w.GetId())
		}
	})
}
