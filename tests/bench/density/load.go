package benchdensity

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Load is what the node's CPUs did over a window in which no request was
// in flight: the share of all CPUs' time spent busy, and the parts of it
// taken by the live workers' shims, by the workers, and by the kernel's
// memory monitor (kdamond, on machines that run DAMON). Every figure is a
// fraction of the time of all CPUs together.
type Load struct {
	Window                        time.Duration
	Busy, Shims, Workers, Kdamond float64
}

// Cell renders the load as "busy (shims / workers / kdamond)" in percent.
func (l *Load) Cell() string {
	if l == nil {
		return "–"
	}
	pc := func(f float64) string { return fmt.Sprintf("%.1f", 100*f) }
	return fmt.Sprintf("%s (%s / %s / %s)", pc(l.Busy), pc(l.Shims), pc(l.Workers), pc(l.Kdamond))
}

// What a process counts as, by its command name (/proc/PID/comm, at most
// 15 bytes).
const (
	shimComm    = "containerd-shim" // containerd-shim-runc-v2, cut to 15
	workerComm  = "esb-worker"      // tests/images/worker
	kdamondComm = "kdamond"         // kdamond.0, kdamond.1, …
)

// cpuTicks is a snapshot: the CPUs' busy and total ticks (/proc/stat) and
// each process's user+system ticks, grouped by what it counts as.
type cpuTicks struct {
	busy, total uint64
	procs       map[int]procTicks
}

type procTicks struct {
	kind  string // shimComm, workerComm, kdamondComm or ""
	ticks uint64
}

// MeasureLoad samples the CPUs' and every process's ticks, waits window
// and samples again.
func MeasureLoad(window time.Duration) (*Load, error) {
	a, err := readTicks()
	if err != nil {
		return nil, err
	}
	time.Sleep(window)
	b, err := readTicks()
	if err != nil {
		return nil, err
	}
	return loadBetween(a, b, window)
}

func loadBetween(a, b cpuTicks, window time.Duration) (*Load, error) {
	total := float64(b.total - a.total)
	if total <= 0 {
		return nil, fmt.Errorf("load: /proc/stat did not advance in %v", window)
	}
	l := &Load{Window: window, Busy: float64(b.busy-a.busy) / total}
	for pid, p := range b.procs {
		before := a.procs[pid] // a process born in the window counts whole
		if before.ticks > p.ticks || before.kind != p.kind {
			before.ticks = 0 // the pid was reused
		}
		d := p.ticks - before.ticks
		switch p.kind {
		case shimComm:
			l.Shims += float64(d) / total
		case workerComm:
			l.Workers += float64(d) / total
		case kdamondComm:
			l.Kdamond += float64(d) / total
		}
	}
	return l, nil
}

func readTicks() (cpuTicks, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}, err
	}
	t := cpuTicks{procs: map[int]procTicks{}}
	if t.busy, t.total, err = parseCPULine(raw); err != nil {
		return cpuTicks{}, err
	}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return cpuTicks{}, err
	}
	for _, path := range stats {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue // the process ended
		}
		pid, comm, ticks, err := parseProcStat(raw)
		if err != nil {
			return cpuTicks{}, fmt.Errorf("%s: %w", path, err)
		}
		t.procs[pid] = procTicks{kind: kindOf(comm), ticks: ticks}
	}
	return t, nil
}

func kindOf(comm string) string {
	for _, k := range []string{shimComm, workerComm, kdamondComm} {
		if strings.HasPrefix(comm, k) {
			return k
		}
	}
	return ""
}

// parseCPULine reads the first line of /proc/stat ("cpu user nice system
// idle iowait irq softirq steal …"): busy is all but idle and iowait.
func parseCPULine(stat []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: first line %q is not the CPUs' total", line)
	}
	for i, s := range f[1:] {
		if i >= 8 { // guest and guest_nice are inside user and nice already
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: field %d %q: %w", i+1, s, err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// parseProcStat reads /proc/PID/stat: "pid (comm) state … utime stime …";
// comm may hold spaces and parentheses, so it ends at the last ')'.
func parseProcStat(raw []byte) (pid int, comm string, ticks uint64, err error) {
	open, end := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || end < open {
		return 0, "", 0, fmt.Errorf("no (comm) in %q", raw)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(string(raw[:open]))); err != nil {
		return 0, "", 0, fmt.Errorf("pid: %w", err)
	}
	rest := strings.Fields(string(raw[end+1:]))
	// rest[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(rest) < 13 {
		return 0, "", 0, fmt.Errorf("%d fields after comm, want at least 13", len(rest))
	}
	for _, s := range rest[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, "", 0, fmt.Errorf("utime/stime %q: %w", s, err)
		}
		ticks += v
	}
	return pid, string(raw[open+1 : end]), ticks, nil
}
