package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// poolWait bounds the waits for the pool to refill or drain.
const poolWait = 60 * time.Second

// pullFallbackMsg is the agent's warning when a pull under always failed
// and the local image runs instead.
const pullFallbackMsg = "pull failed; using the local image"

// TestPullPolicyAlways pushes an image to a registry of the test's own,
// then a new image under the same tag, with the agent on
// -image-pull-policy always and a warm pool: the next cold start runs the
// new image (the worker reports the image's ESB_IMAGE_MARK), the idle
// worker of the old image is drained, a warm acquire does not ask the
// registry, and with the registry stopped the local image runs, with one
// warning naming image and error and one count in
// esb_agent_image_pull_fallbacks_total per failed pull.
func TestPullPolicyAlways(t *testing.T) { forRuntimes(t, testPullPolicyAlways) }

func testPullPolicyAlways(t *testing.T, e *env) {
	reg := e.startRegistry()
	layout := e.markedImages("v1", "v2")
	ref := reg.addr + "/esb/pull-always:test"
	reg.push(layout, "v1", ref)
	e.keepDockerImage(ref) // noted before the pull: removed whatever happens
	p := e.startAgent("-image-pull-policy", "always", "-pool-min-idle", "1", "-plain-http-registries", reg.addr)
	api := e.api()
	const owner, fnA, fnB, fnC = "owner-pull", "pull-a", "pull-b", "pull-c"
	acquire := func(fn string) *agentv1.Worker {
		t.Helper()
		return e.mustAcquire(&agentv1.AcquireWorkerRequest{Function: fn, Image: ref, OwnerId: owner})
	}
	ensure := func(fn string) *agentv1.Worker {
		t.Helper()
		w, err := api.EnsureContainer(rpcCtx(t), &agentv1.EnsureContainerRequest{FunctionName: fn, Image: ref, OwnerId: owner})
		if err != nil {
			t.Fatalf("EnsureContainer %s: %v", fn, err)
		}
		e.seen.add(w.GetId())
		return &agentv1.Worker{Id: w.GetId(), Function: fn, OwnerId: owner, Ip: w.GetIpAddress(), Port: w.GetPort()}
	}
	mark := func(w *agentv1.Worker) string {
		t.Helper()
		return e.mustInvoke(w, `{"pull":"always"}`).Env["ESB_IMAGE_MARK"]
	}
	idleWorker := func(what, fn string) *agentv1.Worker {
		t.Helper()
		ws := e.waitList(what, poolWait, func(ws []*agentv1.Worker) bool { return len(idleOf(ws, fn)) == 1 })
		return idleOf(ws, fn)[0]
	}
	fallbacks := func() float64 {
		t.Helper()
		v, ok := metricValue(e.metrics(), "esb_agent_image_pull_fallbacks_total")
		n, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			t.Fatalf("esb_agent_image_pull_fallbacks_total = %q (present %v): %v", v, ok, err)
		}
		return n
	}

	// A cold start runs what the tag names; the pool keeps one of it idle.
	w1 := acquire(fnA)
	e.keepDockerImage(ref)
	if m := mark(w1); m != "v1" {
		t.Fatalf("the first worker runs image %q, want v1", m)
	}
	idleA := idleWorker("the pool of "+fnA+" fills", fnA)

	// A new image under the same tag: the next cold start (the Gateway's
	// EnsureContainer, another function) runs it, and the idle worker of
	// the old image goes.
	reg.push(layout, "v2", ref)
	wB := ensure(fnB)
	e.keepDockerImage(ref)
	if m := mark(wB); m != "v2" {
		t.Fatalf("the cold start after the push runs image %q, want v2", m)
	}
	e.waitList("the idle worker of the old image is drained", poolWait, func(ws []*agentv1.Worker) bool {
		return !slices.ContainsFunc(ws, func(w *agentv1.Worker) bool { return w.GetId() == idleA.GetId() })
	})
	e.expectNoTraces("after the drain", idleA.GetId())
	if recs := p.LogRecords("image changed; draining its idle workers"); len(recs) != 1 || recs[0]["image"] != ref || recs[0]["workers"] != float64(1) {
		t.Errorf("drain log records %v, want one for %s with one worker", recs, ref)
	}
	idleB := idleWorker("the pool of "+fnB+" fills", fnB)
	if m := mark(idleB); m != "v2" {
		t.Errorf("the refilled idle worker runs image %q, want v2", m)
	}
	// A tag the registry does not have, with no local image: NotFound.
	missing := reg.addr + "/esb/pull-always:missing"
	_, err := api.EnsureContainer(rpcCtx(t), &agentv1.EnsureContainerRequest{FunctionName: fnA, Image: missing, OwnerId: owner})
	wantCode(t, "EnsureContainer of a missing tag under always", err, codes.NotFound, "image "+missing+" not found")
	if v := fallbacks(); v != 0 {
		t.Errorf("esb_agent_image_pull_fallbacks_total = %v with the registry up, want 0", v)
	}

	// Registry stopped. A warm acquire takes the idle worker without
	// asking the registry; the refill that follows asks, fails and falls
	// back: one warning, one count (two if the warm acquire had asked).
	reg.stop()
	wWarm := ensure(fnB)
	if wWarm.GetId() != idleB.GetId() {
		t.Fatalf("EnsureContainer with an idle worker gave %s, want the idle %s", wWarm.GetId(), idleB.GetId())
	}
	idleB2 := idleWorker("the pool of "+fnB+" refills from the local image", fnB)
	if idleB2.GetId() == idleB.GetId() {
		t.Fatalf("the pool still lists the worker just handed out")
	}
	if m := mark(idleB2); m != "v2" {
		t.Errorf("the worker refilled with the registry down runs image %q, want the local v2", m)
	}
	if v := fallbacks(); v != 1 {
		t.Errorf("esb_agent_image_pull_fallbacks_total = %v after a warm acquire and its refill, want 1", v)
	}
	recs := p.LogRecords(pullFallbackMsg)
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["image"] != ref || !strings.Contains(fmt.Sprint(recs[0]["err"]), reg.addr) {
		t.Errorf("fallback warnings %v, want one naming %s and the error reaching %s", recs, ref, reg.addr)
	}

	// A cold start with the registry down runs the local image.
	wC := acquire(fnC)
	if m := mark(wC); m != "v2" {
		t.Errorf("the cold start with the registry down runs image %q, want the local v2", m)
	}
	if v := fallbacks(); v < 2 {
		t.Errorf("esb_agent_image_pull_fallbacks_total = %v after the cold start's fallback, want at least 2", v)
	}

	for _, w := range []*agentv1.Worker{w1, wB, wWarm, wC} {
		e.mustRelease(w)
	}
	e.removeIdleWorkers(2) // of fnB and fnC; fnA's was drained
}

