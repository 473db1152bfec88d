// Package benchstat is what the benchmark packages share: sample sets of
// durations and their quantiles, and the markdown report (latency rows,
// figures, the targets) they print.
package benchstat

import (
	"slices"
	"time"
)

// Samples are the durations of repeated runs of one operation.
type Samples []time.Duration

// FromMs returns samples of v milliseconds each.
func FromMs(v ...int) Samples {
	s := Samples{}
	for _, x := range v {
		s = append(s, time.Duration(x)*time.Millisecond)
	}
	return s
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) by linear interpolation
// between the closest ranks, or 0 for no samples.
func (s Samples) Quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	pos := q * float64(len(c)-1)
	i := int(pos)
	if i >= len(c)-1 {
		return c[len(c)-1]
	}
	frac := pos - float64(i)
	return c[i] + time.Duration(frac*float64(c[i+1]-c[i]))
}

// P50 returns the median (the mean of the middle two for an even count).
func (s Samples) P50() time.Duration { return s.Quantile(0.5) }

// P95 returns the 95th percentile.
func (s Samples) P95() time.Duration { return s.Quantile(0.95) }

// Mean returns the arithmetic mean, or 0 for no samples.
func (s Samples) Mean() time.Duration {
	if len(s) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s))
}

// Max returns the largest sample, or 0 for no samples.
func (s Samples) Max() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return slices.Max(s)
}

// Keyed is a row of a benchmark's table that a label and a number name:
// a plugin and its parallelism, a plugin and its fill.
type Keyed interface {
	Key() (label string, n int)
}

// Find returns the first of rows keyed (label, n), or the zero T (nil for
// a pointer) when none is.
func Find[T Keyed](rows []T, label string, n int) T {
	for _, r := range rows {
		if l, k := r.Key(); l == label && k == n {
			return r
		}
	}
	var none T
	return none
}
