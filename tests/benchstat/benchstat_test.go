package benchstat

import (
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	s := Samples{4 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond}
	if s.P50() != 2500*time.Microsecond || s.Max() != 4*time.Millisecond || s.Mean() != 2500*time.Microsecond {
		t.Errorf("p50 %s max %s mean %s", s.P50(), s.Max(), s.Mean())
	}
	if got := s.Quantile(1); got != 4*time.Millisecond {
		t.Errorf("q1 %s", got)
	}
	if got := (Samples{}).P95(); got != 0 {
		t.Errorf("empty p95 %s", got)
	}
	if s[0] != 4*time.Millisecond {
		t.Error("Quantile sorted the caller's slice")
	}
}
