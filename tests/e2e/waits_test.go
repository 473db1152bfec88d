package e2e

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// Every bounded wait of the suite notes how long its event took
// (noteWait), and TestMain prints the longest per wait at the end of the
// run: run beside load, that is each bound's margin (docs/reliability.md,
// "Test waits"). A wait that hit its bound is noted at the bound.
var waitStats = struct {
	sync.Mutex
	m map[string]*waitStat
}{m: map[string]*waitStat{}}

type waitStat struct {
	n            int
	worst, bound time.Duration
}

// noteWait records that the wait name, bounded by bound, took took.
func noteWait(name string, bound, took time.Duration) {
	waitStats.Lock()
	defer waitStats.Unlock()
	s := waitStats.m[name]
	if s == nil {
		s = &waitStat{}
		waitStats.m[name] = s
	}
	s.n++
	s.worst, s.bound = max(s.worst, took), max(s.bound, bound)
}

// since notes the wait name that started at start; for defer.
func since(name string, bound time.Duration, start time.Time) {
	noteWait(name, bound, time.Since(start))
}

// printWaits writes one line per wait noted: count, worst, bound and the
// worst as a share of the bound.
func printWaits(w io.Writer) {
	waitStats.Lock()
	defer waitStats.Unlock()
	names := make([]string, 0, len(waitStats.m))
	for n := range waitStats.m {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := waitStats.m[n]
		_, _ = fmt.Fprintf(w, "WAIT %-34s n=%-5d worst=%-9s bound=%-7s %3.0f%%\n", n, s.n,
			s.worst.Round(time.Millisecond), s.bound, 100*float64(s.worst)/float64(s.bound))
	}
}
