package benchnat

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// Samples are the durations of repeated runs of one operation.
type Samples = benchstat.Samples

// median returns the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	c := slices.Clone(xs)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// ApplyRow is one way of calling Manager.Apply, timed.
type ApplyRow struct {
	Forwards int
	What     string // "rebuilt from an empty namespace", ...
	Samples  Samples
}

// DriftRow is the repair of table ip esb after `nft flush ruleset`, with
// Forwards forwards in the rule set Watch keeps.
type DriftRow struct {
	Forwards int
	Seen     Samples // from the flush being sent to the table seen whole
	Watch    Samples // Watch's own report: the notification's arrival to the table whole
}

// Series is the rounds of one way of reaching HAProxy, in the order they
// ran; rounds of different series with the same index ran together (in
// one round, connection by connection in turn, or one after the other).
type Series struct {
	Name   string
	Rounds []LoadResult
}

func (s Series) metric(f func(LoadResult) float64) []float64 {
	out := make([]float64, len(s.Rounds))
	for i, r := range s.Rounds {
		out[i] = f(r)
	}
	return out
}

// pooled returns f over all rounds taken together.
func (s Series) pooled(f func(LoadResult) float64) float64 {
	var sum LoadResult
	for _, r := range s.Rounds {
		sum.Conns += r.Conns
		sum.BodyBytes += r.BodyBytes
		sum.Seconds += r.Seconds
	}
	return f(sum)
}

func (s Series) errors() (int, string) {
	n, first := 0, ""
	for _, r := range s.Rounds {
		n += r.Errors
		if first == "" {
			first = r.FirstErr
		}
	}
	return n, first
}

// errCell renders the failed connections of a series and the first
// failure.
func errCell(s Series) string {
	n, first := s.errors()
	if first != "" {
		return fmt.Sprintf("%d (%s)", n, first)
	}
	return fmt.Sprint(n)
}

func (s Series) conns() int {
	n := 0
	for _, r := range s.Rounds {
		n += r.Conns
	}
	return n
}

// ratios returns f(a)/f(b) for each pair of rounds of a and b that ran
// together.
func ratios(a, b Series, f func(LoadResult) float64) []float64 {
	var out []float64
	for i := 0; i < len(a.Rounds) && i < len(b.Rounds); i++ {
		if fb := f(b.Rounds[i]); fb > 0 {
			out = append(out, f(a.Rounds[i])/fb)
		}
	}
	return out
}

// Comparison is one metric through the DNAT against direct, the two
// measured in the same rounds, connection by connection in turn.
type Comparison struct {
	Key    string // short name for the benchmark's metrics: "http", "handshake", "throughput"
	Metric string // "connection rate", "throughput"
	Unit   string // "conn/s", "MB/s"
	Of     func(LoadResult) float64
	Target bool // the overhead target applies
	DNAT   Series
	Direct Series
}

// overheads returns, per round, 1 - DNAT/direct of f in percent: positive
// when the DNAT is slower.
func overheads(dnat, direct Series, f func(LoadResult) float64) []float64 {
	rs := ratios(dnat, direct, f)
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = (1 - r) * 100
	}
	return out
}

// Overhead returns the median over the rounds of 1 - DNAT/direct, in
// percent (positive: the DNAT is slower), its standard error, the smallest
// and largest round, and whether any round was measured.
func (c Comparison) Overhead() (med, se, lo, hi float64, ok bool) {
	ov := overheads(c.DNAT, c.Direct, c.Of)
	if len(ov) == 0 {
		return 0, 0, 0, 0, false
	}
	return median(ov), medianSE(ov), slices.Min(ov), slices.Max(ov), true
}

// medianSE estimates the standard error of the median of xs from their
// median absolute deviation (robust to the odd round that load from
// elsewhere wrecked): 1.2533 × 1.4826 × MAD / √n.
func medianSE(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m := median(xs)
	dev := make([]float64, len(xs))
	for i, x := range xs {
		dev[i] = math.Abs(x - m)
	}
	return 1.2533 * 1.4826 * median(dev) / math.Sqrt(float64(len(xs)))
}

// LatencyOverhead is the median over the rounds of DNAT/direct - 1 of the
// median connection time, in percent: a figure that load from elsewhere
// on the machine disturbs less than the rate.
func (c Comparison) LatencyOverhead() float64 {
	rs := ratios(c.DNAT, c.Direct, LoadResult.P50)
	for i := range rs {
		rs[i] = (rs[i] - 1) * 100
	}
	return median(rs)
}

// PooledOverhead is the overhead of the totals over all rounds, in percent.
func (c Comparison) PooledOverhead() float64 {
	d := c.Direct.pooled(c.Of)
	if d == 0 {
		return 0
	}
	return (1 - c.DNAT.pooled(c.Of)/d) * 100
}

