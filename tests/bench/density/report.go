// Package benchdensity fills a node with live, idle workers of
// tests/images/worker through esb-agent (containerd, pool off) in steps, and
// measures at each step what a growing node costs: cold acquire and
// release latency, CNI ADD and DEL inside an acquire (a bridge with that
// many ports, anti-spoof sets with that many elements, an IPAM store with
// that many addresses), the agent's RSS and descriptors, the memory each
// worker takes (ΔMemAvailable/N, with the shim's PSS, the worker's cgroup
// and ΔSlab/N), and, at the first and last step, the NAT data path
// (benchnat's DNAT-against-direct p50). The agent runs as a process in a
// node network namespace made for the run, as in tests/bench/agent. The
// benchmark (BenchmarkDensity) needs root and the stack of
// scripts/stack.sh; it prints one row per step and the targets.
//
// This file holds the settings, the arithmetic and the table, which need
// no privileges.
package benchdensity

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// Defaults of the issue; ESB_DENSITY_STEPS and ESB_DENSITY_PAIRS change
// them.
const (
	DefaultSteps = "0,100,250,500,1000"
	DefaultPairs = 50
)

// Targets of the issue.
const (
	HeldTarget       = 1000     // live workers held, all invocable
	AcquireRatio     = 1.25     // acquire p50 at the last step / at the first
	AddRatio         = 1.1      // CNI ADD p50 at the last step / at the first
	RSSLimit         = 96 << 20 // the agent's RSS at the last step
	mib              = 1 << 20
	invalidStepsHint = "want increasing counts of live workers, comma-separated, such as " + DefaultSteps
)

// ParseSteps reads the steps setting: increasing, non-negative counts.
// An empty setting is DefaultSteps.
func ParseSteps(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		s = DefaultSteps
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("steps %q: %q is not a count; %s", s, f, invalidStepsHint)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("steps %q: %d after %d; %s", s, n, out[len(out)-1], invalidStepsHint)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParsePairs reads the pairs setting: a positive count; empty is
// DefaultPairs.
func ParsePairs(s string) (int, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultPairs, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("pairs %q: want a positive count", s)
	}
	return n, nil
}

// NAT is the data path measured at a step: median connection times of
// the worker's HTTP requests to the proxy through the gateway's DNAT and
// directly.
type NAT struct {
	DNAT, Direct time.Duration
	Conns        int // completed connections per path
}

// Step is what one step measured.
type Step struct {
	Live  int           // workers held, all invocable
	Image string        // the image the row's workers run, when not the run's
	Fill  time.Duration // wall time of the acquires from the step before
	// The esb-agent's cold acquire+release pairs (gRPC round trips).
	Acquire, Release benchstat.Samples
	// The baseline beside them: `ctr run -d` of the same image on the
	// same containerd, from the command's start until the worker's port
	// accepts TCP.
	CtrReady benchstat.Samples
	// CNI ADD and DEL inside the profiler's cold pairs, and every phase
	// of those pairs.
	Add, Del benchstat.Samples
	Phases   []benchstat.Row
	// The agent process after the fill.
	RSS, HWM uint64
	FDs      int
	// Host memory against the start (0 live): what MemAvailable lost
	// and Slab gained, in bytes.
	MemAvailDrop, SlabGrowth int64
	// Sums over the live workers: their shims' PSS (each shim once:
	// grouped workers share one), their cgroups' memory.usage_in_bytes,
	// and the threads of shims and workers; Shims counts the shims.
	ShimPSS, Cgroup uint64
	Threads         int
	Shims           int
	NAT             *NAT
	// The node's CPUs over a quiet window after the fill.
	Load *Load
	// What starting a process costs on the node after the fill.
	Start *ProcStart
}

// perWorker divides a byte figure by the live count, in MiB.
func (s Step) perWorker(v float64) string {
	if s.Live == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v/float64(s.Live)/mib)
}

func ms(d benchstat.Samples, q float64) string {
	if len(d) == 0 {
		return "–"
	}
	return benchstat.Ms(d.Quantile(q))
}

// Columns of the table, one row per step.
var Columns = []string{"live", "fill s", "acquire p50 ms", "acquire p95 ms", "ctr run -d + TCP p50 ms", "CNI ADD p50 ms", "CNI DEL p50 ms", "release p50 ms",
	"agent RSS MiB", "agent fds", "shims", "ΔMemAvailable/N MiB", "shim PSS/N MiB", "cgroup/N MiB", "ΔSlab/N MiB", "threads/N",
	"DNAT p50 µs", "direct p50 µs", "idle CPU % (shims / workers / kdamond)", "process start p50 ms (true / esb-bridge VERSION)"}

// Row renders the step as the table's cells.
func (s Step) Row() []string {
	threads, dnat, direct := "–", "–", "–"
	if s.Live > 0 {
		threads = fmt.Sprintf("%.1f", float64(s.Threads)/float64(s.Live))
	}
	if s.NAT != nil {
		dnat, direct = fmt.Sprint(s.NAT.DNAT.Microseconds()), fmt.Sprint(s.NAT.Direct.Microseconds())
	}
	return []string{
		strconv.Itoa(s.Live), fmt.Sprintf("%.1f", s.Fill.Seconds()),
		ms(s.Acquire, 0.5), ms(s.Acquire, 0.95), ms(s.CtrReady, 0.5), ms(s.Add, 0.5), ms(s.Del, 0.5), ms(s.Release, 0.5),
		fmt.Sprintf("%.1f", float64(s.RSS)/mib), strconv.Itoa(s.FDs), strconv.Itoa(s.Shims),
		s.perWorker(float64(s.MemAvailDrop)), s.perWorker(float64(s.ShimPSS)), s.perWorker(float64(s.Cgroup)),
		s.perWorker(float64(s.SlabGrowth)), threads, dnat, direct, s.Load.Cell(), s.Start.Cell(),
	}
}

