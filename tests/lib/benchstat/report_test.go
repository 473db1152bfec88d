package benchstat

import (
	"strings"
	"testing"
	"time"
)

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Measured: 1.2, Limit: 1.2, Known: true}, "met"},
		{Target{Measured: 1.21, Limit: 1.2, Known: true}, "NOT MET"},
		{Target{Measured: 5, Limit: 5, Strict: true, Known: true}, "NOT MET"},
		{Target{Measured: 4.9, Limit: 5, Strict: true, Known: true}, "met"},
		{Target{Measured: 0, Limit: 5}, "not measured"},
		{Target{Measured: 30, Limit: 1000, AtLeast: true, Known: true}, "NOT MET"},
		{Target{Measured: 1000, Limit: 1000, AtLeast: true, Known: true}, "met"},
		{RatioTarget("r", time.Second, 0, 1.2, ""), "not measured"},
		{RatioTarget("r", 3*time.Second, 2*time.Second, 1.2, ""), "NOT MET"},
		{RatioTarget("r", 2*time.Second, 2*time.Second, 1.2, ""), "met"},
	} {
		if got := tc.t.Result(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.t, got, tc.want)
		}
	}
}

func TestPrint(t *testing.T) {
	s := &Summary{
		Title:   "agent",
		Notes:   []string{"a note"},
		Tables:  []Table{{Head: []string{"live", "p50"}, Rows: [][]string{{"0", "1.00"}}}},
		Latency: []Row{{Name: "acquire", Samples: Samples{time.Millisecond, 3 * time.Millisecond}, Note: "n"}},
		Phases:  []Row{{Name: "CNI ADD", Samples: Samples{20 * time.Millisecond}}},
		Figures: []Figure{{Name: "RSS", Value: "30 MiB"}},
		Targets: []Target{{Name: "warm p50", Measured: 2, Limit: 5, Unit: "ms", Strict: true, Known: true}},
	}
	var b strings.Builder
	if err := s.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"## agent", "- a note",
		"| live | p50 |\n| ---: | ---: |\n| 0 | 1.00 |",
		"| acquire | 2 | 2.00 | 2.90 | 2.00 | 3.00 | n |",
		"| CNI ADD | 1 | 20.0 | 20.0 | 20.0 | 20.0 |  |",
		"| RSS | 30 MiB |  |",
		"| warm p50 | 2.00 ms | < 5.00 ms | met |  |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestRatio(t *testing.T) {
	if r, ok := Ratio(3*time.Second, 2*time.Second); !ok || r != 1.5 {
		t.Errorf("Ratio(3s, 2s) = %v, %v, want 1.5, true", r, ok)
	}
	for _, c := range [][2]time.Duration{{time.Second, 0}, {0, time.Second}, {-time.Second, time.Second}} {
		if _, ok := Ratio(c[0], c[1]); ok {
			t.Errorf("Ratio(%v, %v) measured, want not", c[0], c[1])
		}
	}
}

// TestLoadAverage reads this machine's /proc/loadavg: three load
// averages, as the machine note names them.
func TestLoadAverage(t *testing.T) {
	f := strings.Fields(LoadAverage())
	if len(f) != 3 {
		t.Fatalf("LoadAverage() = %q, want three fields", LoadAverage())
	}
	for _, v := range f {
		if strings.Trim(v, "0123456789.") != "" || strings.Count(v, ".") != 1 {
			t.Errorf("load average %q is not a decimal number", v)
		}
	}
	// The averages move between two reads; the note names them in place.
	if note := MachineNote("now", "containerd"); !strings.Contains(note, "load average ") || !strings.Contains(note, " (1, 5, 15 min)") {
		t.Errorf("MachineNote does not carry the load averages: %q", note)
	}
}
