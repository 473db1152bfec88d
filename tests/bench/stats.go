package bench

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/benchstat"
)

// Samples are the durations of repeated runs of one operation.
type Samples = benchstat.Samples

// Cell is one row of the summary: one way of running ADD+DEL at one fill.
type Cell struct {
	Plugin string // "esb-ipam", "host-local", "esb-ipam in-process"
	Fill   int    // addresses allocated before the samples
	Add    Samples
	Del    Samples
	AddDel Samples
}

// Record adds one sample.
func (c *Cell) Record(add, del time.Duration) {
	c.Add = append(c.Add, add)
	c.Del = append(c.Del, del)
	c.AddDel = append(c.AddDel, add+del)
}

// Summary is the table `make bench` prints.
type Summary struct {
	Title string
	Notes []string
	Cells []*Cell
}

// Find returns the cell of plugin at fill, or nil.
func (s *Summary) Find(plugin string, fill int) *Cell {
	for _, c := range s.Cells {
		if c.Plugin == plugin && c.Fill == fill {
			return c
		}
	}
	return nil
}

// Target is one of the acceptance checks on the summary.
type Target struct {
	Name  string
	Ratio float64 // measured ratio
	Limit float64 // the ratio must be at most this
	Known bool    // false when a cell it needs was not measured
}

// Met reports whether the measured ratio is within the limit.
func (t Target) Met() bool { return t.Known && t.Ratio <= t.Limit }

// ratio returns p50(num)/p50(den) and whether both cells have samples.
func (s *Summary) ratio(numPlugin string, numFill int, denPlugin string, denFill int) (float64, bool) {
	num, den := s.Find(numPlugin, numFill), s.Find(denPlugin, denFill)
	if num == nil || den == nil || len(num.AddDel) == 0 || len(den.AddDel) == 0 || den.AddDel.P50() == 0 {
		return 0, false
	}
	return float64(num.AddDel.P50()) / float64(den.AddDel.P50()), true
}

// Targets evaluates the two targets on p50 of ADD+DEL through the
// binaries: esb-ipam grows at most 1.2× from 0 to maxFill, and at maxFill
// takes at most 1/10 of host-local's time.
func (s *Summary) Targets(esb, hostLocal string, maxFill int) []Target {
	growth, ok1 := s.ratio(esb, maxFill, esb, 0)
	share, ok2 := s.ratio(esb, maxFill, hostLocal, maxFill)
	return []Target{
		{Name: fmt.Sprintf("%s growth from 0 to %d allocated (p50 ratio)", esb, maxFill), Ratio: growth, Limit: 1.2, Known: ok1},
		{Name: fmt.Sprintf("%s / %s at %d allocated (p50 ratio)", esb, hostLocal, maxFill), Ratio: share, Limit: 0.1, Known: ok2},
	}
}

// Print writes the summary as a markdown table followed by the targets.
func (s *Summary) Print(w io.Writer, targets []Target) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "%s  \n", n)
	}
	b.WriteString("\n| plugin | allocated | samples | ADD+DEL p50 ms | ADD+DEL mean ms | ADD p50 ms | DEL p50 ms | ADD+DEL max ms |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range s.Cells {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s |\n", c.Plugin, c.Fill, len(c.AddDel),
			benchstat.MsN(c.AddDel.P50(), 3), benchstat.MsN(c.AddDel.Mean(), 3), benchstat.MsN(c.Add.P50(), 3), benchstat.MsN(c.Del.P50(), 3), benchstat.MsN(c.AddDel.Max(), 3))
	}
	b.WriteString("\n| target | measured | limit | result |\n| --- | ---: | ---: | --- |\n")
	for _, t := range targets {
		measured, result := "n/a", "not measured"
		if t.Known {
			measured = fmt.Sprintf("%.3f×", t.Ratio)
			if t.Limit < 1 && t.Ratio > 0 {
				measured += fmt.Sprintf(" (1/%.0f)", 1/t.Ratio)
			}
			result = "NOT MET"
			if t.Met() {
				result = "met"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | ≤ %.2f× | %s |\n", t.Name, measured, t.Limit, result)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
