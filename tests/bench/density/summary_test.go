package benchdensity

import (
	"fmt"
	"testing"
	"time"

	benchnat "github.com/edge-serverless-box/esbnet/tests/bench/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// summary builds the printed report from the steps measured.
func summary(e *env, pairs int, steps []Step, fn *Step, leaks Leaks, notes []string) *benchstat.Summary {
	s := &benchstat.Summary{
		Title: "esb-agent density: live idle workers in steps",
		Notes: append(notes,
			fmt.Sprintf("image %s, pulled into the run's containerd namespaces; snapshotter %s", e.image, e.stack.Snapshotter),
			fmt.Sprintf("esb-agent runs as a process in a node network namespace made for the run (nsenter --net), containerd adapter, pool off, "+
				"-max-workers %d (the held workers and a pair), -shim-group-size %d, NAT rules forwarding the gateway's tcp/%d to HAProxy, egress open", e.maxWorkers, e.shimGroup, benchnat.FwdPort),
			fmt.Sprintf("fill: %d acquires in flight, each client its own owner; every held worker answers an invoke from the node at each step", clients),
			fmt.Sprintf("each step: %d cold acquire+release pairs through esb-agent's API (acquire, release columns) interleaved with %d of the "+
				"in-process profiler (agent.Agent from esb-agent's parts, its own containerd namespace, libcni cache and pins, the same node, "+
				"bridge, anti-spoof sets and IPAM store), whose CNI ADD and DEL are timed (CNI columns), and with %d runs of the baseline, "+
				"ctr run -d of the same image in a third namespace of the same containerd, timed until its port accepts TCP on the container's lo "+
				"(polled as the agent polls its workers) and then removed; the three in turn, one untimed round first", pairs, pairs, pairs),
			"memory: ΔMemAvailable and ΔSlab against the start (no worker), over the live count (the machine is shared: other processes move them too); "+
				"shim PSS from /proc/<shim>/smaps_rollup, the shim being the parent of the worker's process (a shared shim counted once); cgroup: memory.usage_in_bytes of "+
				"/sys/fs/cgroup/memory/<namespace>/<id>; threads: the shim's and the worker cgroup's",
			fmt.Sprintf("NAT, at the first and last step: one more worker runs benchnat's load generator, %d rounds of %d HTTP requests "+
				"(Connection: close) to HAProxy through 10.88.0.1:9000 (DNAT) and as many directly, in turn; the median of the rounds' p50s", natRounds, natConns),
		),
		Tables:  []benchstat.Table{Table(steps)},
		Phases:  PhaseRows(steps),
		Targets: Targets(steps, leaks),
	}
	if fn != nil {
		s.Tables = append(s.Tables, ImageTable(steps, fn))
		s.Notes = append(s.Notes, fmt.Sprintf("images: %d live workers of the Lambda function image %s (tests/images/function: aws-lambda-go behind the RIE), "+
			"acquired as the fill does after every other worker was released, listed by the agent, memory measured as a step's against the host then", fn.Live, fn.Image))
	}
	if len(steps) > 0 {
		last := steps[len(steps)-1]
		if last.NAT != nil {
			s.Figures = append(s.Figures, benchstat.Figure{Name: fmt.Sprintf("NAT at %d live: DNAT p50 − direct p50", last.Live),
				Value: (last.NAT.DNAT - last.NAT.Direct).Round(time.Microsecond).String(), Note: fmt.Sprintf("%d connections through the DNAT", last.NAT.Conns)})
		}
	}
	return s
}

// report hands the headline figures of the last step to the benchmark
// framework.
func report(b *testing.B, steps []Step) {
	if len(steps) > 0 {
		last := steps[len(steps)-1]
		msOf := func(s benchstat.Samples) float64 { return float64(s.P50()) / 1e6 }
		b.ReportMetric(float64(last.Live), "live")
		if len(last.Acquire) > 0 {
			b.ReportMetric(msOf(last.Acquire), "acquire-p50-ms")
		}
		if len(last.Add) > 0 {
			b.ReportMetric(msOf(last.Add), "add-p50-ms")
		}
		if last.RSS > 0 {
			b.ReportMetric(float64(last.RSS)/mib, "rss-MiB")
		}
	}
	b.ReportMetric(0, "ns/op")
}
