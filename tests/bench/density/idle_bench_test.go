package benchdensity

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	// idleChildEnv makes the test binary an idle child of
	// BenchmarkIdleProcesses (see TestMain and IdleChild).
	idleChildEnv = "ESB_DENSITY_IDLE_CHILD"
	// idleProcesses is as many processes as 1,000 workers and their
	// shims (one each).
	idleProcesses = 2000
)

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
	stop, err := StartIdle(self, []string{idleChildEnv + "=1"}, idleProcesses)
	b.Cleanup(stop)
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
	if r, ok := benchstat.Ratio(during.Plugin.P50(), before.Plugin.P50()); ok {
		b.ReportMetric(r, "VERSION-p50-idle/before")
	}
}
