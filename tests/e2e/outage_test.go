package e2e

// The runtime outage test: a containerd of the test's own, stopped and
// frozen while the agent serves.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// ownContainerd is a containerd of the test's own (own config, root,
// state and socket under the test's directory), which the test may stop:
// the stack's daemons are shared and never stopped.
type ownContainerd struct {
	t      *testing.T
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

func (c *ownContainerd) sock() string { return filepath.Join(c.dir, "containerd.sock") }

// useOwnContainerd starts a containerd of the test's own, points the env
// (its ctr calls and the agents it starts) at it and pulls the worker
// image into it. Its containers are removed and it is stopped when the
// test ends, before the env's own teardown.
func (e *env) useOwnContainerd() *ownContainerd {
	e.t.Helper()
	c := &ownContainerd{t: e.t, dir: filepath.Join(e.Base, "ctd")}
	for _, d := range []string{"root", "state"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o711); err != nil {
			e.t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`# containerd of one reliability test
version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock(), c.sock()+".ttrpc", filepath.Join(c.dir, "root", "opt"))
	if err := os.WriteFile(filepath.Join(c.dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	shared := e.stack
	// Runs last: a daemon that never answered (start failed the test) is
	// still killed.
	e.t.Cleanup(func() { c.stop(syscall.SIGKILL) })
	c.start()
	e.stack.ContainerdSock = c.sock()
	e.t.Cleanup(func() {
		if e.agent != nil {
			if err := e.stopAgentErr(syscall.SIGTERM); err != nil {
				e.t.Error(err)
			}
		}
		if c.cmd == nil {
			c.start() // the test failed while it was down
		}
		if err := e.forceClean(); err != nil {
			e.t.Errorf("clean the test's containerd: %v", err)
		}
		c.stop(syscall.SIGTERM)
		e.stack = shared
	})
	e.ctr("images", "pull", "--plain-http", "--snapshotter", e.stack.Snapshotter, e.image)
	return c
}

// start runs the daemon and waits until it answers.
func (c *ownContainerd) start() {
	c.t.Helper()
	c.starts++
	log, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("containerd-%d.log", c.starts)))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(c.dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		c.t.Fatalf("start containerd: %v", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); _ = log.Close(); close(done) }(c.cmd, c.exited)
	exited, err := waitDaemon("containerd", c.exited, 100*time.Millisecond, func() error {
		_, err := nodetest.Run(2*time.Second, nil, "ctr", "--address", c.sock(), "version")
		return err
	})
	if exited {
		c.t.Fatalf("the test's containerd exited at start; see %s", log.Name())
	}
	if err != nil {
		c.t.Fatalf("the test's containerd does not answer on %s within %s: %v", c.sock(), daemonStartTimeout, err)
	}
}

// stop signals the daemon and waits for it to exit.
func (c *ownContainerd) stop(sig syscall.Signal) {
	c.t.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	stopped := time.Now()
	select {
	case <-c.exited:
		noteWait("containerd stop", agentStopTimeout, time.Since(stopped))
	case <-time.After(agentStopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// signal sends sig (SIGSTOP, SIGCONT) to the running daemon.
func (c *ownContainerd) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal containerd: %v", err)
	}
}

// timedAcquire acquires and says how long the answer took.
func (e *env) timedAcquire(owner, function string) (*agentv1.Worker, time.Duration, error) {
	start := time.Now()
	w, err := e.acquire(e.acquireReq(owner, function))
	took := time.Since(start)
	noteWait("runtimeBound (acquire)", runtimeBound, took)
	return w, took, err
}

// acquireWhileUp acquires a worker for the outage tests while their
// runtime runs. On a loaded machine one runtime call may outlast the
// agent's -runtime-timeout, which the agent rightly answers Unavailable:
// that is retried (3 tries), since these acquires only set the scene.
func (e *env) acquireWhileUp(function string) *agentv1.Worker {
	e.t.Helper()
	r := e.acquireReq("outage", function)
	for try := 1; ; try++ {
		w, err := e.acquire(r)
		if err == nil {
			return e.checkAcquired(w, r)
		}
		if !unavailable(err) || try == 3 {
			e.t.Fatalf("acquire %s for outage (try %d): %v", function, try, err)
		}
		e.t.Logf("acquire %s for outage (try %d, the runtime is slow, not down): %v", function, try, err)
	}
}

// runtimeBound is the longest an answer may take while the runtime is
// down or hung: the agent's per-call deadline (10 s here) over the few
// calls of an acquire and its rollback, on a loaded machine.
const runtimeBound = 45 * time.Second

// TestFaultRuntimeStopped stops the runtime daemon (a containerd of the
// test's own) while acquires run, and later freezes it (SIGSTOP, a hung
// daemon): every acquire answers within a bound, with a worker or
// Unavailable; a live worker keeps serving; once the daemon is back
// acquires work again, and after the sweep nothing of the interrupted
// acquires is left.
func TestFaultRuntimeStopped(t *testing.T) {
	t.Run(stacktest.Containerd, func(t *testing.T) {
		e := newEnv(t)
		e.cutsCreations = true // containerd stops in task creations
		e.setGCGrace(faultGCGrace)
		ctd := e.useOwnContainerd()
		// 10 s as for Docker: at load 20-40 a task create alone took
		// over 3 s and failed the acquire before the outage.
		e.startAgent(e.faultFlags("-runtime-timeout", "10s")...)
		live := []*agentv1.Worker{e.acquireWhileUp("survivor")}

		// Stopped during acquires.
		const n = 6
		type answer struct {
			w   *agentv1.Worker
			d   time.Duration
			err error
		}
		answers := make([]answer, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				w, d, err := e.timedAcquire("outage", "interrupted")
				answers[i] = answer{w, d, err}
			})
		}
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		ctd.stop(syscall.SIGTERM)
		wg.Wait()
		var slowest time.Duration
		unavailable := 0
		for i, a := range answers {
			slowest = max(slowest, a.d)
			wantUnavailableOrOK(t, fmt.Sprintf("acquire %d as containerd stopped", i), a.err)
			if a.d > runtimeBound {
				t.Errorf("acquire %d answered after %s (bound %s)", i, a.d, runtimeBound)
			}
			if a.err == nil {
				live = append(live, a.w)
			} else {
				unavailable++
			}
		}
		_, downTook, err := e.timedAcquire("outage", "while-down")
		wantUnavailableOrOK(t, "acquire while containerd is down", err)
		if err == nil || downTook > runtimeBound {
			t.Errorf("acquire while containerd is down: %v after %s; want Unavailable within %s", err, downTook, runtimeBound)
		}
		e.mustInvoke(live[0], `{"containerd":"down"}`)

		// Back: acquires work again (the client reconnects on its own).
		ctd.start()
		w, recovered := e.acquireAfterReturn("containerd")
		live = append(live, w)
		e.mustInvoke(w, `{"containerd":"back"}`)
		e.expectSettled("after containerd came back", live)

		// Hung: SIGSTOP, an acquire must still answer, Unavailable.
		ctd.signal(syscall.SIGSTOP)
		_, hungTook, err := e.timedAcquire("outage", "while-hung")
		ctd.signal(syscall.SIGCONT)
		wantUnavailableOrOK(t, "acquire while containerd is frozen", err)
		if err == nil || hungTook > runtimeBound {
			t.Errorf("acquire while containerd is frozen: %v after %s; want Unavailable within %s", err, hungTook, runtimeBound)
		}
		w = e.acquireWhileUp("after-thaw")
		live = append(live, w)
		rep := e.expectSettled("after containerd thawed", live)
		t.Logf("FAULT runtime-stopped runtime=%s in-flight=%d unavailable=%d slowest-answer=%s down-answer=%s "+
			"recovered-after=%s hung-answer=%s live=%d found=%v",
			e.rt, n, unavailable, slowest.Round(time.Millisecond), downTook.Round(time.Millisecond),
			recovered.Round(time.Millisecond), hungTook.Round(time.Millisecond), len(live), rep.Found)
		e.releaseAll(live)
		e.expectSettled("after release", nil)
	})
	// Docker: a dockerd of the test's own (own data root, exec root,
	// pidfile and socket, in the node) is stopped during acquires. With
	// live-restore off it stops its containers, so the workers it ran are
	// lost: once it is back the agent must drop them (event watch, catch-up
	// on resubscribe) and serve again, with nothing left.
	t.Run(stacktest.Docker, func(t *testing.T) {
		e := newEnvFor(t, stacktest.Docker)
		e.setGCGrace(faultGCGrace)
		d := e.startNodeDockerd()
		// dockerd's start of a container alone can take seconds here.
		e.startAgent(e.faultFlags("-runtime-timeout", "10s")...)
		e.acquireWhileUp("lost")
		const n = 6
		durs := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, durs[i], errs[i] = e.timedAcquire("outage", "interrupted") })
		}
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		if !d.stop() {
			t.Errorf("the test's dockerd did not stop within %s", agentStopTimeout)
		}
		wg.Wait()
		var slowest time.Duration
		unavailable := 0
		for i := range n {
			slowest = max(slowest, durs[i])
			wantUnavailableOrOK(t, fmt.Sprintf("acquire %d as dockerd stopped", i), errs[i])
			if errs[i] != nil {
				unavailable++
			}
			if durs[i] > runtimeBound {
				t.Errorf("acquire %d answered after %s (bound %s)", i, durs[i], runtimeBound)
			}
		}
		_, downTook, err := e.timedAcquire("outage", "while-down")
		wantUnavailableOrOK(t, "acquire while dockerd is down", err)
		if err == nil || downTook > runtimeBound {
			t.Errorf("acquire while dockerd is down: %v after %s; want Unavailable within %s", err, downTook, runtimeBound)
		}

		d.start(t)
		w, recovered := e.acquireAfterReturn("dockerd")
		e.mustInvoke(w, `{"dockerd":"back"}`)
		// The workers dockerd stopped are dropped; only the new one lives.
		live := e.waitList("the workers dockerd stopped are dropped", faultSettle, func(ws []*agentv1.Worker) bool {
			return len(ws) == 1 && ws[0].GetId() == w.GetId()
		})
		rep := e.expectSettled("after dockerd came back", live)
		t.Logf("FAULT runtime-stopped runtime=%s in-flight=%d unavailable=%d slowest-answer=%s down-answer=%s "+
			"recovered-after=%s live=%d found=%v",
			e.rt, n, unavailable, slowest.Round(time.Millisecond), downTook.Round(time.Millisecond),
			recovered.Round(time.Millisecond), len(live), rep.Found)
		e.releaseAll(live)
		e.expectSettled("after release", nil)
	})
}

// wantUnavailable fails the test unless err is Unavailable (or, for a
// call the fault caught late, DeadlineExceeded from readiness is not
// acceptable: the agent must classify the runtime's failure).
func wantUnavailableOrOK(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !unavailable(err) {
		t.Errorf("%s: %v, want Unavailable", what, err)
	}
}
