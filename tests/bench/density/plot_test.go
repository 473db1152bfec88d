package benchdensity

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// The plot is well-formed SVG with one line per panel, through a point
// per step that has the figure (no memory point at 0 live).
func TestPlot(t *testing.T) {
	steps := []Step{
		{Live: 0, Acquire: benchstat.Samples{300 * time.Millisecond}},
		{Live: 100, Acquire: benchstat.Samples{320 * time.Millisecond}, MemAvailDrop: 100 * 4 * mib},
		{Live: 1000, Acquire: benchstat.Samples{390 * time.Millisecond}, MemAvailDrop: 1000 * 5 * mib},
	}
	var b strings.Builder
	if err := Plot(&b, steps); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Lines []struct {
				Points string `xml:"points,attr"`
			} `xml:"polyline"`
			Circles []struct {
				Title string `xml:"title"`
			} `xml:"circle"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b.String())
	}
	if len(doc.Groups) != 2 {
		t.Fatalf("%d panels, want 2", len(doc.Groups))
	}
	for i, want := range []int{3, 2} {
		g := doc.Groups[i]
		if len(g.Lines) != 1 || len(strings.Fields(g.Lines[0].Points)) != want || len(g.Circles) != want {
			t.Errorf("panel %d: lines %v, %d points; want one line through %d", i, g.Lines, len(g.Circles), want)
		}
	}
	if got := doc.Groups[0].Circles[2].Title; got != "1000 live: 390.00 ms" {
		t.Errorf("last acquire point = %q", got)
	}
	if got := doc.Groups[1].Circles[1].Title; got != "1000 live: 5.00 MiB" {
		t.Errorf("last memory point = %q", got)
	}
}
