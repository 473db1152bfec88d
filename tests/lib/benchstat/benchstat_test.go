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
	odd := FromMs(5, 1, 3, 2, 4)
	if odd.P50() != 3*time.Millisecond || odd.Mean() != 3*time.Millisecond || odd.Max() != 5*time.Millisecond {
		t.Errorf("p50 %v mean %v max %v of %v", odd.P50(), odd.Mean(), odd.Max(), odd)
	}
	if got := FromMs(3, 1, 2, 10).Mean(); got != 4*time.Millisecond {
		t.Errorf("mean of 3,1,2,10 ms = %v, want 4ms", got)
	}
	var hundred Samples
	for i := 1; i <= 101; i++ {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	if got := hundred.P95(); got != 96*time.Millisecond {
		t.Errorf("p95 of 1..101 ms = %v, want 96ms", got)
	}
	if (Samples{}).P50() != 0 || (Samples{}).Mean() != 0 || (Samples{}).Max() != 0 {
		t.Error("empty samples should give 0")
	}
}

type keyedRow struct {
	label string
	n     int
}

func (r *keyedRow) Key() (string, int) { return r.label, r.n }

func TestFind(t *testing.T) {
	a, b, c := &keyedRow{"a", 1}, &keyedRow{"a", 8}, &keyedRow{"b", 1}
	rows := []*keyedRow{a, b, c, {"a", 8}}
	if got := Find(rows, "a", 8); got != b {
		t.Errorf("Find(a, 8) = %+v, want the first of them, %+v", got, b)
	}
	if got := Find(rows, "b", 1); got != c {
		t.Errorf("Find(b, 1) = %+v, want %+v", got, c)
	}
	if got := Find(rows, "b", 8); got != nil {
		t.Errorf("Find(b, 8) = %+v, want nil", got)
	}
	if got := Find[*keyedRow](nil, "a", 1); got != nil {
		t.Errorf("Find in no rows = %+v, want nil", got)
	}
}
