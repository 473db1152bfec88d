// Package benchbridge measures esb-bridge (with its in-process esb-ipam)
// beside the reference bridge plugin with host-local (v1.10.0, isGateway,
// no ipMasq): ADD and DEL latency of 200 attachments, one at a time and 8
// in parallel, with each plugin binary executed the way a runtime executes
// it (libcni's invoke.RawExec from a thread in a "node" network namespace
// that plays the host), and the peak RSS of one plugin process. It needs
// root; "make bench" runs it and the benchmark prints a markdown table.
//
// This file holds the arithmetic and the table, which need no privileges.
package benchbridge

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// Samples are the durations of repeated runs of one operation.
type Samples = benchstat.Samples

// Modes of attaching: how many plugin processes run at once.
const (
	Sequential = 1
	Parallel   = 8
)

// ModeName names a parallelism in the table.
func ModeName(parallel int) string {
	if parallel <= 1 {
		return "sequential"
	}
	return fmt.Sprintf("parallel-%d", parallel)
}

// Run is one row of the latency table: one plugin attaching and then
// detaching every worker, parallel plugin processes at a time.
type Run struct {
	Plugin   string // the row's label, e.g. "esb-bridge + esb-ipam"
	Parallel int
	Add, Del Samples // one per attachment, each exec timed alone
	// AddWall and DelWall are the wall times of the whole ADD and DEL
	// phases.
	AddWall, DelWall time.Duration
	// DelFailed counts DEL executions that failed (their times are
	// samples all the same: each DEL step runs even when an earlier one
	// fails); DelErrors keeps the first few messages.
	DelFailed int
	DelErrors []string
	// GuardsLeft counts anti-spoof guards left after every DEL succeeded.
	GuardsLeft int
}

// Key names the run in the report: its plugin and parallelism.
func (x *Run) Key() (string, int) { return x.Plugin, x.Parallel }

// Usage is the resource use of repeated runs of one plugin process.
type Usage struct {
	Process string          // e.g. "esb-bridge ADD"
	MaxRSS  []int64         // KiB, one per run (wait4's ru_maxrss)
	CPU     []time.Duration // user + system, one per run
	// Floor is the measuring helper's own peak RSS: the kernel reports at
	// least that much for the process, so a figure at or below it is only
	// an upper bound.
	Floor int64
	Note  string
}

func medianInt(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}

// Target is one of the acceptance checks: esb's p50 of one verb in
// one mode at most Limit times the reference's.
type Target struct {
	Verb     string // "ADD" or "DEL"
	Parallel int
	ESB, Ref time.Duration // the p50s
	Limit    float64
}

// Known reports whether both p50s were measured.
func (t Target) Known() bool { return t.ESB > 0 && t.Ref > 0 }

// Ratio returns esb's p50 over the reference's, or 0 when not known.
func (t Target) Ratio() float64 {
	if !t.Known() {
		return 0
	}
	return float64(t.ESB) / float64(t.Ref)
}

// Met reports whether the ratio is within the limit.
func (t Target) Met() bool { return t.Known() && t.Ratio() <= t.Limit }

// Limits of the issue: esb's ADD p50 at most half the reference's, its DEL
// p50 at most 0.7 of it (a veth's deletion is a floor both pay).
const (
	AddLimit = 0.5
	DelLimit = 0.7
)

// Part is one row of the decomposition: an operation that makes up part
// of a plugin execution, sampled alone.
type Part struct {
	What    string
	Samples Samples
	Note    string
}

// Report is what the benchmark prints.
type Report struct {
	Title string
	Notes []string
	Runs  []*Run
	Parts []*Part
	Usage []*Usage
}

// Find returns the run of plugin at parallel, or nil.
func (r *Report) Find(plugin string, parallel int) *Run {
	return benchstat.Find(r.Runs, plugin, parallel)
}

