package agenttest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKB(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(p, []byte("Name:\tesb-agent\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kb, err := KB(p, "VmRSS", "VmHWM")
	if err != nil || kb["VmRSS"] != 1024 || kb["VmHWM"] != 2048 {
		t.Errorf("KB = %v, %v", kb, err)
	}
	if _, err := KB(p, "Pss"); err == nil {
		t.Error("a missing key is not an error")
	}
	if _, err := KB(p, "Threads"); err == nil {
		t.Error("a line without kB is not an error")
	}
}