// ImageColumns are the columns of the images' table.
var ImageColumns = []string{"image", "live", "shims", "ΔMemAvailable/N MiB", "shim PSS/N MiB", "cgroup/N MiB", "ΔSlab/N MiB", "threads/N"}

// ImageTable sets the memory per worker of fn's image beside that of the
// run's image at the step with as many live workers (if there is one).
func ImageTable(steps []Step, fn *Step) benchstat.Table {
	t := benchstat.Table{Head: ImageColumns}
	row := func(name string, s Step) []string {
		r := s.Row()
		return []string{name, r[0], r[10], r[11], r[12], r[13], r[14], r[15]}
	}
	for _, s := range steps {
		if s.Live == fn.Live {
			t.Rows = append(t.Rows, row("tests/images/worker", s))
		}
	}
	t.Rows = append(t.Rows, row(fn.Image, *fn))
	return t
}

// Table is the steps side by side.
func Table(steps []Step) benchstat.Table {
	t := benchstat.Table{Head: Columns}
	for _, s := range steps {
		t.Rows = append(t.Rows, s.Row())
	}
	return t
}

// PhaseRows sets the profiler's phases of the first and the last step
// side by side: each phase at the first step, then at the last.
func PhaseRows(steps []Step) []benchstat.Row {
	if len(steps) == 0 {
		return nil
	}
	first, last := steps[0], steps[len(steps)-1]
	var out []benchstat.Row
	for i, r := range first.Phases {
		r.Note = fmt.Sprintf("%d live", first.Live)
		out = append(out, r)
		if len(steps) > 1 && i < len(last.Phases) {
			l := last.Phases[i]
			l.Note = fmt.Sprintf("%d live", last.Live)
			out = append(out, l)
		}
	}
	return out
}

// Leaks is what the leak check after releasing every worker found;
// Checked is false when the run did not get that far.
type Leaks struct {
	Checked bool
	Traces  []string
}

// Targets are the checks on the first and the last step.
func Targets(steps []Step, leaks Leaks) []benchstat.Target {
	if len(steps) == 0 {
		return nil
	}
	first, last := steps[0], steps[len(steps)-1]
	ms := func(d time.Duration) string { return benchstat.Ms(d) + " ms" }
	return []benchstat.Target{
		{Name: fmt.Sprintf("%d live workers held, all invocable, no acquire failing", HeldTarget),
			Measured: float64(last.Live), Limit: HeldTarget, Unit: "workers", AtLeast: true, Known: true,
			Detail: "the last step; a failed acquire or invoke fails the run"},
		benchstat.RatioTarget(fmt.Sprintf("acquire p50 at %d live ≤ %.2f × at %d", last.Live, AcquireRatio, first.Live),
			last.Acquire.P50(), first.Acquire.P50(), AcquireRatio,
			fmt.Sprintf("%s vs %s%s", ms(last.Acquire.P50()), ms(first.Acquire.P50()), ctrGrowth(first, last))),
		benchstat.RatioTarget(fmt.Sprintf("CNI ADD p50 at %d live ≤ %.1f × at %d", last.Live, AddRatio, first.Live),
			last.Add.P50(), first.Add.P50(), AddRatio, fmt.Sprintf("%s vs %s%s", ms(last.Add.P50()), ms(first.Add.P50()), startGrowth(first, last))),
		{Name: fmt.Sprintf("agent RSS at %d live at most %d MiB", last.Live, RSSLimit/mib),
			Measured: float64(last.RSS) / mib, Limit: RSSLimit / mib, Unit: "MiB", Known: last.RSS > 0,
			Detail: fmt.Sprintf("VmHWM (peak) %.1f MiB", float64(last.HWM)/mib)},
		{Name: fmt.Sprintf("releasing all %d leaves nothing (leakcheck)", last.Live),
			Measured: float64(len(leaks.Traces)), Limit: 0, Unit: "traces", Known: leaks.Checked,
			Detail: "containers, snapshots, cgroups, pins, veths, anti-spoof elements, addresses, libcni cache entries, shims"},
	}
}

// ctrGrowth tells, for the acquire target's detail, how much containerd's
// own CLI (ctr run -d + port accepts TCP) slowed between the two steps on
// the same node: what any client of that containerd pays for the live
// workers.
func ctrGrowth(first, last Step) string {
	now, then := last.CtrReady.P50(), first.CtrReady.P50()
	r, ok := benchstat.Ratio(now, then)
	if !ok {
		return ""
	}
	return fmt.Sprintf("; ctr run -d + TCP on the same containerd grew %.2f× (%s vs %s)",
		r, benchstat.Ms(now)+" ms", benchstat.Ms(then)+" ms")
}

// startGrowth tells, for the ADD target's detail, how much a bare start
// of esb-bridge grew between the two steps: the machine's share of ADD's
// growth.
func startGrowth(first, last Step) string {
	if first.Start == nil || last.Start == nil {
		return ""
	}
	now, then := last.Start.Plugin.P50(), first.Start.Plugin.P50()
	r, ok := benchstat.Ratio(now, then)
	if !ok {
		return ""
	}
	return fmt.Sprintf("; a bare start of esb-bridge (VERSION) on the same node grew %.2f× (%s vs %s)",
		r, benchstat.Ms(now)+" ms", benchstat.Ms(then)+" ms")
}
