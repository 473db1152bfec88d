package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// Settings of the load and soak tests. make test runs them scaled down;
// make reliability runs the full counts of issue 7.
const (
	defaultLoadCycles  = 64
	defaultLoadClients = 16
	defaultSoak        = 30 * time.Second
	defaultSoakClients = 4
)

// cycleStats gathers what clients measured.
type cycleStats struct {
	mu               sync.Mutex
	acquire, release benchstat.Samples
	cycle            benchstat.Samples
	errs             []string
}

func (s *cycleStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

// runCycle acquires a worker for owner, invokes it once from the node and
// releases it, recording the latencies; it reports whether all went well.
func (e *env) runCycle(s *cycleStats, owner string, n int) bool {
	t0 := time.Now()
	w, err := e.acquire(e.acquireReq(owner, "load"))
	if err != nil {
		s.fail("acquire %d of %s: %v", n, owner, err)
		return false
	}
	t1 := time.Now()
	ok := true
	payload := fmt.Sprintf(`{"n":%d}`, n)
	if body, err := e.invoke(w, payload, invokeTimeout); err != nil || !strings.Contains(body, `"n":`) {
		s.fail("invoke %s (%s): %v %s", w.GetId(), w.GetIp(), err, body)
		ok = false
	}
	t2 := time.Now()
	if err := e.release(w); err != nil {
		s.fail("release %s: %v", w.GetId(), err)
		return false
	}
	t3 := time.Now()
	s.mu.Lock()
	s.acquire = append(s.acquire, t1.Sub(t0))
	s.release = append(s.release, t3.Sub(t2))
	s.cycle = append(s.cycle, t3.Sub(t0))
	s.mu.Unlock()
	return ok
}

// TestLoadAcquireRelease runs ESB_LOAD_CYCLES acquire → invoke → release
// cycles (default 64; 2,000 under make reliability) from
// ESB_LOAD_CLIENTS concurrent clients (default 16): every cycle must
// succeed and the node must end with nothing of any worker left. The
// latencies are logged (LOAD line) for docs/reliability.md.
func TestLoadAcquireRelease(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		cycles, clients := envInt("ESB_LOAD_CYCLES", defaultLoadCycles), envInt("ESB_LOAD_CLIENTS", defaultLoadClients)
		e.startAgent()
		s := &cycleStats{}
		var next atomic.Int64
		start := time.Now()
		loadBefore := benchstat.LoadAverage()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				owner := fmt.Sprintf("load-%d", c)
				for {
					n := int(next.Add(1))
					if n > cycles {
						return
					}
					e.runCycle(s, owner, n)
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		if len(s.errs) > 0 {
			t.Errorf("%d of %d cycles failed:\n  %s", len(s.errs), cycles, strings.Join(s.errs[:min(len(s.errs), 20)], "\n  "))
		}
		if ws := e.list(""); len(ws) != 0 {
			t.Errorf("the agent lists %d workers after every release", len(ws))
		}
		rep := e.expectConsistent("after the load", nil)
		t.Logf("LOAD runtime=%s cycles=%d clients=%d errors=%d took=%s rate=%.2f cycles/s "+
			"acquire p50=%s p99=%s max=%s release p50=%s p99=%s cycle p50=%s p99=%s leaks=%d loadavg before=%q after=%q",
			e.rt, cycles, clients, len(s.errs), took.Round(time.Second), float64(len(s.cycle))/took.Seconds(),
			ms(s.acquire.P50()), ms(s.acquire.Quantile(0.99)), ms(s.acquire.Max()),
			ms(s.release.P50()), ms(s.release.Quantile(0.99)), ms(s.cycle.P50()), ms(s.cycle.Quantile(0.99)),
			len(rep.Orphans)+len(rep.Duplicates), loadBefore, benchstat.LoadAverage())
	})
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// sample is one reading of the agent process.
type sample struct {
	at   time.Duration
	rss  int64
	fds  int
	done int64
}

// TestSoak keeps ESB_SOAK_CLIENTS clients (default 4) cycling acquire →
// invoke → release for ESB_SOAK_DURATION (default 30s; 10m under make
// reliability), sampling the agent's RSS and open descriptors every
// ESB_SOAK_INTERVAL (default duration/20). After a warm-up, the last
// quarter of the samples must not exceed the first quarter (medians;
// RSS within 25% + 4 MiB, descriptors within 4), the idle descriptor count
// after the soak must equal the one before (connections to the runtime
// daemon within its pool), and nothing may be left.
func TestSoak(t *testing.T) {
	forRuntimes(t, func(t *testing.T, e *env) {
		dur := envDuration("ESB_SOAK_DURATION", defaultSoak)
		interval := envDuration("ESB_SOAK_INTERVAL", dur/20)
		clients := envInt("ESB_SOAK_CLIENTS", defaultSoakClients)
		p := e.startAgent()
		pid := p.Cmd.Process.Pid
		s := &cycleStats{}

		// Warm-up: every client runs a few cycles, so the first window
		// sees a steady agent (connections, caches, goroutines made).
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				for i := range 3 {
					e.runCycle(s, fmt.Sprintf("soak-%d", c), i)
				}
			})
		}
		wg.Wait()
		_, idleBefore, err := procStatus(pid)
		if err != nil {
			t.Fatal(err)
		}
		fdsBefore := procFDs(pid)

		var done atomic.Int64
		stop := make(chan struct{})
		for c := range clients {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if e.runCycle(s, fmt.Sprintf("soak-%d", c), i) {
						done.Add(1)
					}
				}
			})
		}
		var series []sample
		start := time.Now()
		tick := time.NewTicker(interval)
		for time.Since(start) < dur {
			<-tick.C
			rss, fds, err := procStatus(pid)
			if err != nil {
				t.Errorf("sample the agent: %v", err)
				break
			}
			series = append(series, sample{at: time.Since(start), rss: rss, fds: fds, done: done.Load()})
		}
		tick.Stop()
		close(stop)
		wg.Wait()
		rssAfter, idleAfter, err := procStatus(pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.errs) > 0 {
			t.Errorf("%d cycles failed during the soak:\n  %s", len(s.errs), strings.Join(s.errs[:min(len(s.errs), 20)], "\n  "))
		}
		e.expectConsistent("after the soak", nil)

		var lines []string
		for _, x := range series {
			lines = append(lines, fmt.Sprintf("%6.0fs rss=%.1fMiB fds=%d cycles=%d", x.at.Seconds(), mib(x.rss), x.fds, x.done))
		}
		t.Logf("SOAK series:\n%s", strings.Join(lines, "\n"))
		if len(series) < 8 {
			t.Fatalf("only %d samples; the soak needs at least 8 (raise ESB_SOAK_DURATION or lower ESB_SOAK_INTERVAL)", len(series))
		}
		q := len(series) / 4
		first, last := series[:q], series[len(series)-q:]
		rss0, rss1 := medianOf(first, func(x sample) int64 { return x.rss }), medianOf(last, func(x sample) int64 { return x.rss })
		// Descriptors by their floor, not their median: every creation in
		// flight holds a few for a moment (14 idle, up to 25 at a sample),
		// so a window's median follows how many were in flight when it was
		// sampled (a slow agent, under -race or load, failed on 14 → 20
		// with 14 idle before and after); a leak raises the floor.
		fd0, fd1 := minOf(first, func(x sample) int64 { return int64(x.fds) }), minOf(last, func(x sample) int64 { return int64(x.fds) })
		if float64(rss1) > float64(rss0)*1.25+4<<20 {
			t.Errorf("the agent's RSS grew from %.1f MiB (first window) to %.1f MiB (last window)", mib(rss0), mib(rss1))
		}
		if fd1 > fd0+4 {
			t.Errorf("the agent's open descriptors grew from at least %d (first window) to at least %d (last window)", fd0, fd1)
		}
		// The runtime client's connections to its daemon are a pool whose
		// size follows the last burst (Docker's HTTP client keeps up to 2
		// idle, plus its event stream): they may differ by that much. Every
		// other descriptor must be the same as before.
		fdsAfter := procFDs(pid)
		other0, pool0 := splitPool(fdsBefore, e.runtimeSock())
		other1, pool1 := splitPool(fdsAfter, e.runtimeSock())
		if !slices.Equal(other0, other1) || pool1 > pool0+2 {
			t.Errorf("the idle agent holds %d descriptors after the soak (%d to the runtime), %d before (%d to the runtime):\nbefore:\n  %s\nafter:\n  %s",
				idleAfter, pool1, idleBefore, pool0, strings.Join(fdsBefore, "\n  "), strings.Join(fdsAfter, "\n  "))
		}
		t.Logf("SOAK runtime=%s duration=%s clients=%d cycles=%d errors=%d rss first=%.1fMiB last=%.1fMiB end=%.1fMiB "+
			"fds first=%d last=%d idle before=%d after=%d (to the runtime %d, %d) acquire p50=%s p99=%s loadavg=%q",
			e.rt, dur, clients, done.Load(), len(s.errs), mib(rss0), mib(rss1), mib(rssAfter), fd0, fd1, idleBefore, idleAfter, pool0, pool1,
			ms(s.acquire.P50()), ms(s.acquire.Quantile(0.99)), benchstat.LoadAverage())
	})
}

// splitPool separates the connections to the runtime's socket from the
// other descriptors of a procFDs listing.
func splitPool(fds []string, sock string) (other []string, pool int) {
	for _, f := range fds {
		if f == "unix -> "+sock {
			pool++
			continue
		}
		other = append(other, f)
	}
	return other, pool
}

// runtimeSock is the API socket of the runtime e's agent uses.
func (e *env) runtimeSock() string {
	if e.rt == stacktest.Docker {
		return e.stack.DockerSock
	}
	return e.stack.ContainerdSock
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func minOf(xs []sample, f func(sample) int64) int64 {
	m := f(xs[0])
	for _, x := range xs[1:] {
		m = min(m, f(x))
	}
	return m
}

func medianOf(xs []sample, f func(sample) int64) int64 {
	v := make([]int64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
