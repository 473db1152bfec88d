package benchnat

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	if median(nil) != 0 {
		t.Error("no values have a median")
	}
}

func rounds(rates ...float64) []LoadResult {
	out := make([]LoadResult, len(rates))
	for i, r := range rates {
		out[i] = LoadResult{Conns: int(r), BodyBytes: int64(r) * 1e6, Seconds: 1, P50us: 100, P99us: 200}
	}
	return out
}

func TestSummary(t *testing.T) {
	s := &Summary{
		Title:             "t",
		ApplyTransactions: 1,
		Apply: []ApplyRow{
			{Forwards: 1000, What: "rebuilt from an empty namespace", Samples: Samples{4 * time.Millisecond, 12 * time.Millisecond, 5 * time.Millisecond}},
		},
		Drift: []DriftRow{{Forwards: 1, Seen: Samples{60 * time.Millisecond}, Watch: Samples{time.Millisecond}}},
		Compare: []Comparison{{Metric: "connection rate", Unit: "conn/s", Of: LoadResult.Rate, Target: true,
			DNAT:   Series{Name: "DNAT", Rounds: rounds(960, 1000, 900)},
			Direct: Series{Name: "direct", Rounds: rounds(1000, 1000, 1000)}}},
		PerConn: []Setup{
			{Name: "map", HTTP: Series{Rounds: rounds(1000, 1000)}, HTTPDirect: Series{Rounds: rounds(1000, 1000)},
				Connect: Series{Rounds: rounds(1, 1)}, ConnectDirect: Series{Rounds: rounds(1, 1)}, Install: Samples{time.Millisecond}},
			{Name: "iptables", HTTP: Series{Rounds: rounds(500, 500)}, HTTPDirect: Series{Rounds: rounds(1000, 1000)},
				Connect: Series{Rounds: rounds(1, 1)}, ConnectDirect: Series{Rounds: rounds(1, 1)}},
		},
	}
	targets := s.Targets()
	want := []struct {
		name string
		met  bool
	}{{"Apply 1000", true}, {"nft flush ruleset", false}, {"connection rate overhead", true}}
	if len(targets) != len(want) {
		t.Fatalf("targets = %+v", targets)
	}
	for i, w := range want {
		if !strings.HasPrefix(targets[i].Name, w.name) || !targets[i].Known || targets[i].Met != w.met {
			t.Errorf("target %d = %+v, want %s met=%v", i, targets[i], w.name, w.met)
		}
	}
	if med, _, lo, hi, _ := s.Compare[0].Overhead(); math.Abs(med-4) > 1e-9 || math.Abs(lo) > 1e-9 || math.Abs(hi-10) > 1e-9 {
		t.Errorf("overhead = %v (%v … %v), want 4 (0 … 10)", med, lo, hi)
	}
	var b strings.Builder
	if err := s.Print(&b); err != nil {
		t.Fatal(err)
	}
	for _, frag := range []string{"(max above the limit)", "| NOT MET |", "+4.00 ± ", "| iptables | 2 | 500.0 | 2000.0 | 0.500× | +50.00 % | 100.0 | 100.0 | +0.0 | 0 | 0.000 |"} {
		if !strings.Contains(b.String(), frag) {
			t.Errorf("summary lacks %q:\n%s", frag, b.String())
		}
	}
}
