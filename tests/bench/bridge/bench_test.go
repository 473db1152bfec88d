package benchbridge

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

const (
	// attachments is how many worker namespaces each run attaches and
	// then detaches.
	attachments = 200
	ifName      = "eth0"
	// execTimeout bounds one plugin execution.
	execTimeout = time.Minute
	// usageRuns is how many ADD+DELs each process's resource use is taken
	// over.
	usageRuns = 5
	// partSamples is how many samples each row of the decomposition takes.
	partSamples = 40

	esbLabel = "esb-bridge + esb-ipam"
	refLabel = "bridge + host-local v1.10.0"
)

// Tags: the first byte of the container IDs of one kind of attachment, so
// that no two runs share an ID.
const (
	tagWarm  byte = 0x01
	tagUsage byte = 0x05
	tagParts byte = 0x07
)

// containerID returns a runtime-like 64-hex-digit container ID.
func containerID(tag byte, i int) string { return fmt.Sprintf("%02x%062x", tag, i) }

// parallelChunk is how many attachments a parallel run does before the
// other plugin takes its turn.
const parallelChunk = 50

// BenchmarkBridgeSideBySide attaches 200 worker namespaces through
// esb-bridge (in-process esb-ipam) and 200 through the reference bridge
// with host-local, first one at a time and then 8 at a time, timing each
// ADD and DEL execution; then it measures the peak RSS and CPU time of
// single executions, and prints the table. The two plugins take turns
// (one attachment at a time sequentially, 50 at a time in parallel, the
// order flipping each turn), so load from elsewhere on the machine weighs
// on both alike. It takes its own fixed samples whatever b.N is; run it
// with -benchtime 1x.
func BenchmarkBridgeSideBySide(b *testing.B) {
	nstest.RequirePrivileged(b)
	start := time.Now()
	root := benchstat.Dir(b, "esbnet-benchbridge-")
	rusage := buildRusage(b)
	esb := newESB(b, filepath.Join(root, "esb"))
	ref := newRef(b, filepath.Join(root, "ref"))
	plugins := []*plugin{esb, ref}
	for _, p := range plugins {
		p.workers = make([]worker, attachments)
		for i := range p.workers {
			n := nstest.NewNS(b)
			p.workers[i] = worker{ns: n, path: n.Path()}
		}
	}
	b.Logf("built and created %d worker namespaces in %s", len(plugins)*attachments, time.Since(start).Round(time.Millisecond))
	for _, p := range plugins {
		if err := p.warmUp(); err != nil {
			b.Fatal(err)
		}
	}

	rep := &Report{
		Title: fmt.Sprintf("esb-bridge + esb-ipam vs bridge + host-local v1.10.0: ADD and DEL of %d attachments", attachments),
		Notes: notes(root),
	}
	load := benchstat.LoadAverage()
	for _, m := range []int{Sequential, Parallel} {
		runs, err := attachInterleaved(plugins, m)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range runs {
			b.Logf("%s %s: ADD p50 %s ms, DEL p50 %s ms", r.Plugin, ModeName(r.Parallel), benchstat.MsN(r.Add.P50(), 1), benchstat.MsN(r.Del.P50(), 1))
		}
		rep.Runs = append(rep.Runs, runs...)
	}
	parts, err := decompose(esb, ref)
	if err != nil {
		b.Fatal(err)
	}
	rep.Parts = parts
	usage, err := measureUsage(rusage, b.TempDir(), esb, ref)
	if err != nil {
		b.Fatal(err)
	}
	rep.Usage = usage
	rep.Notes = append(rep.Notes, fmt.Sprintf("resource use: %d ADD+DELs of each, each process run through a small helper (tests/bench/bridge/rusage) that reports wait4's ru_maxrss and CPU time; "+
		"a direct child of the Go test process would report the test process's peak instead (Go spawns with CLONE_VM, and exec folds the old memory's high-water mark into ru_maxrss)", usageRuns))
	rep.Notes = append(rep.Notes, fmt.Sprintf("load average (1, 5, 15 min) %s before the runs, %s after (other jobs may share this machine); whole benchmark took %s",
		load, benchstat.LoadAverage(), time.Since(start).Round(time.Second)))

	targets := rep.Targets(esbLabel, refLabel)
	if err := rep.Print(os.Stdout, targets); err != nil {
		b.Errorf("print report: %v", err)
	}
	for _, t := range targets {
		b.ReportMetric(t.Ratio(), fmt.Sprintf("esb/ref-%s-p50-%s", t.Verb, ModeName(t.Parallel)))
	}
}

// buildRusage builds the rusage helper (tests/bench/bridge/rusage) and
// returns its path.
func buildRusage(b *testing.B) string {
	return nstest.GoBuild(b, b.TempDir(), "./tests/bench/bridge/rusage")
}

