package benchbridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// These tests are quick and need no privileges: they check the
// arithmetic and the table the benchmark prints.

func TestTargetsAndPrint(t *testing.T) {
	rep := &Report{Title: "t", Notes: []string{"a note"}}
	rep.Runs = []*Run{
		{Plugin: "esb", Parallel: Sequential, Add: benchstat.FromMs(10, 12, 11), Del: benchstat.FromMs(30, 31, 29)},
		{Plugin: "ref", Parallel: Sequential, Add: benchstat.FromMs(30, 31, 29), Del: benchstat.FromMs(40, 41, 39)},
		{Plugin: "esb", Parallel: Parallel, Add: benchstat.FromMs(20), Del: benchstat.FromMs(40)},
		{Plugin: "ref", Parallel: Parallel, Add: benchstat.FromMs(30), Del: benchstat.FromMs(50)},
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
	rep.Usage = []*Usage{{Process: "esb-bridge ADD", MaxRSS: []int64{300, 100, 200}, CPU: benchstat.FromMs(3, 1, 2), Note: "n"}}
	rep.Parts = []*Part{{What: "esb-bridge VERSION", Samples: benchstat.FromMs(20, 30, 25), Note: "start"}}
	rep.Usage = append(rep.Usage, &Usage{Process: "tiny", MaxRSS: []int64{2000, 2500}, CPU: benchstat.FromMs(1, 1), Floor: 2400})
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
