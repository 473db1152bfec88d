package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRuncBinaryMustBeExecutable: the agent refuses at start a runc-binary
// that is missing or not executable, naming the setting, instead of
// failing every create later; an executable one is taken.
func TestRuncBinaryMustBeExecutable(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	exe := filepath.Join(dir, "runc")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "absent"), "invalid runc-binary: stat " + filepath.Join(dir, "absent")},
		{plain, `invalid runc-binary "` + plain + `": not an executable file`},
		{dir, `invalid runc-binary "` + dir + `": not an executable file`},
		{exe, ""},
	} {
		c := DaemonConfig{Runtime: "containerd", ContainerdAddress: filepath.Join(dir, "none.sock"), RuncBinary: tc.path}
		_, closeRT, err := newRuntime(c)
		if tc.want == "" {
			if err != nil {
				t.Errorf("runc-binary %s: %v, want it taken", tc.path, err)
			} else {
				closeRT()
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("runc-binary %s: %v, want %q", tc.path, err, tc.want)
		}
	}
}