// removeIdleWorkers tears down the pool's idle workers, which the API
// cannot release: it waits until the pools hold n idle workers and
// nothing else (a refill still creating is not listed yet), stops the
// agent (a graceful stop keeps workers), removes their containers and lets
// an agent without a pool reconcile their networks away.
func (e *env) removeIdleWorkers(n int) {
	e.t.Helper()
	ws := e.waitList(fmt.Sprintf("%d idle workers and nothing else", n), poolWait, func(ws []*agentv1.Worker) bool {
		for _, w := range ws {
			if w.GetState() != agentv1.WorkerState_WORKER_STATE_IDLE {
				return false
			}
		}
		return len(ws) == n
	})
	e.stopAgent(syscall.SIGTERM)
	for _, w := range ws {
		e.removeContainer(w.GetId())
	}
	e.startAgent()
	if ws := e.list(""); len(ws) != 0 {
		e.t.Errorf("workers after their containers were removed: %v", ws)
	}
	e.expectNoTraces("after the idle workers")
}

// TestPullErrors is the new user with a typo in the image: 24
// acquires at once, half AcquireWorker and half the Gateway's
// EnsureContainer, of a tag the registry does not have are 24 NotFound
// naming the image; of a registry that does not answer, 24 Unavailable.
// Nothing is left behind.
func TestPullErrors(t *testing.T) { forRuntimes(t, testPullErrors) }

