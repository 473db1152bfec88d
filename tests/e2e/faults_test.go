package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// Settings of the fault tests: leftovers of a failure are removed by the
// agent's sweep once the plugins' GC grace has passed, so both are short.
const (
	faultGCGrace = "2s"
	faultSweep   = "2s"
	// faultSettle bounds the wait for the sweep to finish a failure's
	// cleanup: grace + two sweeps + the kernel's veth removal, on a
	// loaded machine.
	faultSettle = 45 * time.Second
)

// faultFlags are the agent's settings in the fault tests.
func (e *env) faultFlags(extra ...string) []string {
	return append([]string{"-sweep-interval", faultSweep}, extra...)
}

// journalDir is the agent's journal of creations in flight (beside its
// state file, which the env puts in its directory).
func (e *env) journalDir() string { return filepath.Join(e.Base, "creating") }

// setGCGrace rewrites the test's conflist (the default network's, as
// newEnv wrote it) with the plugins' GC grace.
func (e *env) setGCGrace(grace string) {
	e.t.Helper()
	nodetest.WriteConflist(e.t, e.ConfDir(), conf.CNIVersion, e.IPAMDir(), grace)
}

// acquireAfterReturn retries an acquire every half second until one
// works, for at most a minute after the runtime daemon came back, and
// returns the worker and how long that took.
func (e *env) acquireAfterReturn(daemon string) (*agentv1.Worker, time.Duration) {
	e.t.Helper()
	back := time.Now()
	for {
		w, _, err := e.timedAcquire("outage", "after")
		if err == nil {
			recovered := time.Since(back)
			noteWait("recovery (within a minute)", time.Minute, recovered)
			return w, recovered
		}
		if time.Since(back) > time.Minute {
			e.t.Fatalf("no acquire works within a minute of %s's return: %v", daemon, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// expectSettled waits up to faultSettle until the node holds exactly
// live's traces and the agent's journal is empty, else fails the test.
func (e *env) expectSettled(what string, live []*agentv1.Worker) leakcheck.Report {
	e.t.Helper()
	rep := e.waitNode(what, "faultSettle", live, faultSettle, faultSettle+time.Minute)
	// The undo of interrupted creations runs in the background: its last
	// step, the journal entry, may follow the node's last trace.
	start := time.Now()
	defer since("faultSettle (journal)", faultSettle, start)
	deadline := start.Add(faultSettle)
	for {
		ents, _ := os.ReadDir(e.journalDir())
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Errorf("%s: the agent's journal still holds %d creations after %s", what, len(ents), faultSettle)
			break
		}
		time.Sleep(pollInterval)
	}
	return rep
}

// releaseAll releases ws and fails the test on an error.
func (e *env) releaseAll(ws []*agentv1.Worker) {
	e.t.Helper()
	for _, w := range ws {
		if err := e.release(w); err != nil {
			e.t.Errorf("release %s: %v", w.GetId(), err)
		}
	}
}

// TestFaultAgentKilledDuringAcquires kills esb-agent with SIGKILL while 50
// acquires run (16 creations at once, the rest queued), restarts it, and
// checks that reconcile leaves exactly the workers it reports: each one
// answers, every worker handed to a client before the kill is among them,
// and nothing else of any worker (half-made containers, pins, veths,
// addresses, guards, cache entries) is left once the sweep has run.
func TestFaultAgentKilledDuringAcquires(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		e.cutsCreations = true // the kill lands in task creations
		e.setGCGrace(faultGCGrace)
		e.startAgent(e.faultFlags()...)
		const n = 50
		got := make([]*agentv1.Worker, n)
		var mu sync.Mutex
		ready := 0
		enough, done := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				w, err := e.acquire(e.acquireReq(fmt.Sprintf("kill-%d", i), "killed-agent"))
				if err == nil {
					mu.Lock()
					got[i] = w
					ready++
					if ready == 3 {
						close(enough)
					}
					mu.Unlock()
				}
			})
		}
		go func() { wg.Wait(); close(done) }()
		// Kill once some workers are ready and others are half made (each
		// acquire is bounded by rpcTimeout: done comes if 3 never do).
		started := time.Now()
		select {
		case <-enough:
			noteWait("3 workers ready before the kill", rpcTimeout, time.Since(started))
		case <-done:
			t.Errorf("the 50 acquires ended with %d workers ready, want 3 before the kill", ready)
		}
		// A random point of the remaining creations.
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		e.stopAgent(syscall.SIGKILL)
		wg.Wait()
		var handed []*agentv1.Worker
		for _, w := range got {
			if w != nil {
				handed = append(handed, w)
			}
		}

		p := e.startAgent(e.faultFlags()...)
		recs := p.LogRecords("reconciled")
		listed := e.list("")
		if len(recs) != 1 || recs[0]["adopted"] != float64(len(listed)) {
			t.Errorf("reconcile reported %v; the agent lists %d workers", recs, len(listed))
		}
		for _, w := range handed {
			if !slices.ContainsFunc(listed, func(l *agentv1.Worker) bool { return l.GetId() == w.GetId() && l.GetIp() == w.GetIp() }) {
				t.Errorf("worker %s (%s) was handed out before the kill but is not listed after the restart", w.GetId(), w.GetIp())
			}
		}
		rep := e.expectSettled("after the restart", listed)
		for _, w := range listed {
			e.mustInvoke(w, `{"after":"kill"}`)
		}
		t.Logf("FAULT agent-sigkill runtime=%s acquires=%d handed-before-kill=%d adopted=%d reconcile=%v found=%v",
			e.rt, n, len(handed), len(listed), recs, rep.Found)
		e.releaseAll(listed)
		e.expectSettled("after releasing the adopted workers", nil)
	})
}