func notes(root string) []string {
	var u unix.Utsname
	kernel := "unknown kernel"
	if err := unix.Uname(&u); err == nil {
		kernel = "Linux " + unix.ByteSliceToString(u.Release[:])
	}
	return []string{
		fmt.Sprintf("%s, %s/%s, %d CPUs, GOMAXPROCS %d, %s; IPAM stores in %s (%s)",
			kernel, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0),
			time.Now().UTC().Format(time.RFC3339), root, benchstat.FSType(root)),
		"each sample is one execution of the plugin binary as libcni runs it (invoke.RawExec: CNI_* variables, config on stdin, result on stdout), " +
			"started from a thread in a node network namespace that plays the host (one node namespace per plugin), timed from start to exit; " +
			"a run ADDs all 200 pre-made worker namespaces, checks them, then DELs all 200; parallel-8 = 8 goroutines each executing one plugin at a time from a shared queue",
		"esb-bridge: isolation and nftables anti-spoofing on (its defaults, our real cost), IPAM in-process (one process per ADD or DEL); " +
			"reference: isGateway true, ipMasq false, host-local executed by bridge (two processes per ADD or DEL); same routes (0.0.0.0/0), /16 subnets",
		"one warm-up ADD+DEL per plugin before the samples (it creates the bridge and, for esb, the nftables table); each plugin has its own 200 worker namespaces, used by both modes; " +
			"the plugins take turns, flipping the order each turn: one attachment at a time (sequential) or 50 (parallel-8, so each turn ends with fewer than 8 in flight)",
	}
}

// attachInterleaved ADDs every worker of every plugin, parallel
// executions at a time, the plugins taking turns, and checks the
// attachments; then it DELs them all the same way and checks they are
// gone. It returns one run per plugin. A failed ADD ends the runs. A
// failed DEL is counted, keeps its time as a sample (every step of a DEL
// runs even when an earlier one fails) and is retried once, untimed,
// after the phase, as a runtime retries a DEL; anti-spoof guards that
// successful DELs left behind are counted and removed with the plugin's
// GC.
func attachInterleaved(plugins []*plugin, parallel int) ([]*Run, error) {
	chunk := 1
	if parallel > 1 {
		chunk = parallelChunk
	}
	runs := make([]*Run, len(plugins))
	ids := make([][]string, len(plugins))
	outs := make([][][]byte, len(plugins))
	failed := make([][]int, len(plugins))
	for k, p := range plugins {
		runs[k] = &Run{Plugin: p.label, Parallel: parallel}
		ids[k] = make([]string, len(p.workers))
		for i := range ids[k] {
			ids[k][i] = containerID(p.tag|byte(parallel), i)
		}
	}
	// turns runs command on every plugin's attachments, the plugins taking
	// turns chunk by chunk, and hands record each chunk's executions (lo is
	// the chunk's first attachment) and wall time.
	turns := func(command string, stopOnError bool, record func(k, lo int, res []execution, wall time.Duration)) error {
		return takeTurns(len(plugins), chunk, func(k, lo, hi int) error {
			p := plugins[k]
			res, wall, err := p.phase(command, p.workers[lo:hi], ids[k][lo:hi], parallel, stopOnError)
			if err != nil {
				return err
			}
			record(k, lo, res, wall)
			return nil
		})
	}
	err := turns("ADD", true, func(k, _ int, res []execution, wall time.Duration) {
		runs[k].AddWall += wall
		for _, x := range res {
			runs[k].Add = append(runs[k].Add, x.took)
			outs[k] = append(outs[k], x.out)
		}
	})
	if err != nil {
		return nil, err
	}
	for k, p := range plugins {
		if err := p.checkAdded(p.workers, outs[k]); err != nil {
			return nil, fmt.Errorf("%s %s after ADD: %w", p.label, ModeName(parallel), err)
		}
	}
	err = turns("DEL", false, func(k, lo int, res []execution, wall time.Duration) {
		runs[k].DelWall += wall
		for i, x := range res {
			runs[k].Del = append(runs[k].Del, x.took)
			if x.err != nil {
				runs[k].DelFailed++
				if len(runs[k].DelErrors) < 3 {
					runs[k].DelErrors = append(runs[k].DelErrors, x.err.Error())
				}
				failed[k] = append(failed[k], lo+i)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for k, p := range plugins {
		left, err := p.afterDel(ids[k], failed[k])
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", p.label, ModeName(parallel), err)
		}
		runs[k].GuardsLeft = left
	}
	return runs, nil
}

// takeTurns calls fn(k, lo, hi) for each of n plugins and each chunk
// [lo, hi) of the attachments, the plugins taking turns chunk by chunk and
// the order flipping each turn (0 1, 1 0, 0 1, ...).
func takeTurns(n, chunk int, fn func(k, lo, hi int) error) error {
	for turn, lo := 0, 0; lo < attachments; turn, lo = turn+1, lo+chunk {
		hi := min(lo+chunk, attachments)
		for j := range n {
			k := j
			if turn%2 == 1 {
				k = n - 1 - j
			}
			if err := fn(k, lo, hi); err != nil {
				return err
			}
		}
	}
	return nil
}
