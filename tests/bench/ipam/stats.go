package benchipam

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
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

// Key names the cell in the summary: its plugin and fill.
func (c *Cell) Key() (string, int) { return c.Plugin, c.Fill }

// Summary is the table `make bench` prints.
type Summary struct {
	Title string
	Notes []string
	Cells []*Cell
}

// Find returns the cell of plugin at fill, or nil.
func (s *Summary) Find(plugin string, fill int) *Cell {
	return benchstat.Find(s.Cells, plugin, fill)
}

// Target is one of the acceptance checks on the summary.
type Target = benchstat.Target

// p50s returns the p50s of ADD+DEL of two cells (0 for a missing one).
func (s *Summary) p50s(numPlugin string, numFill int, denPlugin string, denFill int) (num, den time.Duration) {
	if c := s.Find(numPlugin, numFill); c != nil {
		num = c.AddDel.P50()
	}
	if c := s.Find(denPlugin, denFill); c != nil {
		den = c.AddDel.P50()
	}
	return num, den
}

// Targets evaluates the two targets on p50 of ADD+DEL through the
// binaries: esb-ipam grows at most 1.2× from 0 to maxFill, and at maxFill
// takes at most 1/10 of host-local's time.
func (s *Summary) Targets(esb, hostLocal string, maxFill int) []Target {
	growth, base := s.p50s(esb, maxFill, esb, 0)
	mine, theirs := s.p50s(esb, maxFill, hostLocal, maxFill)
	share := benchstat.RatioTarget(fmt.Sprintf("%s / %s at %d allocated (p50 ratio)", esb, hostLocal, maxFill), mine, theirs, 0.1, "")
	if share.Known {
		share.Detail = fmt.Sprintf("1/%.0f", 1/share.Measured)
	}
	return []Target{
		benchstat.RatioTarget(fmt.Sprintf("%s growth from 0 to %d allocated (p50 ratio)", esb, maxFill), growth, base, 1.2, ""),
		share,
	}
}

// Print writes the summary as a markdown table followed by the targets.
func (s *Summary) Print(w io.Writer, targets []Target) error {
	return benchstat.WriteReport(w, s.Title, s.Notes, func(b *strings.Builder) {
		b.WriteString("\n| plugin | allocated | samples | ADD+DEL p50 ms | ADD+DEL mean ms | ADD p50 ms | DEL p50 ms | ADD+DEL max ms |\n")
		b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, c := range s.Cells {
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s | %s | %s |\n", c.Plugin, c.Fill, len(c.AddDel),
				benchstat.MsN(c.AddDel.P50(), 3), benchstat.MsN(c.AddDel.Mean(), 3), benchstat.MsN(c.Add.P50(), 3), benchstat.MsN(c.Del.P50(), 3), benchstat.MsN(c.AddDel.Max(), 3))
		}
		benchstat.WriteTargets(b, targets)
	})
}