// Targets evaluates the ADD and DEL targets in each mode that either
// plugin ran, in the order the runs were added.
func (r *Report) Targets(esb, ref string) []Target {
	var modes []int
	for _, x := range r.Runs {
		if !slices.Contains(modes, x.Parallel) {
			modes = append(modes, x.Parallel)
		}
	}
	slices.Sort(modes)
	var out []Target
	for _, m := range modes {
		e, f := r.Find(esb, m), r.Find(ref, m)
		add := Target{Verb: "ADD", Parallel: m, Limit: AddLimit}
		del := Target{Verb: "DEL", Parallel: m, Limit: DelLimit}
		if e != nil {
			add.ESB, del.ESB = e.Add.P50(), e.Del.P50()
		}
		if f != nil {
			add.Ref, del.Ref = f.Add.P50(), f.Del.P50()
		}
		out = append(out, add, del)
	}
	return out
}

// Print writes the report as markdown: the latency table, the targets and
// the resource use.
func (r *Report) Print(w io.Writer, targets []Target) error {
	return benchstat.WriteReport(w, r.Title, r.Notes, func(b *strings.Builder) {
		b.WriteString("\n| plugin | mode | samples | ADD p50 ms | ADD p95 ms | ADD max ms | DEL p50 ms | DEL p95 ms | DEL max ms | ADD phase s | DEL phase s |\n")
		b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, x := range r.Runs {
			fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n",
				x.Plugin, ModeName(x.Parallel), len(x.Add),
				benchstat.MsN(x.Add.P50(), 1), benchstat.MsN(x.Add.P95(), 1), benchstat.MsN(x.Add.Max(), 1),
				benchstat.MsN(x.Del.P50(), 1), benchstat.MsN(x.Del.P95(), 1), benchstat.MsN(x.Del.Max(), 1),
				x.AddWall.Seconds(), x.DelWall.Seconds())
		}
		for _, x := range r.Runs {
			if x.DelFailed == 0 && x.GuardsLeft == 0 {
				continue
			}
			fmt.Fprintf(b, "\n**%s, %s: %d of %d DELs failed (retried once afterwards, untimed), %d anti-spoof guards left after all DELs succeeded (removed by the plugin's GC).**",
				x.Plugin, ModeName(x.Parallel), x.DelFailed, len(x.Del), x.GuardsLeft)
			for _, e := range x.DelErrors {
				fmt.Fprintf(b, "  \nfailed DEL: `%s`", e)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n| target | esb p50 ms | reference p50 ms | esb / reference | limit | result |\n")
		b.WriteString("| --- | ---: | ---: | ---: | ---: | --- |\n")
		for _, t := range targets {
			ratio := "n/a"
			if t.Known() {
				ratio = fmt.Sprintf("%.2f×", t.Ratio())
			}
			fmt.Fprintf(b, "| %s p50, %s | %s | %s | %s | ≤ %.2f× | %s |\n",
				t.Verb, ModeName(t.Parallel), benchstat.MsN(t.ESB, 1), benchstat.MsN(t.Ref, 1), ratio, t.Limit, benchstat.Outcome(t.Known(), t.Met()))
		}
		if len(r.Parts) > 0 {
			b.WriteString("\n| where the time goes (sequential) | samples | p50 ms | p95 ms | note |\n")
			b.WriteString("| --- | ---: | ---: | ---: | --- |\n")
			for _, p := range r.Parts {
				fmt.Fprintf(b, "| %s | %d | %s | %s | %s |\n", p.What, len(p.Samples), benchstat.MsN(p.Samples.P50(), 1), benchstat.MsN(p.Samples.P95(), 1), p.Note)
			}
		}
		if len(r.Usage) > 0 {
			b.WriteString("\n| process | runs | peak RSS KiB (median) | peak RSS KiB (max) | CPU user+sys ms (median) | note |\n")
			b.WriteString("| --- | ---: | ---: | ---: | ---: | --- |\n")
			for _, u := range r.Usage {
				note := u.Note
				if slices.Min(append([]int64{u.Floor + 1}, u.MaxRSS...)) <= u.Floor {
					note = strings.TrimPrefix(note+fmt.Sprintf("; at or below the helper's own %d KiB: an upper bound", u.Floor), "; ")
				}
				fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %s |\n",
					u.Process, len(u.MaxRSS), medianInt(u.MaxRSS), slices.Max(append([]int64{0}, u.MaxRSS...)),
					benchstat.MsN(Samples(u.CPU).P50(), 1), note)
			}
		}
	})
}