func testPullErrors(t *testing.T, e *env) {
	reg := e.startRegistry()
	dead := e.freePort(e.pullsInNode())
	e.startAgent("-plain-http-registries", reg.addr+","+dead)
	api := e.api()
	for _, tc := range []struct {
		name  string
		image string
		code  codes.Code
		text  string
	}{
		{"missing tag", reg.addr + "/esb/nope:missing", codes.NotFound, "image " + reg.addr + "/esb/nope:missing not found"},
		{"registry not answering", dead + "/esb/worker:latest", codes.Unavailable, "image " + dead + "/esb/worker:latest: its registry does not answer"},
	} {
		errs := make([]error, 24)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				var w interface{ GetId() string }
				if i%2 == 0 {
					var r *agentv1.AcquireWorkerResponse
					r, errs[i] = api.AcquireWorker(rpcCtx(t), &agentv1.AcquireWorkerRequest{Function: "typo", Image: tc.image, OwnerId: "owner-typo"})
					w = r.GetWorker()
				} else {
					w, errs[i] = api.EnsureContainer(rpcCtx(t), &agentv1.EnsureContainerRequest{FunctionName: "typo", Image: tc.image, OwnerId: "owner-typo"})
				}
				if errs[i] == nil {
					e.seen.add(w.GetId())
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			api := "AcquireWorker"
			if i%2 == 1 {
				api = "EnsureContainer"
			}
			wantCode(t, fmt.Sprintf("%s: %s %d of 24", tc.name, api, i), err, tc.code, tc.text)
		}
	}
	if ws := e.list(""); len(ws) != 0 {
		t.Errorf("workers after failed pulls: %v", ws)
	}
	e.expectNoTraces("after the failed pulls")
}

// TestImageRemovedWhileRunning: under the default if-not-present policy
// the agent checks an image on its first cold start only; when the image
// is removed from the runtime's store afterwards (ctr images rm, docker
// rmi), the next cold start finds it gone, pulls it again and runs it,
// with one log record saying so.
func TestImageRemovedWhileRunning(t *testing.T) { forRuntimes(t, testImageRemovedWhileRunning) }

func testImageRemovedWhileRunning(t *testing.T, e *env) {
	reg := e.startRegistry()
	layout := e.markedImages("v1")
	ref := reg.addr + "/esb/if-not-present:test"
	reg.push(layout, "v1", ref)
	e.keepDockerImage(ref) // noted before the pull: removed whatever happens
	p := e.startAgent("-plain-http-registries", reg.addr)
	coldStart := func() {
		t.Helper()
		w := e.mustAcquire(&agentv1.AcquireWorkerRequest{Function: "rm-image", Image: ref, OwnerId: "owner-rm"})
		if m := e.mustInvoke(w, `{"image":"removed"}`).Env["ESB_IMAGE_MARK"]; m != "v1" {
			t.Errorf("the worker runs image %q, want v1", m)
		}
		e.mustRelease(w)
	}
	coldStart()
	e.keepDockerImage(ref)
	if e.rt == stacktest.Docker {
		ctx, cancel := cmdCtx()
		_, err := e.dc.ImageRemove(ctx, ref, image.RemoveOptions{})
		cancel()
		if err != nil {
			t.Fatalf("docker rmi %s: %v", ref, err)
		}
	} else {
		e.ctr("images", "rm", ref)
	}
	coldStart()
	if recs := p.LogRecords("image gone from the runtime's store; ensuring it again"); len(recs) != 1 || recs[0]["image"] != ref {
		t.Errorf("log records of the image found gone: %v, want one naming %s", recs, ref)
	}
}