// Setup is one way of installing the forwards, measured through the
// gateway's port and, in the same rounds, directly: HTTP connections and
// bare handshakes.
type Setup struct {
	Name                   string
	HTTP, HTTPDirect       Series
	Connect, ConnectDirect Series
	Install                Samples // one sample per round: installing the setup from nothing
}

// handshakeCost returns the median over the rounds of the median handshake
// through the DNAT minus the median handshake direct, in microseconds.
func (s Setup) handshakeCost() float64 {
	var d []float64
	for i := 0; i < len(s.Connect.Rounds) && i < len(s.ConnectDirect.Rounds); i++ {
		d = append(d, s.Connect.Rounds[i].P50us-s.ConnectDirect.Rounds[i].P50us)
	}
	return median(d)
}

// Target is one of the acceptance checks.
type Target struct {
	Name     string
	Measured string
	Limit    string
	Known    bool // false when what it needs was not measured
	Met      bool
	Note     string // said beside the result
}

// Summary is everything BenchmarkNATSideBySide measured.
type Summary struct {
	Title string
	Notes []string
	Apply []ApplyRow
	// ApplyTransactions is the number of nftables generations (committed
	// transactions) one Apply of 1000 forwards from nothing made; 0 when
	// not counted.
	ApplyTransactions int
	Drift             []DriftRow
	Compare           []Comparison
	// PerConn are the setups compared at 1000 forwards, the first being
	// the reference of the ratio columns.
	PerConn []Setup
}

// Limits of the issue.
const (
	ApplyLimit    = 10 * time.Millisecond // 1000 forwards in one transaction
	RepairLimit   = 50 * time.Millisecond // nft flush ruleset to restored rules
	OverheadLimit = 5.0                   // percent, DNAT against direct
)

// Targets evaluates the targets: on p50, with the max shown beside
// it, for the timings; on the median over the rounds for the overheads.
func (s *Summary) Targets() []Target {
	var out []Target
	timed := func(name string, p50, worst, limit time.Duration, known bool) {
		t := Target{Name: name, Limit: "≤ " + benchstat.MsN(limit, 3) + " ms (p50)", Known: known}
		if known {
			t.Measured = fmt.Sprintf("p50 %s ms, max %s ms", benchstat.MsN(p50, 3), benchstat.MsN(worst, 3))
			t.Met = p50 <= limit
			if worst > limit {
				t.Measured += " (max above the limit)"
			}
		}
		out = append(out, t)
	}
	var apply *ApplyRow
	for i := range s.Apply {
		if r := &s.Apply[i]; r.Forwards == 1000 && strings.HasPrefix(r.What, "rebuilt") {
			apply = r
			break
		}
	}
	if apply != nil {
		timed("Apply 1000 forwards, one transaction", apply.Samples.P50(), apply.Samples.Max(), ApplyLimit, len(apply.Samples) > 0)
		t := &out[len(out)-1]
		t.Limit += ", 1 transaction"
		switch s.ApplyTransactions {
		case 0:
			t.Measured += "; transactions not counted"
			t.Met = false
		case 1:
			t.Measured += "; 1 transaction"
		default:
			t.Measured += fmt.Sprintf("; %d transactions", s.ApplyTransactions)
			t.Met = false
		}
	} else {
		timed("Apply 1000 forwards, one transaction", 0, 0, ApplyLimit, false)
	}
	for _, d := range s.Drift {
		timed(fmt.Sprintf("nft flush ruleset → table restored (%d forward(s))", d.Forwards), d.Seen.P50(), d.Seen.Max(), RepairLimit, len(d.Seen) > 0)
	}
	for _, c := range s.Compare {
		if !c.Target {
			continue
		}
		med, se, lo, hi, ok := c.Overhead()
		t := Target{Name: c.Metric + " overhead, DNAT against direct", Limit: fmt.Sprintf("≤ %.0f %% (median of rounds)", OverheadLimit), Known: ok}
		if ok {
			t.Measured = fmt.Sprintf("%+.2f %% ± %.2f (2 SE; rounds %+.1f … %+.1f %%, pooled %+.2f %%, median time %+.2f %%)",
				med, 2*se, lo, hi, c.PooledOverhead(), c.LatencyOverhead())
			t.Met = med <= OverheadLimit
			if math.Abs(med-OverheadLimit) <= 2*se {
				t.Note = "within the noise of the run"
			}
		}
		out = append(out, t)
	}
	return out
}

