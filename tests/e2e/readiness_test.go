package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// nft runs nft in the node with script on its standard input.
func (e *env) nft(script string) {
	e.t.Helper()
	nstest.RequirePrograms(e.t, "nft")
	if _, err := e.nodeCmd([]byte(script), "nft", "-f", "-"); err != nil {
		e.t.Fatalf("nft in the node: %v\n%s", err, script)
	}
}

// TestReadinessTimeout makes the workers' port refuse every connection
// from the node (as a function that never listens looks to the agent): the
// acquire fails with DeadlineExceeded after -ready-timeout, and the agent
// rolls back everything it made. Once the port answers again, the same
// agent acquires normally. An image that cannot be pulled fails the
// acquire before anything is made.
func TestReadinessTimeout(t *testing.T) {
	e := newEnv(t)
	const readyTimeout = 2 * time.Second
	e.startAgent("-ready-timeout", readyTimeout.String())

	// The worker's port answers every SYN from the node with a reset, as a
	// closed port does (the worker image has no way not to listen: the
	// agent sets its PORT).
	e.nft(`table inet esbe2e {
	chain output {
		type filter hook output priority 0;
		ip daddr 10.88.0.0/16 tcp dport 8080 reject with tcp reset
	}
}`)
	start := time.Now()
	_, err := e.acquire(e.acquireReq("owner-slow", "silent"))
	took := time.Since(start)
	wantCode(t, "acquire of a worker that never accepts", err, codes.DeadlineExceeded, "did not accept TCP", readyTimeout.String())
	if took < readyTimeout || took > readyTimeout+15*time.Second {
		t.Errorf("the failed acquire took %v, want about the ready timeout %v", took, readyTimeout)
	}
	e.expectNoTraces("after the timed-out acquire")
	if ws := e.list(""); len(ws) != 0 {
		t.Errorf("workers after the timed-out acquire: %v", ws)
	}
	if v, ok := metricValue(e.metrics(), `esb_agent_acquire_errors_total{class="not_ready"}`); !ok || v != "1" {
		t.Errorf(`esb_agent_acquire_errors_total{class="not_ready"} = %q (present %v), want 1`, v, ok)
	}

	e.nft("delete table inet esbe2e\n")
	w := e.mustAcquire(e.acquireReq("owner-slow", "silent"))
	e.mustInvoke(w, `{"ready":"now"}`)
	e.mustRelease(w)
	e.expectNoTraces("after release")

	// The node has no registry on its loopback: the pull fails.
	r := e.acquireReq("owner-slow", "unpullable")
	r.Image = "127.0.0.1:5000/esb/e2e-missing:latest"
	_, err = e.acquire(r)
	if st, _ := status.FromError(err); err == nil || st.Code() == codes.OK || !strings.Contains(st.Message(), r.Image) {
		t.Errorf("acquire of an image that cannot be pulled: %v, want an error naming the image", err)
	} else {
		t.Logf("acquire of an image that cannot be pulled: %s: %s", st.Code(), st.Message())
	}
	e.expectNoTraces("after the failed pull")
}

// exitImage is the test worker built from this tree and pushed under a tag
// of the e2e suite's own (the stack's esb/worker:latest may be older, and is
// never overwritten): it supports ESB_WORKER_EXIT.
var exitImage stacktest.ScriptImage

// workerImageOfTree builds tests/images/worker from this tree into the stack's
// registry as esb/worker:e2e-tree (reproducible: the same tree pushes the
// same digest) and returns its reference.
func (e *env) workerImageOfTree() string {
	e.t.Helper()
	ref := exitImage.Ref(e.t, imageBuildTimeout, "scripts/worker-image.sh", "ESB_WORKER_REPO=esb/worker:e2e-tree", "ESB_REGISTRY="+e.stack.Registry)
	if e.rt == stacktest.Containerd {
		e.ctr("images", "pull", "--plain-http", "--snapshotter", e.stack.Snapshotter, ref)
	}
	return ref
}

// TestReadinessWorkerExits: a worker whose process exits with status 3
// before its port opens fails the acquire at once with FailedPrecondition,
// naming the status and the last lines of its log (the image is at
// fault), not with DeadlineExceeded at the end of the ready timeout; the
// agent rolls back everything it made. The same image without the setting
// then serves. Both runtimes.
func TestReadinessWorkerExits(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		image := e.workerImageOfTree()
		// A ready timeout no run comes near: only the exit can end the
		// wait before it.
		const readyTimeout = 10 * time.Minute
		e.startAgent("-ready-timeout", readyTimeout.String())

		r := e.acquireReq("owner-exit", "exits")
		r.Image = image
		r.Env = map[string]string{"ESB_WORKER_EXIT": "3"}
		start := time.Now()
		_, err := e.acquire(r)
		took := time.Since(start)
		wantCode(t, "acquire of a worker that exits 3 before listening", err, codes.FailedPrecondition,
			"exited with status 3 before its port opened", "exiting with status 3 before listening (ESB_WORKER_EXIT)")
		t.Logf("READINESS exit runtime=%s answered in %s: %v", e.rt, took.Round(time.Millisecond), err)
		e.expectNoTraces("after the acquire of a worker that exited")
		if ws := e.list(""); len(ws) != 0 {
			t.Errorf("workers after the failed acquire: %v", ws)
		}
		if v, ok := metricValue(e.metrics(), `esb_agent_acquire_errors_total{class="exited"}`); !ok || v != "1" {
			t.Errorf(`esb_agent_acquire_errors_total{class="exited"} = %q (present %v), want 1`, v, ok)
		}

		r = e.acquireReq("owner-exit", "serves")
		r.Image = image
		w := e.mustAcquire(r)
		e.mustInvoke(w, `{"after":"exit"}`)
		e.mustRelease(w)
		e.expectNoTraces("after release")
	})
}
