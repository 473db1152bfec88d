package benchdensity

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A comm with a space and a parenthesis; utime 120 and stime 35.
	raw := []byte("4242 (containerd-shim) ) S 1 4242 4242 0 -1 4194560 900 0 0 0 120 35 0 0 20 0 11 0 5000 1000 300\n")
	pid, comm, ticks, err := parseProcStat(raw)
	if err != nil {
		t.Fatal(err)
	}
	if pid != 4242 || comm != "containerd-shim) " || ticks != 155 {
		t.Fatalf("got pid %d comm %q ticks %d, want 4242 %q 155", pid, comm, ticks, "containerd-shim) ")
	}
	if kindOf(comm) != shimComm || kindOf("kdamond.0") != kdamondComm || kindOf("bash") != "" {
		t.Fatal("kinds by comm are wrong")
	}
	for _, bad := range []string{"", "12 comm S 1", "12 (x) S 1 2 3"} {
		if _, _, _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) took it", bad)
		}
	}
}

func TestParseCPULine(t *testing.T) {
	busy, total, err := parseCPULine([]byte("cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 1 2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if busy != 160 || total != 1000 {
		t.Fatalf("busy %d total %d, want 160 and 1000 (guest counted in user)", busy, total)
	}
	if _, _, err := parseCPULine([]byte("intr 1 2 3")); err == nil || !strings.Contains(err.Error(), "first line") {
		t.Fatalf("err %v, want one naming the first line", err)
	}
}

func TestLoadBetween(t *testing.T) {
	a := cpuTicks{busy: 100, total: 1000, procs: map[int]procTicks{
		1: {kind: shimComm, ticks: 50}, 2: {kind: workerComm, ticks: 10}, 3: {kind: shimComm, ticks: 500}}}
	b := cpuTicks{busy: 200, total: 2000, procs: map[int]procTicks{
		1: {kind: shimComm, ticks: 80},    // +30
		2: {kind: workerComm, ticks: 15},  // +5
		3: {kind: workerComm, ticks: 4},   // pid reused by a worker: +4
		4: {kind: kdamondComm, ticks: 20}, // born in the window: +20
	}}
	l, err := loadBetween(a, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(l.Busy, 0.1) || !near(l.Shims, 0.03) || !near(l.Workers, 0.009) || !near(l.Kdamond, 0.02) {
		t.Fatalf("got %+v", *l)
	}
	if got := l.Cell(); got != "10.0 (3.0 / 0.9 / 2.0)" {
		t.Fatalf("cell %q", got)
	}
	if (*Load)(nil).Cell() != "–" {
		t.Fatal("a step without a load reads –")
	}
	if _, err := loadBetween(a, a, time.Second); err == nil {
		t.Fatal("a window in which /proc/stat did not move is an error")
	}
}

// TestMeasureLoad reads this machine's /proc for a short window: the
// figures are fractions of the CPUs' time.
func TestMeasureLoad(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Fatalf("no /proc/stat: %v", err)
	}
	l, err := MeasureLoad(200 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]float64{"busy": l.Busy, "shims": l.Shims, "workers": l.Workers, "kdamond": l.Kdamond} {
		if f < 0 || f > 1 {
			t.Errorf("%s = %v, not a fraction", name, f)
		}
	}
}
