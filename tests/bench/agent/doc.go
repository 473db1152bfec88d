// Package benchagent measures esb-agent the way a Gateway sees it, beside
// containerd's own CLI: cold AcquireWorker against `ctr run -d` of the
// same image (no network, ctr's default: a new empty network namespace),
// warm-pool acquires, throughput with 8 concurrent clients, 200 live
// workers with the agent's RSS, and the adoption of those 200 by a
// restarted agent. The agent runs as a real process (nsenter --net) in a
// node network namespace made for the run; ctr runs in the host's, as it
// would on a node. It needs root and the stack of scripts/stack.sh; the
// benchmark prints a markdown table with the targets.
//
// The table and its arithmetic are tests/lib/benchstat's.
package benchagent

import "github.com/edge-serverless-box/esbnet/tests/lib/benchstat"

// The report's parts are tests/lib/benchstat's.
type (
	// Samples are benchstat.Samples.
	Samples = benchstat.Samples
	// Row is a benchstat.Row.
	Row = benchstat.Row
	// Figure is a benchstat.Figure.
	Figure = benchstat.Figure
	// Target is a benchstat.Target.
	Target = benchstat.Target
	// Summary is a benchstat.Summary.
	Summary = benchstat.Summary
)
