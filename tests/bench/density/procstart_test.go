package benchdensity

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestProcStartCell(t *testing.T) {
	if got := (*ProcStart)(nil).Cell(); got != "–" {
		t.Errorf("nil Cell = %q, want –", got)
	}
	if got := (&ProcStart{}).Cell(); got != "–" {
		t.Errorf("empty Cell = %q, want –", got)
	}
}

// TestMeasureProcStart starts real processes: true stands for both.
func TestMeasureProcStart(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("true: %v", err)
	}
	p, err := MeasureProcStart(truePath, truePath, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.True) != 3 || len(p.Plugin) != 3 || p.True.P50() <= 0 {
		t.Fatalf("samples %v / %v, want 3 positive each", p.True, p.Plugin)
	}
	if c := p.Cell(); !strings.Contains(c, " / ") {
		t.Errorf("Cell = %q, want two figures", c)
	}
	if _, err := MeasureProcStart(truePath, "/nonexistent/esb-bridge", 1); err == nil {
		t.Error("a missing plugin measured without an error")
	}
}

// TestStartIdle starts three idle copies of this test binary and ends
// them: stop returns once every one has exited (a child that ignored the
// closed pipe would hang the test until its timeout).
func TestStartIdle(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stop, err := StartIdle(self, []string{idleChildEnv + "=1"}, 3)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	stop()
	stop() // a second call is harmless
	stop, err = StartIdle("/nonexistent/idle", nil, 1)
	stop()
	if err == nil {
		t.Error("starting a missing program reported no error")
	}
}