// pluginKiller is a CNI_PATH directory whose esb-bridge runs the real one
// and, for ADD and DEL, SIGKILLs it after a random delay in [0, maxMS) ms
// with probability pct%, until the file killerOff exists.
func (e *env) killerOff() string { return filepath.Join(e.Base, "killer-off") }

func (e *env) pluginKiller(pct, maxMS int) string {
	e.t.Helper()
	dir := filepath.Join(e.Base, "killer-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	plugin := filepath.Join(nstest.PluginDir(e.t), "esb-bridge")
	script := fmt.Sprintf(`#!/bin/bash
# A plugin killed at a random point: the real esb-bridge, SIGKILLed after a
# random delay for ADD and DEL (issue 7's fault test).
case "$CNI_COMMAND" in ADD|DEL) ;; *) exec %[1]q ;; esac
if [ -e %[5]q ]; then exec %[1]q; fi
if (( RANDOM %% 100 >= %[2]d )); then exec %[1]q; fi
ms=$(( RANDOM %% %[3]d ))
%[1]q <&0 &
pid=$!
( sleep "$(printf '0.%%03d' "$ms")"; kill -9 "$pid" 2>/dev/null && echo "killed $CNI_COMMAND $CNI_CONTAINERID after ${ms}ms" >>%[4]q ) &
killer=$!
wait "$pid"
rc=$?
kill "$killer" 2>/dev/null
exit "$rc"
`, plugin, pct, maxMS, filepath.Join(e.Base, "kills.log"), e.killerOff())
	if err := os.WriteFile(filepath.Join(dir, "esb-bridge"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(nstest.PluginDir(e.t), "esb-ipam"), filepath.Join(dir, "esb-ipam")); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// TestFaultPluginKilled drives acquires and releases through the agent
// while esb-bridge is SIGKILLed at random points of half of its ADDs and
// DELs: an acquire may fail (Internal) but never hands out a broken or
// doubled worker, every worker handed out answers, and once the sweep has
// run the node holds exactly the live workers.
func TestFaultPluginKilled(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		e.setGCGrace(faultGCGrace)
		killer := e.pluginKiller(50, 80)
		e.startAgent(e.faultFlags("-cni-bin-dirs", killer)...)
		const rounds, par = 8, 4
		var mu sync.Mutex
		var live []*agentv1.Worker
		acquired, failedAcq, failedRel := 0, 0, 0
		var wg sync.WaitGroup
		for c := range par {
			wg.Go(func() {
				for i := range rounds {
					w, err := e.acquire(e.acquireReq(fmt.Sprintf("plug-%d", c), "killed-plugin"))
					mu.Lock()
					if err != nil {
						failedAcq++
						mu.Unlock()
						continue
					}
					acquired++
					mu.Unlock()
					if _, err := e.invoke(w, `{}`, invokeTimeout); err != nil {
						t.Errorf("worker %s handed out by the agent does not answer: %v", w.GetId(), err)
					}
					if i%2 == 1 { // keep half of them
						mu.Lock()
						live = append(live, w)
						mu.Unlock()
						continue
					}
					if err := e.release(w); err != nil {
						mu.Lock()
						failedRel++
						mu.Unlock()
						t.Logf("release %s under plugin kills: %v", w.GetId(), err)
					}
				}
			})
		}
		wg.Wait()
		kills, _ := os.ReadFile(filepath.Join(e.Base, "kills.log"))
		nk := strings.Count(string(kills), "\n")
		if nk == 0 {
			t.Errorf("the wrapper killed no plugin: the test proves nothing")
		}
		sameWorkers(t, e.list(""), live)
		rep := e.expectSettled("after the plugin kills", live)
		for _, w := range live {
			e.mustInvoke(w, `{"after":"plugin kills"}`)
		}
		t.Logf("FAULT plugin-kill runtime=%s attempts=%d acquired=%d failed-acquires=%d failed-releases=%d plugin-kills=%d live=%d found=%v\n%s",
			e.rt, rounds*par, acquired, failedAcq, failedRel, nk, len(live), rep.Found, kills)
		// Disarmed: the survivors' releases must succeed.
		if err := os.WriteFile(e.killerOff(), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		e.releaseAll(live)
		e.expectSettled("after releasing the survivors", nil)
	})
}

// TestFaultIPAMStoreWiped removes the IPAM state directory (as a reboot of
// a tmpfs /run would, but with the workers still running) twice: once
// before an agent restart, whose reconcile must re-register the live
// workers' addresses, and once before new acquires, which must not be
// handed an address a live worker holds.
func TestFaultIPAMStoreWiped(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		e.startAgent(e.faultFlags()...)
		var live []*agentv1.Worker
		for i := range 3 {
			live = append(live, e.mustAcquire(e.acquireReq("wipe", fmt.Sprintf("wiped-%d", i))))
		}
		e.wipeIPAM()
		e.stopAgent(syscall.SIGTERM)
		e.startAgent(e.faultFlags()...)
		sameWorkers(t, e.list(""), live)
		e.expectSettled("after a restart on a wiped IPAM store", live)

		e.wipeIPAM()
		for i := range 3 {
			live = append(live, e.mustAcquire(e.acquireReq("wipe", fmt.Sprintf("after-wipe-%d", i))))
		}
		rep := e.expectSettled("after acquires on a wiped IPAM store", live)
		for _, w := range live {
			e.mustInvoke(w, `{"after":"wipe"}`)
		}
		t.Logf("FAULT ipam-wipe runtime=%s live=%d found=%v", e.rt, len(live), rep.Found)
		e.releaseAll(live)
		e.expectSettled("after release", nil)
	})
}

func (e *env) wipeIPAM() {
	e.t.Helper()
	// All at once, as a reboot empties a tmpfs: the directory is renamed
	// away first. Removed in place, a GC of the agent's sweep running
	// meanwhile (esb-ipam opens the store by its path) could make a file
	// in it between RemoveAll's listing and its rmdir.
	gone := fmt.Sprintf("%s.wiped-%s", e.IPAMDir(), nstest.RandomHex(4))
	if err := os.Rename(e.IPAMDir(), gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.t.Fatal(err)
	}
	if err := os.RemoveAll(gone); err != nil {
		e.t.Fatal(err)
	}
}

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
