package benchdensity

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/edge-serverless-box/esbnet/internal/doctor"
)

// ceilingChecks are esbctl doctor's checks of the host's kernel ceilings
// (the bridge's ports are the product's: a full bridge fails an ADD with
// its own error).
var ceilingChecks = []string{"neigh", "pids", "inotify", "files", "conntrack"}

// ceilingNote runs esbctl doctor's ceiling checks for n workers on this
// host and says which fall short, with doctor's fix, and whether any does.
// It runs in the benchmark's own (the host's) namespace, where the
// neighbour thresholds are visible.
func ceilingNote(ctx context.Context, n int) (string, bool) {
	r := doctor.Run(ctx, doctor.Options{Workers: n, DNSPort: 0})
	var short []string
	for _, f := range r.Findings {
		if slices.Contains(ceilingChecks, f.Check) && f.Status != doctor.OK {
			short = append(short, fmt.Sprintf("%s %s: %s (fix: %s)", f.Status, f.Check, f.Message, f.Fix))
		}
	}
	if len(short) == 0 {
		return fmt.Sprintf("esbctl doctor -workers %d: every kernel ceiling (%s) fits", n, strings.Join(ceilingChecks, ", ")), false
	}
	return fmt.Sprintf("esbctl doctor -workers %d finds this host short: %s", n, strings.Join(short, "; ")), true
}
