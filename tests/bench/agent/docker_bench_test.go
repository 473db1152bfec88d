package benchagent

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// dockerColdVsRunLimit is issue 6's target: Docker-mode cold acquire p50
// at most 1.2× docker run -d --network none's p50.
const dockerColdVsRunLimit = 1.2

// BenchmarkAgentDockerSideBySide measures, in one run, Docker-mode cold
// AcquireWorker against `docker run -d --network none` of the same image,
// interleaved as in BenchmarkAgentSideBySide (the same measureCold), and
// checks that nothing is left. It prints a markdown table with the target.
func BenchmarkAgentDockerSideBySide(b *testing.B) {
	e := newEnvFor(b, stacktest.Docker)
	r := results{baseline: "docker"}
	begin := time.Now()
	notes := []string{machineNote(e, "at the start")}
	defer func() {
		notes = append(notes, machineNote(e, "at the end"), fmt.Sprintf("whole run %s", time.Since(begin).Round(time.Second)), logNote(e))
		if err := r.dockerSummary(e, notes).Print(os.Stdout); err != nil {
			b.Errorf("print summary: %v", err)
		}
		r.report(b)
	}()
	b.ResetTimer()
	p := e.startAgent()
	r.measureCold(b, e, p, nil)
	r.leftovers, r.leftChecked = e.noTraces(), true
	if len(r.leftovers) > 0 {
		b.Errorf("after the releases, left on the node:\n  %s", strings.Join(r.leftovers, "\n  "))
	}
}

// dockerSummary builds the Docker run's table.
func (r *results) dockerSummary(e *env, notes []string) *Summary {
	base := e.baselineName()
	s := &Summary{
		Title: "esb-agent (runtime docker) beside " + base,
		Notes: append(notes,
			fmt.Sprintf("image %s, present in dockerd's store", e.image),
			"esb-agent runs as a process in a node network namespace made for the run (nsenter --net), Docker adapter "+
				"(networking disabled: runc's namespace, pinned by the agent, CNI ADD into it after start), esb-bridge + esb-ipam through libcni; "+
				"API calls are timed by a gRPC client on the agent's unix socket; an acquire returns when the worker's port accepts TCP",
			base+" runs the docker CLI in the host's namespace, no memory limit; it returns when the container has started; "+
				"the ready column then polls the container's lo as the agent polls its workers",
			fmt.Sprintf("cold: %d acquire+release and %d %s + removal, interleaved (order alternating), after one untimed round of each",
				coldSamples, coldSamples, base),
		),
	}
	s.Latency = []Row{
		{Name: "esb-agent AcquireWorker, cold", Samples: r.cold, Note: "gRPC round trip, port accepts TCP"},
		{Name: "esb-agent, its log's \"worker ready\" took", Samples: r.coldLogged, Note: "inside the agent, same acquires"},
		{Name: base, Samples: r.ctrRun, Note: "to the command's exit: container started"},
		{Name: base + " + port accepts TCP", Samples: r.ctrReady, Note: "from the same start"},
		{Name: "esb-agent ReleaseWorker", Samples: r.release, Note: "stop (2 s grace), CNI DEL, remove, unpin"},
	}
	if f, ok := readyRatio(r.cold, r.ctrReady, base); ok {
		s.Figures = append(s.Figures, f)
	}
	if r.leftChecked {
		left := "nothing"
		if len(r.leftovers) > 0 {
			left = fmt.Sprintf("%d traces", len(r.leftovers))
		}
		s.Figures = append(s.Figures, Figure{Name: "left after every release", Value: left,
			Note: "containers, netns pins, node veths, IPAM addresses, libcni cache entries, /etc files"})
	}
	ms := func(d time.Duration) string { return benchstat.Ms(d) + " ms" }
	s.Targets = []Target{
		benchstat.RatioTarget(fmt.Sprintf("cold acquire p50 ≤ %.1f × %s p50", dockerColdVsRunLimit, base), r.cold.P50(), r.ctrRun.P50(), dockerColdVsRunLimit,
			fmt.Sprintf("%s vs %s", ms(r.cold.P50()), ms(r.ctrRun.P50()))),
		benchstat.RatioTarget(fmt.Sprintf("cold acquire p95 ≤ %.0f × its p50", p95VsP50Limit), r.cold.P95(), r.cold.P50(), p95VsP50Limit,
			fmt.Sprintf("%s vs %s", ms(r.cold.P95()), ms(r.cold.P50()))),
	}
	return s
}
