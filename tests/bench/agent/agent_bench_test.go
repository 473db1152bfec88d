package benchagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// The issue's sample sizes and loads.
const (
	coldSamples      = 100 // cold acquires, and as many ctr run -d
	warmSamples      = 50  // warm-pool acquires
	profileSamples   = 20  // in-process warm acquires taken apart
	reconcileSamples = 3   // in-process reconciles of the live workers taken apart
	clients          = 8   // concurrent API clients
	throughputCycles = 80  // acquire+release cycles of the throughput round
	liveWorkers      = 200 // workers alive at once

	function = "bench"
	mib      = 1 << 20
)

// Targets of the issue.
const (
	coldVsCtrLimit = 1.2                   // cold acquire p50 / ctr run -d p50
	coldVsReady    = 0.9                   // cold acquire p50 / (ctr run -d + port accepts TCP) p50
	shareLimit     = 30 * time.Millisecond // cold acquire p50 − task create+start p50
	p95VsP50Limit  = 2.0                   // cold acquire p95 / cold acquire p50
	warmLimit      = time.Millisecond
	rssLimit       = 64 * mib
	adoptLimit     = 2 * time.Second
)

// results are the figures of the run; what a failed stage did not
// measure stays zero and its target "not measured".
type results struct {
	cold, coldLogged, ctrRun, ctrReady, release Samples
	warm                                        Samples
	warmNotWarm                                 int
	shimGroup                                   int // ESB_BENCH_SHIM_GROUP: the cold stage's -shim-group-size
	phases                                      []Row
	concAcquire, concRelease                    Samples
	throughputWall                              time.Duration
	ctrConc                                     Samples
	ctrThroughputWall                           time.Duration
	liveWall                                    time.Duration
	liveMem, adoptMem                           agenttest.Memory
	stopWall                                    time.Duration
	adoptReady, adoptAll                        time.Duration
	adoptFirst                                  int
	reconcileTook                               time.Duration
	reconcileAdopted                            float64
	releaseAllWall                              time.Duration
	leftovers                                   []string
	leftChecked                                 bool
	workerLogs                                  int    // files left in esb-agent's -log-dir
	baseline                                    string // the baseline CLI when not ctr ("docker")
}

// BenchmarkAgentSideBySide measures, in one run: cold AcquireWorker
// against `ctr run -d` of the same image (interleaved, so both see the same
// load), the phases of an acquire, warm-pool acquires, throughput with 8
// concurrent clients, 200 live workers with the agent's RSS, and the
// adoption of the 200 by a restarted agent; then it releases everything
// and checks that nothing is left. It takes its own samples whatever b.N
// is (run it with -benchtime 1x) and prints a markdown table with the
// issue's targets.
//
// ESB_BENCH_SHIM_GROUP=N runs the cold stage's agent with
// -shim-group-size N and releases each cold worker after the next one's
// acquire, so that a new worker finds its function's group alive and joins
// its shim (a busy function's steady state: one create in N starts a
// shim); `ctr run -d` keeps a shim per container.
func BenchmarkAgentSideBySide(b *testing.B) {
	e := newEnv(b)
	var r results
	if v := os.Getenv("ESB_BENCH_SHIM_GROUP"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("ESB_BENCH_SHIM_GROUP=%q: want esb-agent's -shim-group-size, a number from 0", v)
		}
		r.shimGroup = n
	}
	begin := time.Now()
	notes := []string{machineNote(e, "at the start")}
	var stages []string
	stage := func(name string, start time.Time) {
		stages = append(stages, fmt.Sprintf("%s %s", name, time.Since(start).Round(100*time.Millisecond)))
	}
	defer func() {
		notes = append(notes, machineNote(e, "at the end"),
			fmt.Sprintf("wall time of the stages: %s; whole run %s", strings.Join(stages, ", "), time.Since(begin).Round(time.Second)))
		notes = append(notes, logNote(e))
		s := r.summary(e, notes)
		if err := s.Print(os.Stdout); err != nil {
			b.Errorf("print summary: %v", err)
		}
		r.report(b)
	}()
	b.ResetTimer()

	t := time.Now()
	r.measureWarm(b, e)
	stage("warm pool", t)

	t = time.Now()
	var p *agentProc
	if r.shimGroup > 0 {
		p = e.startAgent("-shim-group-size", strconv.Itoa(r.shimGroup))
	} else {
		p = e.startAgent()
	}
	if left := e.noTraces(); len(left) > 0 {
		b.Errorf("the restarted agent's reconcile left the warm pool's idle worker behind:\n  %s", strings.Join(left, "\n  "))
	}
	own := e.newOwnProfiler()
	cold := own.NewCold()
	r.measureCold(b, e, p, cold)
	r.phases = append(r.phases, cold.Rows()...)
	stage("cold side by side", t)

	t = time.Now()
	rows, err := own.Warm(profileSamples)
	if err != nil {
		b.Fatalf("profile warm acquires: %v", err)
	}
	r.phases = append(r.phases, rows...)
	prof := e.newProfiler()
	stage("warm phases", t)

	t = time.Now()
	r.concAcquire, r.concRelease, r.throughputWall = e.throughput(b, p)
	r.ctrConc, r.ctrThroughputWall = e.ctrThroughput(b)
	stage("throughput", t)

	t = time.Now()
	r.measureLive(b, e, p, prof)
	stage("200 live, restart, release", t)
}

