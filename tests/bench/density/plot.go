package benchdensity

import (
	"fmt"
	"io"
	"strings"
)

// Plot writes the steps as an SVG of two panels side by side, each a line
// over the live count: cold acquire p50 (ms) and the machine's memory per
// worker (ΔMemAvailable/N, MiB). Hand-written SVG: a plot of a few points
// needs no plotting library.
func Plot(w io.Writer, steps []Step) error {
	const (
		panelW, panelH = 420, 260
		left, top      = 60, 30
		plotW, plotH   = panelW - left - 20, panelH - top - 50
	)
	var acq, mem [][2]float64
	for _, s := range steps {
		if len(s.Acquire) > 0 {
			acq = append(acq, [2]float64{float64(s.Live), float64(s.Acquire.P50().Microseconds()) / 1000})
		}
		if s.Live > 0 {
			mem = append(mem, [2]float64{float64(s.Live), float64(s.MemAvailDrop) / float64(s.Live) / mib})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", 2*panelW, panelH)
	panel := func(x0 int, title, unit string, pts [][2]float64) {
		fmt.Fprintf(&b, `<g transform="translate(%d,0)">`+"\n", x0)
		fmt.Fprintf(&b, `<text x="%d" y="18" font-weight="bold">%s</text>`+"\n", left, title)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", left, top, plotW, plotH)
		maxX, maxY := 1.0, 1.0
		for _, p := range pts {
			maxX, maxY = max(maxX, p[0]), max(maxY, p[1])
		}
		maxY *= 1.1
		px := func(v float64) float64 { return float64(left) + v/maxX*float64(plotW) }
		py := func(v float64) float64 { return float64(top+plotH) - v/maxY*float64(plotH) }
		for i := 0; i <= 4; i++ {
			v := maxY * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.1f</text>`+"\n", left-4, py(v)+4, v)
			v = maxX * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", px(v), top+plotH+16, v)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">live workers</text>`+"\n", left+plotW/2, top+plotH+34)
		fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", top+plotH/2, top+plotH/2, unit)
		coords := make([]string, 0, len(pts))
		for _, p := range pts {
			coords = append(coords, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#1f77b4"><title>%.0f live: %.2f %s</title></circle>`+"\n", px(p[0]), py(p[1]), p[0], p[1], unit)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="%s"/>`+"\n", strings.Join(coords, " "))
		b.WriteString("</g>\n")
	}
	panel(0, "cold acquire p50", "ms", acq)
	panel(panelW, "memory per worker (ΔMemAvailable/N)", "MiB", mem)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
