package benchdensity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
	benchnat "github.com/edge-serverless-box/esbnet/tests/bench/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) {
	if os.Getenv(idleChildEnv) != "" {
		IdleChild()
	}
	nstest.Main(m)
}

const (
	clients       = 8 // acquires in flight while filling, releases at the end
	function      = "density"
	invokePath    = "/2015-03-31/functions/function/invocations"
	invokeTimeout = 10 * time.Second
	ctrTimeout    = time.Minute // one baseline run: ctr run -d, the port, the removal
	workerPort    = 8080        // tests/images/worker's port without PORT
	natRounds     = 5           // loadgen rounds, the path to go first alternating
	natConns      = 200         // HTTP connections per path and round
	// procStartSamples is how many process starts of each kind a step
	// (and each phase of BenchmarkIdleProcesses) takes.
	procStartSamples = 40
)

// BenchmarkDensity fills the node with live, idle workers in steps
// (ESB_DENSITY_STEPS, default 0,100,250,500,1000) and measures each step
// with ESB_DENSITY_PAIRS (default 50) cold acquire+release pairs of
// esb-agent, as many of the in-process profiler (for CNI ADD and DEL) and
// as many `ctr run -d` of the same image (the baseline), interleaved; then
// it releases every worker and runs the leak check. It
// takes its own samples whatever b.N is (run it with -benchtime 1x) and
// prints one row per step with the issue's targets. A failed acquire,
// invoke or release, or a leak, fails it; a missed target does not.
// ESB_DENSITY_SHIM_GROUP sets esb-agent's -shim-group-size (default 0: a
// shim per worker); ESB_DENSITY_RUNC, an absolute path, the runc of the
// agent (-runc-binary), the profiler and the baseline (ctr's
// --runc-binary), default runc on containerd's PATH; the plot goes to
// ESB_DENSITY_SVG (default esbnet-density.svg in the temporary directory). Then it holds
// ESB_DENSITY_FUNCTION (default 100, 0: none) workers of the Lambda
// function image (tests/images/function) and measures their memory the same way.
func BenchmarkDensity(b *testing.B) {
	steps, err := ParseSteps(os.Getenv("ESB_DENSITY_STEPS"))
	if err != nil {
		b.Fatal(err)
	}
	pairs, err := ParsePairs(os.Getenv("ESB_DENSITY_PAIRS"))
	if err != nil {
		b.Fatal(err)
	}
	group := 0
	if v := os.Getenv("ESB_DENSITY_SHIM_GROUP"); v != "" {
		if group, err = strconv.Atoi(v); err != nil || group < 0 {
			b.Fatalf("ESB_DENSITY_SHIM_GROUP=%q: want esb-agent's -shim-group-size, a number from 0", v)
		}
	}
	fnLive, err := functionCount()
	if err != nil {
		b.Fatal(err)
	}
	// A host short of a ceiling fails the fill minutes later, and
	// obscurely (past gc_thresh3 new workers answer "no route to host"):
	// the run stops before it starts, naming doctor's fix.
	ceiling, short := ceilingNote(context.Background(), steps[len(steps)-1])
	if short {
		b.Fatalf("%s\nraise them first (docs/performance.md, \"Density benchmark\"), or fill fewer (ESB_DENSITY_STEPS)", ceiling)
	}
	e := newEnv(b, max(steps[len(steps)-1], fnLive))
	e.shimGroup = group
	// One runc for all three runs: the agent's, the profiler's, ctr's.
	runc := os.Getenv("ESB_DENSITY_RUNC")
	if runc != "" && !filepath.IsAbs(runc) {
		b.Fatalf("ESB_DENSITY_RUNC=%q: want the absolute path of a runc", runc)
	}
	e.ctrd.RuncBinary, e.profCtrd.RuncBinary, e.baseCtrd.RuncBinary = runc, runc, runc
	begin := time.Now()
	var done []Step
	var fnStep *Step // the Lambda function image's row (ESB_DENSITY_FUNCTION)
	var leaks Leaks
	notes := []string{machineNote(e, "at the start"), ceiling}
	b.Log(notes[1])
	var agentIssues []string
	defer func() {
		notes = append(notes, machineNote(e, "at the end"), fmt.Sprintf("whole run %s", time.Since(begin).Round(time.Second)))
		if len(agentIssues) == 0 {
			notes = append(notes, "esb-agent's log: no warning, no error")
		} else {
			notes = append(notes, "esb-agent's log: "+strings.Join(agentIssues, "; "))
		}
		if path, err := writePlot(done); err != nil {
			b.Errorf("plot: %v", err)
		} else {
			notes = append(notes, "plot of acquire p50 and memory per worker against live workers: "+path)
		}
		s := summary(e, pairs, done, fnStep, leaks, notes)
		if err := s.Print(os.Stdout); err != nil {
			b.Errorf("print summary: %v", err)
		}
		report(b, done)
	}()
	b.ResetTimer()

	truePath := nstest.LookPath(b, "true")
	p := e.startAgent()
	prof := e.newProfiler()
	base, err := readHost()
	if err != nil {
		b.Fatal(err)
	}
	var held []*agentv1.Worker
	for i, n := range steps {
		st := Step{Live: n}
		start := time.Now()
		held = e.fill(b, p, held, n, e.image, function)
		st.Fill = time.Since(start)
		e.checkLive(b, p, held)
		e.measureMemory(b, p, held, base, &st)
		if st.Load, err = MeasureLoad(loadWindow); err != nil {
			b.Fatal(err)
		}
		if st.Start, err = MeasureProcStart(truePath, filepath.Join(e.pluginDir, "esb-bridge"), procStartSamples); err != nil {
			b.Fatal(err)
		}
		e.measurePairs(b, p, prof.NewCold(), pairs, &st)
		if i == 0 || i == len(steps)-1 {
			st.NAT = e.measureNAT(b, p)
		}
		done = append(done, st)
		b.Logf("step %d live: %s", n, strings.Join(st.Row(), " | "))
	}

	e.releaseAll(b, p, held)
	fnStep = e.measureFunction(b, p, fnLive)
	leaks.Traces, err = e.leaks()
	leaks.Checked = err == nil
	if err != nil {
		b.Errorf("leak check: %v", err)
	}
	if len(leaks.Traces) > 0 {
		b.Errorf("after releasing every worker, left on the node:\n  %s", strings.Join(leaks.Traces, "\n  "))
	}
	if agentIssues, err = e.stopAgent(); err != nil {
		b.Error(err)
	}
}