// Print writes the summary as markdown tables, the targets last.
func (s *Summary) Print(w io.Writer) error {
	return benchstat.WriteReport(w, s.Title, s.Notes, func(b *strings.Builder) {
		if len(s.Apply) > 0 {
			b.WriteString("\n### Manager.Apply (table ip esb)\n\n| forwards | what | samples | p50 ms | mean ms | max ms |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
			for _, r := range s.Apply {
				fmt.Fprintf(b, "| %d | %s | %d | %s | %s | %s |\n", r.Forwards, r.What, len(r.Samples),
					benchstat.MsN(r.Samples.P50(), 3), benchstat.MsN(r.Samples.Mean(), 3), benchstat.MsN(r.Samples.Max(), 3))
			}
		}

		if len(s.Drift) > 0 {
			b.WriteString("\n### Drift repair: `nft flush ruleset` while Manager.Watch runs\n\n" +
				"| forwards | rounds | flush sent → table seen whole p50 ms | max ms | Watch's report (notification → whole) p50 ms | max ms |\n" +
				"| ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, d := range s.Drift {
				fmt.Fprintf(b, "| %d | %d | %s | %s | %s | %s |\n", d.Forwards, len(d.Seen),
					benchstat.MsN(d.Seen.P50(), 3), benchstat.MsN(d.Seen.Max(), 3), benchstat.MsN(d.Watch.P50(), 3), benchstat.MsN(d.Watch.Max(), 3))
			}
		}

		if len(s.Compare) > 0 {
			b.WriteString("\n### Worker → HAProxy through the DNAT against direct (same rounds, connections in turn)\n\n" +
				"| metric | path | rounds | per round median | per round min … max | pooled | conns | conn time p50 µs | p99 µs | errors |\n" +
				"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, c := range s.Compare {
				for _, sr := range []Series{c.DNAT, c.Direct} {
					vals := sr.metric(c.Of)
					lo, hi := 0.0, 0.0
					if len(vals) > 0 {
						lo, hi = slices.Min(vals), slices.Max(vals)
					}
					fmt.Fprintf(b, "| %s | %s | %d | %.1f %s | %.1f … %.1f | %.1f | %d | %.0f | %.0f | %s |\n",
						c.Metric, sr.Name, len(sr.Rounds), median(vals), c.Unit, lo, hi, sr.pooled(c.Of), sr.conns(),
						median(sr.metric(LoadResult.P50)), median(sr.metric(func(r LoadResult) float64 { return r.P99us })), errCell(sr))
				}
			}
			b.WriteString("\n| metric | overhead: median of rounds ± 2 SE | rounds min … max | pooled | conn time p50: DNAT over direct, median of rounds |\n| --- | ---: | ---: | ---: | ---: |\n")
			for _, c := range s.Compare {
				med, se, lo, hi, ok := c.Overhead()
				if !ok {
					fmt.Fprintf(b, "| %s | n/a | n/a | n/a | n/a |\n", c.Metric)
					continue
				}
				fmt.Fprintf(b, "| %s | %+.2f ± %.2f %% | %+.1f … %+.1f %% | %+.2f %% | %+.2f %% |\n", c.Metric, med, 2*se, lo, hi, c.PooledOverhead(), c.LatencyOverhead())
			}
		}

		if len(s.PerConn) > 0 {
			rate := LoadResult.Rate
			ref := s.PerConn[0]
			b.WriteString("\n### Per-connection cost: 1000 forwards, one setup installed at a time\n\n" +
				"| setup | rounds | HTTP conn/s through DNAT (median) | µs per conn | rate vs " + ref.Name + " (median of rounds) | HTTP overhead vs direct, same rounds | handshake p50 µs: DNAT | direct | DNAT cost per handshake µs (median of rounds) | errors | install p50 ms |\n" +
				"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, st := range s.PerConn {
				r := median(st.HTTP.metric(rate))
				us := 0.0
				if r > 0 {
					us = 1e6 / r
				}
				ov := median(overheads(st.HTTP, st.HTTPDirect, rate))
				errs := 0
				for _, sr := range []Series{st.HTTP, st.HTTPDirect, st.Connect, st.ConnectDirect} {
					e, _ := sr.errors()
					errs += e
				}
				fmt.Fprintf(b, "| %s | %d | %.1f | %.1f | %.3f× | %+.2f %% | %.1f | %.1f | %+.1f | %d | %s |\n",
					st.Name, len(st.HTTP.Rounds), r, us, median(ratios(st.HTTP, ref.HTTP, rate)), ov,
					median(st.Connect.metric(LoadResult.P50)), median(st.ConnectDirect.metric(LoadResult.P50)), st.handshakeCost(),
					errs, benchstat.MsN(st.Install.P50(), 3))
			}
		}

		b.WriteString("\n### Targets\n\n| target | measured | limit | result |\n| --- | --- | --- | --- |\n")
		for _, t := range s.Targets() {
			measured, result := "n/a", benchstat.Outcome(t.Known, t.Met)
			if t.Known {
				measured = t.Measured
				if t.Note != "" {
					result += " (" + t.Note + ")"
				}
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.Name, measured, t.Limit, result)
		}
	})
}
