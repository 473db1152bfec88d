package benchagent

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAgentWarm takes only the warm-pool acquires of
// BenchmarkAgentSideBySide (an agent with -pool-min-idle 1, each timed
// acquire once an idle worker exists), to rerun that one figure:
//
//	ESB_REQUIRE_PRIVILEGED=1 go test -run '^$' -bench 'BenchmarkAgentWarm$' -benchtime 1x ./tests/bench/agent/
func BenchmarkAgentWarm(b *testing.B) {
	e := newEnv(b)
	var r results
	b.ResetTimer()
	r.measureWarm(b, e)
	e.startAgent() // its reconcile removes the idle worker measureWarm left
	if left := e.noTraces(); len(left) > 0 {
		b.Errorf("the restarted agent's reconcile left the warm pool's idle worker behind: %v", left)
	}
	if err := e.stopAgent(syscall.SIGTERM); err != nil {
		b.Error(err)
	}
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("warm acquire over the API, %d samples (%d not warm): p50 %.3f ms, p95 %.3f ms, min %.3f ms (target p50 ≤ %.0f ms)\n",
		len(r.warm), r.warmNotWarm, msOf(r.warm.P50()), msOf(r.warm.P95()), msOf(r.warm.Quantile(0)), msOf(warmLimit))
	r.report(b)
}