// logNote sums up the warnings and errors of the agents stopped so far.
func logNote(e *env) string {
	if len(e.logIssues) == 0 {
		return "esb-agent logs (every run): no warning, no error"
	}
	var parts []string
	for m, n := range e.logIssues {
		parts = append(parts, fmt.Sprintf("%s ×%d", m, n))
	}
	slices.Sort(parts)
	return "esb-agent logs (every run): " + strings.Join(parts, "; ")
}

// machineNote describes the machine and its load.
func machineNote(e *env, when string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	daemon := "containerd ?"
	if e.dc != nil {
		if v, err := e.dc.ServerVersion(ctx); err == nil {
			daemon = fmt.Sprintf("Docker %s (API %s)", v.Version, e.dc.ClientVersion())
		}
	} else {
		daemon = "containerd " + e.ctrd.Version(ctx)
	}
	return benchstat.MachineNote(when, daemon)
}

// measureWarm runs an agent with -pool-min-idle 1: after each acquire the
// pool refills in the background; each timed acquire waits until an idle
// worker exists. The idle worker left at the end is removed behind the
// stopped agent's back, for the next agent's reconcile to clean up.
func (r *results) measureWarm(b *testing.B, e *env) {
	p := e.startAgent("-pool-min-idle", "1")
	w, _, err := p.Acquire(e.image, "warm-owner", "warm")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.Release(w); err != nil {
		b.Fatal(err)
	}
	for range warmSamples {
		if err := waitIdle(p, "warm", time.Minute); err != nil {
			b.Fatal(err)
		}
		w, took, err := p.Acquire(e.image, "warm-owner", "warm")
		if err != nil {
			b.Fatal(err)
		}
		if w.GetWarm() {
			r.warm = append(r.warm, took)
		} else {
			r.warmNotWarm++
		}
		if _, err := p.Release(w); err != nil {
			b.Fatal(err)
		}
	}
	if err := waitIdle(p, "warm", time.Minute); err != nil {
		b.Fatal(err)
	}
	ws, err := p.List()
	if err != nil {
		b.Fatal(err)
	}
	if err := e.stopAgent(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	for _, w := range ws {
		if err := e.removeContainer(ctx, w.GetId()); err != nil {
			b.Fatal(err)
		}
	}
}

// waitIdle polls every 2 ms until the agent has an idle worker of function.
func waitIdle(p *agentProc, function string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ws, err := p.List()
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.GetFunction() == function && w.GetState() == agentv1.WorkerState_WORKER_STATE_IDLE {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no idle worker of %s within %s", function, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// measureCold takes coldSamples cold acquires and as many runs of the
// runtime's CLI (ctr run -d, or docker run -d --network none),
// interleaved (which goes first alternates), each released or removed
// before the next sample; one untimed round first warms caches. With a
// profile (containerd), each round also takes one in-process cold
// acquire apart, so the phases (and the agent's share, which subtracts
// their task create+start) come from the same minutes as the acquires.
func (r *results) measureCold(b *testing.B, e *env, p *agentProc, prof *agenttest.ColdProfile) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ctrOnce := func(i int, record bool) {
		id := fmt.Sprintf("%s-run-%03d", e.rt, i+1)
		run, ready, err := e.baselineRun(id)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.removeContainer(ctx, id); err != nil {
			b.Fatal(err)
		}
		if record {
			r.ctrRun, r.ctrReady = append(r.ctrRun, run), append(r.ctrReady, ready)
		}
	}
	// With shim groups the worker before is released after the next one's
	// acquire: the new one joins the group while a member is alive.
	var held *agentv1.Worker
	agentOnce := func(record bool) {
		w, took, err := p.Acquire(e.image, "cold-owner", function)
		if err != nil {
			b.Fatal(err)
		}
		if r.shimGroup > 0 {
			w, held = held, w
		}
		var rel time.Duration
		if w != nil {
			if rel, err = p.Release(w); err != nil {
				b.Fatal(err)
			}
		}
		if record {
			r.cold = append(r.cold, took)
			if w != nil {
				r.release = append(r.release, rel)
			}
		}
	}
	defer func() {
		if held != nil {
			if _, err := p.Release(held); err != nil {
				b.Error(err)
			}
		}
	}()
	profOnce := func() {
		if prof == nil {
			return
		}
		if err := prof.Pair(); err != nil {
			b.Fatal(err)
		}
	}
	ctrOnce(-1, false)
	agentOnce(false)
	profOnce()
	if prof != nil {
		prof.Reset()
	}
	for i := range coldSamples {
		if i%2 == 0 {
			ctrOnce(i, true)
			agentOnce(true)
			profOnce()
		} else {
			profOnce()
			agentOnce(true)
			ctrOnce(i, true)
		}
	}
	recs := p.LogRecords("worker ready")
	for _, rec := range recs[min(1, len(recs)):] { // the first was the warm-up
		if d, ok := tookOf(rec); ok {
			r.coldLogged = append(r.coldLogged, d)
		}
	}
}

// throughput runs throughputCycles acquire+release cycles from clients
// concurrent clients and returns each call's time and the wall time.
func (e *env) throughput(b *testing.B, p *agentProc) (acq, rel Samples, wall time.Duration) {
	start := time.Now()
	err := agenttest.Spread(clients, 0, throughputCycles, func(c, _ int) (func(), error) {
		w, a, err := p.Acquire(e.image, fmt.Sprintf("tp-owner-%d", c), function)
		var d time.Duration
		if err == nil {
			d, err = p.Release(w)
		}
		return func() { acq, rel = append(acq, a), append(rel, d) }, err
	})
	wall = time.Since(start)
	if err != nil {
		b.Fatalf("throughput: %v", err)
	}
	return acq, rel, wall
}

// ctrThroughput runs throughputCycles `ctr run -d` + port ready +
// removal cycles from clients concurrent goroutines, the counterpart of
// the agent's throughput round, and returns each ctr run -d's time and the
// wall time.
func (e *env) ctrThroughput(b *testing.B) (runs Samples, wall time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	err := agenttest.Spread(clients, 0, throughputCycles, func(_, i int) (func(), error) {
		id := fmt.Sprintf("ctr-tp-%03d", i+1)
		run, _, err := e.ctrRun(id)
		err = errors.Join(err, e.removeContainer(ctx, id))
		return func() { runs = append(runs, run) }, err
	})
	wall = time.Since(start)
	if err != nil {
		b.Fatalf("ctr throughput: %v", err)
	}
	return runs, wall
}

// measureLive acquires liveWorkers workers, clients at a time, reads the
// agent's RSS, stops the agent gracefully, starts it again and times the
// adoption (process start to ListWorkers listing all of them), takes a
// reconcile of them apart in-process, then releases them all and checks
// that nothing is left.
func (r *results) measureLive(b *testing.B, e *env, p *agentProc, prof *agenttest.Profiler) {
	workers := make([]*agentv1.Worker, liveWorkers)
	start := time.Now()
	err := agenttest.Spread(clients, 0, liveWorkers, func(c, i int) (func(), error) {
		w, _, err := p.Acquire(e.image, fmt.Sprintf("live-owner-%d", c), function)
		return func() { workers[i] = w }, err
	})
	r.liveWall = time.Since(start)
	if err != nil {
		b.Fatalf("acquire %d live workers: %v", liveWorkers, err)
	}
	ws, err := p.List()
	if err != nil {
		b.Fatal(err)
	}
	if len(ws) != liveWorkers {
		b.Fatalf("the agent lists %d workers, want %d", len(ws), liveWorkers)
	}
	if r.liveMem, err = p.Memory(); err != nil {
		b.Fatal(err)
	}

	start = time.Now()
	if err := e.stopAgent(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	r.stopWall = time.Since(start)
	p = e.startAgent()
	r.adoptReady, r.adoptFirst = p.ready, p.first
	for n := p.first; n < liveWorkers; {
		if time.Since(p.started) > time.Minute {
			b.Fatalf("the restarted agent lists %d workers after a minute, want %d", n, liveWorkers)
		}
		ws, err := p.List()
		if err != nil {
			b.Fatal(err)
		}
		n = len(ws)
	}
	r.adoptAll = time.Since(p.started)
	if p.first >= liveWorkers {
		r.adoptAll = p.ready
	}
	if recs := p.LogRecords("reconciled"); len(recs) == 1 {
		r.reconcileTook, _ = tookOf(recs[0])
		r.reconcileAdopted, _ = recs[0]["adopted"].(float64)
	}
	if r.adoptMem, err = p.Memory(); err != nil {
		b.Fatal(err)
	}
	// The agent is idle: fresh in-process agents reconcile the same node
	// to take the adoption apart.
	rows, err := prof.Reconcile(reconcileSamples, liveWorkers)
	if err != nil {
		b.Fatalf("profile reconcile: %v", err)
	}
	r.phases = append(r.phases, rows...)

	start = time.Now()
	err = agenttest.ForEach(context.Background(), workers, func(_ context.Context, w *agentv1.Worker) error {
		_, err := p.Release(w)
		return err
	})
	r.releaseAllWall = time.Since(start)
	if err != nil {
		b.Fatalf("release %d workers: %v", liveWorkers, err)
	}
	r.leftovers, r.leftChecked = e.noTraces(), true
	if len(r.leftovers) > 0 {
		b.Errorf("after releasing every worker, left on the node:\n  %s", strings.Join(r.leftovers, "\n  "))
	}
	logs, _ := filepath.Glob(filepath.Join(e.LogDir(), "*.log"))
	r.workerLogs = len(logs)
	if err := e.stopAgent(syscall.SIGTERM); err != nil {
		b.Error(err)
	}
}

// readyRatio is the figure cold acquire p50 / (cli + port accepts TCP)
// p50, when both were measured.
func readyRatio(cold, ready Samples, cli string) (Figure, bool) {
	r, ok := benchstat.Ratio(cold.P50(), ready.P50())
	return Figure{Name: "cold acquire p50 / (" + cli + " + port accepts TCP) p50",
		Value: fmt.Sprintf("%.2f×", r), Note: "same readiness on both sides"}, ok
}

func mibOf(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/mib) }

func perSecond(n int, d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", float64(n)/d.Seconds())
}

// summary builds the printed table from what was measured.
func (r *results) summary(e *env, notes []string) *Summary {
	if r.shimGroup > 0 {
		notes = append(notes, fmt.Sprintf("cold stage with shim groups (ESB_BENCH_SHIM_GROUP): esb-agent -shim-group-size %d, "+
			"each cold worker released after the next one's acquire, so a new worker joins a live group's shim; ctr run -d has a shim per container", r.shimGroup))
	}
	s := &Summary{
		Title: "esb-agent beside ctr run -d: acquire, warm pool, throughput, 200 live workers",
		Notes: append(notes,
			fmt.Sprintf("image %s, present in the run's containerd namespace; containerd's snapshotter %s", e.image, e.stack.Snapshotter),
			"esb-agent runs as a process in a node network namespace made for the run (nsenter --net), containerd adapter, "+
				"esb-bridge + esb-ipam through libcni; API calls are timed by a gRPC client on the agent's unix socket; "+
				"an acquire returns when the worker's port accepts TCP",
			"ctr run -d runs in the host's namespace with ctr's default network (a new empty namespace, lo up), no memory limit; "+
				"it returns when the task has started; the ready column then polls the container's lo as the agent polls its workers",
			fmt.Sprintf("cold: %d acquire+release and %d ctr run -d + removal, interleaved (order alternating), after one untimed round of each; "+
				"releases and removals are not in the acquire figures", coldSamples, coldSamples),
			fmt.Sprintf("phases: agent.Agent built in the test process from esb-agent's parts (containerd adapter, libcni) "+
				"with its runtime, network and pins wrapped in clocks, plugins and probes run from a thread in the node; "+
				"%d cold acquire+release interleaved with the cold samples above (in a containerd namespace, libcni cache and pins of its own), "+
				"then %d warm acquires (pool of 1), and %d reconciles of the %d live workers by fresh agents while esb-agent idles",
				coldSamples, profileSamples, reconcileSamples, liveWorkers),
		),
	}
	warmNote := fmt.Sprintf("-pool-min-idle 1; each after an idle worker exists; %d of %d not warm", r.warmNotWarm, warmSamples)
	s.Latency = []Row{
		{Name: "esb-agent AcquireWorker, cold", Samples: r.cold, Note: "gRPC round trip, port accepts TCP"},
		{Name: "esb-agent, its log's \"worker ready\" took", Samples: r.coldLogged, Note: "inside the agent, same acquires"},
		{Name: "ctr run -d", Samples: r.ctrRun, Note: "to the command's exit: task started"},
		{Name: "ctr run -d + port accepts TCP", Samples: r.ctrReady, Note: "from the same start"},
		{Name: "esb-agent ReleaseWorker", Samples: r.release, Note: "SIGTERM (2 s grace), CNI DEL, delete, unpin"},
		{Name: "esb-agent AcquireWorker, warm pool", Samples: r.warm, Note: warmNote},
		{Name: fmt.Sprintf("AcquireWorker, %d concurrent clients", clients), Samples: r.concAcquire, Note: "cold, throughput round"},
		{Name: fmt.Sprintf("ReleaseWorker, %d concurrent clients", clients), Samples: r.concRelease, Note: "throughput round"},
		{Name: fmt.Sprintf("ctr run -d, %d concurrent", clients), Samples: r.ctrConc, Note: "ctr's throughput round"},
	}
	s.Phases = r.phases
	if f, ok := readyRatio(r.cold, r.ctrReady, "ctr run -d"); ok {
		s.Figures = append(s.Figures, f)
	}
	if r.throughputWall > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("throughput, %d clients, %d acquire+release cycles", clients, throughputCycles),
			Value: perSecond(throughputCycles, r.throughputWall) + " workers/s", Note: fmt.Sprintf("wall %s", r.throughputWall.Round(time.Millisecond))})
	}
	if r.ctrThroughputWall > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("ctr run -d + port ready + removal, %d concurrent, %d cycles", clients, throughputCycles),
			Value: perSecond(throughputCycles, r.ctrThroughputWall) + " containers/s", Note: fmt.Sprintf("wall %s; containerd's own pace on this machine", r.ctrThroughputWall.Round(time.Millisecond))})
	}
	if r.liveWall > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("%d live workers acquired, %d at a time", liveWorkers, clients),
			Value: r.liveWall.Round(time.Millisecond).String(), Note: perSecond(liveWorkers, r.liveWall) + " workers/s"})
	}
	if r.liveMem.RSS > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("esb-agent RSS with %d live workers", liveWorkers),
			Value: mibOf(r.liveMem.RSS), Note: "VmHWM (peak) " + mibOf(r.liveMem.HWM)})
	}
	if r.stopWall > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("esb-agent SIGTERM to exit, %d live workers", liveWorkers),
			Value: r.stopWall.Round(time.Millisecond).String(), Note: "workers keep running"})
	}
	if r.adoptAll > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("restart: process start → ListWorkers lists %d", liveWorkers),
			Value: r.adoptAll.Round(time.Millisecond).String(),
			Note: fmt.Sprintf("first answer after %s listed %d; the log's reconcile took %s, adopted %.0f",
				r.adoptReady.Round(time.Millisecond), r.adoptFirst, r.reconcileTook.Round(time.Millisecond), r.reconcileAdopted)})
	}
	if r.adoptMem.RSS > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("esb-agent RSS after adopting %d", liveWorkers),
			Value: mibOf(r.adoptMem.RSS), Note: "VmHWM (peak) " + mibOf(r.adoptMem.HWM)})
	}
	if r.releaseAllWall > 0 {
		s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("release of the %d, %d at a time", liveWorkers, clients),
			Value: r.releaseAllWall.Round(time.Millisecond).String(), Note: perSecond(liveWorkers, r.releaseAllWall) + " workers/s"})
	}
	if r.leftChecked {
		left := "nothing"
		if len(r.leftovers) > 0 {
			left = fmt.Sprintf("%d traces", len(r.leftovers))
		}
		s.Figures = append(s.Figures, Figure{Name: "left after every release", Value: left,
			Note: "containers, netns pins, node veths, IPAM addresses, libcni cache entries, /etc files"},
			Figure{Name: "worker log files left in esb-agent's -log-dir after every release", Value: fmt.Sprint(r.workerLogs),
				Note: "Release removes a worker's log; the warm stage's idle worker, removed behind the stopped agent's back, keeps its own, as a failed acquire does"})
	}

	ms := func(d time.Duration) string { return benchstat.Ms(d) + " ms" }
	s.Targets = []Target{
		benchstat.RatioTarget(fmt.Sprintf("cold acquire p50 ≤ %.1f × ctr run -d p50", coldVsCtrLimit), r.cold.P50(), r.ctrRun.P50(), coldVsCtrLimit,
			fmt.Sprintf("%s vs %s", ms(r.cold.P50()), ms(r.ctrRun.P50()))),
		benchstat.RatioTarget(fmt.Sprintf("cold acquire p50 ≤ %.1f × (ctr run -d + port accepts TCP) p50", coldVsReady), r.cold.P50(), r.ctrReady.P50(), coldVsReady,
			fmt.Sprintf("%s vs %s", ms(r.cold.P50()), ms(r.ctrReady.P50()))),
		r.shareTarget(),
		benchstat.RatioTarget(fmt.Sprintf("cold acquire p95 ≤ %.0f × its p50", p95VsP50Limit), r.cold.P95(), r.cold.P50(), p95VsP50Limit,
			fmt.Sprintf("%s vs %s", ms(r.cold.P95()), ms(r.cold.P50()))),
		{Name: "warm-pool acquire p50 at most 1 ms", Measured: float64(r.warm.P50()) / float64(time.Millisecond),
			Limit: float64(warmLimit) / float64(time.Millisecond), Unit: "ms", Known: len(r.warm) > 0},
		{Name: fmt.Sprintf("esb-agent RSS with %d live workers at most 64 MiB", liveWorkers), Measured: float64(r.liveMem.RSS) / mib,
			Limit: rssLimit / mib, Unit: "MiB", Known: r.liveMem.RSS > 0},
		{Name: fmt.Sprintf("%d live workers adopted by a restarted agent within 2 s", liveWorkers), Measured: r.adoptAll.Seconds(),
			Limit: adoptLimit.Seconds(), Unit: "s", Known: r.adoptAll > 0, Detail: "process start → ListWorkers lists all"},
	}
	return s
}

