package benchdensity

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

func TestParseSteps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{"", []int{0, 100, 250, 500, 1000}, false},
		{"0,10,30", []int{0, 10, 30}, false},
		{" 5 , 7", []int{5, 7}, false},
		{"0,10,10", nil, true},
		{"10,0", nil, true},
		{"0,-1", nil, true},
		{"0,x", nil, true},
	} {
		got, err := ParseSteps(tc.in)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSteps(%q) = %v, %v", tc.in, got, err)
		}
	}
	if n, err := ParsePairs(""); n != DefaultPairs || err != nil {
		t.Errorf("ParsePairs(\"\") = %d, %v", n, err)
	}
	if _, err := ParsePairs("0"); err == nil {
		t.Error("ParsePairs(\"0\") is no error")
	}
}

func TestTargets(t *testing.T) {
	ms := time.Millisecond
	steps := []Step{
		{Live: 0, Acquire: benchstat.Samples{400 * ms}, CtrReady: benchstat.Samples{420 * ms}, Add: benchstat.Samples{20 * ms}, RSS: 30 << 20},
		{Live: 1000, Acquire: benchstat.Samples{480 * ms}, CtrReady: benchstat.Samples{630 * ms}, Add: benchstat.Samples{23 * ms}, RSS: 90 << 20,
			MemAvailDrop: 10000 << 20, ShimPSS: 5000 << 20, Threads: 15000, NAT: &NAT{DNAT: 300 * time.Microsecond, Direct: 280 * time.Microsecond}},
	}
	var got []string
	for _, tg := range Targets(steps, Leaks{Checked: true}) {
		got = append(got, tg.Result())
	}
	if want := []string{"met", "met", "NOT MET", "met", "met"}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	if d := Targets(steps, Leaks{})[1].Detail; !strings.Contains(d, "ctr run -d + TCP on the same containerd grew 1.50× (630.0 ms vs 420.0 ms)") {
		t.Errorf("the acquire target's detail %q lacks the baseline's growth", d)
	}
	if got := Targets(steps[:1], Leaks{})[4].Result(); got != "not measured" {
		t.Errorf("an unchecked leak check is %q", got)
	}
	row := steps[1].Row()
	if len(row) != len(Columns) {
		t.Fatalf("a row has %d cells, the table %d columns", len(row), len(Columns))
	}
	if line := strings.Join(row, "|"); !strings.Contains(line, "|10.00|5.00|") || !strings.Contains(line, "|15.0|300|280") {
		t.Errorf("row %s", line)
	}
	if line := strings.Join(steps[0].Row(), "|"); !strings.Contains(line, "0|0.0|400.0|400.0|420.0|") || !strings.HasSuffix(line, "–|–|–") {
		t.Errorf("row %s", line)
	}
}

func TestImageTable(t *testing.T) {
	steps := []Step{{Live: 0}, {Live: 100, Shims: 100, MemAvailDrop: 400 << 20, Threads: 1800}, {Live: 250}}
	fn := &Step{Live: 100, Image: "r/esb/function:abc", Shims: 100, MemAvailDrop: 600 << 20, Threads: 900}
	tb := ImageTable(steps, fn)
	if len(tb.Rows) != 2 || len(tb.Head) != len(ImageColumns) {
		t.Fatalf("table %+v, want the worker's and the function's rows", tb)
	}
	if got := strings.Join(tb.Rows[0], "|"); got != "tests/images/worker|100|100|4.00|0.00|0.00|0.00|18.0" {
		t.Errorf("worker row %s", got)
	}
	if got := strings.Join(tb.Rows[1], "|"); got != "r/esb/function:abc|100|100|6.00|0.00|0.00|0.00|9.0" {
		t.Errorf("function row %s", got)
	}
	if tb := ImageTable(steps[:1], fn); len(tb.Rows) != 1 {
		t.Errorf("without a step of as many live workers: %v, want the function's row only", tb.Rows)
	}
}