// fill acquires workers, clients at a time, each client its own owner,
// until n are held.
func (e *env) fill(b *testing.B, p *agenttest.Proc, held []*agentv1.Worker, n int, image, fn string) []*agentv1.Worker {
	b.Helper()
	from := len(held)
	held = append(held, make([]*agentv1.Worker, n-from)...)
	err := agenttest.Spread(clients, from, n, func(c, i int) (func(), error) {
		w, _, err := p.Acquire(image, fmt.Sprintf("density-fill-%d", c), fn)
		if err != nil {
			return nil, fmt.Errorf("worker %d: %w", i+1, err)
		}
		return func() { held[i] = w }, nil
	})
	if err != nil {
		b.Fatalf("fill to %d live workers: %v", n, err)
	}
	return held
}

// checkLive checks that the agent lists exactly the held workers and that
// each answers an invoke from the node, clients at a time, each bounded
// by invokeTimeout.
func (e *env) checkLive(b *testing.B, p *agenttest.Proc, held []*agentv1.Worker) {
	b.Helper()
	ws, err := p.List()
	if err != nil {
		b.Fatal(err)
	}
	if len(ws) != len(held) {
		b.Fatalf("the agent lists %d workers, %d are held", len(ws), len(held))
	}
	hc := nodetest.HTTPClient(e.node.NS, invokeTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(held)/clients+1)*invokeTimeout)
	defer cancel()
	if err := agenttest.ForEach(ctx, held, func(ctx context.Context, w *agentv1.Worker) error { return invoke(ctx, hc, w) }); err != nil {
		b.Fatalf("invoke the %d live workers: %v", len(held), err)
	}
}