// shareTarget is the agent's own share of a cold acquire: the p50 of the
// cold acquires less the p50 of their task create+start (shim, runc),
// taken apart by the profiler in the same run.
func (r *results) shareTarget() benchstat.Target {
	t := benchstat.Target{Name: fmt.Sprintf("agent's own share of a cold acquire (p50 − task create+start p50) ≤ %d ms", shareLimit.Milliseconds()),
		Limit: float64(shareLimit) / float64(time.Millisecond), Unit: "ms"}
	for _, row := range r.phases {
		if row.Name == agenttest.PhaseStart && len(row.Samples) > 0 && len(r.cold) > 0 {
			share := r.cold.P50() - row.Samples.P50()
			t.Measured, t.Known = float64(share)/float64(time.Millisecond), true
			t.Detail = fmt.Sprintf("%s ms − %s ms", benchstat.Ms(r.cold.P50()), benchstat.Ms(row.Samples.P50()))
		}
	}
	return t
}

// baselineMetric names the baseline CLI's p50 metric.
func (r *results) baselineMetric() string {
	if r.baseline != "" {
		return r.baseline + "-run-p50-ms"
	}
	return "ctr-run-p50-ms"
}

// report hands the headline figures to the benchmark framework.
func (r *results) report(b *testing.B) {
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if len(r.cold) > 0 {
		b.ReportMetric(msOf(r.cold.P50()), "acquire-p50-ms")
		b.ReportMetric(msOf(r.cold.P95()), "acquire-p95-ms")
	}
	if len(r.ctrRun) > 0 {
		b.ReportMetric(msOf(r.ctrRun.P50()), r.baselineMetric())
	}
	if len(r.warm) > 0 {
		b.ReportMetric(msOf(r.warm.P50()), "warm-p50-ms")
	}
	if r.throughputWall > 0 {
		b.ReportMetric(float64(throughputCycles)/r.throughputWall.Seconds(), "workers/s")
	}
	if r.liveMem.RSS > 0 {
		b.ReportMetric(float64(r.liveMem.RSS)/mib, "rss-200-MiB")
	}
	if r.adoptAll > 0 {
		b.ReportMetric(msOf(r.adoptAll), "adopt-200-ms")
	}
	b.ReportMetric(0, "ns/op")
}
