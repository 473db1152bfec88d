package benchdensity

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	// idleChildEnv makes the test binary an idle child of
	// BenchmarkIdleProcesses (see idleChild).
	idleChildEnv = "ESB_DENSITY_IDLE_CHILD"
	// idleProcesses is as many processes as 1,000 workers and their
	// shims (one each).
	idleProcesses = 2000
)

// idleChild is the test binary as an idle process: a Go program that
// waits until its stdin, a pipe from the benchmark, closes (so the
// children end with the benchmark, even one that is killed), then exits.
func idleChild() {
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// BenchmarkIdleProcesses is the density benchmark's control: it measures
// a process start (ProcStart) on a machine without any worker, then with
// 2,000 idle Go processes (as many as 1,000 workers and their shims; no
// container, no network, no esbnet), then after they ended. What the start
// grows by there is the machine's share of ADD's growth with live
// workers. It needs no root.
func BenchmarkIdleProcesses(b *testing.B) {
	truePath := nstest.LookPath(b, "true")
	plugin := filepath.Join(nstest.PluginDir(b), "esb-bridge")
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	before, err := MeasureProcStart(truePath, plugin, procStartSamples)
	if err != nil {
		b.Fatal(err)
	}
	stop, err := startIdle(b, self, idleProcesses)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // let their starts finish: no start in flight while measuring
	during, err := MeasureProcStart(truePath, plugin, procStartSamples)
	stop()
	if err != nil {
		b.Fatal(err)
	}
	after, err := MeasureProcStart(truePath, plugin, procStartSamples)
	if err != nil {
		b.Fatal(err)
	}
	var out strings.Builder
	benchstat.WriteHead(&out, fmt.Sprintf("Process start with %d idle Go processes (no worker, no container)", idleProcesses),
		[]string{fmt.Sprintf("%d starts of each, in turns, per row; the idle processes are this test binary waiting on a pipe", procStartSamples)})
	out.WriteString("\n| | /bin/true p50 ms | esb-bridge VERSION p50 ms |\n| --- | ---: | ---: |\n")
	for _, r := range []struct {
		name string
		p    *ProcStart
	}{{"before", before}, {fmt.Sprintf("%d idle", idleProcesses), during}, {"after they ended", after}} {
		fmt.Fprintf(&out, "| %s | %s | %s |\n", r.name, benchstat.MsN(r.p.True.P50(), 1), benchstat.MsN(r.p.Plugin.P50(), 1))
	}
	fmt.Print(out.String())
	if p0 := before.Plugin.P50(); p0 > 0 {
		b.ReportMetric(float64(during.Plugin.P50())/float64(p0), "VERSION-p50-idle/before")
	}
}

// startIdle starts n idle children of self, all reading one pipe, and
// returns stop, which closes the pipe and waits for every child to end;
// the benchmark's cleanup calls it too.
func startIdle(b *testing.B, self string, n int) (stop func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// The children hold the reading end; this process needs only the
	// writing one.
	defer func() { _ = r.Close() }()
	var cmds []*exec.Cmd
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = w.Close()
			for _, c := range cmds {
				_ = c.Wait()
			}
		})
	}
	b.Cleanup(stop)
	for range n {
		c := exec.Command(self)
		c.Env = append(os.Environ(), idleChildEnv+"=1")
		c.Stdin = r
		if err := c.Start(); err != nil {
			return stop, fmt.Errorf("start idle process %d of %d: %w", len(cmds)+1, n, err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}