// invoke POSTs to the worker's invoke path and checks that the answer
// names the worker.
func invoke(ctx context.Context, hc *http.Client, w *agentv1.Worker) error {
	url := "http://" + net.JoinHostPort(w.GetIp(), strconv.Itoa(int(w.GetPort()))) + invokePath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"density":1}`))
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("invoke %s at %s: %w", w.GetId(), w.GetIp(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the answer of %s: %w", w.GetId(), err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), w.GetId()) {
		return fmt.Errorf("invoke %s at %s: %s: %s", w.GetId(), w.GetIp(), resp.Status, body)
	}
	return nil
}

// host is what /proc/meminfo says of the machine, in bytes.
type host struct{ memAvailable, slab int64 }

func readHost() (host, error) {
	kb, err := agenttest.KB("/proc/meminfo", "MemAvailable", "Slab")
	return host{memAvailable: int64(kb["MemAvailable"]) << 10, slab: int64(kb["Slab"]) << 10}, err
}

// measureMemory reads the agent's RSS and descriptors, the host's memory
// against base, and, for every held worker, its shim's PSS, its cgroup's
// usage and the threads of both.
func (e *env) measureMemory(b *testing.B, p *agenttest.Proc, held []*agentv1.Worker, base host, st *Step) {
	b.Helper()
	m, err := p.Memory()
	if err != nil {
		b.Fatal(err)
	}
	st.RSS, st.HWM = m.RSS, m.HWM
	if st.FDs, err = p.FDs(); err != nil {
		b.Fatal(err)
	}
	now, err := readHost()
	if err != nil {
		b.Fatal(err)
	}
	st.MemAvailDrop, st.SlabGrowth = base.memAvailable-now.memAvailable, now.slab-base.slab
	shims := map[int]bool{} // a shim serving a group of workers counts once
	for _, w := range held {
		ws, err := e.workerMemory(w.GetId())
		if err != nil {
			b.Fatalf("memory of worker %s: %v", w.GetId(), err)
		}
		if !shims[ws.shim] {
			shims[ws.shim] = true
			st.ShimPSS += ws.shimPSS
			st.Threads += ws.shimThreads
		}
		st.Cgroup += ws.cgroup
		st.Threads += ws.threads
	}
	st.Shims = len(shims)
}

// workerFigures are one worker's shares.
type workerFigures struct {
	shim            int    // pid of the worker's shim
	shimPSS, cgroup uint64 // bytes
	shimThreads     int
	threads         int // of the worker's processes
}

// workerMemory finds the worker's process in its cgroup (runc's
// /<namespace>/<id>, as shim/containerd names it), its shim as that
// process's parent, and reads the shim's PSS (smaps_rollup), the cgroup's
// memory.usage_in_bytes and the threads of both.
func (e *env) workerMemory(id string) (workerFigures, error) {
	var f workerFigures
	dir := e.ctrd.Cgroup("memory", id)
	usage, err := os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return f, err
	}
	if f.cgroup, err = strconv.ParseUint(strings.TrimSpace(string(usage)), 10, 64); err != nil {
		return f, err
	}
	tasks, err := os.ReadFile(filepath.Join(dir, "tasks"))
	if err != nil {
		return f, err
	}
	f.threads = len(strings.Fields(string(tasks)))
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return f, err
	}
	pids := strings.Fields(string(procs))
	if len(pids) == 0 {
		return f, fmt.Errorf("no process in %s", dir)
	}
	pid, err := strconv.Atoi(pids[0])
	if err != nil {
		return f, err
	}
	shim, err := agenttest.ShimOf(pid)
	if err != nil {
		return f, err
	}
	kb, err := agenttest.KB(fmt.Sprintf("/proc/%d/smaps_rollup", shim), "Pss")
	if err != nil {
		return f, err
	}
	f.shim, f.shimPSS = shim, kb["Pss"]<<10
	f.shimThreads, err = agenttest.StatusInt(shim, "Threads")
	return f, err
}

// measurePairs takes pairs cold acquire+release pairs of esb-agent, as
// many of the profiler and as many runs of the baseline (`ctr run -d` of
// the same image until its port accepts TCP, then its removal), in turn
// (which goes first rotates), after one untimed round; the live count is
// the same before and after each.
func (e *env) measurePairs(b *testing.B, p *agenttest.Proc, cold *agenttest.ColdProfile, pairs int, st *Step) {
	b.Helper()
	agentPair := func(record bool) {
		w, acq, err := p.Acquire(e.image, "density-pairs", function)
		if err != nil {
			b.Fatalf("at %d live: %v", st.Live, err)
		}
		rel, err := p.Release(w)
		if err != nil {
			b.Fatalf("at %d live: %v", st.Live, err)
		}
		if record {
			st.Acquire, st.Release = append(st.Acquire, acq), append(st.Release, rel)
		}
	}
	profPair := func(bool) {
		if err := cold.Pair(); err != nil {
			b.Fatalf("at %d live: %v", st.Live, err)
		}
	}
	n := 0
	ctrRun := func(record bool) {
		n++
		id := fmt.Sprintf("ctr-%d-%d", st.Live, n)
		ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
		defer cancel()
		_, ready, err := e.baseCtrd.RunDetached(ctx, e.image, id, workerPort, ctrTimeout)
		if rerr := e.baseCtrd.Remove(ctx, id); err == nil {
			err = rerr
		}
		if err != nil {
			b.Fatalf("at %d live: %v", st.Live, err)
		}
		if record {
			st.CtrReady = append(st.CtrReady, ready)
		}
	}
	legs := []func(record bool){agentPair, profPair, ctrRun}
	for _, leg := range legs {
		leg(false)
	}
	cold.Reset()
	for i := range pairs {
		for j := range legs {
			legs[(i+j)%len(legs)](true)
		}
	}
	st.Add, st.Del, st.Phases = cold.Samples(agenttest.PhaseAdd), cold.Samples(agenttest.PhaseDel), cold.Rows()
}

// measureNAT acquires one more worker and, from its namespace, runs
// benchnat's load generator: natRounds rounds of natConns HTTP requests
// to the proxy through the gateway's DNAT and as many directly, taking
// the paths in turn; it returns the median of each path's round p50s and
// releases the worker.
func (e *env) measureNAT(b *testing.B, p *agenttest.Proc) *NAT {
	b.Helper()
	w, _, err := p.Acquire(e.image, "density-nat", function)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if _, err := p.Release(w); err != nil {
			b.Fatal(err)
		}
	}()
	enter := []string{"nsenter", "--net=" + filepath.Join(e.NetnsDir(), conf.NetNSPrefix+w.GetId())}
	var dnat, direct benchstat.Samples
	conns := 0
	for i := range natRounds {
		addrs := []string{benchnat.ViaDNAT, benchnat.Direct}
		if i%2 == 1 {
			addrs[0], addrs[1] = addrs[1], addrs[0]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		res, err := benchnat.RunLoadgen(ctx, enter, e.loadgen, benchnat.LoadConfig{Mode: benchnat.ModeHTTP, Addrs: addrs,
			Path: benchnat.SmallPath, MaxConns: 2 * natConns, BodySize: int64(len(benchnat.SmallBody)), Timeout: 3 * time.Second})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Errors > 0 || r.Conns == 0 {
				b.Fatalf("NAT round %d to %s: %d connections, %d failed (first: %s)", i, r.Addr, r.Conns, r.Errors, r.FirstErr)
			}
			d := time.Duration(r.P50us * float64(time.Microsecond))
			if r.Addr == benchnat.ViaDNAT {
				dnat, conns = append(dnat, d), conns+r.Conns
			} else {
				direct = append(direct, d)
			}
		}
	}
	return &NAT{DNAT: dnat.P50(), Direct: direct.P50(), Conns: conns}
}

// releaseAll releases every held worker, clients at a time, and waits
// until the agent lists none.
func (e *env) releaseAll(b *testing.B, p *agenttest.Proc, held []*agentv1.Worker) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cleanTimeout)
	defer cancel()
	if err := agenttest.ForEach(ctx, held, func(_ context.Context, w *agentv1.Worker) error {
		_, err := p.Release(w)
		return err
	}); err != nil {
		b.Fatalf("release the %d workers: %v", len(held), err)
	}
	for {
		ws, err := p.List()
		if err != nil {
			b.Fatal(err)
		}
		if len(ws) == 0 {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("the agent still lists %d workers after releasing all", len(ws))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// machineNote describes the machine and its load.
func machineNote(e *env, when string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return benchstat.MachineNote(when, "containerd "+e.ctrd.Version(ctx)+", "+e.baseCtrd.RuncVersion(ctx))
}

// writePlot writes the steps' plot to ESB_DENSITY_SVG, or to
// esbnet-density.svg in the temporary directory, and returns the path.
func writePlot(steps []Step) (string, error) {
	path := os.Getenv("ESB_DENSITY_SVG")
	if path == "" {
		path = filepath.Join(os.TempDir(), "esbnet-density.svg")
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := Plot(f, steps); err != nil {
		return "", errors.Join(err, f.Close())
	}
	return path, f.Close()
}
