package benchbridge

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// These tests are quick and need no privileges: they check the
// arithmetic and the table the benchmark prints.

func ms(v ...int) Samples {
	s := Samples{}
	for _, x := range v {
		s = append(s, time.Duration(x)*time.Millisecond)
	}
	return s
}

func TestQuantiles(t *testing.T) {
	s := ms(5, 1, 3, 2, 4)
	if s.P50() != 3*time.Millisecond || s.Max() != 5*time.Millisecond {
		t.Fatalf("p50 %v max %v of %v", s.P50(), s.Max(), s)
	}
	if got := ms(1, 2, 3, 4).P50(); got != 2500*time.Microsecond {
		t.Fatalf("p50 of an even count = %v, want 2.5ms", got)
	}
	var hundred Samples
	for i := 1; i <= 101; i++ {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	if got := hundred.P95(); got != 96*time.Millisecond {
		t.Fatalf("p95 of 1..101 ms = %v, want 96ms", got)
	}
	if (Samples{}).P50() != 0 || (Samples{}).P95() != 0 || (Samples{}).Max() != 0 {
		t.Fatal("empty samples should give 0")
	}
	if s[0] != 5*time.Millisecond {
		t.Fatal("Quantile sorted the samples in place")
	}
}

func TestTargetsAndPrint(t *testing.T) {
	rep := &Report{Title: "t", Notes: []string{"a note"}}
	rep.Runs = []*Run{
		{Plugin: "esb", Parallel: Sequential, Add: ms(10, 12, 11), Del: ms(30, 31, 29)},
		{Plugin: "ref", Parallel: Sequential, Add: ms(30, 31, 29), Del: ms(40, 41, 39)},
		{Plugin: "esb", Parallel: Parallel, Add: ms(20), Del: ms(40)},
		{Plugin: "ref", Parallel: Parallel, Add: ms(30), Del: ms(50)},
	}
	ts := rep.Targets("esb", "ref")
	if len(ts) != 4 {
		t.Fatalf("%d targets, want 4: %+v", len(ts), ts)
	}
	want := []struct {
		verb string
		par  int
		met  bool
	}{{"ADD", Sequential, true}, {"DEL", Sequential, false}, {"ADD", Parallel, false}, {"DEL", Parallel, false}}
	for i, w := range want {
		if ts[i].Verb != w.verb || ts[i].Parallel != w.par || ts[i].Met() != w.met {
			t.Errorf("target %d = %+v (ratio %.3f, met %v), want %s %s met=%v", i, ts[i], ts[i].Ratio(), ts[i].Met(), w.verb, ModeName(w.par), w.met)
		}
	}
	if r := ts[0].Ratio(); r < 0.366 || r > 0.367 {
		t.Errorf("ADD sequential ratio %v, want 11/30", r)
	}
	missing := (&Report{Runs: rep.Runs[:1]}).Targets("esb", "ref")
	if missing[0].Known() || missing[0].Met() {
		t.Fatalf("a target without the reference must be unknown and not met: %+v", missing[0])
	}
	rep.Usage = []*Usage{{Process: "esb-bridge ADD", MaxRSS: []int64{300, 100, 200}, CPU: ms(3, 1, 2), Note: "n"}}
	rep.Parts = []*Part{{What: "esb-bridge VERSION", Samples: ms(20, 30, 25), Note: "start"}}
	rep.Usage = append(rep.Usage, &Usage{Process: "tiny", MaxRSS: []int64{2000, 2500}, CPU: ms(1, 1), Floor: 2400})
	var out bytes.Buffer
	if err := rep.Print(&out, ts); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"| esb | sequential | 3 | 11.0 | 11.9 | 12.0 | 30.0 | 30.9 | 31.0 |",
		"| ADD p50, sequential | 11.0 | 30.0 | 0.37× | ≤ 0.50× | met |",
		"| DEL p50, parallel-8 | 40.0 | 50.0 | 0.80× | ≤ 0.70× | NOT MET |",
		"| esb-bridge ADD | 3 | 200 | 300 | 2.0 | n |",
		"a note",
		"| esb-bridge VERSION | 3 | 25.0 | 29.5 | start |",
		"| tiny | 2 | 2500 | 2500 | 1.0 | at or below the helper's own 2400 KiB: an upper bound |",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
}
