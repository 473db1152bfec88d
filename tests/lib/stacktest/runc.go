package stacktest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// RecordingRunc is a runc for containerd's runc-binary (BinaryName) that
// notes the arguments of each call in a file, then runs the stack's runc.
type RecordingRunc struct {
	Path  string // the wrapper, an executable script
	calls string
}

// NewRecordingRunc writes the wrapper in a temporary directory of tb, which
// stays until tb's later cleanups have run (make it before the runtime whose
// cleanup may still call it).
func NewRecordingRunc(tb testing.TB) RecordingRunc {
	tb.Helper()
	dir := tb.TempDir()
	r := RecordingRunc{Path: filepath.Join(dir, "runc"), calls: filepath.Join(dir, "calls")}
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", r.calls, nstest.LookPath(tb, "runc"))
	if err := os.WriteFile(r.Path, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Missing returns those of verbs (runc's commands, such as create) that no
// call so far ran for container id, and the calls as noted; an error when
// the wrapper never ran.
func (r RecordingRunc) Missing(id string, verbs ...string) (missing []string, calls string, err error) {
	b, err := os.ReadFile(r.calls)
	if err != nil {
		return nil, "", fmt.Errorf("the wrapper runc was never run: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	for _, verb := range verbs {
		if !slices.ContainsFunc(lines, func(l string) bool {
			f := strings.Fields(l)
			return slices.Contains(f, verb) && slices.Contains(f, id)
		}) {
			missing = append(missing, verb)
		}
	}
	return missing, string(b), nil
}
